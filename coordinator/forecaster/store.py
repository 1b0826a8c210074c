"""Invoices and their aggregates in Redis, per system (keys in ``coordinator.keys``).

An invoice is one field of the system's ``invoices`` hash — a compact record, not a key of its
own — so a million invoices cost about a hundred bytes each. Aggregates (per month, status,
currency: count, net, tax, gross) and receivables (Unpaid, per due date and currency) are kept
by ``upsert.lua`` in the same atomic step that writes the records, so reports read a few small
hashes and never the invoices.

Only these fields are stored: WHMCS id, invoicenum, date, duedate, datepaid, status, currency,
subtotal, tax, tax2, credit, total. There is no field for client data (DESIGN invariant 6).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import redis

from agent import WhmcsInvoice
from coordinator import keys
from coordinator.forecaster import defaults, lock, money
from coordinator.lua import LuaScript

_UPSERT = LuaScript.load(__package__, "upsert")

MAX_MINOR = 10**12
"""Largest amount (in minor units) one invoice may carry: ten billion euros. upsert.lua sums a
batch's amounts in Lua doubles, exact below 2**53; this bound keeps every batch far below it."""

LOCK_LOST = "LOCK_LOST"
"""upsert.lua's whole error when the writing sync no longer holds the system's lock."""

@dataclass(frozen=True, slots=True)
class StoredInvoice:
    """One stored invoice, money in integer minor units of ``currency``."""

    id: int
    invoicenum: str
    date: dt.date | None
    duedate: dt.date | None
    datepaid: dt.datetime | None
    status: str
    currency: str
    subtotal: int
    tax: int
    tax2: int
    credit: int
    total: int


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What one batch did: counts of records written, and distinct currencies afterwards."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    currencies: int = 0

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.unchanged + other.unchanged,
            other.currencies,
        )


def _clean(text: str) -> str:
    # "|" separates record fields; status and currency never legitimately contain it.
    return text.replace("|", "/").strip()


def _minor(invoice: WhmcsInvoice, name: str, currency: str, exponent: int) -> str:
    amount = getattr(invoice, name)
    if not amount:
        return "0"  # the most common amount (credit, tax2, often tax), and "-0.00" is 0 too
    scaled = amount.scaleb(exponent)
    text = str(scaled)
    # A whole number of minor units prints as plain digits ("398.94" -> "39894"); anything
    # else ("1.5E+3", "39894.5") goes through int and the exactness check.
    digits = text[1:] if text[0] == "-" else text
    if digits.isdigit() and (len(digits) < 13 or int(digits) <= MAX_MINOR):
        return text
    minor = int(scaled)
    if scaled != minor:
        raise money.AmountPrecisionError(
            f"invoice {invoice.id}: {name} {amount} has more decimals than "
            f"{currency or 'the currency'} allows ({exponent})"
        )
    if not -MAX_MINOR <= minor <= MAX_MINOR:
        raise money.AmountPrecisionError(
            f"invoice {invoice.id}: {name} {amount} is beyond what the forecaster stores exactly"
        )
    return str(minor)


def encode(invoice: WhmcsInvoice) -> str:
    """Return the compact record of ``invoice`` (see upsert.lua for the layout).

    Raises:
        money.AmountPrecisionError: an amount is finer than the currency's minor unit, or
            larger than :data:`MAX_MINOR`.
    """
    currency = _clean(invoice.currencycode).upper()
    exponent = money.exponent(currency)
    date, duedate, paid = invoice.date, invoice.duedate, invoice.datepaid
    # isoformat is C code; strftime is several times slower on the sync's hot path.
    return "|".join(
        (
            date.isoformat().replace("-", "") if date else "",
            duedate.isoformat().replace("-", "") if duedate else "",
            paid.isoformat(" ", "seconds").replace("-", "").replace(":", "").replace(" ", "")
            if paid
            else "",
            _clean(invoice.status),
            currency,
            _minor(invoice, "subtotal", currency, exponent),
            _minor(invoice, "tax", currency, exponent),
            _minor(invoice, "tax2", currency, exponent),
            _minor(invoice, "credit", currency, exponent),
            _minor(invoice, "total", currency, exponent),
            invoice.invoicenum,
        )
    )


def decode(invoice_id: int | str, record: str) -> StoredInvoice:
    """Return the :class:`StoredInvoice` of a record written by :func:`encode`."""
    f = record.split("|", 10)
    return StoredInvoice(
        id=int(invoice_id),
        invoicenum=f[10],
        date=dt.datetime.strptime(f[0], "%Y%m%d").date() if f[0] else None,
        duedate=dt.datetime.strptime(f[1], "%Y%m%d").date() if f[1] else None,
        datepaid=dt.datetime.strptime(f[2], "%Y%m%d%H%M%S") if f[2] else None,
        status=f[3],
        currency=f[4],
        subtotal=int(f[5]),
        tax=int(f[6]),
        tax2=int(f[7]),
        credit=int(f[8]),
        total=int(f[9]),
    )


def _upsert_keys(system: str) -> list[str]:
    return [
        keys.sys_invoices(system),
        keys.sys_aggregates(system),
        keys.sys_receivables(system),
        keys.sys_currencies(system),
        keys.sys_numbers(system),
        keys.sys_numbers_changed(system),
    ]


