"""Metrics, JSON logs and request ids, security headers, per-token rate limits, readiness."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.ops.ratelimit import RateLimiter

pytestmark = pytest.mark.integration


def add_whoami(app):
    """Give the app an authenticated endpoint (the real ones live on other branches)."""

    @app.post("/v1/test/whoami")
    @auth.require(auth.ADMIN, auth.AGENT)
    def whoami():
        principal = auth.current_principal()
        return {"kind": principal.kind, "system": principal.system}

    return app


@pytest.fixture
def agent_token(redis_client):
    token = auth.new_token(auth.AGENT)
    redis_client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("blue"))
    return token


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- metrics ------------------------------------------------------------------------------


def test_metrics_count_by_url_rule_not_raw_path(client):
    before = sample("invoice_sync_http_requests_total", endpoint="/livez", method="GET",
                    status="200")
    unmatched = sample("invoice_sync_http_requests_total", endpoint="<unmatched>", method="GET",
                       status="404")
    for _ in range(3):
        client.get("/livez")
    client.get("/v1/no/such/path/12345")
    body = client.get("/metrics").get_data(as_text=True)
    assert sample("invoice_sync_http_requests_total", endpoint="/livez", method="GET",
                  status="200") == before + 3
    assert sample("invoice_sync_http_requests_total", endpoint="<unmatched>", method="GET",
                  status="404") == unmatched + 1
    assert "/v1/no/such/path" not in body
    assert "invoice_sync_http_request_duration_seconds_bucket" in body
    for name in ("invoice_sync_allocations_total", "invoice_sync_redis_durable",
                 "invoice_sync_warnings_open"):
        assert f"# HELP {name}" in body


def test_metrics_content_type_and_no_auth(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")


def test_allocations_counter_is_importable_for_numbering():
    from coordinator.ops.metrics import ALLOCATIONS

    before = sample("invoice_sync_allocations_total", series="default", sequence="invoice",
                    result="replay")
    ALLOCATIONS.labels(series="default", sequence="invoice", result="replay").inc()
    assert sample("invoice_sync_allocations_total", series="default", sequence="invoice",
                  result="replay") == before + 1


def test_redis_durable_gauge_follows_readiness(client, redis_client):
    client.get("/readyz")
    assert sample("invoice_sync_redis_durable") == 1
    # (appendfsync everysec would not do: the session's Valkey confirms with WAITAOF then)
    redis_client.config_set("appendonly", "no")
    try:
        client.get("/readyz")
        assert sample("invoice_sync_redis_durable") == 0
    finally:
        redis_client.config_set("appendonly", "yes")


def test_cli_does_not_import_prometheus_client():
    # prometheus_client picks in-memory or multiprocess values when first imported; `serve`
    # sets PROMETHEUS_MULTIPROC_DIR after importing the CLI, so the CLI must not import it.
    code = "import sys, coordinator.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False", "coordinator.cli imports prometheus_client too early"


# --- readiness ----------------------------------------------------------------------------


def test_readyz_503_on_evicting_maxmemory_policy(client, redis_client):
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert any("noeviction" in p for p in response.get_json()["problems"])
        assert response.get_json()["redis"]["maxmemory_policy"] == "allkeys-lru"
    finally:
        redis_client.config_set("maxmemory-policy", "noeviction")
    assert client.get("/readyz").status_code == 200


# --- request ids and logs -----------------------------------------------------------------


def test_request_id_generated_and_echoed_on_errors(client):
    ok = client.get("/livez")
    missing = client.get("/v1/nothing")
    assert len(ok.headers["X-Request-ID"]) == 32
    assert missing.headers["X-Request-ID"] and missing.headers["X-Request-ID"] != \
        ok.headers["X-Request-ID"]


@pytest.mark.parametrize("incoming, kept", [
    ("abc-123.def:ghi_4", True),
    ("x" * 128, True),
    ("x" * 129, False),
    ("evil value", False),
    ("id\"quote", False),
    ("<script>", False),
    ("", False),
])
def test_request_id_validated(client, incoming, kept):
    echoed = client.get("/livez", headers={"X-Request-ID": incoming}).headers["X-Request-ID"]
    assert (echoed == incoming) is kept
    assert "\n" not in echoed and len(echoed) <= 128


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_request_log_line(app, agent_token, capsys):
    add_whoami(app)
    app.test_client().post("/v1/test/whoami?x=1", headers={**bearer(agent_token),
                                                          "X-Request-ID": "req-42"})
    lines = [e for e in json_lines(capsys.readouterr().err) if e.get("request_id") == "req-42"]
    assert lines, "no request log line"
    entry = lines[-1]
    assert entry["logger"] == "coordinator.request" and entry["level"] == "INFO"
    assert entry["method"] == "POST" and entry["path"] == "/v1/test/whoami"
    assert entry["status"] == 200 and entry["duration_ms"] >= 0
    assert entry["principal"] == "agent" and entry["system"] == "blue"
    assert {"time", "message"} <= set(entry)


def test_tokens_and_secrets_never_logged(app, agent_token, admin_token, capsys):
    add_whoami(app)
    client = app.test_client()
    secret = "whmcs-secret-Zq9vX2"
    bogus = "isg_not-a-real-token-Pp7"
    client.post("/v1/test/whoami", headers=bearer(agent_token))
    client.post("/v1/test/whoami", headers=bearer(bogus))
    client.post(f"/v1/test/whoami?token={agent_token}", headers=bearer(admin_token),
                json={"api_secret": secret, "api_identifier": "id-Kk3"})
    client.post("/v1/systems", headers=bearer(admin_token), json={"api_secret": secret})
    client.get("/livez", headers={"Authorization": f"Bearer {agent_token}"})
    err = capsys.readouterr().err
    assert json_lines(err), "expected request log lines"
    for leak in (agent_token, admin_token, bogus, secret, "id-Kk3", "Bearer", "authorization"):
        assert leak not in err and leak.lower() not in err.lower()


# --- security headers ---------------------------------------------------------------------

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@pytest.mark.parametrize("method, path, status", [
    ("get", "/livez", 200), ("get", "/v1/nothing", 404), ("delete", "/livez", 405),
    ("post", "/v1/test/whoami", 401), ("get", "/metrics", 200),
])
def test_security_headers_everywhere(app, method, path, status):
    add_whoami(app)
    response = getattr(app.test_client(), method)(path)
    assert response.status_code == status
    for name, value in SECURITY.items():
        assert response.headers[name] == value
    assert "Strict-Transport-Security" not in response.headers


def test_hsts_only_over_https(client):
    response = client.get("/livez", base_url="https://coordinator.example")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_forwarded_proto_trusted_only_with_trusted_proxies(app_config, redis_client):
    forwarded = {"X-Forwarded-Proto": "https"}
    plain = create_app(app_config).test_client().get("/livez", headers=forwarded)
    assert "Strict-Transport-Security" not in plain.headers
    proxied = create_app({**app_config, "TRUSTED_PROXIES": 1}).test_client()
    assert "Strict-Transport-Security" in proxied.get("/livez", headers=forwarded).headers


# --- rate limits --------------------------------------------------------------------------


def test_rate_limit_per_token_429_in_error_shape(app_config, redis_client, agent_token,
                                                 admin_token):
    app = add_whoami(create_app({**app_config, "RATE_LIMIT_AGENT": 3, "RATE_LIMIT_ADMIN": 2}))
    client = app.test_client()
    assert [client.post("/v1/test/whoami", headers=bearer(agent_token)).status_code
            for _ in range(4)] == [200, 200, 200, 429]
    limited = client.post("/v1/test/whoami", headers=bearer(agent_token))
    body = limited.get_json()
    assert limited.status_code == 429 and body["code"] == 429
    assert body["status"] == "Too Many Requests" and "3 per 60 s" in body["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-Request-ID"]
    # Another token has its own budget, with its own kind's limit.
    assert [client.post("/v1/test/whoami", headers=bearer(admin_token)).status_code
            for _ in range(3)] == [200, 200, 429]
    # Unauthenticated ops endpoints are never limited.
    assert all(client.get("/livez").status_code == 200 for _ in range(10))


def test_rate_limit_counts_across_app_instances(app_config, redis_client, agent_token):
    # Two apps stand for two coordinator processes: the budget lives in Redis, not in memory.
    first, second = (add_whoami(create_app({**app_config, "RATE_LIMIT_AGENT": 2}))
                     .test_client() for _ in range(2))
    assert first.post("/v1/test/whoami", headers=bearer(agent_token)).status_code == 200
    assert second.post("/v1/test/whoami", headers=bearer(agent_token)).status_code == 200
    assert first.post("/v1/test/whoami", headers=bearer(agent_token)).status_code == 429


def test_rate_limit_zero_means_off_and_keeps_no_counter(app_config, redis_client, agent_token):
    app = add_whoami(create_app({**app_config, "RATE_LIMIT_AGENT": 0, "RATE_LIMIT_ADMIN": 0,
                                 "RATE_LIMIT_AUDITOR": 0, "RATE_LIMIT_AUTH_FAILURES": 0}))
    client = app.test_client()
    assert all(client.post("/v1/test/whoami", headers=bearer(agent_token)).status_code == 200
               for _ in range(5))
    assert not redis_client.keys(keys.RATE_LIMIT_PREFIX + "*")


def test_rate_limit_config_admin_token(app_config, redis_client):
    app = add_whoami(create_app({**app_config, "ADMIN_TOKEN": "isa_from-config",
                                 "RATE_LIMIT_ADMIN": 1}))
    client = app.test_client()
    assert client.post("/v1/test/whoami", headers=bearer("isa_from-config")).status_code == 200
    assert client.post("/v1/test/whoami", headers=bearer("isa_from-config")).status_code == 429


def test_auth_and_rate_counter_share_one_round_trip(redis_client, agent_token):
    calls = []
    original = redis_client.connection_pool.get_connection

    def counting(*args, **kwargs):
        connection = original(*args, **kwargs)
        send = connection.send_packed_command

        def send_packed(command, *a, **k):
            calls.append(command)
            return send(command, *a, **k)

        connection.send_packed_command = send_packed
        return connection

    redis_client.connection_pool.get_connection = counting
    limiter = RateLimiter({"agent": 10, "admin": 10})
    principal = auth.authenticate(redis_client, f"Bearer {agent_token}", None, limiter)
    assert principal == auth.Principal(auth.AGENT, "blue")
    assert len(calls) == 1


def test_rate_counter_stays_out_of_the_aof(redis_client, agent_token):
    # A counter in the AOF would make every token lookup wait for an fsync (appendfsync always).
    limiter = RateLimiter({"agent": 10, "admin": 10}, window=60, clock=lambda: 6000.0)
    before = redis_client.info("persistence")["aof_current_size"]
    for _ in range(3):
        auth.authenticate(redis_client, f"Bearer {agent_token}", None, limiter)
    assert redis_client.info("persistence")["aof_current_size"] == before
    key = keys.rate_limit(auth.digest(agent_token), 100)
    assert redis_client.get(key) == "3"
    assert 0 < redis_client.ttl(key) <= 120


def test_rate_limiter_window_and_retry_after():
    now = [1000.0]
    limiter = RateLimiter({"agent": 1, "admin": 0}, window=60, clock=lambda: now[0])
    limiter.check("agent", 1, 16)
    limiter.check("admin", 10_000, 16)  # 0 = unlimited
    from coordinator.exceptions import RateLimited

    with pytest.raises(RateLimited) as caught:
        limiter.check("agent", 2, 16)
    assert caught.value.retry_after == 1020 - 1000


def test_allocations_counted_by_result(client, agent):
    from prometheus_client import REGISTRY

    def count(result):
        return REGISTRY.get_sample_value(
            "invoice_sync_allocations_total",
            {"series": "default", "sequence": "invoice", "result": result}
        ) or 0.0

    blue = agent("blue")
    new_before, replay_before = count("new"), count("replay")
    body = {"document": "invoice", "reference": "metrics-1", "date": "2026-11-21"}
    assert client.post("/v1/allocations", json=body, headers=blue).status_code == 201
    assert client.post("/v1/allocations", json=body, headers=blue).status_code == 200
    assert count("new") == new_before + 1
    assert count("replay") == replay_before + 1
