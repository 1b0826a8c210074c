"""The daily automatic sync: at ``SYNC_DAILY_AT`` (UTC), one sync per ``auto_sync`` system per day.

Any number of schedulers may run (every ``invoice-sync worker --with-scheduler`` and every
``invoice-sync serve`` runs one): each (system, day) is claimed with ``SET NX`` on
``{sys:<name>}:daily:<YYYY-MM-DD>`` before enqueueing, so exactly one of them enqueues it. A
scheduler that was down at the set time catches up later the same day.

The claim first holds for ``DAILY_CLAIM_PENDING`` seconds only; the transaction that queues the
sync also extends it to ``DAILY_CLAIM_TTL``. A Redis error (or a crash) between claiming and
queueing therefore delays that day's sync by a few minutes instead of dropping it.

RQ's own ``CronScheduler`` is not used: each instance enqueues on its own (no cross-process
claim, so two of them would sync twice) and its cron fields are in local time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from coordinator import defaults as settings
from coordinator import keys
from coordinator.clock import utcnow
from coordinator.exceptions import Conflict, CoordinatorError
from coordinator.forecaster import central_poll, defaults, jobs
from coordinator.numbering import checkpoints, compaction
from coordinator.ops import unconfirmed

log = logging.getLogger(__name__)


def parse_at(value: str) -> dt.time:
    """Parse ``"HH:MM"`` (UTC)."""
    try:
        hours, minutes = str(value).split(":")
        return dt.time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"INVOICE_SYNC_SYNC_DAILY_AT must be HH:MM (UTC), not {value!r}") from None


def tick(
    client: redis.Redis,
    now: dt.datetime,
    config: Mapping[str, Any],
    *,
    owner: str | None = None,
    request: Callable[..., dict] = jobs.request_sync,
) -> list[str]:
    """Enqueue today's sync of each ``auto_sync`` system not yet claimed; return their names."""
    from coordinator.systems import registry

    now = now.astimezone(dt.UTC)
    if now.time() < parse_at(config.get("SYNC_DAILY_AT", settings.SYNC_DAILY_AT)):
        return []
    day = now.date().isoformat()
    mode = config.get("SYNC_DAILY_MODE", settings.SYNC_DAILY_MODE)
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    enqueued = []
    for system in registry.list_systems(client):
        if not system.get("auto_sync"):
            continue
        name = system["name"]
        claim = keys.sys_daily_claim(name, day)
        if not client.set(claim, owner, nx=True, ex=defaults.DAILY_CLAIM_PENDING):
            continue  # another scheduler (or an earlier tick) has it
        try:
            request(client, name, mode, trigger="daily",
                    confirm=(claim, defaults.DAILY_CLAIM_TTL))
            enqueued.append(name)
        except Conflict:
            # A sync of it is already queued or running: that one serves as today's.
            log.info("daily sync of %s skipped: a sync is already running", name)
            client.expire(claim, defaults.DAILY_CLAIM_TTL)
        except CoordinatorError as error:
            # The claim lapses unconfirmed: a later tick tries again.
            log.warning("daily sync of %s not queued: %s", name, error.message)
    return enqueued


def _reconciliation(client: redis.Redis) -> list[str]:
    """Bring the reconciliation's kept findings up to date with the ledger (and build them on
    a store of the previous release); skipped while another process updates them."""
    from coordinator.forecaster import reconcile_state

    outcome = reconcile_state.refresh(client, wait=0)
    return ["built"] if outcome == "built" else []


class SchedulerThread(threading.Thread):
    """Run :func:`tick` and queue due central polls every ``SCHEDULER_TICK_SECONDS`` (a
    setting) until :meth:`stop`."""

    def __init__(self, client: redis.Redis, config: Mapping[str, Any],
                 interval: float | None = None) -> None:
        super().__init__(name="invoice-sync-scheduler", daemon=True)
        parse_at(config.get("SYNC_DAILY_AT", settings.SYNC_DAILY_AT))  # fail at start, not at 04:30
        self.client = client
        self.config = config
        self.interval = float(interval if interval is not None
                              else config.get("SCHEDULER_TICK_SECONDS",
                                              settings.SCHEDULER_TICK_SECONDS))
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._step("daily sync scheduler tick", "daily sync queued for: %s",
                       lambda: tick(self.client, utcnow(), self.config))
            self._step("central poll scheduler tick", "central poll queued for: %s",
                       lambda: central_poll.due(self.client))
            self._step("unconfirmed-number check",
                       "numbers unconfirmed past the grace time: %s",
                       lambda: unconfirmed.warn(self.client, self.config), logging.WARNING)
            self._step("ledger checkpoint tick", "ledger checkpoint signed for: %s",
                       lambda: checkpoints.due(self.client, self.config))
            self._step("reconciliation update", "reconciliation state %s",
                       lambda: _reconciliation(self.client))
            self._step("ledger compaction tick", "ledger chain compacted for: %s",
                       lambda: compaction.due(self.client, self.config))
            self._stop_event.wait(self.interval)

    @staticmethod
    def _step(what: str, done: str, step: Callable[[], list[str]],
              level: int = logging.INFO) -> None:
        """Run one scheduled step and log what it did; a failure is logged, never raised."""
        try:
            names = step()
            if names:
                log.log(level, done, ", ".join(names))
        except Exception:  # noqa: BLE001 - the scheduler must survive Redis hiccups
            log.exception("%s failed", what)

    def stop(self) -> None:
        """Ask the loop to end after the current tick."""
        self._stop_event.set()
