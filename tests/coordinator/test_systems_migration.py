"""Upgrade of the systems registry to the ``{auth}`` hash tag (Redis Cluster: one slot).

The previous release (0523a88) kept each record under ``{sys:<name>}:system`` and the names in
``systems``. Data made by that release's own code on a real Valkey data dir keeps every
system, field and agent token after this release starts on it; a token the old release
retired stays dead; the move is idempotent, finishes after a crash between its steps, and is
done exactly once when several processes start at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet, MultiFernet

from coordinator import keys
from coordinator.app import create_app
from coordinator.exceptions import Conflict
from coordinator.systems import migrate, registry
from coordinator.systems.lock import system_lock
from tests.support import at_once, release_data_dir, upgraded_copy

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = "0523a88"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory) -> tuple[Path, dict]:
    """A stopped Valkey data dir whose registry the previous release's code made."""
    return release_data_dir(PREVIOUS_RELEASE, HERE / "legacy_registry.py", tmp_path_factory)


@pytest.fixture
def upgraded(legacy_dir, tmp_path):
    """This release's Valkey on a copy of the legacy data dir (AOF reloaded)."""
    source, done = legacy_dir
    with upgraded_copy(source, tmp_path) as (server, client):
        migrate.ensure_migrated.forget()  # a new server: this process has not migrated it
        yield server, client, done


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_upgrade_keeps_every_system_and_token(upgraded):
    server, client, done = upgraded
    names = ("blue", "red", "orange")
    # The old layout, as the old code left it.
    assert client.smembers(keys.LEGACY_SYSTEMS) == set(names)
    old_records = {name: client.hgetall(keys.legacy_system(name)) for name in names}
    assert all(old_records.values())
    assert not client.exists(keys.SYSTEMS)

    app = create_app({"TESTING": True, "REDIS_URL": server.url, "SECRET_KEYS":
                      done["secret_keys"], "ALLOW_HTTP_SYSTEM_URLS": True,
                      "ALLOW_PRIVATE_SYSTEM_URLS": True})
    http = app.test_client()
    admin = _bearer(done["admin"])
    tokens = done["tokens"]

    # The agents come first: each one's token works and its number reads back unchanged.
    for name in names:
        again = http.post("/v1/allocations", headers=_bearer(tokens[name]), json={
            "document": "invoice", "reference": f"{name}-1", "date": "2026-03-01"})
        assert again.status_code == 200, again.get_json()
        assert again.get_json()["formatted"] == done["numbers"][name]["formatted"]
        assert again.get_json()["series"] == done["numbers"][name]["series"]
    # Tokens the old release retired stay dead.
    for retired in ("orange-retired", "green-deleted"):
        refused = http.post("/v1/allocations", headers=_bearer(tokens[retired]), json={
            "document": "invoice", "reference": "x", "date": "2026-03-01"})
        assert refused.status_code == 401, retired

    # Every record moved field for field; nothing is left in the old layout.
    assert http.get("/v1/systems", headers=admin).get_json() == done["systems"]
    for name in names:
        assert client.hgetall(keys.system(name)) == old_records[name]
        assert not client.exists(keys.legacy_system(name))
    assert client.smembers(keys.SYSTEMS) == set(names)
    assert not client.exists(keys.LEGACY_SYSTEMS)
    assert http.get("/v1/systems/green", headers=admin).status_code == 404
    # The API secrets still decrypt with the same key.
    fernet = MultiFernet([Fernet(done["secret_keys"].encode())])
    assert registry.get_credentials(client, "red", fernet).secret == "secret-red"

    # The registry works on the new layout: a new agent token, a next number, a deletion.
    rotated = http.post("/v1/systems/blue/agent-token", headers=admin)
    assert rotated.status_code == 200
    assert http.post("/v1/allocations", headers=_bearer(tokens["blue"]), json={
        "document": "invoice", "reference": "blue-2", "date": "2026-03-02"}).status_code == 401
    second = http.post("/v1/allocations", headers=_bearer(rotated.get_json()["agent_token"]),
                       json={"document": "invoice", "reference": "blue-2", "date": "2026-03-02"})
    assert second.status_code == 201
    assert second.get_json()["number"] == done["numbers"]["orange"]["number"] + 1
    assert client.hget(keys.sys_invoices("blue"), "17") == "{}"
    assert http.delete("/v1/systems/blue", headers=admin).status_code == 204
    assert not client.exists(keys.sys_invoices("blue"), keys.system("blue"))


def _old_layout(client: redis.Redis, names: list[str]) -> dict[str, dict]:
    records = {}
    for name in names:
        records[name] = {"name": name, "url": f"https://{name}.example/includes/api.php",
                         "api_identifier": "i", "step": "100", "exchange_rate": "1",
                         "agent_token_digest": f"d-{name}", "created_at": "c",
                         "updated_at": "u"}
        client.hset(keys.legacy_system(name), mapping=records[name])
        client.sadd(keys.LEGACY_SYSTEMS, name)
    return records


