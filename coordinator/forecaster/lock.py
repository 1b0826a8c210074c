"""One sync per system at a time: a Redis lock owned by the sync's id.

The lock is taken with ``SET NX PX`` when a sync is requested (a second request gets 409), claimed
by the worker that runs it, renewed by a background thread while it runs and released by its owner
only. A worker that dies stops renewing; the lock lapses after ``LOCK_RUNNING_MS`` and the next
sync may start — it redoes what the dead one left unfinished (upserts are idempotent).

A worker that cannot renew (Redis unreachable, a network partition) must assume the lock is gone
once its lease has run out since the last renewal that succeeded: another worker may hold it by
then. :meth:`HeldLock.check` says so; and since a check is never atomic with the write after it,
every write of a sync is also *fenced*: ``upsert.lua`` compares the lock's holder with the sync's
id in the same script that writes or deletes, and refuses (``LOCK_LOST``) when they differ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from coordinator import keys
from coordinator.forecaster import defaults
from coordinator.lua import LuaScript

log = logging.getLogger(__name__)

_CLAIM = LuaScript.load(__package__, "lock_claim")
_RENEW = LuaScript.load(__package__, "lock_renew")
_RELEASE = LuaScript.load(__package__, "lock_release")


def acquire_queued(client: redis.Redis, system: str, sync_id: str) -> bool:
    """Take ``system``'s lock for a sync about to be queued; False if one is queued or running."""
    return bool(
        client.set(keys.sys_sync_lock(system), sync_id, nx=True, px=defaults.LOCK_QUEUED_MS)
    )


def holder(client: redis.Redis, system: str) -> str | None:
    """Return the id of the sync holding ``system``, if any."""
    return client.get(keys.sys_sync_lock(system))


def claim(client: redis.Redis, system: str, sync_id: str, ttl_ms: int) -> bool:
    """Take the lock for a running sync (see lock_claim.lua)."""
    key = keys.sys_sync_lock(system)
    return bool(_CLAIM(client, keys=[key], args=[sync_id, ttl_ms]))


def renew(client: redis.Redis, system: str, sync_id: str, ttl_ms: int) -> bool:
    """Extend the lock if ``sync_id`` still owns it."""
    key = keys.sys_sync_lock(system)
    return bool(_RENEW(client, keys=[key], args=[sync_id, ttl_ms]))


def release(client: redis.Redis, system: str, sync_id: str) -> bool:
    """Free the lock if ``sync_id`` owns it."""
    return release_owned(client, keys.sys_sync_lock(system), sync_id)


def release_owned(client: redis.Redis, key: str, owner: str) -> bool:
    """Delete the lock ``key`` only if ``owner`` still holds it (compare-and-delete, one step)."""
    return bool(_RELEASE(client, keys=[key], args=[owner]))


class LockLost(Exception):
    """The sync lost its lock (Redis unreachable for longer than its lifetime, or taken over)."""


class HeldLock:
    """A claimed lock kept alive by a daemon thread until :meth:`release`.

    Usage::

        with HeldLock(client, "blue", sync_id) as lock:
            for page in pages:
                lock.check()      # raises LockLost: stop writing, another sync may own it
                ...

    Args:
        ttl_ms: Lifetime (default ``defaults.LOCK_RUNNING_MS``); renewed every third of it.
        clock: Monotonic seconds; the lease is counted from the moment a claim or renewal
            that succeeded was *sent* (the server's expiry can only be later than that).
    """

    def __init__(
        self, client: redis.Redis, system: str, sync_id: str, ttl_ms: int | None = None,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.system = system
        self.sync_id = sync_id
        self.ttl_ms = defaults.LOCK_RUNNING_MS if ttl_ms is None else ttl_ms
        self.clock = clock
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease_ends = 0.0

    def __enter__(self) -> HeldLock:
        sent = self.clock()
        if not claim(self.client, self.system, self.sync_id, self.ttl_ms):
            raise LockLost(f"another sync of {self.system!r} is running")
        self._lease_ends = sent + self.ttl_ms / 1000
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"sync-lock-{self.system}", daemon=True
        )
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            sent = self.clock()
            try:
                renewed = renew(self.client, self.system, self.sync_id, self.ttl_ms)
            except redis.RedisError as error:
                if self.expired():
                    # Every renewal within the lease failed: the lock may be someone else's.
                    log.error("the sync lock of %s is lost: no renewal within its lease (%s)",
                              self.system, error)
                    self._lost.set()
                    return
                log.warning("renewing the sync lock of %s failed: %s", self.system, error)
                continue
            if not renewed:
                self._lost.set()
                return
            self._lease_ends = sent + self.ttl_ms / 1000

    def expired(self) -> bool:
        """Return True once the lease ran out since the last successful claim or renewal."""
        return self.clock() >= self._lease_ends

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock is gone or its lease ran out unrenewed."""
        if self._lost.is_set() or self.expired():
            raise LockLost(f"the sync lock of {self.system!r} was lost")

    def release(self) -> None:
        """Stop renewing and free the lock (if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        release(self.client, self.system, self.sync_id)

    def __exit__(self, *exc_info: object) -> None:
        self.release()
