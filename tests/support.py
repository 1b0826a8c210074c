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
