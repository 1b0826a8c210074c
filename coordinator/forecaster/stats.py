"""Cumulative sync outcomes per system, for Prometheus (``ops.state_metrics`` reads them).

Syncs run on RQ workers, which serve no ``/metrics``; so each finished run adds to a small hash
under the system's hash tag (``keys.sys_sync_stats``) and any coordinator exposes the totals.
The hash is deleted with the system, like the rest of its data.
"""

from __future__ import annotations

import redis

from coordinator import keys
from coordinator.forecaster import records

FINAL = (records.DONE, records.FAILED)


def record(client: redis.Redis, system: str, state: str, invoices: int, seconds: float) -> None:
    """Count one finished run of ``system`` (``done`` or ``failed``) and how long it took."""
    if state not in FINAL:
        return
    key = keys.sys_sync_stats(system)
    with client.pipeline(transaction=True) as pipe:
        pipe.hincrby(key, state, 1)
        pipe.hincrby(key, "invoices", int(invoices))
        pipe.hincrbyfloat(key, "seconds", round(seconds, 6))
        pipe.hset(key, "last_seconds", f"{seconds:.6f}")
        pipe.execute()


def record_sync(client: redis.Redis, sync_id: str, system: str, seconds: float) -> None:
    """Count the run ``sync_id`` from its record's final state and invoice count."""
    state, invoices = client.hmget(keys.sync(sync_id), ["state", "invoices"])
    record(client, system, state or "", int(invoices or 0), seconds)
