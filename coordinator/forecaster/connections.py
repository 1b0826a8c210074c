"""Two views of one Redis: decoded strings for our code, raw bytes for RQ (it pickles jobs).

RQ needs ``decode_responses=False``; the rest of the coordinator reads ``str``. Both clients are
built from the same connection settings (URL or Sentinel master), so they always talk to the
same server. The other view of a pool is built once and kept as long as that pool lives: one
connection pool per process for syncs, not one per request (each new pool opens its own
connections).
"""

from __future__ import annotations

import threading
import weakref

import redis
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from coordinator.exceptions import ServiceUnavailable

_views: weakref.WeakKeyDictionary[object, dict[bool, redis.Redis]] = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


def queue_connection(client: redis.Redis) -> redis.Redis:
    """The Redis RQ uses (raw bytes): INVOICE_SYNC_QUEUE_REDIS_URL's, else ``client``'s server.

    Raises:
        ServiceUnavailable: ``client`` is a Redis Cluster and no queue Redis is configured
            (RQ's multi-key transactions do not run on a Cluster).
    """
    queue = getattr(client, "queue_client", None)
    if queue is not None:
        return queue
    if isinstance(client, RedisCluster):
        raise ServiceUnavailable("Sync jobs need INVOICE_SYNC_QUEUE_REDIS_URL on a Redis Cluster "
                                 "(RQ does not run on a Cluster); see `invoice-sync doctor`")
    return with_decoding(client, False)


def with_decoding(client: redis.Redis, decode: bool) -> redis.Redis:
    """Return a client for the same server as ``client`` with ``decode_responses=decode``.

    The same pool always gives the same other client (and so the same other pool). A Cluster
    client is its own decoded view; RQ's raw view does not exist there (see queue_connection).
    """
    if isinstance(client, RedisCluster):
        if decode:
            return client
        raise ServiceUnavailable("RQ does not run on a Redis Cluster: set "
                                 "INVOICE_SYNC_QUEUE_REDIS_URL")
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if kwargs.get("decode_responses", False) == decode:
        return client
    with _views_lock:
        views = _views.setdefault(pool, {})
        view = views.get(decode)
        if view is None:
            kwargs["decode_responses"] = decode
            if isinstance(pool, SentinelConnectionPool):
                view = pool.sentinel_manager.master_for(pool.service_name, **kwargs)
            else:
                view = redis.Redis(
                    connection_pool=type(pool)(connection_class=pool.connection_class, **kwargs)
                )
            views[decode] = view
        return view
