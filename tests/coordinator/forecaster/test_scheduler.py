"""The daily automatic sync: exactly one enqueue per (system, day), however many schedulers."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import redis

from coordinator import keys
from coordinator.forecaster import defaults, jobs, records, scheduler
from tests.coordinator.forecaster.conftest import wait_for

pytestmark = pytest.mark.integration


def test_two_schedulers_enqueue_each_due_system_once(redis_client, fake, register, settings):
    register("blue", fake)
    register("red", fake)
    register("manual", fake, auto_sync=False)
    before = dt.datetime(2026, 3, 2, 4, 29, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, before, settings, owner="a") == []
    at = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    barrier, results = threading.Barrier(2), {}

    def run(owner):
        barrier.wait()
        results[owner] = scheduler.tick(redis_client, at, settings, owner=owner)

    threads = [threading.Thread(target=run, args=(o,)) for o in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results["a"] + results["b"]) == ["blue", "red"]
    # Later ticks the same day do nothing; the next day enqueues again.
    later = at + dt.timedelta(hours=5)
    assert scheduler.tick(redis_client, later, settings, owner="a") == []
    assert len(jobs.queue(redis_client)) == 2
    syncs = records.recent(redis_client, "blue")
    assert [(s["mode"], s["trigger"]) for s in syncs] == [("full", "daily")]
    for name in ("blue", "red"):  # pretend those ran
        redis_client.delete(f"{{sys:{name}}}:sync:lock")
    nxt = at + dt.timedelta(days=1)
    assert sorted(scheduler.tick(redis_client, nxt, settings, owner="b")) == ["blue", "red"]


def test_bad_daily_time_is_refused_at_start(redis_client):
    with pytest.raises(ValueError):
        scheduler.SchedulerThread(redis_client, {"SYNC_DAILY_AT": "4.30"})


def daily_syncs(client, name: str) -> list[dict]:
    return [s for s in records.recent(client, name) if s["trigger"] == "daily"]


def test_one_automatic_sync_per_system_per_day_however_many_ticks(redis_client, fake, register,
                                                                   settings, work):
    fake.app.seed(20, seed=3)
    register("blue", fake)
    day = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, day, settings, owner="a") == ["blue"]
    work()  # today's sync runs and finishes: the system is free again
    assert [s["state"] for s in daily_syncs(redis_client, "blue")] == ["done"]
    for minutes in range(1, 20 * 60, 30):  # a tick every half hour for the rest of the day
        at = day + dt.timedelta(minutes=minutes)
        assert scheduler.tick(redis_client, at, settings, owner="b") == [], at
        work()
    assert len(daily_syncs(redis_client, "blue")) == 1
    assert len(jobs.queue(redis_client)) == 0
    assert scheduler.tick(redis_client, day + dt.timedelta(days=1), settings) == ["blue"]


def test_a_redis_error_between_claim_and_enqueue_does_not_drop_the_day(
    redis_client, fake, register, settings, monkeypatch
):
    register("blue", fake)
    monkeypatch.setattr(defaults, "DAILY_CLAIM_PENDING", 1)
    failures = [redis.ConnectionError("injected: Redis went away after the claim")]

    def request(*args, **kwargs):
        if failures:
            raise failures.pop()
        return jobs.request_sync(*args, **kwargs)

    at = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    with pytest.raises(redis.ConnectionError):
        scheduler.tick(redis_client, at, settings, owner="a", request=request)
    assert daily_syncs(redis_client, "blue") == [] and len(jobs.queue(redis_client)) == 0
    claim = keys.sys_daily_claim("blue", "2026-03-02")
    wait_for(lambda: not redis_client.exists(claim), "the unconfirmed claim lapsed")
    later = at + dt.timedelta(minutes=10)
    assert scheduler.tick(redis_client, later, settings, owner="b", request=request) == ["blue"]
    assert len(daily_syncs(redis_client, "blue")) == 1 and len(jobs.queue(redis_client)) == 1
    # Confirmed with the sync: now held for the whole day (and beyond any clock skew).
    assert redis_client.ttl(claim) > defaults.DAILY_CLAIM_PENDING


def test_a_failed_enqueue_leaves_no_record_no_job_and_a_free_system(redis_client, fake,
                                                                    register, monkeypatch):
    register("blue", fake)

    def broken(*args, **kwargs):
        raise redis.ConnectionError("injected")

    monkeypatch.setattr(jobs.Queue, "enqueue_call", broken)
    with pytest.raises(redis.ConnectionError):
        jobs.request_sync(redis_client, "blue", "full")
    assert records.recent(redis_client, "blue") == []
    assert redis_client.get(keys.sys_sync_lock("blue")) is None
