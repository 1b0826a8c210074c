"""Metrics read from Redis at scrape time: what workers and other processes did.

Syncs run on RQ workers, allocations on any coordinator; only Redis knows the whole picture.
A scrape reads, in a few pipelined round trips, per system its sync state and cumulative
outcome counters (``forecaster.stats``), and the unconfirmed-number index
(``ops.unconfirmed``, every series) — costs that grow with the number of systems, series and
periods, never with the number of invoices or numbers issued.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from coordinator import keys
from coordinator.forecaster import records
from coordinator.ops import unconfirmed

log = logging.getLogger(__name__)

def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class RedisStateCollector(Collector):
    """Yield the Redis-derived metrics for one scrape (build one per scrape)."""

    def __init__(self, client: redis.Redis, config: Mapping[str, Any]) -> None:
        self.client = client
        self.config = config

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._systems()
            yield from self._unconfirmed()
        except redis.RedisError as error:
            # /metrics must answer when Redis does not; invoice_sync_redis_durable says 0.
            log.warning("Redis-derived metrics skipped: %s", type(error).__name__)

    def _systems(self) -> Iterator[Metric]:
        names = sorted(self.client.smembers(keys.SYSTEMS))
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.sys_sync_state(name))
                pipe.hgetall(keys.sys_sync_stats(name))
            replies = pipe.execute()
        last = GaugeMetricFamily(
            "invoice_sync_system_last_success_timestamp_seconds",
            "Unix time the system's last sync (of any mode) completed; absent: never.",
            labels=["system"])
        runs = CounterMetricFamily(
            "invoice_sync_system_syncs", "Sync runs of the system that ended, by result.",
            labels=["system", "result"])
        durations = SummaryMetricFamily(
            "invoice_sync_system_sync_duration_seconds",
            "Time sync runs of the system took (count and sum, done and failed alike).",
            labels=["system"])
        invoices = CounterMetricFamily(
            "invoice_sync_system_invoices_synced",
            "Invoices fetched from the system's WHMCS by sync runs.", labels=["system"])
        for i, name in enumerate(names):
            state, stats = replies[2 * i], replies[2 * i + 1]
            finished = [state[f"last_{mode}_at"] for mode in records.MODES
                        if state.get(f"last_{mode}_at")]
            if finished:
                last.add_metric([name], max(_epoch(stamp) for stamp in finished))
            done, failed = int(stats.get("done", 0)), int(stats.get("failed", 0))
            runs.add_metric([name, "done"], done)
            runs.add_metric([name, "failed"], failed)
            durations.add_metric([name], done + failed, float(stats.get("seconds", 0)))
            invoices.add_metric([name], int(stats.get("invoices", 0)))
        yield from (last, runs, durations, invoices)

    def _unconfirmed(self) -> Iterator[Metric]:
        grace = int(self.config["UNCONFIRMED_GRACE_SECONDS"])
        metric = GaugeMetricFamily(
            "invoice_sync_unconfirmed_past_grace",
            "Numbers issued more than UNCONFIRMED_GRACE_SECONDS ago and neither confirmed "
            "nor voided (WHMCS may never have received them).", labels=["series", "sequence"])
        backlog = GaugeMetricFamily(
            "invoice_sync_unconfirmed_backlog",
            "Ledger entries the unconfirmed-number index has not looked at yet (non-zero only "
            "while it catches up with a long ledger; the count above may be low until then).",
            labels=["series", "sequence"])
        for (series, sequence), pending in unconfirmed.refresh_all(self.client, grace).items():
            metric.add_metric([series, sequence], pending.count)
            backlog.add_metric([series, sequence], pending.backlog)
        yield from (metric, backlog)
