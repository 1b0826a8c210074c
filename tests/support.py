"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import redis

from coordinator.keys import RATE_LIMIT_PREFIX


def snapshot(target: str | redis.Redis) -> dict[bytes, bytes]:
    """Return every data key with its DUMP, to prove a request changed nothing.

    Rate-limit counters are left out: every request, accepted or not, is counted against its
    token by design, and they expire on their own.
    """
    raw = redis.Redis.from_url(target) if isinstance(target, str) else redis.Redis(
        connection_pool=redis.ConnectionPool(**{
            **target.connection_pool.connection_kwargs, "decode_responses": False})
    )
    try:
        return {
            key: raw.dump(key)
            for key in sorted(raw.scan_iter(count=1000))
            if not key.startswith(RATE_LIMIT_PREFIX.encode())
        }
    finally:
        raw.close()


def require_tool(what: str) -> None:
    """Skip a test whose tool is missing — or fail it where CI promised the tool.

    ``.ci/run`` installs every tool the suite uses and sets ``INVOICE_SYNC_REQUIRE_TOOLS=1``,
    so a missing tool there is a broken CI, never a silently skipped test.
    """
    import os

    import pytest

    message = f"{what} is not installed: this test did NOT run"
    if os.environ.get("INVOICE_SYNC_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