def test_migration_finishes_after_a_crash_between_its_steps(redis_client):
    records = _old_layout(redis_client, ["blue", "red"])
    # A run that died after copying blue (step 1) but before deleting its old record.
    redis_client.hset(keys.system("blue"), mapping=records["blue"])
    redis_client.sadd(keys.SYSTEMS, "blue")
    # ... and one that died after deleting red's old record, before the old set.
    redis_client.hset(keys.system("red"), mapping=records["red"])
    redis_client.sadd(keys.SYSTEMS, "red")
    redis_client.delete(keys.legacy_system("red"))

    assert migrate.migrate_legacy(redis_client) == 0  # nothing left to copy, only to clean
    assert {n: redis_client.hgetall(keys.system(n)) for n in records} == records
    assert not redis_client.exists(keys.LEGACY_SYSTEMS, keys.legacy_system("blue"))
    assert migrate.migrate_legacy(redis_client) == 0


def test_migration_never_overwrites_a_newer_record(redis_client):
    _old_layout(redis_client, ["blue"])
    redis_client.hset(keys.system("blue"), mapping={"name": "blue", "agent_token_digest": "new"})
    migrate.migrate_legacy(redis_client)
    assert redis_client.hget(keys.system("blue"), "agent_token_digest") == "new"
    assert not redis_client.exists(keys.legacy_system("blue"))


def test_migration_is_done_once_under_concurrent_starts(valkey):
    clients = [redis.Redis.from_url(valkey.url, decode_responses=True) for _ in range(6)]
    clients[0].flushdb()
    records = _old_layout(clients[0], [f"s{i}" for i in range(20)])
    moved = at_once([lambda c=c: migrate.migrate_legacy(c) for c in clients])
    assert sum(moved) == len(records)
    assert {n: clients[0].hgetall(keys.system(n)) for n in records} == records
    assert clients[0].smembers(keys.SYSTEMS) == set(records)
    assert not clients[0].exists(keys.LEGACY_SYSTEMS)
    assert not list(clients[0].scan_iter(match="{sys:*}:system"))
    for client in clients:
        client.close()


def test_a_deleted_system_is_not_copied_back_by_a_late_migration(redis_client):
    # Process A migrates and serves a deletion; process B, started with the old set in hand,
    # migrates late: it reads the old record under the system's lock, after A's migration
    # deleted it, so there is nothing to copy back.
    _old_layout(redis_client, ["blue"])
    migrate.migrate_legacy(redis_client)
    registry.delete_system(redis_client, "blue")
    redis_client.sadd(keys.LEGACY_SYSTEMS, "blue")  # the name B read before A's clean-up
    assert migrate.migrate_legacy(redis_client) == 0
    assert not redis_client.exists(keys.system("blue"))
    assert "blue" not in redis_client.smembers(keys.SYSTEMS)


def test_a_migration_leaves_a_system_alone_while_it_is_being_registered_or_deleted(
    redis_client, monkeypatch, caplog
):
    # A deletion (or registration) of blue holds blue's lock; the migration waits for it (cut
    # from 30 s to half a second here) and gives up rather than copy a record that may be on its
    # way out. The next start moves it.
    records = _old_layout(redis_client, ["blue"])
    monkeypatch.setattr(migrate, "LOCK_SECONDS", 0.5)
    with system_lock(redis_client, "blue"):
        with pytest.raises(Conflict) as caught:
            migrate.migrate_legacy(redis_client)
    assert caught.value.message == "System 'blue' is being registered, moved or deleted; retry"
    assert not redis_client.exists(keys.system("blue"))
    assert redis_client.hgetall(keys.legacy_system("blue")) == records["blue"]
    caplog.set_level(logging.INFO, logger=migrate.__name__)
    assert migrate.migrate_legacy(redis_client) == 1
    assert redis_client.hgetall(keys.system("blue")) == records["blue"]
    # The operator's one record of the upgrade, in the log.
    assert [r.getMessage() for r in caplog.records if r.name == migrate.__name__] == [
        "systems registry: moved 1 system record(s) under {auth}"]


def test_a_record_of_the_first_release_reads_with_the_defaults_of_fields_added_since(
    redis_client
):
    # The first release (88e5e0b) stored no series, central poll or number_on: such a system
    # keeps numbering in the default series, on payment, without a central poll.
    record = _old_layout(redis_client, ["blue"])["blue"]
    redis_client.hset(keys.legacy_system("blue"), mapping={"description": "", "auto_sync": "1"})
    migrate.migrate_legacy(redis_client)
    system = registry.get_system(redis_client, "blue")
    assert {name: system[name] for name in ("series", "central_poll", "central_poll_minutes",
                                            "number_on", "step", "url")} == {
        "series": "default", "central_poll": False, "central_poll_minutes": 5,
        "number_on": "paid", "step": 100, "url": record["url"]}
