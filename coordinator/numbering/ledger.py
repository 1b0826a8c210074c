"""Read the ledger: issued numbers in order, and the gaps a tax auditor asks about."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import utcnow
from coordinator.numbering import settled
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
    raws = client.hmget(keys.seq_ledger(sequence, period, series), numbers) if numbers else []
    # Entries moved into settled blocks (numbering/settled.py), merged in number order; an
    # entry brought back into the hash is read from there.
    merged = dict(settled.page(client, sequence, period, after, limit, series=series))
    merged.update(zip((int(n) for n in numbers), raws, strict=True))
    entries = []
    for number, raw in sorted(merged.items())[:limit]:
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
    full: bool = False,
) -> list[dict[str, Any]]:
    """List every number of ``period`` an auditor would ask about, in number order.

    ``void`` (with reason), ``unconfirmed`` (issued longer than ``grace_seconds`` ago),
    ``skipped`` (an admin raised next_number; explained by the audit log) and ``missing``
    (numbers taken from the counter without a ledger entry — impossible unless data was lost).

    Reads only the gaps, kept indexed as they happen (the voids by the void itself, skips by the
    settings change, issued numbers by ``numbering.pending``), plus a few counts that would
    show lost data; only when those counts disagree (or with ``full``) does it walk the whole
    period, the one way to place the hole. So its cost follows the gaps, not the history.
    """
    check_name(sequence)
    now = now or utcnow()
    # A skip entry's ``next`` is the number the sequence went on with: the counter it was moved
    # to plus the increment (2 in a series counting by two), not plus one.
    step = int(client.hget(keys.seq_settings(sequence, series), "increment") or 1)
    if full or not _consistent(client, sequence, period, series):
        return _walk(client, sequence, period, grace_seconds, now, series, step)
    return _indexed(client, sequence, period, grace_seconds, now, series, step)


def _consistent(client: redis.Redis, sequence: str, period: str, series: str) -> bool:
    """Whether the counts agree: as many ledger entries as ordered numbers in ``period``, and
    as many ordered numbers in all periods as the sequence ever issued (``stats``); and every
    settled block of ``period`` is there (a lost one changes no count)."""
    every = periods(client, sequence, series=series)
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.seq_stats(sequence, series), "issued")
    pipe.hlen(keys.seq_ledger(sequence, period, series))
    for each in every:
        pipe.zcard(keys.seq_ledger_order(sequence, each, series))
        pipe.hget(keys.seq_settled(sequence, each, series), "count")
    issued, entries, *counts = pipe.execute()
    ordered, moved = counts[0::2], [int(n or 0) for n in counts[1::2]]
    here = ordered[every.index(period)] if period in every else 0
    return (entries == here and int(issued or 0) == sum(ordered) + sum(moved)
            and not settled.blocks_lost(client, sequence, period, series=series))


def _base(entry: dict[str, Any]) -> dict[str, Any]:
    return {"id": entry["id"], "number": int(entry["number"]), "formatted": entry["formatted"],
            "system": entry["system"], "document": entry["document"],
            "reference": entry["reference"], "issued_at": entry["issued_at"]}


def _void(entry: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "void", **_base(entry), "reason": entry["void_reason"],
            "voided_at": entry["voided_at"], "voided_by": entry["voided_by"],
            **({"reissued_as": entry["reissued_as"]} if "reissued_as" in entry else {})}


def _unconfirmed(entry: dict[str, Any], now: datetime) -> dict[str, Any]:
    issued = datetime.fromisoformat(entry["issued_at"])  # 3.11+ reads clock.iso's "Z"
    return {"kind": "unconfirmed", **_base(entry),
            "age_seconds": int((now - issued).total_seconds())}


def _indexed(client: redis.Redis, sequence: str, period: str, grace_seconds: int,
             now: datetime, series: str, step: int) -> list[dict[str, Any]]:
    from coordinator.numbering import pending

    ledger_key, voids_key = (keys.seq_ledger(sequence, period, series),
                             keys.seq_voids(sequence, period, series))
    if not client.exists(keys.seq_gap_index(sequence, period, series)):
        _backfill_voids(client, sequence, period, series)
    found: list[tuple[tuple[int, int], dict[str, Any]]] = []
    voided = client.zrange(voids_key, 0, -1)
    for raw in client.hmget(ledger_key, voided) if voided else []:
        if raw is not None:
            entry = json.loads(raw)
            found.append(((int(entry["number"]), 0), _void(entry)))
    pending.catch_up(client, series, sequence, period)
    cutoff = now.timestamp() - grace_seconds
    for number, raw in pending.recheck(client, series, sequence, period, cutoff, None):
        found.append(((int(number), 0), _unconfirmed(json.loads(raw), now)))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.seq_skips(sequence, period, series))
    pipe.get(keys.seq_counter(sequence, period, series))
    pipe.zrange(keys.seq_ledger_order(sequence, period, series), -1, -1)
    raw_skips, counter, last = pipe.execute()
    skips = {int(k): int(v) for k, v in raw_skips.items()}
    for start, moved_to in skips.items():
        found.append(((start, 1), _skipped(start, moved_to, step)))
    # Lost data at the end: the counter past the last number, and no skip to explain it.
    expected = int(last[0]) if last else 0
    while expected in skips and expected < int(counter or 0):
        expected = skips[expected]
    if expected < int(counter or 0):
        found.append(((expected, 2), {"kind": "missing", "after": expected,
                                      "before": int(counter) + 1}))
    return [gap for _, gap in sorted(found, key=lambda item: item[0])]


def _backfill_voids(client: redis.Redis, sequence: str, period: str, series: str) -> None:
    """Index the voids of a period made before the index existed (once per period)."""
    after = 0
    while True:
        page = _page_raw(client, sequence, period, after, MAX_PAGE, series)
        voided = {str(e["number"]): e["number"] for e in page if e.get("status") == "void"}
        if voided:
            client.zadd(keys.seq_voids(sequence, period, series), voided)
        if len(page) < MAX_PAGE:
            break
        after = page[-1]["number"]
    client.set(keys.seq_gap_index(sequence, period, series), "1")


SKIP_EXPLANATION = "next_number raised by an admin (see the audit)"
"""Why a skipped range is not a gap in the numbering."""


def _skipped(after: int, moved_to: int, step: int) -> dict[str, Any]:
    """The gap of an admin's raise: numbers between ``after`` and ``next`` were never issued."""
    return {"kind": "skipped", "after": after, "next": moved_to + step,
            "explanation": SKIP_EXPLANATION}


def _walk(client: redis.Redis, sequence: str, period: str, grace_seconds: int, now: datetime,
          series: str, step: int) -> list[dict[str, Any]]:
    """The gap report by reading every entry of the period (places lost numbers too)."""
    skips = {int(k): int(v)
             for k, v in client.hgetall(keys.seq_skips(sequence, period, series)).items()}
    counter = int(client.get(keys.seq_counter(sequence, period, series)) or 0)
    found: list[dict[str, Any]] = []
    expected = 0

    def follow_skips(upto: int) -> None:
        nonlocal expected
        while expected in skips and expected < upto:
            found.append(_skipped(expected, skips[expected], step))
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
            if entry["status"] == "void":
                found.append(_void(entry))
            elif entry["status"] == "issued":
                gap = _unconfirmed(entry, now)
                if gap["age_seconds"] >= grace_seconds:
                    found.append(gap)
        if len(page) < MAX_PAGE:
            break
        after = page[-1]["number"]
    follow_skips(counter)
    if expected < counter:
        found.append({"kind": "missing", "after": expected, "before": counter + 1})
    return found
