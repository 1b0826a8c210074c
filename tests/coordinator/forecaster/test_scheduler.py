"""The daily automatic sync: exactly one enqueue per (system, day), however many schedulers."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from coordinator.forecaster import jobs, records, scheduler

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
