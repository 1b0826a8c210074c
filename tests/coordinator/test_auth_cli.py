"""`invoice-sync token create|list|revoke|create-admin` against a real Valkey."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from coordinator import auth
from coordinator.auth import tokens
from coordinator.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def run(valkey, redis_client, monkeypatch):
    for name in ("INVOICE_SYNC_ADMIN_TOKEN", "INVOICE_SYNC_SENTINELS"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str, **env: str):
        return CliRunner().invoke(main, ["token", *args],
                                  env={"INVOICE_SYNC_REDIS_URL": valkey.url, **env})

    return invoke


def test_create_list_revoke(run, redis_client, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    created = run("create", "--role", "auditor", "--label", "Audit & Co")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("isr_") and "\n" not in token
    assert auth.authenticate(redis_client, f"Bearer {token}", None).kind == "auditor"
    token_id = auth.token_id(auth.digest(token))
    assert created.stderr == (
        f"created auditor token {token_id} (Audit & Co); shown this once:\n")

    run("create", "--role", "admin", "--label", "ops")
    listed = run("list")
    assert listed.exit_code == 0
    assert token_id in listed.stdout and "Audit & Co" in listed.stdout
    assert token not in listed.stdout and auth.digest(token) not in listed.stdout
    as_json = json.loads(run("list", "--json").stdout)
    assert {t["role"] for t in as_json} == {"admin", "auditor"}
    assert next(t for t in as_json if t["id"] == token_id)["created_by"] == "cli:alice"

    revoked = run("revoke", token_id)
    assert revoked.exit_code == 0 and token_id in revoked.stdout
    with pytest.raises(auth.AuthError):
        auth.authenticate(redis_client, f"Bearer {token}", None)
    again = run("revoke", token_id)
    assert (again.exit_code, again.output) == (1, f"Error: No token {token_id!r}\n")
    assert [(e["action"], e["by"]) for e in tokens.audit(redis_client)] == [
        ("created", "cli:alice"), ("created", "cli:alice"), ("revoked", "cli:alice")]


def test_create_admin_still_works(run, redis_client):
    created = run("create-admin", "--label", "old script")
    assert created.exit_code == 0, created.output
    principal = auth.authenticate(redis_client, f"Bearer {created.stdout.strip()}", None)
    assert principal.is_admin


def test_refusals_are_clear_and_change_nothing(run, redis_client, agent):
    headers = agent("blue")
    agent_id = auth.token_id(auth.digest(headers["Authorization"].removeprefix("Bearer ")))
    before = redis_client.hgetall("{auth}:tokens")
    refused = run("revoke", agent_id)
    assert refused.exit_code == 1 and "agent-token" in refused.output
    bad_role = run("create", "--role", "agent", "--label", "x")
    assert bad_role.exit_code == 2 and "'agent' is not one of" in bad_role.output
    empty = run("create", "--role", "auditor", "--label", " ")
    assert (empty.exit_code, empty.output) == (1, "Error: Validation failed (label: Give 1-200 "
                                                  "printable characters saying who or what "
                                                  "holds the token.)\n")
    assert redis_client.hgetall("{auth}:tokens") == before


def test_the_configured_admin_token_is_listed_but_not_revoked(run):
    listed = json.loads(run("list", "--json", INVOICE_SYNC_ADMIN_TOKEN="isa_env").stdout)
    assert [t["source"] for t in listed] == ["environment"]
    refused = run("revoke", listed[0]["id"], INVOICE_SYNC_ADMIN_TOKEN="isa_env")
    assert refused.exit_code == 1 and "INVOICE_SYNC_ADMIN_TOKEN" in refused.output


def test_previous_release_tokens_are_moved_first(run, redis_client):
    old = auth.new_token(auth.ADMIN)
    redis_client.hset("auth:tokens", auth.digest(old), json.dumps({"kind": "admin",
                                                                   "label": "admin"}))
    listed = json.loads(run("list", "--json").stdout)
    assert [t["id"] for t in listed] == [auth.token_id(auth.digest(old))]
    assert not redis_client.exists("auth:tokens")


def test_serve_upgrades_a_previous_release_data_dir(tmp_path):
    """A data dir as the previous release left it: its admin-token file, its Valkey with
    tokens in auth:tokens. The new `serve` accepts every token and lists them with ids."""
    import redis
    import requests

    from coordinator.ops.embedded import ValkeyServer
    from tests.coordinator.test_cli import Serve, _cli

    data_dir = tmp_path / "data"
    admin, agent_blue = auth.new_token(auth.ADMIN), auth.new_token(auth.AGENT)
    old = ValkeyServer(data_dir / "valkey", unixsocket=True).start()
    try:
        raw = redis.Redis.from_url(old.url, decode_responses=True)
        raw.hset("auth:tokens", mapping={
            auth.digest(admin): json.dumps({"kind": "admin", "label": "admin"}),
            auth.digest(agent_blue): json.dumps({"kind": "agent", "system": "blue"}),
        })
        raw.close()
    finally:
        old.stop()
    (data_dir / "admin-token").write_text(admin + "\n")

    serve = Serve(data_dir).start()
    try:
        assert admin not in serve.stdout.read_text(), "no new admin token on an upgrade"
        headers = {"Authorization": f"Bearer {admin}"}
        listed = requests.get(serve.url + "/v1/tokens", headers=headers, timeout=10)
        assert listed.status_code == 200, listed.text
        assert {(t["id"], t["role"]) for t in listed.json()} == {
            (auth.token_id(auth.digest(admin)), "admin"),
            (auth.token_id(auth.digest(agent_blue)), "agent")}
        whoami = requests.get(serve.url + "/v1/whoami", timeout=10,
                              headers={"Authorization": f"Bearer {agent_blue}"})
        assert whoami.json() == {"kind": "agent", "system": "blue"}
        cli_list = _cli("token", "list", "--json", "--data-dir", str(data_dir))
        assert cli_list.returncode == 0, cli_list.stderr
        assert len(json.loads(cli_list.stdout)) == 2
    finally:
        assert serve.stop() == 0


def test_a_data_dir_without_a_running_serve_is_named(run, tmp_path):
    """No Redis configured: the commands reach `serve` through its data dir, or say where they
    looked."""
    socket = tmp_path.resolve() / "valkey" / "valkey.sock"
    for args in (("list",), ("create", "--role", "auditor", "--label", "x")):
        answer = run(*args, "--data-dir", str(tmp_path), INVOICE_SYNC_REDIS_URL=None)
        assert (answer.exit_code, answer.output) == (1, (
            f"Error: no Redis configured and no running `invoice-sync serve` at {socket}: "
            "start it (or pass its --data-dir), or set INVOICE_SYNC_REDIS_URL\n"))


def test_a_token_made_where_no_user_name_is_known_is_by_cli(run, redis_client, monkeypatch):
    """A bare container has no passwd entry for its uid: records name the operator `cli`."""

    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 1000")

    monkeypatch.setattr("getpass.getuser", no_user)
    assert run("create", "--role", "auditor", "--label", "x").exit_code == 0
    assert [e["by"] for e in tokens.audit(redis_client)] == ["cli"]
