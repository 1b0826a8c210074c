"""The coordinator's one clock: the current time in UTC, and how it is written down.

Code that needs the time takes it as an argument (``now``/``clock``/``today``) defaulting to
:func:`utcnow`, so a test passes a fixed clock instead of patching a module.

Usage::

    def mark_done(client, sync_id, *, clock: Clock = utcnow): ...
    mark_done(client, sync_id, clock=lambda: dt.datetime(2026, 11, 21, 10, 15, tzinfo=dt.UTC))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
"""A function returning the current time as an aware UTC datetime."""


def utcnow() -> dt.datetime:
    """Return the current time in UTC (the default clock)."""
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """Format a time as API.md writes it: ISO 8601 UTC, to the second (``2026-11-21T10:15:02Z``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
