"""The scheduler thread that `worker --with-scheduler` (and so `serve`) runs: it queues the day's
syncs and the central polls, outlives Redis errors, and stops when asked."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest
import redis

from coordinator import keys
from coordinator.exceptions import ServiceUnavailable
from coordinator.forecaster import central_poll, defaults, jobs, records, scheduler
from tests.coordinator.forecaster.conftest import wait_for

pytestmark = pytest.mark.integration


def test_a_bad_daily_time_is_refused_at_start_saying_which_setting(redis_client):
    with pytest.raises(ValueError) as refused:
        scheduler.SchedulerThread(redis_client, {"SYNC_DAILY_AT": "4.30"})
    assert str(refused.value) == "INVOICE_SYNC_SYNC_DAILY_AT must be HH:MM (UTC), not '4.30'"


def test_the_default_and_a_valid_daily_time_are_accepted_at_start(redis_client):
    for config in ({}, {"SYNC_DAILY_AT": "05:00"}):
        thread = scheduler.SchedulerThread(redis_client, config)
        assert thread.daemon  # never keeps a stopping worker alive
        assert not thread.is_alive()


def test_the_thread_ticks_as_often_as_the_setting_says():
    """`SCHEDULER_TICK_SECONDS` (a setting; a string from the environment is read too) paces
    the loop; an explicit interval wins; without either, the default."""
    from coordinator import defaults as settings

    client = object()  # not used before the thread runs
    assert scheduler.SchedulerThread(client, {}).interval == float(
        settings.SCHEDULER_TICK_SECONDS)
    assert scheduler.SchedulerThread(client, {"SCHEDULER_TICK_SECONDS": "2.5"}).interval == 2.5
    assert scheduler.SchedulerThread(client, {"SCHEDULER_TICK_SECONDS": "2.5"},
                                     interval=0.5).interval == 0.5


def test_the_thread_queues_daily_syncs_and_central_polls_through_redis_errors(
    redis_client, fake, register, settings, monkeypatch, caplog
):
    """One failed tick of each kind (Redis gone for a moment) is logged and the next tick
    queues what is due; `stop` ends the loop."""
    register("blue", fake, central_poll=True)
    register("red", fake, central_poll=True)
    failed = {"tick": False, "due": False}

    def failing_once(name, real):
        def call(*args, **kwargs):
            if not failed[name]:
                failed[name] = True
                raise redis.ConnectionError(f"injected: {name}")
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(scheduler, "tick", failing_once("tick", scheduler.tick))
    monkeypatch.setattr(central_poll, "due", failing_once("due", central_poll.due))
    caplog.set_level(logging.INFO, logger=scheduler.__name__)
    thread = scheduler.SchedulerThread(redis_client, {**settings, "SYNC_DAILY_AT": "00:00"},
                                       interval=0.05)
    thread.start()
    try:
        wait_for(lambda: [[s["trigger"] for s in records.recent(redis_client, name)]
                          for name in ("blue", "red")] == [["daily"], ["daily"]],
                 "today's syncs of blue and red queued")
        wait_for(lambda: {"central poll of blue", "central poll of red"} <= {
            j.description for j in jobs.queue(redis_client).get_jobs()},
            "the central polls of blue and red queued")
    finally:
        thread.stop()
        thread.join(30)
    assert not thread.is_alive()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records
                if r.name == scheduler.__name__]
    assert (logging.ERROR, "daily sync scheduler tick failed") in messages
    assert (logging.ERROR, "central poll scheduler tick failed") in messages
    assert (logging.INFO, "daily sync queued for: blue, red") in messages
    assert (logging.INFO, "central poll queued for: blue, red") in messages


@pytest.fixture
def local_time_far_from_utc(monkeypatch):
    """The server's local time zone 13 hours ahead of UTC (a POSIX TZ: no tzdata needed)."""
    monkeypatch.setenv("TZ", "NZDT-13")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_daily_time_is_utc_whatever_the_server_zone_and_is_due_at_the_minute(
    redis_client, fake, register, local_time_far_from_utc
):
    register("blue", fake)
    config = {"SYNC_DAILY_AT": "06:00"}
    at_six_utc = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)
    # 18:59:59 local, 05:59:59 UTC: not yet (local time would say long past).
    assert scheduler.tick(redis_client, at_six_utc - dt.timedelta(seconds=1), config) == []
    assert scheduler.tick(redis_client, at_six_utc, config) == ["blue"]
    redis_client.delete(keys.sys_sync_lock("blue"))  # pretend it ran
    # Without the setting: 04:30 UTC.
    at_default = dt.datetime(2026, 3, 3, 4, 30, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, at_default - dt.timedelta(seconds=1), {}) == []
    assert scheduler.tick(redis_client, at_default, {}) == ["blue"]


