"""Guards of the per-system sync lock that the mutation run (issue 17) found without a test."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import redis

from coordinator.forecaster import defaults, lock
from tests.coordinator.forecaster.conftest import wait_for

pytestmark = pytest.mark.integration


def test_a_queued_sync_that_never_runs_frees_the_system_after_its_queued_lifetime(
    redis_client, monkeypatch
):
    """A sync queued and then lost (its job never picked up) must not block the system for
    ever: the queued lock lapses and a later request gets it."""
    monkeypatch.setattr(defaults, "LOCK_QUEUED_MS", 300)
    assert lock.acquire_queued(redis_client, "blue", "lost")
    assert not lock.acquire_queued(redis_client, "blue", "next")
    wait_for(lambda: lock.holder(redis_client, "blue") is None, "the queued lock lapsed")
    assert lock.acquire_queued(redis_client, "blue", "next")


def test_the_lease_has_run_out_at_its_very_end(redis_client):
    """The lease is counted from the moment the claim was sent; the server may expire the key
    at exactly that moment plus its lifetime, so from then on the holder must stop writing."""
    now = [1000.0]
    held = lock.HeldLock(redis_client, "blue", "a", ttl_ms=60_000, clock=lambda: now[0])
    with held:
        now[0] = 1059.999
        held.check()
        now[0] = 1060.0
        assert held.expired()
        with pytest.raises(lock.LockLost):
            held.check()


def test_a_second_sync_is_told_which_system_is_busy(redis_client):
    """The refusal becomes the sync record's error (`sync_running`): it names the system."""
    assert lock.claim(redis_client, "blue", "first", 60_000)
    with pytest.raises(lock.LockLost) as refused:
        lock.HeldLock(redis_client, "blue", "second").__enter__()
    assert str(refused.value) == "another sync of 'blue' is running"
    assert lock.holder(redis_client, "blue") == "first"


def test_a_renewal_that_fails_within_the_lease_is_retried_and_the_lease_runs_from_the_last(
    redis_client, monkeypatch, caplog
):
    """Redis unreachable for a moment: the worker keeps renewing (a warning each time), and
    keeps the lock when Redis answers again; cut off for longer, it holds the lock exactly
    until the lease of its last renewal that succeeded runs out (an error says so)."""
    now = [1000.0]
    sent: list[float] = []
    failing = [False]
    real_renew = lock.renew

    def renew(client, system, sync_id, ttl_ms):
        sent.append(now[0])
        if failing[0]:
            raise redis.ConnectionError("injected: Redis unreachable")
        return real_renew(client, system, sync_id, 60_000)  # the server's expiry is not tested

    def renewals(count: int) -> None:
        start = len(sent)
        wait_for(lambda: len(sent) >= start + count, f"{count} more renewals")

    monkeypatch.setattr(lock, "renew", renew)
    with caplog.at_level(logging.WARNING, logger=lock.log.name):
        with lock.HeldLock(redis_client, "blue", "a", ttl_ms=300, clock=lambda: now[0]) as held:
            now[0] = 1000.2
            renewals(2)  # the lease now ends at 1000.5
            failing[0] = True
            renewals(2)
            held.check()
            failing[0] = False
            renewals(2)
            failing[0] = True
            now[0] = 1000.4998  # the last moment of the lease: the lock is still held
            renewals(1)
            held.check()
            now[0] = 1000.5
            wait_for(lambda: held._lost.is_set(), "the lock given up")
            with pytest.raises(lock.LockLost) as lost:
                held.check()
    assert str(lost.value) == "the sync lock of 'blue' was lost"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == (
        "WARNING", "renewing the sync lock of blue failed: injected: Redis unreachable")
    assert messages[-1] == (
        "ERROR", "the sync lock of blue is lost: no renewal within its lease "
                 "(injected: Redis unreachable)")


def test_a_worker_that_ends_holding_the_lock_exits_and_the_lock_lapses(redis_client):
    """A worker process that ends while it holds a sync lock (it died before its `finally`
    released it) must exit, not keep renewing the lock for ever from its renewal thread: the
    lock then lapses and the next sync of the system may run."""
    connection = {k: v for k, v in redis_client.connection_pool.connection_kwargs.items()
                  if k in ("host", "port", "db", "password", "username")}
    script = (
        "import json, sys, redis\n"
        "from coordinator.forecaster import lock\n"
        "client = redis.Redis(decode_responses=True, **json.loads(sys.argv[1]))\n"
        "lock.HeldLock(client, 'blue', 'ended', ttl_ms=600).__enter__()\n"
    )
    subprocess.run([sys.executable, "-c", script, json.dumps(connection)], check=True,
                   timeout=60)
    wait_for(lambda: lock.holder(redis_client, "blue") is None, "the ended worker's lock lapsed")
