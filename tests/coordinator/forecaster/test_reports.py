"""Reports from aggregates: exact conversion, one rounding, credit notes, flat cost."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import redis

from agent import WhmcsInvoice
from coordinator.exceptions import InvalidInput
from coordinator.forecaster import money, reports, store
from coordinator.forecaster.reports import SystemRate

pytestmark = pytest.mark.integration


def invoice(i, total, *, date="2026-03-10", status="Paid", currency="EUR", tax="0", due=None,
            invoicenum=""):
    total, tax = Decimal(total), Decimal(tax)
    day = dt.date.fromisoformat(date)
    return WhmcsInvoice(
        id=i, invoicenum=invoicenum, date=day,
        duedate=dt.date.fromisoformat(due) if due else day, datepaid=None, status=status,
        subtotal=total - tax, credit=Decimal(0), tax=tax, tax2=Decimal(0), total=total,
        currencycode=currency, updated_at=None,
    )


def test_conversion_exact_and_rounded_once_half_even(redis_client):
    # 3 x 0.05 USD at 1.1 = 0.165 EUR exactly; rounded per invoice it would be 3 x 0.06 = 0.18.
    store.upsert(redis_client, "red", [invoice(i, "0.05") for i in (1, 2, 3)])
    # 0.125 -> 0.12 under ROUND_HALF_EVEN (HALF_UP would say 0.13)
    store.upsert(redis_client, "blue", [invoice(1, "0.25")])
    out = reports.revenue(redis_client, [SystemRate("red", Decimal("1.1")),
                                         SystemRate("blue", Decimal("0.5"))],
                          "EUR", "2026-03", "2026-03", "system")
    assert out["rows"] == [
        {"key": "red", "invoices": 3, "net": "0.16", "tax": "0.00", "gross": "0.16"},
        {"key": "blue", "invoices": 1, "net": "0.12", "tax": "0.00", "gross": "0.12"},
    ]
    # 0.165 + 0.125 = 0.29 exactly: the total is rounded from the exact sum, not the rows.
    assert out["total"]["gross"] == "0.29"


def test_zero_decimal_currency_and_base(redis_client):
    store.upsert(redis_client, "jp", [invoice(1, "1000", currency="JPY", tax="91")])
    assert store.read_aggregates(redis_client, "jp")[0].gross == 1000
    out = reports.revenue(redis_client, [SystemRate("jp", Decimal("0.0061234"))], "EUR",
                          "2026-03", "2026-03")
    assert out["total"] == {"invoices": 1, "net": "5.57", "tax": "0.56", "gross": "6.12"}
    with pytest.raises(money.AmountPrecisionError):
        store.upsert(redis_client, "jp", [invoice(2, "10.50", currency="JPY")])
    assert store.count(redis_client, "jp") == 1


def test_credit_notes_count_negative_and_only_paid_counts(redis_client):
    store.upsert(redis_client, "blue", [
        invoice(1, "121.00", tax="21.00"),
        invoice(2, "-24.20", tax="-4.20"),  # credit note
        invoice(3, "999.00", status="Unpaid"),
        invoice(4, "50.00", status="Cancelled"),
        invoice(5, "10.00", date="2026-04-01"),
    ])
    out = reports.revenue(redis_client, [SystemRate("blue", Decimal("1"))], "EUR",
                          "2026-03", "2026-04")
    assert out["rows"] == [
        {"key": "2026-03", "invoices": 2, "net": "80.00", "tax": "16.80", "gross": "96.80"},
        {"key": "2026-04", "invoices": 1, "net": "10.00", "tax": "0.00", "gross": "10.00"},
    ]


def test_restoring_changes_moves_aggregates_exactly(redis_client):
    store.upsert(redis_client, "blue", [invoice(1, "100.00", status="Unpaid", due="2026-03-20")])
    assert store.upsert(redis_client, "blue", [invoice(1, "100.00", status="Unpaid",
                                                       due="2026-03-20")]).unchanged == 1
    assert [(r.n, r.gross) for r in store.read_receivables(redis_client, "blue")] == [(1, 10000)]
    store.upsert(redis_client, "blue", [invoice(1, "100.00", status="Paid")])
    assert store.read_receivables(redis_client, "blue") == []
    cells = store.read_aggregates(redis_client, "blue")
    assert [(c.status, c.n, c.gross) for c in cells] == [("Paid", 1, 10000)]
    # Large amounts stay exact: ten digits of euros, summed over a batch.
    big = "9876543210.98"
    store.upsert(redis_client, "blue", [invoice(2, big), invoice(3, big)])
    total = reports.revenue(redis_client, [SystemRate("blue", Decimal(1))], "EUR",
                            "2026-03", "2026-03")["total"]["gross"]
    assert total == str(Decimal(big) * 2 + 100)
    with pytest.raises(money.AmountPrecisionError):
        store.upsert(redis_client, "blue", [invoice(4, "98765432109.88")])


class CountingRedis(redis.Redis):
    """Counts commands (and the keys they name) that a report sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands = []

    def execute_command(self, *args, **options):
        self.commands.append(args[:2])
        return super().execute_command(*args, **options)


