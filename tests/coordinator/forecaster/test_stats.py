"""Sync outcomes reach /metrics from the worker through Redis: runs by result, durations,
invoices, the last success time — and the scrape reads no invoice data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator import keys
from coordinator.forecaster import jobs

pytestmark = pytest.mark.integration


def scrape(client) -> dict[tuple[str, frozenset], float]:
    body = client.get("/metrics").get_data(as_text=True)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_sync_outcomes_are_exposed_per_system(client, redis_client, fake, register, work):
    fake.app.seed(250, seed=3)
    register("blue", fake)
    jobs.request_sync(redis_client, "blue", "full")
    work()
    fake.app.inject_fault("status", status=500, times=50)
    jobs.request_sync(redis_client, "blue", "missing")
    work()
    values = scrape(client)
    blue = frozenset({("system", "blue")})
    assert values["invoice_sync_system_syncs_total", blue | {("result", "done")}] == 1
    assert values["invoice_sync_system_syncs_total", blue | {("result", "failed")}] == 1
    assert values["invoice_sync_system_invoices_synced_total", blue] == 250
    assert values["invoice_sync_system_sync_duration_seconds_count", blue] == 2
    assert values["invoice_sync_system_sync_duration_seconds_sum", blue] > 0
    finished = redis_client.hget(keys.sys_sync_state("blue"), "last_full_at")
    stamp = datetime.strptime(finished, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert values["invoice_sync_system_last_success_timestamp_seconds", blue] == stamp


def test_scrape_cost_does_not_grow_with_invoices(client, redis_client, fake, register, work,
                                                 monkeypatch):
    """The scrape never reads a system's invoices, however many there are."""
    fake.app.seed(300, seed=4)
    register("blue", fake)
    jobs.request_sync(redis_client, "blue", "full")
    work()
    touched = []
    original = redis_client.connection_pool.get_connection

    def spy(*args, **kwargs):
        connection = original(*args, **kwargs)
        send = connection.send_command

        def record(*command, **options):
            touched.append(" ".join(str(part) for part in command))
            return send(*command, **options)

        connection.send_command = record
        return connection

    app_client = client.application.extensions["invoice_sync.redis"]
    monkeypatch.setattr(app_client.connection_pool, "get_connection", spy)
    assert client.get("/metrics").status_code == 200
    assert touched, "the spy saw no command"
    assert not any(keys.sys_invoices("blue") in command or keys.sys_aggregates("blue") in command
                   for command in touched)
