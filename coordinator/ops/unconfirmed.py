"""How many issued numbers are still unconfirmed past the grace time, in every series — cheaply,
per scrape, and as the scheduler's warning.

The index is ``numbering.pending`` (a scan cursor and a sorted set of the numbers seen still
``issued`` per period): a refresh reads at most ``SCAN_BUDGET`` ledger entries issued since the
last one, plus the numbers genuinely unconfirmed — never the history. Numbering writes nothing
here; the allocation path is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from coordinator import clock, keys
from coordinator.numbering import ledger, sequences
from coordinator.numbering import pending as pending_index
from coordinator.numbering import series as series_mod
from coordinator.numbering.sequences import DEFAULT_SERIES

SCAN_BUDGET = 5000
"""Ledger entries one refresh reads at most (over all periods); the rest wait for the next."""

EXAMPLES = 3
"""Ids of unconfirmed numbers a warning names (the oldest)."""


def refresh(client: redis.Redis, grace_seconds: int, now: datetime | None = None, *,
            series: str = DEFAULT_SERIES) -> dict[str, int]:
    """Bring the index of ``series`` up to date; return unconfirmed-past-grace counts per
    sequence."""
    found = refresh_all(client, grace_seconds, now, only=series)
    return {name: found[(series, name)].count for name in sequences.SEQUENCES}


def refresh_with_backlog(
    client: redis.Redis, grace_seconds: int, now: datetime | None = None, *,
    series: str = DEFAULT_SERIES,
) -> dict[str, tuple[int, int]]:
    """Like :func:`refresh`, also returning per sequence the numbers not yet looked at."""
    found = refresh_all(client, grace_seconds, now, only=series)
    return {name: (found[(series, name)].count, found[(series, name)].backlog)
            for name in sequences.SEQUENCES}


@dataclass(frozen=True)
class Pending:
    """What one sequence of one series has unconfirmed past the grace time."""

    count: int
    """Numbers issued before the grace time and still neither confirmed nor voided."""
    backlog: int
    """Ledger entries not looked at yet: non-zero only while the index catches up with a long
    ledger (the first refreshes after an upgrade); until then ``count`` may be too low."""
    examples: tuple[str, ...] = ()
    """Ids of a few of them, oldest first."""


def refresh_all(
    client: redis.Redis, grace_seconds: int, now: datetime | None = None, *,
    only: str | None = None,
) -> dict[tuple[str, str], Pending]:
    """Bring the index of every series (or ``only`` one) up to date; return, per (series,
    sequence), what is unconfirmed past the grace time. One ``SCAN_BUDGET`` for them all."""
    now = now or clock.utcnow()
    cutoff = now.timestamp() - grace_seconds
    budget = SCAN_BUDGET
    found: dict[tuple[str, str], Pending] = {}
    names = [only] if only else [s["name"] for s in series_mod.list_series(client)]
    for series in names:
        for name in sequences.SEQUENCES:
            backlog, pending = 0, []
            for period in ledger.periods(client, name, series=series):
                budget, left = pending_index.scan(client, series, name, period, budget)
                backlog += left
                pending += [ledger.allocation_id(series, name, period, number)
                            for number, _ in pending_index.recheck(client, series, name, period,
                                                                   cutoff)]
            found[(series, name)] = Pending(len(pending), backlog, tuple(pending[:EXAMPLES]))
    return found


def warn(client: redis.Redis, config: Mapping[str, Any],
         now: datetime | None = None) -> list[str]:
    """Raise (or renew) a warning for each series' sequence with numbers unconfirmed past the
    grace time, at most once per ``UNCONFIRMED_CHECK_SECONDS`` whatever the schedulers.

    The scheduler's job, so an operator learns of them without asking for the gap report (as
    WHMCS numbering modules warn of gaps). Returns the ids of the warnings raised now.
    """
    from coordinator.warnings import store

    interval = int(config.get("UNCONFIRMED_CHECK_SECONDS") or 0)
    if interval <= 0 or not client.set(keys.UNCONFIRMED_CHECK, "1", nx=True, ex=interval):
        return []
    grace = int(config["UNCONFIRMED_GRACE_SECONDS"])
    raised = []
    for (series, name), pending in sorted(refresh_all(client, grace, now).items()):
        if not pending.count:
            continue
        message = (f"{pending.count} {name} number(s) of series {series!r} issued more than "
                   f"{grace} s ago are neither confirmed nor voided (oldest: "
                   f"{', '.join(pending.examples)}): WHMCS may never have received them. "
                   f"See GET /v1/series/{series}/sequences/{name}/gaps; confirm or void each")
        raised.append(store.raise_warning(client, store.UNCONFIRMED_NUMBERS, message,
                                          detail=f"{series}/{name}"))
    return raised
