"""How many issued numbers are still unconfirmed past the grace time — cheaply, per scrape.

``numbering.ledger.gaps`` answers this for one period by reading all of it: right for an
auditor, too slow for every Prometheus scrape once years of numbers pile up. Here each
(sequence, period) keeps two small things under the sequence's hash tag:

- a scan cursor: the highest number whose status was looked at; each refresh reads at most
  ``SCAN_BUDGET`` newer ledger entries, so new numbers are looked at once;
- a sorted set of the numbers seen still ``issued``, scored by issue time. A refresh re-reads
  only those older than the grace time, drops the ones since confirmed or voided, and counts
  the rest.

So a refresh costs the numbers issued since the last one (bounded by the budget) plus the
numbers genuinely unconfirmed — never the history. Concurrent refreshes are harmless: adding
a number twice or moving the cursor back only repeats work. Numbering writes nothing here;
the allocation path is untouched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis

from coordinator import clock, keys
from coordinator.numbering import ledger, sequences

SCAN_BUDGET = 5000
"""Ledger entries one refresh reads at most (over all periods); the rest wait for the next."""

RECHECK_LIMIT = 10_000
"""Past-grace numbers re-read per period and refresh; more than that counts as that many."""


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def refresh(client: redis.Redis, grace_seconds: int, now: datetime | None = None) -> dict[str, int]:
    """Bring the index up to date; return unconfirmed-past-grace counts per sequence."""
    return {name: count for name, (count, _) in refresh_with_backlog(
        client, grace_seconds, now).items()}


def refresh_with_backlog(
    client: redis.Redis, grace_seconds: int, now: datetime | None = None
) -> dict[str, tuple[int, int]]:
    """Like :func:`refresh`, also returning per sequence the numbers not yet looked at.

    The backlog is non-zero only while the index catches up with a long ledger (the first
    scrapes after an upgrade): until then the count may be too low, and says so.
    """
    now = now or clock.utcnow()
    cutoff = now.timestamp() - grace_seconds
    budget = SCAN_BUDGET
    found: dict[str, tuple[int, int]] = {}
    for name in sequences.SEQUENCES:
        count = backlog = 0
        for period in ledger.periods(client, name):
            budget, left = _scan(client, name, period, budget)
            backlog += left
            count += _recheck(client, name, period, cutoff)
        found[name] = (count, backlog)
    return found


def _scan(client: redis.Redis, name: str, period: str, budget: int) -> tuple[int, int]:
    """Look at the numbers issued since the cursor; return the budget and numbers left."""
    cursor_key = keys.seq_unconfirmed_scan(name, period)
    cursor = int(client.get(cursor_key) or 0)
    while budget > 0:
        entries = ledger.list_ledger(client, name, period, cursor, min(budget, ledger.MAX_PAGE))
        if not entries:
            break
        budget -= len(entries)
        issued = {str(e["number"]): _epoch(e["issued_at"]) for e in entries
                  if e.get("status") == "issued"}
        cursor = entries[-1]["number"]
        with client.pipeline(transaction=False) as pipe:
            if issued:
                pipe.zadd(keys.seq_unconfirmed(name, period), issued)
            pipe.set(cursor_key, cursor)
            pipe.execute()
    if budget > 0:
        return budget, 0
    return 0, client.zcount(keys.seq_ledger_order(name, period), f"({cursor}", "+inf")


def _recheck(client: redis.Redis, name: str, period: str, cutoff: float) -> int:
    """Drop settled numbers older than the cutoff from the set; count those still issued."""
    pending_key = keys.seq_unconfirmed(name, period)
    old = client.zrangebyscore(pending_key, "-inf", cutoff, start=0, num=RECHECK_LIMIT)
    if not old:
        return 0
    raws = client.hmget(keys.seq_ledger(name, period), old)
    settled = [number for number, raw in zip(old, raws, strict=True)
               if raw is None or json.loads(raw).get("status") != "issued"]
    if settled:
        client.zrem(pending_key, *settled)
    return len(old) - len(settled)
