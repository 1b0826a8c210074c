"""Helpers of the security tests: the one error shape, and 'this request changed nothing'."""

from __future__ import annotations

import pytest
import redis

from coordinator import auth, keys
from tests import support

VOLATILE_PREFIXES = ("ratelimit:", "rate:", "{rate", keys.RATE_LIMIT_PREFIX)
"""Keys a rejected request may legitimately touch (per-token request counters)."""


def snapshot(client: redis.Redis) -> dict:
    """Every key with its content, except request counters: proof that nothing changed."""
    return support.snapshot(client, tuple(prefix.encode() for prefix in VOLATILE_PREFIXES))


def assert_error_shape(response, codes=None) -> dict:
    """Assert the one error shape of API.md; return the body."""
    assert response.status_code >= 400, response.status_code
    if codes is not None:
        assert response.status_code in (codes if isinstance(codes, tuple | set) else {codes}), (
            response.status_code, response.get_data(as_text=True)[:300])
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert set(body) == {"code", "status", "message", "errors"}, body
    assert body["code"] == response.status_code
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def agent_headers(redis_client: redis.Redis):
    """Factory: headers of a fresh agent token of ``system``."""

    def make(system: str = "blue") -> dict:
        token = auth.new_token(auth.AGENT)
        redis_client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(system))
        return {"Authorization": f"Bearer {token}"}

    return make
