"""WhmcsInvoice.from_api: the fast path for well-formed rows reads exactly like the tolerant one."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import MappingProxyType

import pytest

from agent import WhmcsBadResponseError, WhmcsInvoice
from agent.whmcs import _from_api_fast

ROW = {
    "id": 7, "userid": 3, "firstname": "Liam", "lastname": "Müller", "companyname": "Acme",
    "invoicenum": "INV-2026-000007", "date": "2026-03-02", "duedate": "2026-03-16",
    "datepaid": "2026-03-03 14:06:34", "last_capture_attempt": "0000-00-00 00:00:00",
    "subtotal": "100.00", "credit": "0.00", "tax": "19.00", "tax2": "0.00", "total": "119.00",
    "taxrate": "19.000", "status": "Paid", "paymentmethod": "banktransfer", "notes": "",
    "updated_at": "2026-03-03 14:07:17", "currencycode": "EUR", "currencyprefix": "€",
}


def both(raw):
    """Parse through from_api (fast path for dicts) and through the tolerant path alone."""
    tolerant = WhmcsInvoice.from_api(MappingProxyType(raw))  # not a dict: no fast path
    return WhmcsInvoice.from_api(raw), tolerant


def test_well_formed_row_takes_the_fast_path_and_reads_like_the_tolerant_one():
    fast, tolerant = both(ROW)
    assert _from_api_fast(WhmcsInvoice, ROW) == fast == tolerant == WhmcsInvoice(
        id=7, invoicenum="INV-2026-000007", date=dt.date(2026, 3, 2),
        duedate=dt.date(2026, 3, 16), datepaid=dt.datetime(2026, 3, 3, 14, 6, 34),
        status="Paid", subtotal=Decimal("100.00"), credit=Decimal("0.00"),
        tax=Decimal("19.00"), tax2=Decimal("0.00"), total=Decimal("119.00"),
        currencycode="EUR", updated_at=dt.datetime(2026, 3, 3, 14, 7, 17),
    )
    assert str(fast.total) == "119.00"  # the exponent survives: "119.00", not "119"
    with pytest.raises(AttributeError):
        fast.total = Decimal(0)  # still frozen


@pytest.mark.parametrize(
    ("change", "fast"),
    [
        ({"datepaid": "0000-00-00 00:00:00", "status": "Unpaid"}, True),
        ({"date": "0000-00-00", "duedate": "0000-00-00", "updated_at": "0000-00-00 00:00:00"},
         True),
        ({"subtotal": "-100.00", "tax": "-19.00", "total": "-119.00"}, True),  # credit note
        ({"total": "119.005"}, True),  # more decimals than EUR has: the store refuses it
        ({"total": "119"}, True),
        ({"total": " 119.00 "}, True),  # Decimal strips blanks like the tolerant path
        ({"brand_new_field": {"x": 1}}, True),
        ({"id": "7"}, False),  # older WHMCS: ids as strings
        ({"datepaid": "0000-00-00"}, False),  # zero date without time
        ({"date": "2026-03-02 00:00:00"}, False),  # a datetime where a date is expected
        ({"date": ""}, False),
        ({"duedate": " 2026-03-16"}, False),
        ({"updated_at": "2026-03-03 14:07:17 "}, False),
        ({"subtotal": ""}, False),  # empty money reads 0.00
        ({"credit": 0}, False),
        ({"tax": 19.0}, False),  # a float: never Decimal(float)
        ({"invoicenum": 42}, False),
        ({"status": None}, False),
    ],
)
def test_edge_cases_read_the_same_on_both_paths(change, fast):
    raw = {**ROW, **change}
    assert (_from_api_fast(WhmcsInvoice, raw) is not None) is fast
    parsed, tolerant = both(raw)
    assert parsed == tolerant
    assert [str(a) for a in (parsed.subtotal, parsed.tax, parsed.total)] == [
        str(a) for a in (tolerant.subtotal, tolerant.tax, tolerant.total)
    ]


@pytest.mark.parametrize("missing", ["id", "invoicenum", "date", "datepaid", "subtotal", "total",
                                     "status", "currencycode", "updated_at"])
def test_missing_fields_leave_the_fast_path(missing):
    raw = {k: v for k, v in ROW.items() if k != missing}
    assert _from_api_fast(WhmcsInvoice, raw) is None
    if missing == "id":
        with pytest.raises(WhmcsBadResponseError, match="'id'"):
            WhmcsInvoice.from_api(raw)
    else:
        assert WhmcsInvoice.from_api(raw) == WhmcsInvoice.from_api(MappingProxyType(raw))


def test_getinvoice_answer_with_invoiceid():
    raw = {k: v for k, v in ROW.items() if k != "id"} | {"invoiceid": 7}
    assert WhmcsInvoice.from_api(raw).id == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [("total", "NaN"), ("total", "Infinity"), ("tax", "12,50"), ("date", "2026-02-30"),
     ("datepaid", "yesterday"), ("id", True)],
)
def test_bad_values_fail_with_the_tolerant_paths_error(field, value):
    raw = {**ROW, field: value}
    assert _from_api_fast(WhmcsInvoice, raw) is None
    with pytest.raises(WhmcsBadResponseError, match=repr(field)):
        WhmcsInvoice.from_api(raw)
