"""Prometheus metrics and ``GET /metrics`` (no auth).

The metrics are module-level so the code that counts imports them::

    from coordinator.ops.metrics import ALLOCATIONS, child
    child(ALLOCATIONS, "default", "invoice", "new").inc()   # = .labels("default", "invoice", "new")

Under gunicorn every worker is its own process, so ``invoice-sync serve`` and
``deploy/gunicorn.conf.py`` set ``PROMETHEUS_MULTIPROC_DIR`` (see ``multiproc.py``): each
process writes its values to files there and ``/metrics`` sums them with ``MultiProcessCollector``.
Without the variable (tests, ``flask run``) the in-memory default registry is served.

What other processes did (syncs on RQ workers, numbers left unconfirmed) is read from Redis
on each scrape by ``state_metrics.RedisStateCollector``, at a cost independent of history.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from flask import Flask, Response, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from coordinator.ops.multiproc import ENV as MULTIPROC_ENV

blp = Blueprint("metrics", __name__, description="Prometheus metrics (no auth)")

HTTP_REQUESTS = Counter(
    "invoice_sync_http_requests_total",
    "HTTP requests answered, by URL rule (not raw path), method and status.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "invoice_sync_http_request_duration_seconds",
    "Time from request start to response, by URL rule and method.",
    ["endpoint", "method"],
    # Allocations wait for an fsync (and replicas): most answers land in the 1–50 ms buckets.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ALLOCATIONS = Counter(
    "invoice_sync_allocations_total",
    "Number allocations by series, sequence and result: new, replay (same reference again), "
    "not_durable (answered 503).",
    ["series", "sequence", "result"],
)
REDIS_DURABLE = Gauge(
    "invoice_sync_redis_durable",
    "1 when the last readiness check found Redis durable (AOF always, replicas, noeviction).",
    multiprocess_mode="mostrecent",
)
WARNINGS_OPEN = Gauge(
    "invoice_sync_warnings_open",
    "Unacknowledged warnings by kind.",
    ["kind"],
    multiprocess_mode="mostrecent",
)

UNMATCHED = "<unmatched>"
"""Endpoint label of requests that matched no route: raw paths would explode the label set."""

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


_CHILDREN: dict[tuple, Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """Return ``metric.labels(*labels)``, remembered: ``labels()`` checks, joins and takes a
    lock on every call, and every request counts into the same few children.

    Only for label values from a small closed set (URL rules, methods, statuses, sequences).
    """
    try:
        return _CHILDREN[metric, labels]
    except KeyError:
        return _CHILDREN.setdefault((metric, labels), metric.labels(*labels))


def multiprocess_enabled() -> bool:
    """Whether values are shared through ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROC_ENV))


def render(state: Any = None) -> tuple[bytes, str]:
    """Return the exposition text of every metric, summed over worker processes when needed.

    Args:
        state: A collector of metrics read at scrape time (``RedisStateCollector``), if any.
    """
    if multiprocess_enabled():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if state is not None:
        extra = CollectorRegistry()
        extra.register(state)
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(responses={200: {"description": "Prometheus text exposition format", "content": {
        "text/plain": {"schema": {"type": "string"}}}}})
    def get(self):
        """Expose the metrics in the Prometheus text format."""
        from flask import current_app

        from coordinator.ops import durability
        from coordinator.ops.redis_client import get_redis
        from coordinator.ops.state_metrics import RedisStateCollector
        from coordinator.warnings.metrics import refresh

        client = get_redis()
        refresh(WARNINGS_OPEN, client)
        try:
            REDIS_DURABLE.set(1 if durability.check(client, current_app.config).ok else 0)
        except redis.RedisError:
            REDIS_DURABLE.set(0)
        body, content_type = render(RedisStateCollector(client, current_app.config))
        return Response(body, content_type=content_type)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response):
    started = g.pop("metrics_started", None)
    if started is None:
        return response
    endpoint = request.url_rule.rule if request.url_rule is not None else UNMATCHED
    method = request.method if request.method in _KNOWN_METHODS else "other"
    child(HTTP_REQUESTS, endpoint, method, str(response.status_code)).inc()
    child(HTTP_LATENCY, endpoint, method).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Time and count every request.

    Raises:
        RuntimeError: ``PROMETHEUS_MULTIPROC_DIR`` is set but prometheus_client was imported
            before it was, so each worker would silently serve only its own numbers.
    """
    if multiprocess_enabled() and values.ValueClass is values.MutexValue:
        raise RuntimeError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported: set it before "
            "importing the coordinator (gunicorn.conf.py and `invoice-sync serve` do)"
        )
    app.before_request(_start_timer)
    app.after_request(_observe)
