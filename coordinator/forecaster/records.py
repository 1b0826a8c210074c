"""Sync job records: ``sync:<id>`` hashes showing a sync's progress; each system's recent list.

States move ``queued`` → ``running`` → ``done`` | ``failed``. A record still ``queued`` or
``running`` whose system lock is no longer held by it belongs to a worker that died (or a queue
nobody served): it reads as ``failed`` with that reason, so no sync stays "running" forever.
Reading never writes (a GET is safe to repeat, also on a replica): the state is derived from the
record and the lock each time.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import Clock, iso, utcnow
from coordinator.forecaster import defaults, lock

MODES = ("missing", "full")
"""``missing``: only invoices not yet stored. ``full``: every invoice, updating what changed."""

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
ACTIVE = (QUEUED, RUNNING)

_INT_FIELDS = ("pages", "invoices", "inserted", "updated", "deleted", "api_calls")
_LOST = (
    "The worker running this sync stopped before it finished (crash, restart, or no worker "
    "serving the queue). Stored data is consistent; request the sync again to finish it."
)

def new_id() -> str:
    """Return a fresh sync id."""
    return uuid.uuid4().hex


def create(
    pipe: redis.client.Pipeline, system: str, mode: str, sync_id: str, *,
    trigger: str = "api", clock: Clock = utcnow,
) -> None:
    """Queue on ``pipe`` the writes of the ``queued`` record of a sync whose lock the caller
    holds (the caller executes it, with the job's enqueue, as one transaction)."""
    record = {
        "id": sync_id, "system": system, "mode": mode, "state": QUEUED, "trigger": trigger,
        "requested_at": iso(clock()),
    }
    pipe.hset(keys.sync(sync_id), mapping=record)
    pipe.expire(keys.sync(sync_id), defaults.SYNC_RECORD_TTL)
    pipe.lpush(keys.sys_syncs(system), sync_id)
    pipe.ltrim(keys.sys_syncs(system), 0, defaults.RECENT_SYNCS - 1)


def update(client: redis.Redis, sync_id: str, **fields: Any) -> None:
    """Set fields of a record (None values are removed)."""
    present = {k: v for k, v in fields.items() if v is not None}
    absent = [k for k, v in fields.items() if v is None]
    with client.pipeline(transaction=False) as pipe:
        if present:
            pipe.hset(keys.sync(sync_id), mapping=present)
        if absent:
            pipe.hdel(keys.sync(sync_id), *absent)
        pipe.execute()


def _shape(raw: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": raw["id"], "system": raw["system"], "mode": raw["mode"], "state": raw["state"],
    }
    for name in _INT_FIELDS:
        record[name] = int(raw.get(name, 0))
    record["total_hint"] = int(raw["total_hint"]) if raw.get("total_hint") else None
    for name in ("requested_at", "started_at", "finished_at", "error", "error_code", "trigger"):
        record[name] = raw.get(name)
    return record


def get(client: redis.Redis, sync_id: str) -> dict[str, Any] | None:
    """Return a sync record, or None; a dead sync reads as failed (see module doc)."""
    # Read the lock before the state: a worker sets the final state before releasing the lock,
    # so "lock not ours, state still active" can only mean the sync will never finish.
    system = client.hget(keys.sync(sync_id), "system")
    if system is None:
        return None
    owner = lock.holder(client, system)
    raw = client.hgetall(keys.sync(sync_id))
    if not raw:
        return None
    if raw["state"] in ACTIVE and owner != sync_id:
        raw = {**raw, "state": FAILED, "error": _LOST, "error_code": "worker_lost"}
    return _shape(raw)


def recent(client: redis.Redis, system: str, limit: int = defaults.RECENT_SYNCS) -> list[dict]:
    """Return ``system``'s recent syncs, newest first."""
    records = []
    for sync_id in client.lrange(keys.sys_syncs(system), 0, limit - 1):
        record = get(client, sync_id)
        if record is not None:
            records.append(record)
    return records

