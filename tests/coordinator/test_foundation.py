"""The app factory, the error shape, auth resolution, health endpoints, the embedded server."""

from __future__ import annotations

import json
import stat

import pytest
import redis

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.cli import ensure_admin_token
from coordinator.exceptions import AuthError
from coordinator.ops.embedded import ValkeyServer


def assert_error_shape(response, code):
    assert response.status_code == code
    body = response.get_json()
    assert set(body) == {"code", "status", "message", "errors"}
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_unknown_route_is_a_json_error(client):
    assert_error_shape(client.get("/v1/no-such-thing"), 404)


def test_wrong_method_is_a_json_error(client):
    assert_error_shape(client.delete("/livez"), 405)


def test_livez(client):
    assert client.get("/livez").get_json() == {"status": "ok"}


def test_readyz_ok_on_durable_server(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["redis"]["appendfsync"] == "always"


@pytest.mark.both_servers
def test_readyz_when_fsync_relaxed(valkey, client, redis_client):
    # Without WAITAOF (Redis < 7.2) nothing confirms an fsync under everysec: not ready. With
    # it, writes wait for the fsync: ready, with advice (tests/coordinator/test_ops_durability).
    from tests.coordinator.test_ops_durability import has_waitaof

    redis_client.config_set("appendfsync", "everysec")
    try:
        response = client.get("/healthz")
        body = response.get_json()
        if has_waitaof(valkey.binary):
            assert response.status_code == 200
            assert any("appendfsync is 'everysec'" in a for a in body["advice"])
        else:
            assert response.status_code == 503
            assert any("appendfsync is 'everysec'" in p for p in body["problems"])
    finally:
        redis_client.config_set("appendfsync", "always")


def test_readyz_503_when_replicas_missing(app_config, redis_client):
    app = create_app({**app_config, "DURABLE_REPLICAS": 1})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503


def test_readyz_503_when_redis_down(app_config, tmp_path):
    app = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:1/0",
                      "REDIS_SOCKET_TIMEOUT": 0.2})
    assert app.test_client().get("/readyz").status_code == 503


def test_openapi_served(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["info"]["title"] == "invoice-sync coordinator"
    assert "/livez" in spec["paths"]


def test_create_app_without_redis_refuses(monkeypatch):
    monkeypatch.delenv("INVOICE_SYNC_REDIS_URL", raising=False)
    with pytest.raises(RuntimeError, match="INVOICE_SYNC_REDIS_URL"):
        create_app()


def test_environment_layer_and_overrides(monkeypatch, valkey):
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_DURABLE_REPLICAS", "2")
    app = create_app({"BASE_CURRENCY": "USD"})
    assert app.config["DURABLE_REPLICAS"] == 2
    assert app.config["BASE_CURRENCY"] == "USD"
    assert app.config["UNCONFIRMED_GRACE_SECONDS"] == 3600


def test_tokens_stored_only_as_hashes(redis_client):
    token = auth.new_token(auth.ADMIN)
    auth.register_admin_token(redis_client, token)
    dump = json.dumps(redis_client.hgetall(keys.TOKENS))
    assert token not in dump
    assert auth.authenticate(redis_client, f"Bearer {token}", None).is_admin


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer isa_unknown"])
def test_authenticate_rejects(redis_client, header):
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, header, None)


def test_config_admin_token(redis_client):
    principal = auth.authenticate(redis_client, "Bearer s3cret-admin", "s3cret-admin")
    assert principal.is_admin


def test_agent_principal(redis_client):
    token = auth.new_token(auth.AGENT)
    redis_client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("blue"))
    principal = auth.authenticate(redis_client, f"Bearer {token}", None)
    assert (principal.kind, principal.system) == ("agent", "blue")


def test_first_start_admin_token_file(redis_client, tmp_path):
    created = ensure_admin_token(redis_client, tmp_path)
    path = tmp_path / "admin-token"
    assert created and path.read_text().strip() == created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Second start: nothing new to print, same token still valid even after Redis was wiped.
    redis_client.flushall()
    assert ensure_admin_token(redis_client, tmp_path) is None
    assert auth.authenticate(redis_client, f"Bearer {created}", None).is_admin


def test_embedded_server_survives_kill_9(tmp_path):
    server = ValkeyServer(tmp_path / "v", unixsocket=True).start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.incrby("n", 7) == 7
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        client.close()
        server.kill()
        server.start()
        client = redis.Redis.from_url(server.url)
        assert client.get("n") == b"7"
        client.close()
    finally:
        server.stop()
    assert oct(stat.S_IMODE((tmp_path / "v").stat().st_mode)) == oct(0o700)
