"""Settled ledger entries: confirmed numbers that will not change, kept compressed.

A ledger entry lives in ``{ser:R}:S:ledger:<P>`` (JSON, ~300 bytes) with its number in the
period's ``ledger-order`` sorted set, ~470 bytes a number in all. Once a number is confirmed
and older than ``LEDGER_SETTLE_AFTER_SECONDS``, :func:`settle` (the scheduler's compaction and
``invoice-sync ledger compact``, never a request) moves its entry, ``LEDGER_ARCHIVE_BLOCK``
numbers of a period at a time, into one zlib-compressed string (``settled-block:<P>:<first>``,
indexed in ``settled-blocks:<P>``), in one script (``settle.lua``) that moves only entries still
exactly as packed. Numbers still issued, voided ones (reissue and the gap report read them)
and the newest ``LEDGER_ARCHIVE_KEEP`` numbers of each period stay in the hash as they were.

Nothing else changes: an entry is the same JSON whether read from the hash or from a block.
Readers (``ledger`` pages, ``allocation.get``, an allocation's replay, recover) look in the
hash, then in the blocks (:func:`find`, :func:`page`). What changes an entry (an admin voiding
a confirmed number: ``transition.lua``) first brings it back into the hash (:func:`unsettle`,
idempotent); the block's copy is then ignored. ``count`` in ``settled:<P>`` says how many
entries live only in blocks, so the counts that would show lost data still add up.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from datetime import datetime

import redis
from redis.client import NEVER_DECODE

from coordinator import defaults, keys
from coordinator.numbering import scripts

SETTLED = "confirmed"
"""The one status whose entries are settled (moved out of the hash once old enough)."""


def _read_block(client: redis.Redis, sequence: str, period: str, first: int,
                series: str) -> list[str]:
    data = client.execute_command("GET", keys.seq_settled_block(sequence, period, first, series),
                                  **{NEVER_DECODE: True})
    try:
        return zlib.decompress(data).decode("utf-8").splitlines() if data else []
    except (zlib.error, UnicodeDecodeError):
        return []  # damaged: its numbers read as missing (the full gap report, the export)


def _span(member: str) -> tuple[int, int]:
    """The first and last number of a block, from its member ``first:last`` in the index."""
    first, last = member.split(":")
    return int(first), int(last)


def _number(raw: str) -> int | None:
    try:
        return int(json.loads(raw)["number"])
    except (ValueError, KeyError, TypeError):
        return None


def find(client: redis.Redis, sequence: str, period: str, number: int | str, *,
         series: str) -> str | None:
    """Return the settled entry (raw JSON) of ``number`` of ``period``, or None."""
    number = int(number)
    found = client.zrevrangebyscore(keys.seq_settled_blocks(sequence, period, series),
                                    number, "-inf", start=0, num=1)
    if not found:
        return None
    first, last = _span(found[0])
    if number > last:
        return None
    for raw in _read_block(client, sequence, period, first, series):
        if _number(raw) == number:
            return raw
    return None


def page(client: redis.Redis, sequence: str, period: str, after: int, limit: int, *,
         series: str) -> list[tuple[int, str]]:
    """Return up to ``limit`` settled ``(number, raw entry)`` of ``period`` above ``after``."""
    index = keys.seq_settled_blocks(sequence, period, series)
    pipe = client.pipeline(transaction=False)
    pipe.zrevrangebyscore(index, after, "-inf", start=0, num=1)
    pipe.zrangebyscore(index, f"({after}", "+inf")
    below, above = pipe.execute()
    out: list[tuple[int, str]] = []
    for member in below + above:
        first, last = _span(member)
        if last <= after:
            continue
        for raw in _read_block(client, sequence, period, first, series):
            number = _number(raw)
            if number is not None and number > after:
                out.append((number, raw))
                if len(out) >= limit:
                    return out
    return out


def blocks_lost(client: redis.Redis, sequence: str, period: str, *, series: str) -> bool:
    """Whether a settled block that the index of ``period`` names is gone from the store (lost
    data: the gap report then walks the period, where its numbers read as missing)."""
    index = client.zrange(keys.seq_settled_blocks(sequence, period, series), 0, -1)
    named = [keys.seq_settled_block(sequence, period, _span(member)[0], series)
             for member in index]
    return bool(named) and client.exists(*named) != len(named)


def unsettle(client: redis.Redis, sequence: str, period: str, number: int | str, *,
             series: str) -> bool:
    """Bring a settled entry back into the ledger hash (before a script changes it).

    Returns:
        Whether the entry is in the hash now (False: no such settled entry).
    """
    raw = find(client, sequence, period, number, series=series)
    if raw is None:
        return False
    scripts.UNSETTLE(client, [keys.seq_ledger(sequence, period, series),
                              keys.seq_ledger_order(sequence, period, series),
                              keys.seq_settled(sequence, period, series)], [str(number), raw])
    return True


def settle(
    client: redis.Redis, sequence: str, period: str, now: datetime, *, series: str,
    block: int = defaults.LEDGER_ARCHIVE_BLOCK, keep: int = defaults.LEDGER_ARCHIVE_KEEP,
    after_seconds: int = defaults.LEDGER_SETTLE_AFTER_SECONDS,
) -> int:
    """Move settled entries of ``period`` into blocks of ``block``; return how many moved.

    Looks at the numbers above ``upto`` in order, all but the newest ``keep``: a confirmed
    entry issued at least ``after_seconds`` before ``now`` moves; one still issued or void
    stays (and is passed over); a confirmed one too recent ends the block (later numbers are
    more recent still). A block is written only when it holds ``block`` entries.
    """
    if block <= 0:
        return 0
    order, ledger_key = (keys.seq_ledger_order(sequence, period, series),
                         keys.seq_ledger(sequence, period, series))
    state_key = keys.seq_settled(sequence, period, series)
    cutoff = now.timestamp() - after_seconds
    moved = 0
    while True:
        upto = client.hget(state_key, "upto") or "0"
        newest = client.zrange(order, -max(keep, 1), -max(keep, 1))
        chosen: list[tuple[str, str]] = []
        last, cursor, young = None, upto, False
        while newest and not young and len(chosen) < block:
            numbers = client.zrangebyscore(order, f"({cursor}", f"({newest[0]}", start=0,
                                           num=1000)
            if not numbers:
                break
            for number, raw in zip(numbers, client.hmget(ledger_key, numbers), strict=True):
                entry = json.loads(raw) if raw is not None else {}
                if entry.get("status") == SETTLED:
                    if _epoch(entry["issued_at"]) > cutoff:
                        young = True
                        break
                    chosen.append((number, raw))
                last = cursor = number
                if len(chosen) == block:
                    break
        if len(chosen) < block:
            return moved
        text = "".join(f"{raw}\n" for _, raw in chosen)
        first = int(chosen[0][0])
        reply = scripts.SETTLE(
            client, [ledger_key, order, state_key,
                     keys.seq_settled_blocks(sequence, period, series),
                     keys.seq_settled_block(sequence, period, first, series),
                     keys.seq_ledger_order_rebuild(sequence, period, series)],
            [upto, last, hashlib.sha1(text.encode()).hexdigest(),
             zlib.compress(text.encode(), 9), first, *(number for number, _ in chosen)])
        if reply[0] == "ok":
            moved += int(reply[1])
        elif reply[0] != "stale":
            return moved  # an entry changed meanwhile (a void): the next tick looks again


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()  # reads the "Z" of clock.iso (3.11+)

