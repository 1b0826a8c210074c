"""Compact the ledger, off the request path: old sealed events into archived blocks, and the
entries of settled numbers into settled blocks (``numbering.settled``, :func:`run`).

The events and hashes of a sequence's chain live in two Redis lists, ~250 bytes per event.
Compaction packs the oldest sealed ones, ``LEDGER_ARCHIVE_BLOCK`` at a time, into one string
key per block (``numbering.blocks``: hash prefixes, events zlib-compressed), leaving
the newest ``LEDGER_ARCHIVE_KEEP`` sealed events, and every unsealed one, in the lists as they
are. Each block moves in one script (``compact.lua``) that writes it only when the lists still
hold, at those indexes, exactly what was packed, right after what is archived already; their
places in the lists keep an empty string each, so no index changes for anything that appends
or seals (an event's ``seq`` is still its index). A block is packed only when its events
re-verify against the chain, so compaction never buries an event that ``verify`` would name.

Run by the scheduler's tick and by ``invoice-sync ledger compact``; never on a request. It is
idempotent and crash-safe: a run killed between blocks leaves whole blocks and untouched lists;
two runs at once both find the second write stale and read again. ``chain.chained`` reads the
blocks, then the lists, so verify, export and checkpoints see one chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis

from coordinator import defaults, keys
from coordinator.clock import utcnow
from coordinator.numbering import blocks, chain, scripts, settled
from coordinator.numbering.sequences import DEFAULT_SERIES, SEQUENCES, check_name

MAX_BLOCK = 5000
"""Largest block: its script passes every number or event of it as one Lua call's arguments."""


def compact(
    client: redis.Redis, sequence: str, *, series: str = DEFAULT_SERIES,
    block: int = defaults.LEDGER_ARCHIVE_BLOCK, keep: int = defaults.LEDGER_ARCHIVE_KEEP,
) -> int:
    """Archive every whole block of ``block`` sealed events that leaves ``keep`` sealed events
    (at least one) in the lists; return how many events this call archived.

    Stops at an event that does not re-verify (``verify`` names it) and when nothing more fits.
    """
    check_name(sequence)
    if block <= 0:
        return 0
    events_key, chain_key = keys.seq_events(sequence, series), keys.seq_chain(sequence, series)
    archived_key = keys.seq_archived(sequence, series)
    moved = 0
    while True:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(archived_key, "events", "head")
        pipe.llen(chain_key)
        (start, head), sealed = pipe.execute()
        start = int(start or 0)
        if sealed - max(keep, 1) - start < block:
            return moved
        pipe = client.pipeline(transaction=False)
        pipe.lrange(events_key, start, start + block - 1)
        pipe.lrange(chain_key, start, start + block - 1)
        raws, hashes = pipe.execute()
        if not _verifies(raws, hashes, start, head or chain.GENESIS):
            return moved
        digest = hashlib.sha1(("".join(f"{raw}\n" for raw in raws)
                               + "".join(f"{h}\n" for h in hashes)).encode()).hexdigest()
        reply = scripts.COMPACT(
            client, [events_key, chain_key, archived_key,
                     keys.seq_block(sequence, start, series)],
            [start, block, digest, blocks.pack(start, raws, hashes), hashes[-1]])
        if reply[0] == "ok":
            moved += block
        elif reply[0] != "stale":
            return moved  # the lists changed under us or the chain is shorter: try next tick


def _verifies(raws: list[str], hashes: list[str], start: int, prev: str) -> bool:
    """Whether ``raws`` from index ``start`` chain from ``prev`` to exactly ``hashes``."""
    records = ((start + offset, raw, stored)
               for offset, (raw, stored) in enumerate(zip(raws, hashes, strict=False)))
    for index, raw, stored in records:
        if chain.check_one(index, raw, stored, prev) is not None:
            return False
        prev = stored
    return len(raws) == len(hashes)


def run(client: redis.Redis, sequence: str, config: Mapping[str, Any], *,
        series: str = DEFAULT_SERIES, now: datetime | None = None) -> dict[str, int]:
    """Compact one sequence with the settings of ``config``: its chain (:func:`compact`) and
    the settled entries of every period (``numbering.settled``); say how many of each moved."""
    block = min(int(config.get("LEDGER_ARCHIVE_BLOCK", defaults.LEDGER_ARCHIVE_BLOCK) or 0),
                MAX_BLOCK)
    keep = int(config.get("LEDGER_ARCHIVE_KEEP", defaults.LEDGER_ARCHIVE_KEEP) or 0)
    after = int(config.get("LEDGER_SETTLE_AFTER_SECONDS",
                           defaults.LEDGER_SETTLE_AFTER_SECONDS))
    now = now or utcnow()
    entries = sum(settled.settle(client, sequence, period, now, series=series, block=block,
                                 keep=keep, after_seconds=after)
                  for period in sorted(client.smembers(keys.seq_periods(sequence, series))))
    return {"events": compact(client, sequence, series=series, block=block, keep=keep),
            "entries": entries}


def due(client: redis.Redis, config: Mapping[str, Any]) -> list[str]:
    """Compact every sequence of every series (the scheduler's tick); return
    ``series/sequence`` of each that moved something now."""
    from coordinator.numbering import series as series_mod

    done = []
    for series in [found["name"] for found in series_mod.list_series(client)]:
        for sequence in SEQUENCES:
            if any(run(client, sequence, config, series=series).values()):
                done.append(f"{series}/{sequence}")
    return done
