"""Numbers issued per hour in every series, read back from the ledgers (no counter on the
allocation path).

Numbers of one period are taken in time order (one INCRBY in one script), so the newest
entries are at the top of each period's ``ledger-order`` set: walking it from the top and
stopping at the first entry older than the window reads only the window's own entries —
never the history before it. ``MAX_ENTRIES`` bounds the walk for very busy installations; the
answer says when it stopped early.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from coordinator import clock, keys
from coordinator.numbering import sequences, series

FIRST_PAGE = 64
"""Entries read first from each period; pages double from there up to :data:`PAGE`."""
PAGE = 1000
MAX_ENTRIES = 100_000
"""Entries read at most per overview (about 2,000 numbers an hour for 48 hours)."""


def _periods_between(start: datetime, end: datetime, reset: str) -> list[str]:
    found, day = [], start.date()
    while day <= end.date():
        period = sequences.period_of(day, reset)
        if period not in found:
            found.append(period)
        day += timedelta(days=1)
    return found


def per_hour(client: redis.Redis, now: datetime | None = None, hours: int = 48) -> dict[str, Any]:
    """Count numbers issued in each of the last ``hours`` hours (every series and sequence,
    UTC).

    Returns:
        ``{"hours": ["2026-11-28T07:00Z", …], "counts": [3, …], "complete": bool}``; the last
        hour is the current, unfinished one.
    """
    now = (now or clock.utcnow()).astimezone(UTC)
    top = now.replace(minute=0, second=0, microsecond=0)
    start = top - timedelta(hours=hours - 1)
    labels = [(start + timedelta(hours=i)) for i in range(hours)]
    counts = dict.fromkeys(labels, 0)
    read, complete = 0, True
    ledgers = [(each["name"], name) for each in series.list_series(client)
               for name in sequences.SEQUENCES]
    for series_name, name in ledgers:
        reset = sequences.read_settings(client, name, series_name)["reset"]
        for period in _periods_between(start, now, reset):
            order = keys.seq_ledger_order(name, period, series_name)
            ledger = keys.seq_ledger(name, period, series_name)
            offset, size = 0, FIRST_PAGE
            while True:
                if read >= MAX_ENTRIES:
                    complete = False
                    break
                numbers = client.zrevrange(order, offset, offset + size - 1)
                if not numbers:
                    break
                read += len(numbers)
                older = False
                for raw in client.hmget(ledger, numbers):
                    if raw is None:
                        continue
                    issued = datetime.strptime(json.loads(raw)["issued_at"],
                                               "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                    hour = issued.replace(minute=0, second=0)
                    if hour < start:
                        older = True
                    elif hour in counts:
                        counts[hour] += 1
                if older or len(numbers) < size:
                    break
                offset += size
                size = min(size * 2, PAGE)
    return {"hours": [h.strftime("%Y-%m-%dT%H:00Z") for h in labels],
            "counts": [counts[h] for h in labels], "complete": complete}
