"""The per-system sync lock (forecaster/lock.py) and its fencing of writes, on real Valkey."""

from __future__ import annotations

import threading

import pytest
import redis

from coordinator import keys
from coordinator.forecaster import jobs, lock, store
from tests.coordinator.forecaster.conftest import (
    expected_aggregates,
    stored_aggregates,
    wait_for,
)

pytestmark = pytest.mark.integration

LOCK = keys.sys_sync_lock("blue")


def test_only_the_holder_claims_renews_and_releases(redis_client):
    assert lock.acquire_queued(redis_client, "blue", "a")
    assert not lock.acquire_queued(redis_client, "blue", "b")
    assert not lock.claim(redis_client, "blue", "b", 60_000)
    assert lock.claim(redis_client, "blue", "a", 60_000)
    assert not lock.renew(redis_client, "blue", "b", 60_000)
    assert not lock.release(redis_client, "blue", "b")
    assert lock.holder(redis_client, "blue") == "a"
    assert lock.renew(redis_client, "blue", "a", 60_000)
    assert lock.release(redis_client, "blue", "a")
    assert lock.holder(redis_client, "blue") is None
    assert not lock.renew(redis_client, "blue", "a", 60_000)  # gone: not silently recreated
    assert lock.holder(redis_client, "blue") is None


def test_a_lapsed_lock_can_be_claimed_and_the_old_holder_finds_out(redis_client):
    held = lock.HeldLock(redis_client, "blue", "a", ttl_ms=1500).__enter__()
    try:
        redis_client.delete(LOCK)  # as if it lapsed
        assert lock.claim(redis_client, "blue", "b", 60_000)
        wait_for(lambda: held._lost.is_set(), "the renewal found the lock taken")
        with pytest.raises(lock.LockLost):
            held.check()
    finally:
        held.release()
    assert lock.holder(redis_client, "blue") == "b"  # a's release did not free b's lock


def test_renewals_keep_the_lock_past_its_lifetime(redis_client, monkeypatch):
    renewed = []
    real_renew = lock.renew
    monkeypatch.setattr(lock, "renew", lambda *a: renewed.append(real_renew(*a)) or renewed[-1])
    with lock.HeldLock(redis_client, "blue", "a", ttl_ms=3000) as held:
        wait_for(lambda: len(renewed) >= 4, "four renewals (more than a lifetime)")
        held.check()
        assert lock.holder(redis_client, "blue") == "a"
    assert all(renewed)
    assert lock.holder(redis_client, "blue") is None


def test_renewals_failing_past_the_lease_mean_the_lock_is_lost(redis_client, monkeypatch):
    def unreachable(*args):
        raise redis.ConnectionError("injected: Redis unreachable from this worker")

    monkeypatch.setattr(lock, "renew", unreachable)
    with lock.HeldLock(redis_client, "blue", "a", ttl_ms=300) as held:
        wait_for(lambda: not redis_client.exists(LOCK), "the server expired the lock")
        with pytest.raises(lock.LockLost):
            held.check()


def test_a_write_fenced_by_a_sync_that_does_not_hold_the_lock_changes_nothing(redis_client):
    record = "20260301|20260308||Paid|EUR|1000|0|0|0|1000|INV-1"
    store.write_records(redis_client, "blue", {1: record})
    assert lock.acquire_queued(redis_client, "blue", "b")
    before = stored_aggregates(redis_client, "blue")
    with pytest.raises(lock.LockLost):
        store.write_records(redis_client, "blue", {2: record}, owner="a")
    with pytest.raises(lock.LockLost):
        store.delete(redis_client, "blue", [1], owner="a")
    assert sorted(store.iter_stored_ids(redis_client, "blue")) == [1]
    assert stored_aggregates(redis_client, "blue") == before
    store.write_records(redis_client, "blue", {2: record}, owner="b")  # the holder writes
    assert store.count(redis_client, "blue") == 2


