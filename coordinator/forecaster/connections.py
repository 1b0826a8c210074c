"""Two views of one Redis: decoded strings for our code, raw bytes for RQ (it pickles jobs).

RQ needs ``decode_responses=False``; the rest of the coordinator reads ``str``. Both clients are
built from the same connection settings (URL or Sentinel master), so they always talk to the
same server.
"""

from __future__ import annotations

import redis
from redis.sentinel import SentinelConnectionPool


def with_decoding(client: redis.Redis, decode: bool) -> redis.Redis:
    """Return a client for the same server as ``client`` with ``decode_responses=decode``."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if kwargs.get("decode_responses", False) == decode:
        return client
    kwargs["decode_responses"] = decode
    if isinstance(pool, SentinelConnectionPool):
        return pool.sentinel_manager.master_for(pool.service_name, **kwargs)
    return redis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs))
