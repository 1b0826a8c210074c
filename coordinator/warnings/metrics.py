"""``invoice_sync_warnings_unacked{type}``: read from Redis at scrape time.

A collector rather than a Gauge set by the code that raises warnings: warnings are raised by RQ
workers in other processes, and acked through any coordinator process, so only Redis knows the
current count. ``register(registry, client_factory)`` adds it to the registry /metrics serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from coordinator.warnings import store

log = logging.getLogger(__name__)

NAME = "invoice_sync_warnings_unacked"


class WarningsCollector(Collector):
    """Yield the unacknowledged warnings per type (every known type, zeros included)."""

    def __init__(self, client_factory: Callable[[], redis.Redis]) -> None:
        self.client_factory = client_factory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            NAME, "Warnings not yet acknowledged, by type (GET /v1/warnings lists them).",
            labels=["type"],
        )
        try:
            counts = store.unacked_by_type(self.client_factory())
        except redis.RedisError as error:
            # /metrics must answer even when Redis does not; readiness reports Redis itself.
            log.warning("warnings gauge: Redis unavailable (%s)", type(error).__name__)
            return
        for kind in sorted(set(store.TYPES) | set(counts)):
            family.add_metric([kind], counts.get(kind, 0))
        yield family

    def describe(self) -> list:
        # Empty: describing must not touch Redis at registration time.
        return []


def register(registry: CollectorRegistry, client_factory: Callable[[], redis.Redis]) -> None:
    """Add the warnings gauge to ``registry``."""
    registry.register(WarningsCollector(client_factory))
