"""The overview: health, each series' sequences, numbers per hour, open warnings, systems' last
syncs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from flask import current_app, render_template

from coordinator import clock, keys
from coordinator.forecaster import records
from coordinator.ops import durability
from coordinator.ops.redis_client import get_redis
from coordinator.systems import registry
from coordinator.ui import activity
from coordinator.ui.blueprint import bp
from coordinator.ui.numbering_views import every_series
from coordinator.warnings import store as warnings


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def age(stamp: str | None, now: datetime | None = None) -> str:
    """Say how long ago ``stamp`` (ISO 8601 UTC) was, roughly: ``5 min``, ``3 h``, ``2 d``."""
    moment = _parse(stamp)
    if moment is None:
        return "never"
    seconds = int(((now or clock.utcnow()) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def health(client: redis.Redis) -> dict[str, Any]:
    """Return Redis reachability and durability, as /readyz judges them."""
    try:
        report = durability.check(client, current_app.config)
    except redis.RedisError as error:
        return {"ok": False, "status": "unavailable", "facts": {},
                "problems": [f"Redis: {type(error).__name__}"]}
    return {"ok": report.ok, "status": "ok" if report.ok else "not durable",
            "problems": report.problems, "facts": report.facts}


def systems_with_syncs(client: redis.Redis) -> list[dict[str, Any]]:
    """Return every system with its latest sync and the time of its last successful one."""
    rows = []
    for system in registry.list_systems(client):
        latest = records.recent(client, system["name"], 1)
        state = client.hgetall(keys.sys_sync_state(system["name"]))
        done = max((state.get(f"last_{mode}_at") or "" for mode in records.MODES), default="")
        rows.append({**system, "last_sync": latest[0] if latest else None,
                     "last_success_at": done or None})
    return rows


@bp.get("/")
def overview():
    """Show the overview page."""
    client = get_redis()
    open_warnings = warnings.list_warnings(client, include_acked=False)
    return render_template(
        "overview.html", health=health(client),
        series=every_series(client),
        activity=activity.per_hour(client), warnings=open_warnings[:10],
        open_count=len(open_warnings), systems=systems_with_syncs(client), age=age,
    )

