"""Read the ledger: issued numbers in order, and the gaps a tax auditor asks about."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import utcnow
from coordinator.numbering.sequences import DEFAULT_SERIES, check_name

MAX_PAGE = 1000
"""Largest ``limit`` of one ledger page."""


def periods(
    client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES
) -> list[str]:
    """Return the periods of ``sequence`` that have numbers or a counter, sorted."""
    check_name(sequence)
    return sorted(client.smembers(keys.seq_periods(sequence, series)))


def allocation_id(series: str, sequence: str, period: str, number: str | int) -> str:
    """Return the id of a number: ``invoice:2026:51``, or ``acme-us/invoice:2026:51``."""
    prefix = "" if series == DEFAULT_SERIES else f"{series}/"
    return f"{prefix}{sequence}:{period}:{number}"


def _page_raw(
    client: redis.Redis, sequence: str, period: str, after: int, limit: int, series: str
) -> list[dict[str, Any]]:
    """Return entries with ``previous`` kept (the counter before each number, for gaps)."""
    numbers = client.zrange(keys.seq_ledger_order(sequence, period, series), f"({after}",
                            "+inf", byscore=True, offset=0, num=limit)
    if not numbers:
        return []
    raws = client.hmget(keys.seq_ledger(sequence, period, series), numbers)
    entries = []
    for number, raw in zip(numbers, raws, strict=True):
        if raw is None:
            # allocate.lua writes both or neither, so this means lost data: show, never hide.
            entries.append({"id": allocation_id(series, sequence, period, number),
                            "number": int(number), "status": "missing", "series": series})
            continue
        entry = json.loads(raw)
        entry["number"] = int(entry["number"])
        entry["previous"] = int(entry.get("previous", 0))
        entry["series"] = series
        entries.append(entry)
    return entries


def list_ledger(
    client: redis.Redis, sequence: str, period: str, after: int = 0, limit: int = 100,
    *, series: str = DEFAULT_SERIES,
) -> list[dict[str, Any]]:
    """Return up to ``limit`` entries of ``period`` with numbers above ``after``, in order.

    The last entry's ``number`` is the cursor (``after``) of the next page.
    """
    check_name(sequence)
    limit = max(1, min(int(limit), MAX_PAGE))
    entries = _page_raw(client, sequence, period, after, limit, series)
    for entry in entries:
        entry.pop("previous", None)
    return entries


def iter_ledger(
    client: redis.Redis, sequence: str, period: str | None = None, page: int = 500,
    *, series: str = DEFAULT_SERIES,
) -> Iterator[dict[str, Any]]:
    """Yield every entry of one period (or of all periods, oldest first), in number order."""
    for each in [period] if period else periods(client, sequence, series=series):
        after = 0
        while True:
            entries = list_ledger(client, sequence, each, after, page, series=series)
            yield from entries
            if len(entries) < page:
                break
            after = entries[-1]["number"]


def gaps(
    client: redis.Redis,
    sequence: str,
    period: str,
    grace_seconds: int,
    now: datetime | None = None,
    *,
    series: str = DEFAULT_SERIES,
) -> list[dict[str, Any]]:
    """List every number of ``period`` an auditor would ask about, in number order.

    ``void`` (with reason), ``unconfirmed`` (issued longer than ``grace_seconds`` ago),
    ``skipped`` (an admin raised next_number; explained by the audit log) and ``missing``
    (numbers taken from the counter without a ledger entry — impossible unless data was lost).
    """
    check_name(sequence)
    now = now or utcnow()
    skips = {int(k): int(v)
             for k, v in client.hgetall(keys.seq_skips(sequence, period, series)).items()}
    counter = int(client.get(keys.seq_counter(sequence, period, series)) or 0)
    found: list[dict[str, Any]] = []
    expected = 0

    def follow_skips(upto: int) -> None:
        nonlocal expected
        while expected in skips and expected < upto:
            found.append({"kind": "skipped", "after": expected, "next": skips[expected] + 1,
                          "explanation": "next_number raised by an admin (see the audit)"})
            expected = skips[expected]

    after = 0
    while True:
        page = _page_raw(client, sequence, period, after, MAX_PAGE, series)
        for entry in page:
            number = entry["number"]
            if entry["status"] == "missing":
                found.append({"kind": "missing", "number": number})
                expected = number
                continue
            follow_skips(entry["previous"])
            if entry["previous"] != expected:
                found.append({"kind": "missing", "after": expected, "before": number})
            expected = number
            base = {"id": entry["id"], "number": number, "formatted": entry["formatted"],
                    "system": entry["system"], "document": entry["document"],
                    "reference": entry["reference"], "issued_at": entry["issued_at"]}
            if entry["status"] == "void":
                found.append({"kind": "void", **base, "reason": entry["void_reason"],
                              "voided_at": entry["voided_at"], "voided_by": entry["voided_by"]})
            elif entry["status"] == "issued":
                issued = datetime.fromisoformat(entry["issued_at"].replace("Z", "+00:00"))
                age = int((now - issued).total_seconds())
                if age >= grace_seconds:
                    found.append({"kind": "unconfirmed", **base, "age_seconds": age})
        if len(page) < MAX_PAGE:
            break
        after = page[-1]["number"]
    follow_skips(counter)
    if expected < counter:
        found.append({"kind": "missing", "after": expected, "before": counter + 1})
    return found
