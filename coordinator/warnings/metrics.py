"""Fill ``invoice_sync_warnings_open{kind}`` (defined in ``coordinator.ops.metrics``) from Redis.

Warnings are raised by RQ workers and acknowledged through any coordinator process, so only
Redis knows the current count: ``/metrics`` refreshes the gauge from it on every scrape (the
gauge's multiprocess mode is ``mostrecent``, so the scraping process's values win).
"""

from __future__ import annotations

import logging

import redis
from prometheus_client import Gauge

from coordinator.warnings import store

log = logging.getLogger(__name__)


def refresh(gauge: Gauge, client: redis.Redis) -> None:
    """Set ``gauge`` to the unacknowledged warnings per kind (known kinds at 0 when none)."""
    try:
        counts = store.unacked_by_type(client)
    except redis.RedisError as error:
        # /metrics must answer even when Redis does not; readiness reports Redis itself.
        log.warning("warnings gauge not refreshed: %s", type(error).__name__)
        return
    for kind in sorted(set(store.TYPES) | set(counts)):
        gauge.labels(kind).set(counts.get(kind, 0))