def _load(client, system, scale):
    """Store 10 * scale invoices over the same cells whose totals do not depend on scale."""
    batch = []
    for i in range(10 * scale):
        month = 1 + i % 10
        batch.append(invoice(i + 1, str(Decimal(1000 * (month + 1)) / scale),
                             date=f"2025-{month:02d}-15", tax="0",
                             status="Paid" if month % 3 else "Unpaid",
                             due=f"2025-{month:02d}-28"))
        if len(batch) == 500:
            store.upsert(client, system, batch)
            batch = []
    store.upsert(client, system, batch)


@pytest.mark.parametrize("report", ["revenue", "receivables", "forecast"])
def test_report_cost_is_flat_in_the_number_of_invoices(valkey, redis_client, report):
    results, costs = [], []
    for scale in (1, 1000):
        redis_client.flushall()
        _load(redis_client, "blue", scale)
        assert store.count(redis_client, "blue") == 10 * scale
        counting = CountingRedis.from_url(valkey.url, decode_responses=True)
        rates = [SystemRate("blue", Decimal("1.2345"))]
        today = dt.date(2026, 1, 5)
        if report == "revenue":
            out = reports.revenue(counting, rates, "EUR", "2025-01", "2025-12", today=today)
        elif report == "receivables":
            out = reports.receivables(counting, rates, "EUR", today=today)
        else:
            out = reports.forecast(counting, rates, "EUR", 6, today=today)
        results.append({k: v for k, v in out.items() if k not in ("rows", "history")}
                       | {"rows": [{k: v for k, v in r.items() if k != "invoices"}
                                   for r in out.get("rows", [])]})
        costs.append(list(counting.commands))
    # Same money (counts differ by the scale, amounts do not), same commands on the same keys.
    assert results[0]["total"].get("gross") == results[1]["total"].get("gross")
    assert results[0]["rows"] == results[1]["rows"]
    assert costs[0] == costs[1]
    assert not any(cmd[0] in ("HSCAN", "HGET") and "invoices" in str(cmd) for cmd in costs[1])


def test_forecast_states_its_method_and_projects_the_trend(redis_client):
    # Paid revenue grows by 10.00 a month over 2025: the trend continues into 2026.
    store.upsert(redis_client, "blue", [
        invoice(m, f"{100 + 10 * m}.00", date=f"2025-{m:02d}-05") for m in range(1, 13)
    ] + [invoice(50, "40.00", status="Unpaid", due="2025-12-20"),
         invoice(51, "60.00", status="Unpaid", due="2026-03-01")])
    out = reports.forecast(redis_client, [SystemRate("blue", Decimal(1))], "EUR", 3,
                           today=dt.date(2026, 1, 15))
    assert "Least-squares linear trend" in out["method"]["revenue"]
    assert out["method"]["trend_per_month"] == "10.00"
    assert out["rows"] == [
        {"month": "2026-01", "revenue": "230.00", "collections": "40.00"},  # overdue -> now
        {"month": "2026-02", "revenue": "240.00", "collections": "0.00"},
        {"month": "2026-03", "revenue": "250.00", "collections": "60.00"},
    ]


def test_receivables_buckets_by_days_past_due(redis_client):
    store.upsert(redis_client, "blue", [
        invoice(1, "10.00", status="Unpaid", due="2026-02-01"),   # not due
        invoice(2, "20.00", status="Unpaid", due="2026-01-10"),   # 5 days late
        invoice(3, "30.00", status="Unpaid", due="2025-10-01"),   # over 90
        invoice(4, "99.00", status="Paid"),
    ])
    out = reports.receivables(redis_client, [SystemRate("blue", Decimal(2))], "EUR",
                              today=dt.date(2026, 1, 15))
    buckets = {b["key"]: b["gross"] for b in out["buckets"]}
    assert buckets == {"not_due": "20.00", "1-30": "40.00", "31-60": "0.00", "61-90": "0.00",
                       "over_90": "60.00", "no_due_date": "0.00"}
    assert out["total"] == {"invoices": 3, "gross": "120.00"}


@pytest.mark.parametrize("args", [
    {"start": "2026-13"}, {"end": "26-01"}, {"start": "2026-05", "end": "2026-01"},
    {"by": "week"},
])
def test_revenue_rejects_bad_input(redis_client, args):
    with pytest.raises(InvalidInput):
        reports.revenue(redis_client, [], "EUR", **args)


@pytest.mark.parametrize("months", [0, 25, -1])
def test_forecast_rejects_months_out_of_range(redis_client, months):
    with pytest.raises(InvalidInput):
        reports.forecast(redis_client, [], "EUR", months)
