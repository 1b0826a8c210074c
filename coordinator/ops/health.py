"""Health endpoints for load balancers and orchestrators (no auth)."""

from __future__ import annotations

import redis
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from coordinator.ops import confirmation, durability
from coordinator.ops.metrics import REDIS_DURABLE
from coordinator.ops.redis_client import get_redis

blp = Blueprint("health", __name__, description="Liveness and readiness (no auth)")


class LivenessSchema(Schema):
    status = fields.String(metadata={"description": "`ok`"})


class ReadinessSchema(Schema):
    status = fields.String(metadata={"description": "`ok`, `not durable` or `unavailable`"})
    redis = fields.Dict(metadata={
        "description": "What was found: server, waitaof, aof_enabled, appendfsync, role, "
                       "connected_replicas, replicas_in_sync (state online), "
                       "min_replicas_to_write, maxmemory_policy, "
                       "confirmation (waitaof | fsync-always | null), cluster_masters"})
    problems = fields.List(fields.String(), metadata={"description": "What to fix; [] when ok"})
    advice = fields.List(fields.String(), metadata={
        "description": "What would be better but does not stop writes (e.g. appendfsync "
                       "everysec on a server with WAITAOF: slower, still durable)"})


@blp.route("/livez")
class Livez(MethodView):
    @blp.response(200, LivenessSchema)
    def get(self):
        """Answer 200 while the process runs; touches nothing else."""
        return {"status": "ok"}


def _readiness():
    # The verdict the write path uses (and now refreshed for it): ready exactly when a write
    # would not be refused for durability.
    try:
        verdict = confirmation.guard_for(current_app).refresh(get_redis())
    except redis.RedisError as error:
        REDIS_DURABLE.set(0)
        return {"status": "unavailable", "problems": [f"Redis: {type(error).__name__}"]}, 503
    report = durability.report(verdict)
    REDIS_DURABLE.set(1 if report.ok else 0)
    body = {"status": "ok" if report.ok else "not durable", "redis": report.facts,
            "problems": report.problems, "advice": report.advice}
    return body, (200 if report.ok else 503)


@blp.route("/readyz")
class Readyz(MethodView):
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="Redis unreachable or not durable")
    def get(self):
        """Answer 200 when Redis answers and keeps what it acknowledges; 503 otherwise."""
        return _readiness()


@blp.route("/healthz")
class Healthz(MethodView):
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="Redis unreachable or not durable")
    def get(self):
        """Alias of /readyz."""
        return _readiness()
