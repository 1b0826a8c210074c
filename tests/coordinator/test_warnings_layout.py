"""Warnings live in one hash slot ({warnings}); the previous release's keys keep working."""

from __future__ import annotations

import pytest
from redis.cluster import key_slot

from coordinator import keys
from coordinator.ops.redis_client import OncePerClient
from coordinator.warnings import store

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]


def _legacy(client, wid: str, score: float, **fields) -> None:
    """Write a warning the way the previous release did (warning:<id>, warnings)."""
    kind, _, system = wid.partition(":")
    client.hset(f"warning:{wid}", mapping={
        "id": wid, "type": kind, "system": system, "message": "old", "code": "",
        "first_seen": "2026-11-01T00:00:00Z", "last_seen": "2026-11-01T00:00:00Z",
        "count": "3", "acked": "0", **fields})
    client.zadd("warnings", {wid: score})


def test_every_warning_key_is_in_one_slot():
    slots = {key_slot(k.encode()) for k in (keys.WARNINGS, keys.warning("sync_failed:blue"),
                                            keys.warning("duplicate_number:red:INV-1"))}
    assert len(slots) == 1


def test_previous_release_warnings_are_moved_once_and_keep_working(redis_client, monkeypatch):
    monkeypatch.setattr(store, "_migrated", OncePerClient(store.migrate_legacy))
    _legacy(redis_client, "sync_failed:blue", 1000.0)
    _legacy(redis_client, "mixed_currencies:red", 2000.0, acked="1")
    # Another process of this release raised one of them again meanwhile: the new one wins.
    redis_client.hset(keys.warning("mixed_currencies:red"), mapping={
        "id": "mixed_currencies:red", "type": "mixed_currencies", "system": "red",
        "message": "new", "first_seen": "2026-11-20T00:00:00Z", "count": "1"})
    redis_client.zadd(keys.WARNINGS, {"mixed_currencies:red": 3000.0})

    listed = {w["id"]: w for w in store.list_warnings(redis_client)}
    assert set(listed) == {"sync_failed:blue", "mixed_currencies:red"}
    assert listed["sync_failed:blue"]["count"] == 3 and listed["sync_failed:blue"]["message"] \
        == "old"
    assert listed["mixed_currencies:red"]["message"] == "new"
    assert redis_client.zscore(keys.WARNINGS, "sync_failed:blue") == 1000.0
    assert not redis_client.exists("warnings", "warning:sync_failed:blue",
                                   "warning:mixed_currencies:red")
    assert store.migrate_legacy(redis_client) == 0  # idempotent
    # Raised again: the migrated warning is bumped, not duplicated.
    store.raise_warning(redis_client, "sync_failed", "again", system="blue")
    again = store.get(redis_client, "sync_failed:blue")
    assert again["count"] == 4 and again["first_seen"] == "2026-11-01T00:00:00Z"