def write_records(
    client: redis.Redis, system: str, records: Mapping[int, str], *, owner: str | None = None
) -> UpsertResult:
    """Store encoded records (``""`` deletes), ``UPSERT_BATCH`` per atomic script call.

    Args:
        owner: The sync writing. Each call then writes only while that sync holds the system's
            lock, checked in the same script (a fencing token).

    Raises:
        lock.LockLost: ``owner`` does not hold the lock; that call wrote nothing.
    """
    if not records:
        return UpsertResult(currencies=client.hlen(keys.sys_currencies(system)))
    upsert_keys = _upsert_keys(system)
    fence: list[str | bytes] = []
    if owner is not None:
        upsert_keys.append(keys.sys_sync_lock(system))
        fence.append(owner)
    total = UpsertResult()
    items = list(records.items())
    for i in range(0, len(items), defaults.UPSERT_BATCH):
        # One length-prefixed argument per batch (upsert.lua's ARGV[1]): redis-py packs each
        # argument in Python, which cost more than the script itself at two per invoice.
        parts = []
        for invoice_id, record in items[i : i + defaults.UPSERT_BATCH]:
            data = record.encode()
            parts.append(b"%d|%d|%b" % (int(invoice_id), len(data), data))
        try:
            result = _UPSERT(client, keys=upsert_keys, args=[b"".join(parts), *fence])
        except redis.ResponseError as error:
            if str(error) == LOCK_LOST:
                raise lock.LockLost(
                    f"the sync lock of {system!r} is no longer held by sync {owner}"
                ) from None
            raise
        total += UpsertResult(*(int(x) for x in result))
    return total


def upsert(
    client: redis.Redis, system: str, invoices: Iterable[WhmcsInvoice], *,
    owner: str | None = None,
) -> UpsertResult:
    """Store ``invoices`` of ``system``; aggregates move by exactly what changed.

    All records are encoded before anything is written, so a bad amount stores nothing.
    ``owner`` fences the writes as in :func:`write_records`.
    """
    return write_records(client, system, {inv.id: encode(inv) for inv in invoices}, owner=owner)


def delete(
    client: redis.Redis, system: str, invoice_ids: Iterable[int], *, owner: str | None = None
) -> UpsertResult:
    """Remove invoices (deleted in WHMCS) and their contribution to the aggregates.

    ``owner`` fences the deletion as in :func:`write_records`.
    """
    return write_records(client, system, dict.fromkeys(invoice_ids, ""), owner=owner)


def iter_stored(client: redis.Redis, system: str, count: int = 1000) -> Iterator[StoredInvoice]:
    """Yield every stored invoice of ``system`` (HSCAN: no server-side stall, any order)."""
    for invoice_id, record in client.hscan_iter(keys.sys_invoices(system), count=count):
        yield decode(invoice_id, record)


def iter_stored_ids(client: redis.Redis, system: str, count: int = 1000) -> Iterator[int]:
    """Yield the ids of every stored invoice of ``system``."""
    key = keys.sys_invoices(system)
    try:
        # HSCAN NOVALUES (Redis 7.4+, Valkey 8+) spares sending every record.
        first = client.hscan(key, 0, count=count, no_values=True)
    except redis.ResponseError:
        for invoice_id, _ in client.hscan_iter(key, count=count):
            yield int(invoice_id)
        return
    cursor, ids = first
    yield from (int(i) for i in ids)
    while cursor:
        cursor, ids = client.hscan(key, cursor, count=count, no_values=True)
        yield from (int(i) for i in ids)


def get(client: redis.Redis, system: str, invoice_id: int) -> StoredInvoice | None:
    """Return one stored invoice, or None."""
    record = client.hget(keys.sys_invoices(system), int(invoice_id))
    return None if record is None else decode(invoice_id, record)


def count(client: redis.Redis, system: str) -> int:
    """Return how many invoices of ``system`` are stored."""
    return client.hlen(keys.sys_invoices(system))


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One aggregate cell: invoices of a month, status and currency, sums in minor units."""

    month: str
    status: str
    currency: str
    n: int = 0
    net: int = 0
    tax: int = 0
    gross: int = 0


def read_aggregates(client: redis.Redis, system: str) -> list[Aggregate]:
    """Return the system's aggregate cells (one HGETALL; size independent of invoice count)."""
    cells: dict[tuple[str, str, str], dict[str, int]] = {}
    for field, value in client.hgetall(keys.sys_aggregates(system)).items():
        month, status, currency, metric = field.rsplit("|", 3)
        cells.setdefault((month, status, currency), {})[metric] = int(value)
    return [Aggregate(*key, **values) for key, values in sorted(cells.items())]


@dataclass(frozen=True, slots=True)
class Receivable:
    """Unpaid invoices of one due date and currency (``due`` None: no due date)."""

    due: dt.date | None
    currency: str
    n: int = 0
    gross: int = 0


def read_receivables(client: redis.Redis, system: str) -> list[Receivable]:
    """Return the system's open receivables by due date (bounded by the calendar, not invoices)."""
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for field, value in client.hgetall(keys.sys_receivables(system)).items():
        due, currency, metric = field.rsplit("|", 2)
        cells.setdefault((due, currency), {})[metric] = int(value)
    return [
        Receivable(None if due == "none" else dt.date.fromisoformat(due), currency, **values)
        for (due, currency), values in sorted(cells.items())
    ]


def currencies(client: redis.Redis, system: str) -> dict[str, int]:
    """Return currency -> stored invoices of ``system``."""
    return {cur: int(n) for cur, n in client.hgetall(keys.sys_currencies(system)).items()}


def iter_numbers(client: redis.Redis, system: str) -> Iterator[tuple[str, int]]:
    """Yield (invoicenum, invoices carrying it) for every number seen in ``system``'s WHMCS."""
    for number, n in client.hscan_iter(keys.sys_numbers(system), count=1000):
        yield number, int(n)
