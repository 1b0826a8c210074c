"""Invoice ids: only what WHMCS's tblinvoices.id (a MySQL INT) can hold is accepted."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import WhmcsBadResponseError, WhmcsInvoice
from agent.whmcs import MAX_INVOICE_ID

ROW = {"invoicenum": "", "date": "2026-03-02", "duedate": "2026-03-16",
       "datepaid": "0000-00-00 00:00:00", "subtotal": "10.00", "credit": "0.00", "tax": "0.00",
       "tax2": "0.00", "total": "10.00", "status": "Paid", "currencycode": "EUR",
       "updated_at": "0000-00-00 00:00:00"}

IDS = st.one_of(
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=MAX_INVOICE_ID - 10, max_value=MAX_INVOICE_ID + 10),
    st.integers(min_value=-(2**70), max_value=2**70),
)


@given(invoice_id=IDS, as_text=st.booleans(), fast=st.booleans())
def test_an_id_is_accepted_exactly_when_whmcs_can_hold_it(invoice_id, as_text, fast):
    row = {**ROW, "id": str(invoice_id) if as_text else invoice_id}
    raw = row if fast else MappingProxyType(row)  # a dict may take the fast path
    if 1 <= invoice_id <= MAX_INVOICE_ID:
        assert WhmcsInvoice.from_api(raw).id == invoice_id
    else:
        with pytest.raises(WhmcsBadResponseError) as caught:
            WhmcsInvoice.from_api(raw)
        assert caught.value.message == (
            f"WHMCS sent invoice id {invoice_id}, outside 1 to {MAX_INVOICE_ID} (what WHMCS's "
            "invoice table can hold). Check the WHMCS version and any module that rewrites "
            "API output."
        )
