"""Build the Redis client from configuration: a URL, or a master found through Sentinel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, current_app
from redis.sentinel import Sentinel

EXTENSION = "invoice_sync.redis"


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """Parse ``"h1:26379,h2:26379"`` into ``[("h1", 26379), ("h2", 26379)]``."""
    nodes = []
    for item in str(value).split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"INVOICE_SYNC_SENTINELS: {item!r} is not host:port")
        nodes.append((host, int(port)))
    return nodes


def make_redis(config: Mapping[str, Any], *, decode: bool = True) -> redis.Redis:
    """Return a client for the configured Redis (decoded strings, bounded timeouts).

    ``decode=False`` answers bytes (``invoice-sync backup`` reads binary DUMP payloads).
    """
    timeout = float(config["REDIS_SOCKET_TIMEOUT"])
    if config.get("SENTINELS"):
        sentinel = Sentinel(
            parse_sentinels(config["SENTINELS"]),
            socket_timeout=timeout,
            sentinel_kwargs={"password": config.get("SENTINEL_PASSWORD"), "socket_timeout": 1.0},
        )
        return sentinel.master_for(
            config["SENTINEL_MASTER"],
            password=config.get("REDIS_PASSWORD"),
            socket_timeout=timeout,
            decode_responses=decode,
        )
    if not config.get("REDIS_URL"):
        raise RuntimeError(
            "No Redis configured: set INVOICE_SYNC_REDIS_URL (or INVOICE_SYNC_SENTINELS), "
            "or run `invoice-sync serve`, which starts an embedded one"
        )
    return redis.Redis.from_url(
        config["REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout,
        decode_responses=decode, health_check_interval=30,
    )


def init_app(app: Flask) -> None:
    """Attach the client (tests may inject one as config ``REDIS_CLIENT``). Connects lazily."""
    app.extensions[EXTENSION] = app.config.get("REDIS_CLIENT") or make_redis(app.config)


def get_redis() -> redis.Redis:
    """Return the current app's Redis client."""
    return current_app.extensions[EXTENSION]
