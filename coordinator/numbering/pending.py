"""The index of numbers still ``issued`` (neither confirmed nor voided), kept without touching
the allocation path, so "unconfirmed past the grace time" costs what is pending, not history.

Per (series, sequence, period), under the series' hash tag:

- a scan cursor (``keys.seq_unconfirmed_scan``): the highest number whose status was looked
  at; each :func:`scan` reads at most ``budget`` newer ledger entries, so every number is
  looked at once;
- a sorted set (``keys.seq_unconfirmed``) of the numbers seen still ``issued``, scored by issue
  time. :func:`recheck` re-reads only those older than a cutoff, drops the ones since confirmed
  or voided, and returns the rest.

Concurrent callers are harmless: adding a number twice or moving the cursor back only repeats
work. Used by the gap report (``ledger.gaps``) and the metrics and warning (``ops.unconfirmed``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis

from coordinator import keys
from coordinator.numbering import ledger

RECHECK_LIMIT = 10_000
"""Past-grace numbers re-read per period and call; more than that counts as that many."""


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def scan(client: redis.Redis, series: str, name: str, period: str,
         budget: int) -> tuple[int, int]:
    """Look at the numbers issued since the cursor; return the budget left and numbers left."""
    cursor_key = keys.seq_unconfirmed_scan(name, period, series)
    cursor = int(client.get(cursor_key) or 0)
    while budget > 0:
        entries = ledger.list_ledger(client, name, period, cursor, min(budget, ledger.MAX_PAGE),
                                     series=series)
        if not entries:
            break
        budget -= len(entries)
        issued = {str(e["number"]): _epoch(e["issued_at"]) for e in entries
                  if e.get("status") == "issued"}
        cursor = entries[-1]["number"]
        with client.pipeline(transaction=False) as pipe:
            if issued:
                pipe.zadd(keys.seq_unconfirmed(name, period, series), issued)
            pipe.set(cursor_key, cursor)
            pipe.execute()
    if budget > 0:
        return budget, 0
    return 0, client.zcount(keys.seq_ledger_order(name, period, series), f"({cursor}", "+inf")


def recheck(client: redis.Redis, series: str, name: str, period: str, cutoff: float,
            limit: int | None = RECHECK_LIMIT) -> list[tuple[str, str]]:
    """Drop settled numbers issued before ``cutoff`` (unix s) from the set; return those still
    issued as ``(number, raw entry)``, oldest first. ``limit``: read at most that many
    (None: all, as the gap report must)."""
    pending_key = keys.seq_unconfirmed(name, period, series)
    old = (client.zrangebyscore(pending_key, "-inf", cutoff) if limit is None else
           client.zrangebyscore(pending_key, "-inf", cutoff, start=0, num=limit))
    if not old:
        return []
    raws = client.hmget(keys.seq_ledger(name, period, series), old)
    settled = {number for number, raw in zip(old, raws, strict=True)
               if raw is None or json.loads(raw).get("status") != "issued"}
    if settled:
        client.zrem(pending_key, *settled)
    return [(number, raw) for number, raw in zip(old, raws, strict=True)
            if number not in settled]


def catch_up(client: redis.Redis, series: str, name: str, period: str) -> None:
    """Scan until every number of the period has been looked at (once each, ever)."""
    while scan(client, series, name, period, ledger.MAX_PAGE * 10)[1]:
        pass
