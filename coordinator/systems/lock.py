"""The per-system lock: one registration, move, deletion, purge or migration of a name at once.

Each of those changes a system in several steps, each atomic on its own hash slot (the
registry under ``{auth}``, the series under ``{ser:<series>}``, the forecaster data under
``{sys:<name>}``), so on a Redis Cluster they cannot be one transaction; the lock keeps two of
them from interleaving. redis-py's ``Lock``: SET NX PX, released only by its holder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from coordinator import keys
from coordinator.exceptions import Conflict

LOCK_SECONDS = 30
"""How long a crashed registration, move, deletion or purge can hold a system's lock."""


@contextlib.contextmanager
def system_lock(client: redis.Redis, name: str, *, wait: float = 0) -> Iterator[None]:
    """Hold the lock of system ``name``, waiting up to ``wait`` seconds, or raise Conflict."""
    lock = client.lock(keys.system_series_lock(name), timeout=LOCK_SECONDS,
                       blocking=wait > 0, blocking_timeout=wait or None)
    if not lock.acquire():
        raise Conflict(f"System {name!r} is being registered, moved or deleted; retry")
    try:
        yield
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()
