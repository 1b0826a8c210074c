"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import redis

from coordinator.keys import RATE_LIMIT_PREFIX


def key_content(raw: redis.Redis, key: bytes) -> object:
    """Return what ``key`` holds, independent of how the server lays it out in memory.

    Not ``DUMP``: a hash or set in hashtable encoding is serialised in bucket order, and that
    order changes under an incremental rehash, which a mere read (HGET) advances. Two DUMPs
    of an unchanged hash can therefore differ.
    """
    kind = raw.type(key).decode()
    if kind == "hash":
        return kind, sorted(raw.hgetall(key).items())
    if kind == "set":
        return kind, sorted(raw.smembers(key))
    if kind == "zset":
        return kind, raw.zrange(key, 0, -1, withscores=True)
    if kind == "list":
        return kind, raw.lrange(key, 0, -1)
    if kind == "string":
        return kind, raw.get(key)
    return kind, raw.dump(key)


def snapshot(target: str | redis.Redis, skip: tuple[bytes, ...] = ()) -> dict[bytes, object]:
    """Return every data key with its content, to prove a request changed nothing.

    Rate-limit counters (and keys starting with one of ``skip``) are left out: every request,
    accepted or not, is counted by design, and they expire on their own.
    """
    raw = redis.Redis.from_url(target) if isinstance(target, str) else redis.Redis(
        connection_pool=redis.ConnectionPool(**{
            **target.connection_pool.connection_kwargs, "decode_responses": False})
    )
    volatile = (RATE_LIMIT_PREFIX.encode(), *skip)
    try:
        return {
            key: key_content(raw, key)
            for key in sorted(raw.scan_iter(count=1000))
            if not key.startswith(volatile)
        }
    finally:
        raw.close()
