"""Token store, without HTTP: create, list, revoke, audit, ids, and the upgrade from auth:tokens."""

from __future__ import annotations

import json
import re
import threading

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import auth, keys
from coordinator.auth import tokens
from coordinator.auth.cache import TokenCache
from coordinator.cli import ensure_admin_token
from coordinator.exceptions import AuthError, Conflict, InvalidInput, NotFound
from tests.coordinator import redis_counting

pytestmark = pytest.mark.integration


def _role(client: redis.Redis, token: str) -> str:
    return auth.authenticate(client, f"Bearer {token}", None).kind


def test_created_tokens_work_with_their_role_and_are_stored_only_as_hashes(redis_client):
    auditor, auditor_token = tokens.create_token(redis_client, auth.AUDITOR, "Ms Audit",
                                                 "admin:tok_x")
    admin, admin_token = tokens.create_token(redis_client, auth.ADMIN, "ops", "cli:root")
    assert auditor_token.startswith("isr_") and admin_token.startswith("isa_")
    assert _role(redis_client, auditor_token) == auth.AUDITOR
    assert _role(redis_client, admin_token) == auth.ADMIN
    principal = auth.authenticate(redis_client, f"Bearer {auditor_token}", None)
    assert principal.token_id == auditor["id"] and principal.actor == f"auditor:{auditor['id']}"
    stored = json.dumps(redis_client.hgetall(keys.TOKENS))
    assert auditor_token not in stored and admin_token not in stored
    assert auth.digest(auditor_token) in stored
    assert auditor["created_by"] == "admin:tok_x" and auditor["label"] == "Ms Audit"


def test_token_ids_stay_what_earlier_releases_wrote():
    """Audit records keep the ids of the tokens they name: the derivation never changes."""
    assert auth.token_id("0" * 64) == "tok_1ecfb74e893a5a73"


def test_token_id_is_not_the_hash_and_reveals_none_of_it(redis_client):
    record, token = tokens.create_token(redis_client, auth.ADMIN, "ops", "cli")
    token_digest = auth.digest(token)
    assert record["id"] == auth.token_id(token_digest)
    assert record["id"].startswith("tok_") and len(record["id"]) == 20
    hex_id = record["id"].removeprefix("tok_")
    assert hex_id not in token_digest and hex_id not in token
    listed = json.dumps(tokens.list_tokens(redis_client))
    assert token not in listed and token_digest not in listed
    assert token_digest[:12] not in listed


@pytest.mark.parametrize("role", [auth.AGENT, "root", "", "ADMIN"])
def test_only_admin_and_auditor_tokens_are_created_here(redis_client, role):
    with pytest.raises(InvalidInput) as caught:
        tokens.create_token(redis_client, role, "x", "cli")
    assert "role" in caught.value.errors["json"]
    assert not redis_client.exists(keys.TOKENS, keys.TOKEN_AUDIT)


@pytest.mark.parametrize("label", ["", "   ", "x" * 201, "line\nbreak"])
def test_label_must_say_something_printable(redis_client, label):
    with pytest.raises(InvalidInput) as caught:
        tokens.create_token(redis_client, auth.AUDITOR, label, "cli")
    assert "label" in caught.value.errors["json"]
    assert not redis_client.exists(keys.TOKENS, keys.TOKEN_AUDIT)


def test_list_shows_every_role_and_the_configured_token(redis_client, agent):
    # Agents are listed by system, not by age: red's token is the older one.
    redis_client.hset(keys.TOKENS, auth.digest(auth.new_token(auth.AGENT)), json.dumps(
        {"kind": "agent", "system": "red", "created_at": "2026-01-01T00:00:00Z"}))
    agent("blue")
    tokens.create_token(redis_client, auth.AUDITOR, "audit firm", "cli")
    auth.register_admin_token(redis_client, auth.new_token(auth.ADMIN), "ops")
    listed = tokens.list_tokens(redis_client, "isa_from-env")
    assert [(t["role"], t["label"], t["system"], t["source"]) for t in listed] == [
        ("admin", "INVOICE_SYNC_ADMIN_TOKEN", None, "environment"),
        ("admin", "ops", None, "redis"),
        ("auditor", "audit firm", None, "redis"),
        ("agent", None, "blue", "redis"),
        ("agent", None, "red", "redis"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["created_at"])
               for t in listed if t["source"] == "redis")
    env = next(t for t in listed if t["source"] == "environment")
    assert env["id"] == auth.token_id(auth.digest("isa_from-env"))
    assert "isa_from-env" not in json.dumps(listed)
    assert all(set(t) <= {"id", "role", "label", "system", "created_at", "created_by",
                          "last_used", "source"} for t in listed)


