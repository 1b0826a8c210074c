"""store.encode: amounts to minor units, the string fast path against exact Decimal arithmetic."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from agent import WhmcsInvoice
from coordinator.forecaster import money, store


def invoice(amount: str, currency: str = "EUR", **fields) -> WhmcsInvoice:
    return WhmcsInvoice(**{
        "id": 1, "invoicenum": "INV|1", "date": dt.date(2026, 3, 2), "duedate": None,
        "datepaid": dt.datetime(2026, 3, 3, 14, 6, 34), "status": "Paid",
        "subtotal": Decimal(amount), "credit": Decimal("0.00"), "tax": Decimal("0.00"),
        "tax2": Decimal("0.00"), "total": Decimal(amount), "currencycode": currency,
        "updated_at": None, **fields,
    })


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("398.94", "EUR", 39894), ("-24.20", "EUR", -2420), ("0.00", "EUR", 0),
        ("-0.00", "EUR", 0), ("0.05", "EUR", 5), ("15.9", "EUR", 1590), ("15.950", "EUR", 1595),
        ("1E+2", "EUR", 10000), ("1.5E+1", "EUR", 1500), ("7", "eur", 700),
        ("1000", "JPY", 1000), ("1000.00", "JPY", 1000), ("-91", "JPY", -91),
        ("1.234", "KWD", 1234), ("1.2", "KWD", 1200), ("0.0001", "CLF", 1),
        ("10000000000.00", "EUR", store.MAX_MINOR), ("-10000000000.00", "EUR", -store.MAX_MINOR),
        # the bounds hold whatever the notation (these take the exact path, not the digits one)
        ("1E+10", "EUR", store.MAX_MINOR), ("-1E+10", "EUR", -store.MAX_MINOR),
    ],
)
def test_minor_units_match_exact_decimal_arithmetic(amount, currency, minor):
    record = store.encode(invoice(amount, currency))
    assert money.to_minor(Decimal(amount), currency) == minor
    assert record.split("|")[5] == record.split("|")[9] == str(minor)
    assert record == (f"20260302||20260303140634|Paid|{currency.upper()}|{minor}|0|0|0|{minor}"
                      "|INV|1")
    assert store.decode(1, record).total == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("15.951", "EUR"), ("0.001", "EUR"), ("10.50", "JPY"), ("1.2345", "KWD"),
     ("1E-3", "EUR"), ("10000000000.01", "EUR"), ("-10000000000.01", "EUR"), ("1E+11", "EUR")],
)
def test_amounts_the_store_cannot_hold_exactly_are_refused(amount, currency):
    with pytest.raises(money.AmountPrecisionError, match="invoice 1: subtotal"):
        store.encode(invoice(amount, currency))


def test_aware_datepaid_encodes_as_before():
    paid = dt.datetime(2026, 3, 3, 14, 6, 34, 120, tzinfo=dt.UTC)
    assert store.encode(invoice("1.00", datepaid=paid)).split("|")[2] == "20260303140634+0000"


@pytest.mark.integration
def test_aggregates_beyond_double_precision_stay_exact(redis_client):
    # 1,100 invoices of ten billion euros less a cent: the cell's sums pass 10^15 minor units,
    # where upsert.lua stops adding in doubles and lets HINCRBY add exactly.
    amount = "9999999999.99"
    invoices = [invoice(amount) for _ in range(1100)]
    invoices = [WhmcsInvoice(**{**{f: getattr(inv, f) for f in inv.__slots__}, "id": i + 1})
                for i, inv in enumerate(invoices)]
    store.upsert(redis_client, "big", invoices)
    store.upsert(redis_client, "big", invoices[:700])  # unchanged: nothing moves
    (cell,) = store.read_aggregates(redis_client, "big")
    assert (cell.n, cell.gross, cell.net) == (1100, 1100 * 999999999999, 1100 * 999999999999)
    store.delete(redis_client, "big", range(1, 1100))
    (cell,) = store.read_aggregates(redis_client, "big")
    assert (cell.n, cell.gross) == (1, 999999999999)
    assert store.currencies(redis_client, "big") == {"EUR": 1}
    assert dict(store.iter_numbers(redis_client, "big")) == {"INV|1": 1}
    store.delete(redis_client, "big", [1100])
    assert store.read_aggregates(redis_client, "big") == []
    assert redis_client.hgetall("{sys:big}:numbers") == {}