class _PauseAtEnd:
    """A WHMCS client whose last page, once the sync's own thread fetched it, is held back until
    ``resume`` is set: A has then read every page, and stored nothing yet (fewer rows than
    ``WRITE_ROWS``). Prefetches (other threads) are not held."""

    def __init__(self, source, at_end: threading.Event, resume: threading.Event) -> None:
        self.source, self.at_end, self.resume = source, at_end, resume

    @property
    def calls(self) -> int:
        return self.source.calls

    def get_invoices(self, *args, **kwargs):
        page = self.source.get_invoices(*args, **kwargs)
        # Only the overlap row, or nothing: the end of the list.
        if len(page.invoices) <= 1 and threading.current_thread().name == "worker-a":
            self.at_end.set()
            assert self.resume.wait(60)
        return page

    def close(self) -> None:
        self.source.close()


@pytest.mark.parametrize("a_notices", [True, False], ids=["lease-ran-out", "paused-unaware"])
def test_a_sync_that_lost_its_lock_does_not_delete_what_the_next_sync_stored(
    a_notices, valkey, redis_client, fake, register, settings, monkeypatch
):
    """Two workers. ``lease-ran-out``: A knows its lease is over (its check stops it);
    ``paused-unaware``: A was frozen between its check and its writes (only the fence stops it)."""
    fake.app.seed(300, seed=11)
    register("blue", fake, step=100)
    first = jobs.request_sync(redis_client, "blue", "full")
    # Worker A's lock lives 600 ms in Redis; A's own sense of time is the test's to move, so
    # however slow this machine is, A reads every page before it can believe its lease is over.
    a_now = [0.0]

    class LockOfA(lock.HeldLock):
        def __init__(self, client, system, sync_id, ttl_ms=None, **kwargs):
            if sync_id == first["id"]:
                ttl_ms, kwargs["clock"] = 600, lambda: a_now[0]
            super().__init__(client, system, sync_id, ttl_ms, **kwargs)

    monkeypatch.setattr(lock, "HeldLock", LockOfA)
    # Worker A is cut off from Redis for its renewals: they fail with an error.
    real_renew = lock.renew

    def renew(client, system, sync_id, ttl_ms):
        if sync_id == first["id"]:
            raise redis.ConnectionError("injected: worker A cannot reach Redis")
        return real_renew(client, system, sync_id, ttl_ms)

    monkeypatch.setattr(lock, "renew", renew)
    at_end, resume, outcome = threading.Event(), threading.Event(), {}

    def resolve_a(client, system, config):
        source, step = jobs.default_resolver(client, system, config)
        return _PauseAtEnd(source, at_end, resume), step

    def worker_a():
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        try:
            outcome["a"] = jobs.execute(client, first["id"], settings, resolve=resolve_a)
        finally:
            client.close()

    thread = threading.Thread(target=worker_a, name="worker-a")
    thread.start()
    try:
        # A has read every page of WHMCS (300 invoices) and is held before storing the last.
        assert at_end.wait(60)
        wait_for(lambda: not redis_client.exists(LOCK), "A's lock lapsed unrenewed")
        if a_notices:
            a_now[0] += 10.0  # A, too, has been away longer than its lease
        # Meanwhile invoices are created in WHMCS and worker B syncs them.
        for _ in range(10):
            fake.app.add_invoice(subtotal="10.00", status="Paid", currencycode="EUR")
        worker_b = redis.Redis.from_url(valkey.url, decode_responses=True)
        second = jobs.request_sync(worker_b, "blue", "missing")
        assert jobs.execute(worker_b, second["id"], settings)["state"] == "done"
        worker_b.close()
    finally:
        resume.set()
        thread.join()
    assert outcome["a"]["state"] == "failed"
    assert outcome["a"]["error_code"] == "lock_lost"
    # Nothing B stored was deleted or double counted by A.
    snapshot = fake.app.invoices_snapshot()
    assert sorted(store.iter_stored_ids(redis_client, "blue")) == [i["id"] for i in snapshot]
    assert stored_aggregates(redis_client, "blue") == expected_aggregates(snapshot)