def test_revoke_stops_the_token_and_is_audited(redis_client):
    tokens.create_token(redis_client, auth.ADMIN, "keeper", "cli")
    record, token = tokens.create_token(redis_client, auth.AUDITOR, "temp", "admin:tok_a")
    revoked = tokens.revoke_token(redis_client, record["id"], "admin:tok_b")
    assert revoked["id"] == record["id"] and revoked["role"] == auth.AUDITOR
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, f"Bearer {token}", None)
    assert record["id"] not in [t["id"] for t in tokens.list_tokens(redis_client)]
    with pytest.raises(NotFound):
        tokens.revoke_token(redis_client, record["id"], "admin:tok_b")
    trail = tokens.audit(redis_client)
    assert [(e["action"], e["role"], e["label"], e["by"]) for e in trail] == [
        ("created", "admin", "keeper", "cli"),
        ("created", "auditor", "temp", "admin:tok_a"),
        ("revoked", "auditor", "temp", "admin:tok_b"),
    ]
    assert trail[-1]["token"] == record["id"] and trail[-1]["at"].endswith("Z")
    assert token not in json.dumps(trail) and auth.digest(token) not in json.dumps(trail)


def test_agent_tokens_are_revoked_through_their_system_not_here(redis_client, agent):
    headers = agent("blue")
    token = headers["Authorization"].removeprefix("Bearer ")
    with pytest.raises(Conflict) as caught:
        tokens.revoke_token(redis_client, auth.token_id(auth.digest(token)), "admin:tok_a")
    assert "POST /v1/systems/blue/agent-token" in caught.value.message
    assert auth.authenticate(redis_client, f"Bearer {token}", None).system == "blue"


def test_the_last_admin_token_and_the_configured_one_are_not_revoked(redis_client):
    only, token = tokens.create_token(redis_client, auth.ADMIN, "only", "cli")
    with pytest.raises(Conflict, match="last admin token"):
        tokens.revoke_token(redis_client, only["id"], "cli")
    assert _role(redis_client, token) == auth.ADMIN
    # With a configured admin token the stored one is not the last way in.
    assert tokens.revoke_token(redis_client, only["id"], "cli", "isa_env")["id"] == only["id"]
    with pytest.raises(Conflict, match="INVOICE_SYNC_ADMIN_TOKEN"):
        tokens.revoke_token(redis_client, auth.token_id(auth.digest("isa_env")), "cli",
                            "isa_env")


def test_register_admin_token_keeps_the_first_record(redis_client):
    token = auth.new_token(auth.ADMIN)
    assert auth.register_admin_token(redis_client, token, "first", created_by="serve")
    before = redis_client.hget(keys.TOKENS, auth.digest(token))
    assert not auth.register_admin_token(redis_client, token, "second")
    assert redis_client.hget(keys.TOKENS, auth.digest(token)) == before
    assert [e["action"] for e in tokens.audit(redis_client)] == ["created"]


def test_revoked_admin_token_file_is_replaced_not_brought_back(redis_client, tmp_path):
    first = ensure_admin_token(redis_client, tmp_path)
    tokens.create_token(redis_client, auth.ADMIN, "other", "cli")
    tokens.revoke_token(redis_client, auth.token_id(auth.digest(first)), "admin:tok_x")
    # The next `serve` start must not re-register the revoked token from the file.
    second = ensure_admin_token(redis_client, tmp_path)
    assert second and second != first
    assert (tmp_path / "admin-token").read_text().strip() == second
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, f"Bearer {first}", None)
    assert _role(redis_client, second) == auth.ADMIN
    assert ensure_admin_token(redis_client, tmp_path) is None


