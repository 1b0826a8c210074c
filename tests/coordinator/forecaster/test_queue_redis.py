"""INVOICE_SYNC_QUEUE_REDIS_URL: the sync jobs (RQ) on a Redis of their own, the data elsewhere
(what a Redis Cluster needs: RQ does not run on one)."""

from __future__ import annotations

import pytest
import redis
from rq import SimpleWorker

from coordinator.config import load_settings
from coordinator.forecaster import defaults, jobs, records
from coordinator.forecaster.connections import queue_connection
from coordinator.ops.embedded import ValkeyServer
from coordinator.ops.redis_client import make_redis

pytestmark = pytest.mark.integration


def test_sync_jobs_go_to_the_queue_redis_and_run_on_the_data_redis(
        tmp_path, monkeypatch, redis_client, fake, register, settings):
    queue_server = ValkeyServer(tmp_path / "queue").start()
    try:
        monkeypatch.setenv("INVOICE_SYNC_QUEUE_REDIS_URL", queue_server.url)
        fake.app.seed(25, seed=3)
        register("blue", fake, step=10)
        client = make_redis(load_settings())
        record = jobs.request_sync(client, "blue", "full")
        queue_raw = redis.Redis.from_url(queue_server.url)
        assert queue_raw.llen(f"rq:queue:{defaults.QUEUE_NAME}") == 1
        assert list(redis_client.scan_iter("rq:*")) == [], "RQ must stay off the data Redis"
        # The worker takes the job from the queue Redis; the job reads and writes the data Redis.
        SimpleWorker([defaults.QUEUE_NAME], connection=queue_connection(client)).work(burst=True)
        done = records.get(redis_client, record["id"])
        assert (done["state"], done["invoices"]) == ("done", 25), done
        queue_raw.close()
    finally:
        queue_server.stop()