def test_the_daily_sync_uses_the_configured_mode(redis_client, fake, register):
    register("blue", fake)
    at = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, at, {"SYNC_DAILY_MODE": "missing"}) == ["blue"]
    assert [(s["mode"], s["trigger"]) for s in records.recent(redis_client, "blue")] == [
        ("missing", "daily")]


def test_a_system_claimed_elsewhere_does_not_hold_up_the_others(redis_client, fake, register):
    for name in ("blue", "green", "red"):
        register(name, fake)
    redis_client.set(keys.sys_daily_claim("blue", "2026-03-02"), "another-scheduler")
    at = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, at, {}) == ["green", "red"]


def test_a_sync_already_running_at_the_daily_time_serves_as_the_days_sync(
    redis_client, fake, register, caplog
):
    """The running (manual) sync counts for today: the day's claim is held for the whole day,
    so no second sync is queued once it finishes."""
    register("blue", fake)
    jobs.request_sync(redis_client, "blue", "full")
    caplog.set_level(logging.INFO, logger=scheduler.__name__)
    at = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, at, {}) == []
    assert redis_client.ttl(keys.sys_daily_claim("blue", "2026-03-02")) > (
        defaults.DAILY_CLAIM_PENDING)
    redis_client.delete(keys.sys_sync_lock("blue"))  # the manual sync finished
    assert scheduler.tick(redis_client, at + dt.timedelta(hours=1), {}) == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "daily sync of blue skipped: a sync is already running")]


def test_a_daily_sync_that_cannot_be_queued_is_logged_and_left_to_a_later_tick(
    redis_client, fake, register, caplog
):
    register("blue", fake)

    def unavailable(*args, **kwargs):
        raise ServiceUnavailable("the queue is full")

    caplog.set_level(logging.INFO, logger=scheduler.__name__)
    at = dt.datetime(2026, 3, 2, 4, 31, tzinfo=dt.UTC)
    assert scheduler.tick(redis_client, at, {}, request=unavailable) == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "daily sync of blue not queued: the queue is full")]
    # Unconfirmed: the claim lapses after its short pending time, then a tick queues it.
    claim = keys.sys_daily_claim("blue", "2026-03-02")
    assert 0 < redis_client.ttl(claim) <= defaults.DAILY_CLAIM_PENDING


def test_the_thread_runs_the_ledgers_periodic_steps_and_logs_what_each_did(monkeypatch, caplog):
    """Besides the syncs and polls, each tick warns of numbers left unconfirmed, signs the
    due ledger checkpoints, updates the reconciliation without waiting for another process,
    and compacts the ledger; each with the server's client and settings, each logged (the
    unconfirmed numbers as a warning), each outliving its own failure."""
    from coordinator.forecaster import reconcile_state
    from coordinator.numbering import checkpoints, compaction
    from coordinator.ops import unconfirmed

    client, config = object(), {"SYNC_DAILY_AT": "00:00"}
    called: dict[str, list] = {}

    def step(name, answer):
        def call(*args, **kwargs):
            called.setdefault(name, []).append((args, kwargs))
            if len(called[name]) == 1:
                raise redis.ConnectionError(f"injected: {name}")
            return answer
        return call

    monkeypatch.setattr(scheduler, "tick", lambda *args: [])
    monkeypatch.setattr(central_poll, "due", lambda *args: [])
    monkeypatch.setattr(unconfirmed, "warn", step("warn", ["blue", "red"]))
    monkeypatch.setattr(checkpoints, "due", step("checkpoints", ["invoice 2026"]))
    monkeypatch.setattr(reconcile_state, "refresh", step("refresh", "built"))
    monkeypatch.setattr(compaction, "due", step("compaction", ["default"]))
    caplog.set_level(logging.INFO, logger=scheduler.__name__)
    thread = scheduler.SchedulerThread(client, config, interval=0.01)
    thread.start()
    try:
        wait_for(lambda: all(len(called.get(name, ())) >= 2 for name in
                             ("warn", "checkpoints", "refresh", "compaction")),
                 "every step run twice")
    finally:
        thread.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert {name: calls[0] for name, calls in called.items()} == {
        "warn": ((client, config), {}), "checkpoints": ((client, config), {}),
        "refresh": ((client,), {"wait": 0}), "compaction": ((client, config), {})}
    messages = [(r.levelno, r.getMessage()) for r in caplog.records
                if r.name == scheduler.__name__]
    for logged in [(logging.ERROR, "unconfirmed-number check failed"),
                   (logging.WARNING, "numbers unconfirmed past the grace time: blue, red"),
                   (logging.ERROR, "ledger checkpoint tick failed"),
                   (logging.INFO, "ledger checkpoint signed for: invoice 2026"),
                   (logging.ERROR, "reconciliation update failed"),
                   (logging.INFO, "reconciliation state built"),
                   (logging.ERROR, "ledger compaction tick failed"),
                   (logging.INFO, "ledger chain compacted for: default")]:
        assert logged in messages
