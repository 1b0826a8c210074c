"""Rate limits on real Valkey: only known tokens get a counter; failures count per address."""

from __future__ import annotations

import secrets

import pytest

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.auth import tokens
from coordinator.ops import ratelimit
from coordinator.ops.ratelimit import RateLimiter, client_group

pytestmark = pytest.mark.integration


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def from_address(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def accounting_keys(redis_client) -> list[str]:
    return sorted(redis_client.scan_iter(match=keys.RATE_LIMIT_PREFIX + "*", count=1000))


NOW = 6000.0
"""The limiter's clock in these tests: window 100 of 60 s, so no burst crosses a boundary."""
WINDOW = 100


@pytest.fixture
def make_client(app_config, redis_client):
    def make(**settings):
        app = create_app({**app_config, **settings})
        app.extensions[ratelimit.EXTENSION].clock = lambda: NOW
        return app.test_client()

    return make


def test_random_tokens_leave_no_key_per_token(make_client, redis_client):
    client = make_client()  # the default limits
    before = redis_client.dbsize()
    for _ in range(500):
        client.get("/v1/whoami", headers=bearer("isa_" + secrets.token_urlsafe(32)))
    # One hash of failures per window, whatever was tried; no counter per made-up token.
    assert accounting_keys(redis_client) == [keys.rate_auth_failures(WINDOW)]
    assert redis_client.dbsize() - before == 1
    # One field: the test client's address, with every failure counted.
    assert redis_client.hgetall(keys.rate_auth_failures(WINDOW)) == {"127.0.0.1": "500"}


def test_failed_authentications_are_throttled_per_address(make_client, redis_client, agent):
    client = make_client(RATE_LIMIT_AUTH_FAILURES=5)
    attacker = from_address("203.0.113.7")
    codes = [client.get("/v1/whoami", headers=bearer(f"isa_guess{n}"), **attacker).status_code
             for n in range(8)]
    assert codes == [401] * 5 + [429] * 3
    limited = client.get("/v1/whoami", headers=bearer("isa_more"), **attacker)
    body = limited.get_json()
    assert body["code"] == 429 and "failed authentications" in body["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Another address is unaffected; a valid token from the throttled one is still served.
    other = client.get("/v1/whoami", headers=bearer("isa_typo"), **from_address("198.51.100.2"))
    assert other.status_code == 401
    assert client.get("/v1/whoami", headers=agent("blue"), **attacker).status_code == 200


def test_forwarded_for_counts_only_behind_a_trusted_proxy(make_client, redis_client):
    untrusted = make_client(RATE_LIMIT_AUTH_FAILURES=3)
    spoofed = [untrusted.get("/v1/whoami", headers={**bearer("isa_x"),
                                                     "X-Forwarded-For": f"192.0.2.{n}"},
                             **from_address("203.0.113.9")).status_code for n in range(5)]
    assert spoofed == [401, 401, 401, 429, 429], "a made-up X-Forwarded-For escaped the limit"
    redis_client.flushall()
    proxied = make_client(RATE_LIMIT_AUTH_FAILURES=3, TRUSTED_PROXIES=1)
    through_proxy = [proxied.get("/v1/whoami", headers={**bearer("isa_x"),
                                                        "X-Forwarded-For": f"192.0.2.{n}"},
                                 **from_address("127.0.0.1")).status_code for n in range(5)]
    assert through_proxy == [401] * 5  # five clients behind the proxy, one failure each


def test_memory_stays_bounded_whatever_the_number_of_addresses(make_client, redis_client):
    client = make_client(RATE_LIMIT_AUTH_FAILURES=1000, RATE_LIMIT_AUTH_FAILURE_ADDRESSES=10)
    for n in range(120):
        client.get("/v1/whoami", headers=bearer(f"isa_{n}"), **from_address(f"10.1.{n}.1"))
    assert accounting_keys(redis_client) == [keys.rate_auth_failures(WINDOW)]
    counted = redis_client.hgetall(keys.rate_auth_failures(WINDOW))
    assert len(counted) == 11 and counted["*"] == "110"  # 10 addresses, then one shared field
    assert sum(int(v) for v in counted.values()) == 120


def test_ipv6_counts_per_64(make_client):
    client = make_client(RATE_LIMIT_AUTH_FAILURES=2)
    same_host = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:abcd::9"]
    codes = [client.get("/v1/whoami", headers=bearer("isa_x"), **from_address(a)).status_code
             for a in same_host]
    assert codes == [401, 401, 429]
    assert client.get("/v1/whoami", headers=bearer("isa_x"),
                      **from_address("2001:db8:1:3::1")).status_code == 401


@pytest.mark.parametrize("address, group", [
    ("203.0.113.7", "203.0.113.7"), ("::ffff:203.0.113.7", "203.0.113.7"),
    ("2001:db8::1", "2001:db8::/64"), ("2001:db8:0:0:ffff::1", "2001:db8::/64"),
    ("", "unknown"), (None, "unknown"), ("not-an-ip", "not-an-ip"),
])
def test_client_group(address, group):
    assert client_group(address) == group


def test_known_tokens_keep_their_budget_per_role(make_client, redis_client, admin_token):
    client = make_client(RATE_LIMIT_AUDITOR=2, RATE_LIMIT_ADMIN=3)
    _, auditor = tokens.create_token(redis_client, auth.AUDITOR, "a", "cli")
    assert [client.get("/v1/warnings", headers=bearer(auditor)).status_code
            for _ in range(3)] == [200, 200, 429]
    assert [client.get("/v1/warnings", headers=bearer(admin_token)).status_code
            for _ in range(4)] == [200, 200, 200, 429]
    assert accounting_keys(redis_client) == sorted(
        [keys.TOKENS_LAST_USED, *(keys.rate_limit(auth.digest(t), WINDOW)
                                  for t in (auditor, admin_token))])


def test_failures_and_last_use_stay_out_of_the_aof(redis_client, agent):
    headers = agent("blue")
    token = headers["Authorization"].removeprefix("Bearer ")
    limiter = RateLimiter({"agent": 10, "admin": 10, "auditor": 10}, window=60, failures=5,
                          clock=lambda: NOW)
    before = redis_client.info("persistence")["aof_current_size"]
    for n in range(3):
        with pytest.raises(auth.AuthError):
            auth.authenticate(redis_client, f"Bearer isa_bad{n}", None, limiter, "192.0.2.1")
    auth.authenticate(redis_client, f"Bearer {token}", None, limiter, "192.0.2.1")
    assert redis_client.info("persistence")["aof_current_size"] == before
    assert redis_client.hgetall(keys.rate_auth_failures(WINDOW)) == {"192.0.2.1": "3"}
    assert 0 < redis_client.ttl(keys.rate_auth_failures(WINDOW)) <= 120
    listed = {t["id"]: t for t in tokens.list_tokens(redis_client)}
    assert listed[auth.token_id(auth.digest(token))]["last_used"] == "1970-01-01T01:40:00Z"


def test_limits_off_keep_no_counter_at_all(make_client, redis_client, agent):
    client = make_client(RATE_LIMIT_AGENT=0, RATE_LIMIT_ADMIN=0, RATE_LIMIT_AUDITOR=0,
                         RATE_LIMIT_AUTH_FAILURES=0)
    headers = agent("blue")
    for n in range(5):
        assert client.get("/v1/whoami", headers=headers).status_code == 200
        assert client.get("/v1/whoami", headers=bearer(f"isa_{n}")).status_code == 401
    assert accounting_keys(redis_client) == []


def test_the_configured_admin_token_is_not_a_failed_authentication(make_client, redis_client):
    # INVOICE_SYNC_ADMIN_TOKEN is known without a lookup: its requests count against the admin
    # budget, never as failures of its address, so an admin's own traffic cannot lock out a
    # colleague at the same address who mistypes a token once.
    client = make_client(ADMIN_TOKEN="isa_configured", RATE_LIMIT_AUTH_FAILURES=2,
                         RATE_LIMIT_ADMIN=4)
    office = from_address("198.51.100.9")
    assert [client.get("/v1/whoami", headers=bearer("isa_configured"), **office).status_code
            for _ in range(3)] == [200, 200, 200]
    assert client.get("/v1/whoami", headers=bearer("isa_typo"), **office).status_code == 401
    assert redis_client.hgetall(keys.rate_auth_failures(WINDOW)) == {"198.51.100.9": "1"}
