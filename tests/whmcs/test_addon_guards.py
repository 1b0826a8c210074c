"""Guards of the WHMCS addon module that the hand-written mutation run (issue 17) found without
a test; same harness as test_addon_module.py (php-cli, the real coordinator on loopback)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.whmcs.test_addon_module import (  # noqa: F401 - fixtures used by name
    YEAR,
    Whmcs,
    _php,
    blue,
    invoice,
    whmcs,
)


def test_an_invoice_that_already_has_a_number_takes_none(whmcs: Whmcs, live_coordinator):  # noqa: F811
    """An admin typed a number before payment: the module must not even ask for one. Taking one
    anyway would leave a voided number in the ledger (a gap to explain) for every such invoice."""
    whmcs.tables["tblinvoices"] = [invoice(20, invoicenum="MANUAL-1")]
    out = whmcs.pay(20)
    assert set(out["hooks"]) == {"InvoicePaidPreEmail", "InvoicePaid"}
    assert whmcs.invoicenum(20) == "MANUAL-1"
    assert out["log"] == []
    assert whmcs.log_rows() == []
    assert live_coordinator.ledger("invoice", YEAR) == []


class Garbling:
    """An HTTP front of the coordinator that asks for another reference than the one it was
    sent (a broken proxy or transport): its answers are for another invoice."""

    def __init__(self, upstream: str, reference: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/allocations":
                    body = json.dumps({**json.loads(body), "reference": reference}).encode()
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length")}
                answer = requests.post(upstream + self.path, data=body, headers=headers,
                                       timeout=30)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def garbling(live_coordinator) -> Iterator[Garbling]:
    front = Garbling(live_coordinator.url, reference="99")
    yield front
    front.server.shutdown()
    front.server.server_close()


def test_a_number_answered_for_another_invoice_is_not_written(
    whmcs: Whmcs, live_coordinator, garbling  # noqa: F811
):
    """The number the coordinator gave reference 99 must not be printed on invoice 21 (nor
    confirmed as if it were): the ledger would name the wrong invoice for a printed number."""
    whmcs.set("coordinator_url", garbling.url)
    whmcs.tables["tblinvoices"] = [invoice(21)]
    out = whmcs.pay(21, event="InvoicePaid")
    assert whmcs.invoicenum(21) == ""
    assert out["log"] == [
        "invoice-sync: invoice 21, taking a number failed: the answer is for reference '99', "
        "not '21' (left as it is; the next attempt gets the same number)"]
    [entry] = live_coordinator.ledger("invoice", YEAR)
    assert (entry["reference"], entry["status"]) == ("99", "issued")
