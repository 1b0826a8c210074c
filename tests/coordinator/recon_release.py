"""Make reconciliation data with the release before the kept reconciliation (commit 8f1eb66),
for the upgrade test of ``forecaster/test_reconcile_upgrade.py``.

Run in a subprocess whose ``PYTHONPATH`` is a checkout of that release, so ``coordinator``
below is the *old* code (its upsert.lua kept no list of changed numbers, its raise.lua no
open-warning sets):

    python recon_release.py <redis url> <output json>

Two series, numbers issued, confirmed and voided, invoices stored as that release's sync
stores them, and the warnings its worker raised after the syncs. Not collected by pytest.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal


def _invoice(invoice_id: int, number: str):
    from agent import WhmcsInvoice

    day = dt.date(2026, 3, 1)
    return WhmcsInvoice(
        id=invoice_id, invoicenum=number, date=day, duedate=day, datepaid=None,
        status="Paid", subtotal=Decimal(1), credit=Decimal(0), tax=Decimal(0),
        tax2=Decimal(0), total=Decimal(1), currencycode="EUR", updated_at=None)


def main(url: str, output: str) -> None:
    from legacy_release import session  # next to this file: sys.path[0]

    from coordinator import keys
    from coordinator.forecaster import reconcile, store
    from coordinator.numbering import guard

    client, admin, done, call = session(url)
    guard.mark_initialised(client, "as serve's first start on a new data dir")

    def ok(method: str, path: str, headers: dict, body: dict | None = None) -> dict:
        answer = call(method, path, headers, body)
        assert answer["status"] < 300, answer
        return answer["json"]

    ok("post", "/v1/series", admin, {"name": "acme", "description": "ACME"})
    tokens = {}
    for system, series in (("blue", "default"), ("green", "acme")):
        tokens[system] = {"Authorization": "Bearer " + ok("post", "/v1/systems", admin, {
            "name": system, "url": "http://127.0.0.1:9/includes/api.php",
            "api_identifier": "ident", "api_secret": "secret", "auto_sync": False,
            "series": series})["agent_token"]}
    issued = {}
    for system, ref in (("blue", "a1"), ("blue", "a2"), ("blue", "a3"), ("green", "g1")):
        issued[ref] = ok("post", "/v1/allocations", tokens[system],
                         {"document": "invoice", "reference": ref, "date": "2026-03-01"})
    for system, ref in (("blue", "a1"), ("blue", "a2"), ("green", "g1")):
        ok("post", f"/v1/allocations/{issued[ref]['id']}/confirm", tokens[system],
           {"invoicenum": issued[ref]["formatted"]})
    ok("post", f"/v1/allocations/{issued['a3']['id']}/void", tokens["blue"],
       {"reason": "deleted before sending"})
    # What that release's sync stored: a1 shown, a2 not (deleted in WHMCS), a hand-made number
    # twice; green shows its number and the same hand-made string (another issuer).
    store.upsert(client, "blue", [_invoice(1, issued["a1"]["formatted"]),
                                  _invoice(2, "HAND-1"), _invoice(3, "HAND-1")])
    store.upsert(client, "green", [_invoice(1, issued["g1"]["formatted"]),
                                   _invoice(2, "HAND-1")])
    for system in ("blue", "green"):
        client.hset(keys.sys_sync_state(system), "last_full_at", "2026-03-02T00:00:00Z")
    done["warnings"] = reconcile.check(client, ["blue", "green"],
                                       {"blue": "default", "green": "acme"})
    done["issued"] = issued
    with open(output, "w") as handle:
        json.dump(done, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
