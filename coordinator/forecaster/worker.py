"""Run an RQ worker for the sync queue, optionally with the daily scheduler beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import redis
from rq import Worker

from coordinator.forecaster import defaults
from coordinator.forecaster.connections import queue_connection, with_decoding
from coordinator.forecaster.scheduler import SchedulerThread
from coordinator.ops.logs import configure_worker_logging


def run_worker(
    client: redis.Redis, config: Mapping[str, Any], *, with_scheduler: bool = False,
    burst: bool = False, name: str | None = None,
) -> bool:
    """Work the sync queue (until SIGTERM/SIGINT, or until empty with ``burst``).

    Every line the worker writes is JSON: the root logger gets the JSON handler before RQ
    starts, and RQ's loggers go through it (see ``ops.logs.configure_worker_logging``).
    """
    configure_worker_logging(config.get("LOG_LEVEL", "INFO"))
    scheduler = None
    if with_scheduler:
        scheduler = SchedulerThread(with_decoding(client, True), config)
        scheduler.start()
    try:
        worker = Worker([defaults.QUEUE_NAME], connection=queue_connection(client), name=name)
        return worker.work(burst=burst)
    finally:
        if scheduler is not None:
            scheduler.stop()


def spawn_worker_process(env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``invoice-sync worker --with-scheduler`` as a child (what ``serve`` runs beside
    gunicorn, so the embedded setup needs nothing else)."""
    return subprocess.Popen(
        [sys.executable, "-m", "coordinator", "worker", "--with-scheduler"],
        env={**os.environ, **(env or {})},
    )