# --- upgrade from the previous release ----------------------------------------------------


def _previous_release_tokens(client: redis.Redis) -> dict[str, str]:
    """Write tokens exactly as the previous release did: auth:tokens, hash -> {"kind": …}."""
    admin, agent_blue = auth.new_token(auth.ADMIN), auth.new_token(auth.AGENT)
    client.hset("auth:tokens", mapping={
        auth.digest(admin): json.dumps({"kind": "admin", "label": "admin"}),
        auth.digest(agent_blue): json.dumps({"kind": "agent", "system": "blue"}),
    })
    return {"admin": admin, "agent": agent_blue}


def test_previous_release_tokens_move_and_keep_working(redis_client):
    old = _previous_release_tokens(redis_client)
    assert tokens.migrate_legacy(redis_client) == 2
    assert not redis_client.exists("auth:tokens")
    assert _role(redis_client, old["admin"]) == auth.ADMIN
    assert auth.authenticate(redis_client, f"Bearer {old['agent']}", None).system == "blue"
    listed = {t["role"]: t for t in tokens.list_tokens(redis_client)}
    assert listed["admin"]["id"] == auth.token_id(auth.digest(old["admin"]))
    assert listed["admin"]["created_at"] is None and listed["agent"]["system"] == "blue"
    # Again: nothing to do, nothing changed.
    before = redis_client.hgetall(keys.TOKENS)
    assert tokens.migrate_legacy(redis_client) == 0
    assert redis_client.hgetall(keys.TOKENS) == before


def test_migration_keeps_newer_records_and_never_resurrects_a_revoked_token(redis_client):
    old = _previous_release_tokens(redis_client)
    newer = json.dumps({"kind": "admin", "label": "renamed", "created_at": "2026-11-01T00:00:00Z"})
    redis_client.hset(keys.TOKENS, auth.digest(old["admin"]), newer)
    tokens.migrate_legacy(redis_client)
    assert redis_client.hget(keys.TOKENS, auth.digest(old["admin"])) == newer
    # Revoked after the move: a second migration (another process starting) changes nothing.
    tokens.create_token(redis_client, auth.ADMIN, "keeper", "cli")
    tokens.revoke_token(redis_client, auth.token_id(auth.digest(old["admin"])), "cli")
    tokens.migrate_legacy(redis_client)
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, f"Bearer {old['admin']}", None)


