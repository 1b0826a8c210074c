"""What the store keeps is what WHMCS sent, whatever is in its fields (mutation run, issue 17)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from agent import WhmcsInvoice
from coordinator.forecaster import defaults, lock, money, store

pytestmark = pytest.mark.integration


def invoice(invoice_id: int, **fields) -> WhmcsInvoice:
    return WhmcsInvoice(**{
        "id": invoice_id, "invoicenum": "", "date": dt.date(2026, 3, 2), "duedate": None,
        "datepaid": None, "status": "Unpaid", "subtotal": Decimal("10.00"),
        "credit": Decimal("0.00"), "tax": Decimal("0.00"), "tax2": Decimal("0.00"),
        "total": Decimal("10.00"), "currencycode": "EUR", "updated_at": None, **fields,
    })


def test_what_the_store_keeps_reads_back_as_whmcs_sent_it(redis_client):
    # Every field set (the number holds the record's separator), then dates left unset one by
    # one: recovery reads the numbers and ids back from here (backup/evidence.py).
    full = invoice(
        7, invoicenum="INV|2026|007", date=dt.date(2026, 3, 2), duedate=dt.date(2026, 3, 16),
        datepaid=dt.datetime(2026, 3, 3, 14, 6, 34), status="Paid",
        subtotal=Decimal("100.00"), tax=Decimal("19.00"), tax2=Decimal("2.50"),
        credit=Decimal("20.00"), total=Decimal("101.50"),
    )
    no_due = invoice(8, invoicenum="INV-8", date=dt.date(2026, 4, 1))
    no_date = invoice(9, date=None)
    store.upsert(redis_client, "blue", [full, no_due, no_date])
    expected = {
        7: store.StoredInvoice(7, "INV|2026|007", dt.date(2026, 3, 2), dt.date(2026, 3, 16),
                               dt.datetime(2026, 3, 3, 14, 6, 34), "Paid", "EUR",
                               10000, 1900, 250, 2000, 10150),
        8: store.StoredInvoice(8, "INV-8", dt.date(2026, 4, 1), None, None, "Unpaid", "EUR",
                               1000, 0, 0, 0, 1000),
        9: store.StoredInvoice(9, "", None, None, None, "Unpaid", "EUR", 1000, 0, 0, 0, 1000),
    }
    assert {i: store.get(redis_client, "blue", i) for i in expected} == expected
    assert {s.id: s for s in store.iter_stored(redis_client, "blue")} == expected
    assert store.get(redis_client, "blue", 10) is None
    # Unpaid without a due date: open, under no due date.
    assert store.read_receivables(redis_client, "blue") == [
        store.Receivable(None, "EUR", n=2, gross=2000)]


def test_a_bar_or_blanks_in_status_or_currency_do_not_move_the_amounts(redis_client):
    # "|" separates the record's fields: one inside the status would shift every amount after
    # it into the wrong field of the aggregates (upsert.lua parses the record by position).
    store.upsert(redis_client, "blue", [
        invoice(1, status="Paid|Late", currencycode=" eur ", subtotal=Decimal("12.00"),
                tax=Decimal("3.00"), total=Decimal("15.00")),
    ])
    (cell,) = store.read_aggregates(redis_client, "blue")
    assert cell == store.Aggregate("2026-03", "Paid/Late", "EUR", n=1, net=1200, tax=300,
                                   gross=1500)
    assert store.currencies(redis_client, "blue") == {"EUR": 1}


def test_invoices_stored_for_a_sync_that_lost_the_lock_change_nothing(redis_client):
    # upsert fences like write_records: the lock is another sync's now.
    store.upsert(redis_client, "blue", [invoice(1)])
    assert lock.acquire_queued(redis_client, "blue", "sync-b")
    with pytest.raises(lock.LockLost) as lost:
        store.upsert(redis_client, "blue", [invoice(1, status="Paid"), invoice(2)],
                     owner="sync-a")
    assert str(lost.value) == "the sync lock of 'blue' is no longer held by sync sync-a"
    assert [(s.id, s.status) for s in store.iter_stored(redis_client, "blue")] == [(1, "Unpaid")]
    store.upsert(redis_client, "blue", [invoice(2)], owner="sync-b")
    assert store.count(redis_client, "blue") == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subtotal": Decimal("9.999")},
         "invoice 3: subtotal 9.999 has more decimals than EUR allows (2)"),
        ({"tax": Decimal("0.5"), "currencycode": "jpy"},
         "invoice 3: tax 0.5 has more decimals than JPY allows (0)"),
        ({"tax2": Decimal("0.0001"), "currencycode": "KWD"},
         "invoice 3: tax2 0.0001 has more decimals than KWD allows (3)"),
        ({"credit": Decimal("0.001"), "currencycode": "GBP"},
         "invoice 3: credit 0.001 has more decimals than GBP allows (2)"),
        ({"total": Decimal("10.0005"), "currencycode": "kwd"},
         "invoice 3: total 10.0005 has more decimals than KWD allows (3)"),
        ({"tax": Decimal("0.001"), "currencycode": ""},
         "invoice 3: tax 0.001 has more decimals than the currency allows (2)"),
        ({"credit": Decimal("1E+11")},
         "invoice 3: credit 1E+11 is beyond what the forecaster stores exactly"),
    ],
)
def test_an_amount_the_store_cannot_keep_fails_the_sync_saying_which_and_why(fields, message):
    # The message becomes the failed sync's error, which the admin reads.
    with pytest.raises(money.AmountPrecisionError) as refused:
        store.encode(invoice(3, **fields))
    assert str(refused.value) == message


def test_a_large_write_goes_in_batches_of_upsert_batch_each_counted_once(redis_client):
    # One script call per UPSERT_BATCH invoices: each call blocks the server briefly, and the
    # calls are as few as that allows.
    many = [invoice(i) for i in range(1, 2 * defaults.UPSERT_BATCH + 2)]
    store.upsert(redis_client, "blue", many[:1])  # the server has loaded the script now
    redis_client.config_resetstat()
    result = store.upsert(redis_client, "blue", many)
    assert redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] == 3
    assert result == store.UpsertResult(inserted=len(many) - 1, unchanged=1, currencies=1)
    assert store.count(redis_client, "blue") == len(many)
    # What a sync reports adds up over the batches too.
    paid = [invoice(i.id, status="Paid") for i in many]
    assert store.upsert(redis_client, "blue", paid).updated == len(many)
    assert store.delete(redis_client, "blue", [i.id for i in many]).deleted == len(many)
