"""Make a ledger with the release before compaction (commit 8f1eb66), for the upgrade test in
``test_numbering_compaction.py``.

Run in a subprocess whose ``PYTHONPATH`` is a checkout of that release, so ``coordinator``
below is the *old* code:

    python ledger_release.py <redis url> <output json>

System ``blue`` takes 12 invoice numbers through the HTTP API, confirms all but the 5th (voided)
and the 12th (left issued); an admin raises next_number; the chain is verified (sealed). Writes
every answer to the output file. Not collected by pytest.
"""

from __future__ import annotations

import json
import sys


def main(url: str, output: str) -> None:
    from legacy_release import session  # next to this file: sys.path[0]

    _client, admin, done, call = session(url)

    def ok(method: str, path: str, headers: dict, body: dict | None = None) -> dict:
        answer = call(method, path, headers, body)
        assert answer["status"] < 300, answer
        return answer

    created = ok("post", "/v1/systems", admin, {
        "name": "blue", "url": "http://127.0.0.1:9/includes/api.php",
        "api_identifier": "ident", "api_secret": "secret", "auto_sync": False})
    done["blue_token"] = created["json"]["agent_token"]
    # An empty store numbers only once its sequences were set (the numbering guard).
    ok("patch", "/v1/sequences/invoice", admin, {"padding": 6, "period": "2026"})
    blue = {"Authorization": f"Bearer {done['blue_token']}"}
    for i in range(12):
        taken = ok("post", "/v1/allocations", blue,
                   {"document": "invoice", "reference": f"r-{i}", "date": "2026-03-01"})["json"]
        if i == 4:
            ok("post", f"/v1/allocations/{taken['id']}/void", blue, {"reason": "mistake"})
        elif i < 11:
            ok("post", f"/v1/allocations/{taken['id']}/confirm", blue,
               {"invoicenum": taken["formatted"]})
        if i == 7:
            ok("patch", "/v1/sequences/invoice", admin, {"next_number": 20, "period": "2026"})
    ok("get", "/v1/series/default/sequences/invoice/ledger/verify", admin)
    with open(output, "w") as handle:
        json.dump(done, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
