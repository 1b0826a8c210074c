"""The registry's domain functions on a real Valkey: atomic tokens, races, deletion, purge."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
import redis

from coordinator import auth, keys
from coordinator.exceptions import Conflict, InvalidInput, NotFound
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy
from tests.coordinator.systems_support import URL, FakeResolver, body

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]

POLICY = UrlPolicy(resolver=FakeResolver())


@pytest.fixture
def fernet():
    return secrets.fernet_from_keys([secrets.generate_key()])


def agent_tokens(client, system):
    return [d for d, raw in client.hgetall(keys.TOKENS).items()
            if json.loads(raw).get("system") == system]


def test_injected_clock(redis_client, fernet):
    moment = datetime(2026, 11, 21, 10, 15, 2, tzinfo=UTC)
    system, _ = registry.create_system(redis_client, fernet, body(), POLICY, now=lambda: moment)
    assert system["created_at"] == "2026-11-21T10:15:02Z"
    later = datetime(2026, 11, 22, tzinfo=UTC)
    updated = registry.update_system(redis_client, "blue", {"step": 7}, POLICY,
                                     now=lambda: later)
    assert (updated["created_at"], updated["updated_at"]) == (
        "2026-11-21T10:15:02Z", "2026-11-22T00:00:00Z")
    assert registry.get_system(redis_client, "blue") == updated


def test_concurrent_creates_one_winner(valkey, redis_client, fernet):
    results: list[object] = []

    def create(index: int) -> None:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        try:
            registry.create_system(client, fernet, body(api_identifier=f"id-{index}"), POLICY)
            results.append("ok")
        except Conflict:
            results.append("conflict")
        finally:
            client.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert len(agent_tokens(redis_client, "blue")) == 1
    record = redis_client.hgetall(keys.system("blue"))
    assert agent_tokens(redis_client, "blue") == [record["agent_token_digest"]]


def test_concurrent_rotations_leave_exactly_one_valid_token(valkey, redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    issued: list[str] = []

    def rotate() -> None:
        client = redis.Redis.from_url(valkey.url, decode_responses=True)
        try:
            for _ in range(5):
                issued.append(registry.rotate_agent_token(client, "blue")[1])
        finally:
            client.close()

    threads = [threading.Thread(target=rotate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    valid = []
    for token in issued:
        try:
            auth.authenticate(redis_client, f"Bearer {token}", None)
            valid.append(token)
        except auth.AuthError:
            pass
    assert len(issued) == 20 and len(valid) == 1
    assert agent_tokens(redis_client, "blue") == [auth.digest(valid[0])]


@pytest.mark.parametrize("name", ["../x", "a/b", "{sys:x}", "", "X", "blue\n", None])
def test_bad_names_never_found(redis_client, name):
    with pytest.raises(NotFound):
        registry.get_system(redis_client, name)
    with pytest.raises(NotFound):
        registry.delete_system(redis_client, name)


def test_a_registration_of_the_required_fields_only_gets_the_documented_defaults(
    redis_client, fernet
):
    """Callers other than the API (the dashboard, the demo) may leave out what the API
    defaults; the registry fills in the same values (docs/API.md)."""
    stamp = "2026-11-21T10:15:02Z"
    moment = datetime(2026, 11, 21, 10, 15, 2, tzinfo=UTC)
    required = {"name": "blue", "url": URL, "api_identifier": "ident-blue", "api_secret": "s"}
    system, _ = registry.create_system(redis_client, fernet, required, POLICY, now=lambda: moment)
    expected = {
        "name": "blue", "description": "", "url": URL, "api_identifier": "ident-blue",
        "has_api_secret": True, "has_access_key": False, "step": 100, "auto_sync": True,
        "exchange_rate": "1", "series": "default", "central_poll": False,
        "central_poll_minutes": 5, "number_on": "paid", "agent_token_issued_at": stamp,
        "created_at": stamp, "updated_at": stamp,
    }
    assert system == expected
    assert registry.get_system(redis_client, "blue") == expected


def test_create_refuses_bad_name_even_without_schema(redis_client, fernet):
    before = redis_client.dbsize()  # the fixture's initialised numbering
    with pytest.raises(InvalidInput) as refused:
        registry.create_system(redis_client, fernet, body(name="a}b"), POLICY)
    assert (refused.value.message, refused.value.errors) == (
        "Validation failed", {"json": {"name": ["Not a valid system name."]}})
    assert redis_client.dbsize() == before


def test_rename_refused(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    with pytest.raises(InvalidInput):
        registry.update_system(redis_client, "blue", {"name": "red"}, POLICY)


def test_recreate_after_interrupted_purge_starts_clean(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    registry.delete_system(redis_client, "blue")
    # A purge interrupted by a crash (or a late write of a sync job) left data behind.
    stale = keys.system_tag("blue") + ":invoices"
    redis_client.hset(stale, "1", "{}")
    registry.create_system(redis_client, fernet, body(url="https://billing.red.example"
                                                          "/includes/api.php"), POLICY)
    assert not redis_client.exists(stale)


def test_purge_refuses_while_registered(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    redis_client.hset(keys.system_tag("blue") + ":invoices", "1", "{}")
    with pytest.raises(Conflict):
        registry.purge_system_data(redis_client, "blue")
    assert redis_client.exists(keys.system("blue"))


def test_delete_purges_many_keys(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    for index in range(1200):
        redis_client.set(f"{keys.system_tag('blue')}:page:{index}", "x")
    assert registry.delete_system(redis_client, "blue") == 1200
    assert list(redis_client.scan_iter(match=keys.system_data_pattern("blue"))) == []
    with pytest.raises(NotFound):
        registry.delete_system(redis_client, "blue")


def test_purge_counts_keys_removed_not_keys_scanned(redis_client):
    # SCAN may hand the same key back twice; the purge must not count it twice.
    tag = keys.system_tag("gone")
    redis_client.set(f"{tag}:a", "x")
    redis_client.set(f"{tag}:b", "x")
    assert registry._unlink_batch(
        redis_client, "gone", [f"{tag}:a", f"{tag}:a", f"{tag}:b"], locked=False
    ) == 2


def test_list_skips_dangling_names(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    redis_client.sadd(keys.SYSTEMS, "ghost")
    assert [s["name"] for s in registry.list_systems(redis_client)] == ["blue"]