def test_many_processes_migrating_at_once_move_each_token_once(valkey, redis_client):
    old = _previous_release_tokens(redis_client)
    moved: list[int] = []
    clients = [redis.Redis.from_url(valkey.url, decode_responses=True) for _ in range(8)]
    barrier = threading.Barrier(len(clients))

    def start(client):
        barrier.wait()
        moved.append(tokens.migrate_legacy(client))

    threads = [threading.Thread(target=start, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(moved) == [0] * 7 + [2]
    assert set(redis_client.hkeys(keys.TOKENS)) == {auth.digest(t) for t in old.values()}
    for client in clients:
        client.close()


def test_app_moves_previous_release_tokens_before_its_first_lookup(app, redis_client):
    old = _previous_release_tokens(redis_client)
    client = app.test_client()
    answer = client.get("/v1/whoami", headers={"Authorization": f"Bearer {old['agent']}"})
    assert answer.status_code == 200 and answer.get_json()["system"] == "blue"
    assert not redis_client.exists("auth:tokens")


def test_serve_start_moves_them_and_keeps_the_admin_token_file(redis_client, tmp_path):
    old = _previous_release_tokens(redis_client)
    (tmp_path / "admin-token").write_text(old["admin"] + "\n")
    assert ensure_admin_token(redis_client, tmp_path) is None
    assert not redis_client.exists("auth:tokens")
    assert _role(redis_client, old["admin"]) == auth.ADMIN
    assert json.loads(redis_client.hget(keys.TOKENS, auth.digest(old["admin"])))["label"] == \
        "admin"


# --- the rule for every sequence of operations --------------------------------------------

operation = st.one_of(
    st.tuples(st.just("create"), st.sampled_from([auth.ADMIN, auth.AUDITOR]),
              st.text(st.characters(codec="utf-8", categories=("L", "N", "P"),
                                    include_characters=" "),
                      min_size=1, max_size=20).filter(str.strip)),
    st.tuples(st.just("revoke"), st.integers(0, 30)),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(operation, max_size=12))
def test_a_token_works_exactly_while_created_and_not_revoked(redis_client, ops):
    """Whatever admins create and revoke, in any order: the live set is what authenticates,
    also through a process's token cache at every step (issue 13), the listing shows exactly
    it, and neither a token nor its hash is ever shown."""
    redis_client.flushall()
    keeper, keeper_token = tokens.create_token(redis_client, auth.ADMIN, "keeper", "cli")
    live = {keeper["id"]: (keeper_token, auth.ADMIN)}
    dead: list[str] = []
    cache = TokenCache()

    def cached_agrees() -> None:
        redis_client.ping()  # the coordinator answers a change only after a later round trip
        for token, role in live.values():
            assert auth.authenticate(redis_client, f"Bearer {token}", None,
                                     cache=cache).kind == role
        for token in dead:
            with pytest.raises(AuthError):
                auth.authenticate(redis_client, f"Bearer {token}", None, cache=cache)

    for op in ops:
        cached_agrees()
        if op[0] == "create":
            record, token = tokens.create_token(redis_client, op[1], op[2], "cli")
            live[record["id"]] = (token, op[1])
        else:
            choices = sorted(live)
            wanted = choices[op[1] % len(choices)]
            admins = sum(role == auth.ADMIN for _, role in live.values())
            if live[wanted][1] == auth.ADMIN and admins == 1:
                with pytest.raises(Conflict):
                    tokens.revoke_token(redis_client, wanted, "cli")
                continue
            tokens.revoke_token(redis_client, wanted, "cli")
            dead.append(live.pop(wanted)[0])
    cached_agrees()
    cache.clear()
    for token_id_, (token, role) in live.items():
        principal = auth.authenticate(redis_client, f"Bearer {token}", None)
        assert (principal.kind, principal.token_id) == (role, token_id_)
    for token in dead:
        with pytest.raises(AuthError):
            auth.authenticate(redis_client, f"Bearer {token}", None)
    listed = tokens.list_tokens(redis_client)
    assert sorted(t["id"] for t in listed) == sorted(live)
    shown = json.dumps(listed) + json.dumps(tokens.audit(redis_client))
    for token in [t for t, _ in live.values()] + dead:
        assert token not in shown and auth.digest(token) not in shown


def test_register_admin_token_answers_whether_it_was_new_and_records_who(redis_client):
    # serve registers the admin-token file's token at every start: the answer says whether this
    # start created it, and the record and the audit name the caller ("serve"), not a default.
    token = auth.new_token(auth.ADMIN)
    assert auth.register_admin_token(redis_client, token, "file", created_by="serve") is True
    assert auth.register_admin_token(redis_client, token, "file", created_by="serve") is False
    [listed] = tokens.list_tokens(redis_client)
    assert (listed["label"], listed["created_by"]) == ("file", "serve")
    assert [(e["action"], e["label"], e["by"]) for e in tokens.audit(redis_client)] == [
        ("created", "file", "serve")]


def test_every_refusal_says_exactly_what_to_do(redis_client, agent):
    # The whole message, not a word of it: it is what an admin reads to get unstuck.
    def refusal(error, *args):
        with pytest.raises(error) as caught:
            tokens.revoke_token(redis_client, *args)
        return caught.value.message

    assert refusal(NotFound, "nope", "cli") == (
        "No token 'nope': token ids look like tok_0123456789abcdef")
    configured = auth.token_id(auth.digest("isa_env"))
    assert refusal(Conflict, configured, "cli", "isa_env") == (
        "This admin token is set by INVOICE_SYNC_ADMIN_TOKEN: change or unset the variable and "
        "restart the coordinator to revoke it")
    blue = auth.token_id(auth.digest(agent("blue")["Authorization"].removeprefix("Bearer ")))
    assert refusal(Conflict, blue, "cli") == (
        f"{blue} is the agent token of system 'blue': rotate it "
        "(POST /v1/systems/blue/agent-token) or delete the system")
    only, _ = tokens.create_token(redis_client, auth.ADMIN, "only", "cli")
    assert refusal(Conflict, only["id"], "cli") == (
        "This is the last admin token: create another admin token first")
    for header in (None, "", "Basic dXNlcjpwYXNz", "bearer isa_x"):
        with pytest.raises(AuthError) as caught:
            auth.authenticate(redis_client, header, None)
        assert caught.value.message == (
            "Missing bearer token: send `Authorization: Bearer <token>`")
    with pytest.raises(AuthError) as caught:
        auth.authenticate(redis_client, "Bearer isa_unknown", None)
    assert caught.value.message == "Invalid or revoked token"


def test_a_configured_admin_token_admits_itself_only(redis_client, agent):
    # With INVOICE_SYNC_ADMIN_TOKEN set, that token is an admin named by its id (audit records
    # say which admin acted); every other token keeps its own role, or none.
    configured = "isa_" + "e" * 43
    principal = auth.authenticate(redis_client, f"Bearer {configured}", configured)
    assert (principal.kind, principal.system) == (auth.ADMIN, None)
    assert principal.actor == f"admin:{auth.token_id(auth.digest(configured))}"
    blue = agent("blue")["Authorization"]
    assert auth.authenticate(redis_client, blue, configured) == auth.Principal(auth.AGENT, "blue")
    for stranger in ("Bearer isa_other", f"Bearer {configured}x"):
        with pytest.raises(AuthError):
            auth.authenticate(redis_client, stranger, configured)


def test_a_refused_token_says_what_to_send_instead_and_labels_may_be_200_long(redis_client):
    """The refusals are what `invoice-sync token create` prints: API.md's 422 message and the
    field's whole advice."""
    with pytest.raises(InvalidInput) as role:
        tokens.create_token(redis_client, auth.AGENT, "x", "cli")
    assert (role.value.message, role.value.errors) == ("Validation failed", {"json": {"role": [
        "Must be one of: admin, auditor (agent tokens come with their system)."]}})
    with pytest.raises(InvalidInput) as label:
        tokens.create_token(redis_client, auth.AUDITOR, "x" * 201, "cli")
    assert (label.value.message, label.value.errors) == ("Validation failed", {"json": {
        "label": ["Give 1-200 printable characters saying who or what holds the token."]}})
    record, _ = tokens.create_token(redis_client, auth.AUDITOR, "x" * 200, "cli")
    assert record["label"] == "x" * 200


def test_a_token_and_its_audit_record_are_written_in_one_transaction(redis_client):
    """Another process never sees a token whose creation is not in the audit trail, and a
    connection lost half-way writes neither (MULTI/EXEC: the server runs both or none)."""
    sent = redis_counting.top_level(
        redis_client, lambda: tokens.create_token(redis_client, auth.AUDITOR, "x", "cli"))
    assert sent == ["MULTI", "HSET", "RPUSH", "EXEC"]


def test_any_admin_finds_an_admin_token_in_either_releases_hash(redis_client, agent):
    """`invoice-sync doctor` reports a coordinator nobody can administer."""
    assert tokens.any_admin(redis_client) is False
    agent("blue")
    tokens.create_token(redis_client, auth.AUDITOR, "reader", "cli")
    assert tokens.any_admin(redis_client) is False
    redis_client.hset(keys.LEGACY_TOKENS, "d" * 64, json.dumps({"kind": "admin"}))
    assert tokens.any_admin(redis_client) is True
    redis_client.delete(keys.LEGACY_TOKENS)
    tokens.create_token(redis_client, auth.ADMIN, "ops", "cli")
    assert tokens.any_admin(redis_client) is True
