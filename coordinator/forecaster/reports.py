"""Revenue, receivables and forecast — read from the aggregates only.

Every report reads a few small hashes per system (their size depends on months, statuses and
currencies, never on the number of invoices), converts minor units to Decimal, multiplies by the
system's exchange rate exactly and rounds **once**, at the end, each reported figure to the base
currency's minor unit with ``ROUND_HALF_EVEN`` (``money.ROUNDING``). Totals are rounded from the
exact sum, so a total may differ by a cent from the sum of its rounded rows — as it must, to be
the correctly rounded total.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

import redis

from coordinator.clock import utcnow
from coordinator.exceptions import InvalidInput
from coordinator.forecaster import money, store

PAID = "Paid"
UNPAID = "Unpaid"
ROUNDING_NOTE = "ROUND_HALF_EVEN, once per figure, to the base currency's minor unit"
BUCKETS = (("not_due", None, 0), ("1-30", 1, 30), ("31-60", 31, 60), ("61-90", 61, 90),
           ("over_90", 91, None))
"""Receivables buckets by days past due (``not_due``: due today or later)."""
BY = ("month", "system", "series")
"""How revenue rows can be grouped (a series: every system it numbers, each converted)."""
FORECAST_MAX_MONTHS = 24
HISTORY_MONTHS = 12


@dataclass(frozen=True)
class SystemRate:
    """A system, its exchange rate to the base currency (``1 <system currency> = rate``) and
    the series (legal entity) that numbers its invoices."""

    name: str
    rate: Decimal
    series: str = "default"


@dataclass
class _Sum:
    invoices: int = 0
    net: Decimal = field(default_factory=Decimal)
    tax: Decimal = field(default_factory=Decimal)
    gross: Decimal = field(default_factory=Decimal)

    def add(self, n: int, net: Decimal, tax: Decimal, gross: Decimal) -> None:
        self.invoices += n
        self.net += net
        self.tax += tax
        self.gross += gross

    def out(self, base: str, key: str | None = None) -> dict:
        row = {} if key is None else {"key": key}
        row.update(invoices=self.invoices, net=_fmt(self.net, base), tax=_fmt(self.tax, base),
                   gross=_fmt(self.gross, base))
        return row


def _exact(report: Callable) -> Callable:
    """Run a report in ``money.CONTEXT``: no intermediate rounding anywhere inside it."""

    @functools.wraps(report)
    def wrapper(*args, **kwargs):
        with localcontext(money.CONTEXT):
            return report(*args, **kwargs)

    return wrapper


def _fmt(amount: Decimal, base: str) -> str:
    return money.fmt(money.quantize(amount, base))


def _convert(minor: int, currency: str, rate: Decimal) -> Decimal:
    return money.from_minor(minor, currency) * rate


def month_of(day: dt.date) -> str:
    """Return ``YYYY-MM`` of a date."""
    return f"{day.year:04d}-{day.month:02d}"


def parse_month(value: str, name: str = "month") -> str:
    """Validate ``YYYY-MM``; return it.

    Raises:
        InvalidInput: not a month.
    """
    try:
        dt.date.fromisoformat(f"{value}-01")
        if len(value) != 7:
            raise ValueError
    except (TypeError, ValueError):
        errors = {"query": {name: ["Must be a month, YYYY-MM."]}}
        raise InvalidInput("Validation failed", errors) from None
    return value


def shift_month(month: str, delta: int) -> str:
    """Return the month ``delta`` months after ``month``."""
    year, mon = int(month[:4]), int(month[5:7])
    index = year * 12 + mon - 1 + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months_between(start: str, end: str) -> list[str]:
    """Return every month from ``start`` to ``end`` inclusive."""
    out, month = [], start
    while month <= end:
        out.append(month)
        month = shift_month(month, 1)
    return out


def _mixed(client: redis.Redis, systems: Sequence[SystemRate]) -> list[str]:
    return [s.name for s in systems if len(store.currencies(client, s.name)) > 1]


@_exact
def revenue(
    client: redis.Redis, systems: Sequence[SystemRate], base: str, start: str | None = None,
    end: str | None = None, by: str = "month", *, today: dt.date | None = None,
) -> dict:
    """Revenue of Paid invoices by invoice month (or by system, or by series), in ``base``.

    ``net`` is WHMCS's subtotal, ``tax`` tax + tax2, ``gross`` WHMCS's total; credit notes
    (negative totals) count negative. Default range: the 12 months ending with this one.

    Raises:
        InvalidInput: bad month, ``from`` after ``to``, unknown ``by``.
    """
    if by not in BY:
        raise InvalidInput("Validation failed",
                           {"query": {"by": ["Must be month, system or series."]}})
    end = parse_month(end, "to") if end else month_of(today or utcnow().date())
    start = parse_month(start, "from") if start else shift_month(end, -(HISTORY_MONTHS - 1))
    if start > end:
        raise InvalidInput("Validation failed", {"query": {"from": ["Must not be after 'to'."]}})
    if by == "month":
        keys_order = months_between(start, end)
    elif by == "system":
        keys_order = [s.name for s in systems]
    else:
        keys_order = sorted({s.series for s in systems}, key=lambda name: (name != "default",
                                                                          name))
    rows = {key: _Sum() for key in keys_order}
    total = _Sum()
    for system in systems:
        for cell in store.read_aggregates(client, system.name):
            if cell.status != PAID or not (start <= cell.month <= end):
                continue
            parts = (cell.n, *(_convert(v, cell.currency, system.rate)
                               for v in (cell.net, cell.tax, cell.gross)))
            row = {"month": cell.month, "system": system.name, "series": system.series}[by]
            rows[row].add(*parts)
            total.add(*parts)
    return {
        "currency": base, "from": start, "to": end, "by": by,
        "rows": [rows[key].out(base, key) for key in keys_order],
        "total": total.out(base),
        "rounding": ROUNDING_NOTE,
        "mixed_currency_systems": _mixed(client, systems),
    }


@_exact
def receivables(
    client: redis.Redis, systems: Sequence[SystemRate], base: str, *, today: dt.date | None = None,
) -> dict:
    """Open receivables — Unpaid invoices, overdue included — by days past due, due month, system.

    Amounts are WHMCS's invoice totals (GetInvoices does not report partial payments).
    """
    today = today or utcnow().date()
    buckets = {name: _Sum() for name, _, _ in BUCKETS}
    buckets["no_due_date"] = _Sum()
    by_month: dict[str, _Sum] = {}
    by_system = {s.name: _Sum() for s in systems}
    total = _Sum()
    for system in systems:
        for cell in store.read_receivables(client, system.name):
            gross = _convert(cell.gross, cell.currency, system.rate)
            parts = (cell.n, Decimal(0), Decimal(0), gross)
            if cell.due is None:
                bucket = "no_due_date"
            else:
                late = (today - cell.due).days
                bucket = next(name for name, low, high in BUCKETS
                              if (low is None or late >= low) and (high is None or late <= high))
                by_month.setdefault(month_of(cell.due), _Sum()).add(*parts)
            buckets[bucket].add(*parts)
            by_system[system.name].add(*parts)
            total.add(*parts)

    def slim(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ("net", "tax")}

    return {
        "currency": base, "as_of": today.isoformat(), "status": UNPAID,
        "buckets": [slim(buckets[k].out(base, k)) for k in buckets],
        "by_due_month": [slim(by_month[k].out(base, k)) for k in sorted(by_month)],
        "by_system": [slim(by_system[k].out(base, k)) for k in by_system],
        "total": slim(total.out(base)),
        "rounding": ROUNDING_NOTE,
        "mixed_currency_systems": _mixed(client, systems),
    }


def _trend(values: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    """Least-squares line through ``values`` at x = 0..n-1; return (intercept, slope)."""
    ctx = money.CONTEXT
    n = len(values)
    x_mean = Decimal(n - 1) / 2
    y_mean = ctx.divide(sum(values, Decimal(0)), Decimal(n))
    sxx = sum(((Decimal(x) - x_mean) ** 2 for x in range(n)), Decimal(0))
    sxy = sum(((Decimal(x) - x_mean) * (y - y_mean) for x, y in enumerate(values)), Decimal(0))
    slope = ctx.divide(sxy, sxx) if sxx else Decimal(0)
    return y_mean - slope * x_mean, slope


@_exact
def forecast(
    client: redis.Redis, systems: Sequence[SystemRate], base: str, months: int = 6,
    *, today: dt.date | None = None,
) -> dict:
    """Forecast revenue and collections for ``months`` months, starting with the current one.

    Raises:
        InvalidInput: ``months`` outside 1..FORECAST_MAX_MONTHS.
    """
    if not isinstance(months, int) or not 1 <= months <= FORECAST_MAX_MONTHS:
        raise InvalidInput("Validation failed", {"query": {"months": [
            f"Must be between 1 and {FORECAST_MAX_MONTHS}."]}})
    today = today or utcnow().date()
    current = month_of(today)
    hist_start, hist_end = shift_month(current, -HISTORY_MONTHS), shift_month(current, -1)
    history = revenue(client, systems, base, hist_start, hist_end, "month", today=today)
    exact = {m: _Sum() for m in months_between(hist_start, hist_end)}
    for system in systems:
        for cell in store.read_aggregates(client, system.name):
            if cell.status == PAID and cell.month in exact:
                exact[cell.month].add(cell.n, Decimal(0), Decimal(0),
                                      _convert(cell.gross, cell.currency, system.rate))
    intercept, slope = _trend([s.gross for s in exact.values()])
    horizon = [shift_month(current, i) for i in range(months)]
    collections = {m: Decimal(0) for m in horizon}
    for system in systems:
        for cell in store.read_receivables(client, system.name):
            month = month_of(cell.due) if cell.due else current
            month = max(month, current)
            if month in collections:
                collections[month] += _convert(cell.gross, cell.currency, system.rate)
    rows, total_rev, total_col = [], Decimal(0), Decimal(0)
    for i, month in enumerate(horizon):
        predicted = max(Decimal(0), intercept + slope * (HISTORY_MONTHS + i))
        total_rev += predicted
        total_col += collections[month]
        rows.append({"month": month, "revenue": _fmt(predicted, base),
                     "collections": _fmt(collections[month], base)})
    return {
        "currency": base, "months": months, "from": horizon[0], "to": horizon[-1],
        "method": {
            "revenue": (
                f"Least-squares linear trend of Paid gross revenue (by invoice month, in {base}) "
                f"over the {HISTORY_MONTHS} complete months {hist_start}..{hist_end}, projected "
                "forward; never below zero."
            ),
            "collections": (
                "Open Unpaid invoice totals by due month; overdue ones and ones without a due "
                "date are expected in the first forecast month."
            ),
            "trend_per_month": _fmt(slope, base),
        },
        "history": history["rows"],
        "rows": rows,
        "total": {"revenue": _fmt(total_rev, base), "collections": _fmt(total_col, base)},
        "rounding": ROUNDING_NOTE,
        "mixed_currency_systems": _mixed(client, systems),
    }


def rates_of(systems: Iterable[dict]) -> list[SystemRate]:
    """Turn registry records (``name``, ``exchange_rate`` as a decimal string, ``series``)
    into rates."""
    return [SystemRate(s["name"], Decimal(str(s["exchange_rate"])), s.get("series", "default"))
            for s in systems]
