"""Guards of the WHMCS addon module that the hand-written mutation run (issue 17) found without
a test; same harness as test_addon_module.py (php-cli, the real coordinator on loopback)."""

from __future__ import annotations

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
