"""Per-token rate limits, counted in Redis so every coordinator process shares them.

A fixed window: one counter per token digest and window (``INCR`` then ``EXPIRE`` in
``ratelimit.lua``), queued on the same pipeline as the token lookup, so authentication plus
limiting costs one round trip. A fixed window lets a client burst to twice the limit across a
window boundary; that is fine for its purpose (stop a runaway agent or script), and a sliding
window would cost more Redis work on the allocation path.

The counter is written with replication off (``redis.set_repl(redis.REPL_NONE)``): it never
reaches the AOF, so with ``appendfsync always`` the token lookup stays a read that needs no
fsync. Counted in a plain ``INCR`` it made every authenticated request wait for one more fsync
than the allocation itself needs (2.2-3.8 ms instead of 0.3 ms per lookup on the bench machine,
and half the bench's throughput, since Valkey fsyncs in its main thread). The price: counters
are lost on a restart or failover, which only restarts the current window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from coordinator import keys
from coordinator.exceptions import RateLimited
from coordinator.lua import LuaScript

EXTENSION = "invoice_sync.rate_limiter"
"""``app.extensions`` key of the limiter ``auth.current_principal`` counts requests with."""

COUNT_SCRIPT = LuaScript.load(__package__, "ratelimit").compact_source
"""Lua that counts one request outside the AOF, sent with EVAL on every request (so never a
NOSCRIPT and a second round trip), hence without its comments: 120 bytes instead of 800."""


@dataclass
class RateLimiter:
    """Limits per principal kind, in requests per ``window`` seconds (0 = unlimited).

    Usage::

        limiter = RateLimiter.from_config(app.config)
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.TOKENS, token_digest)
        window = limiter.queue(pipe, token_digest)   # the counter, on the same pipeline
        record, count = pipe.execute()
        limiter.check("agent", count, window)        # raises RateLimited (429)
    """

    limits: Mapping[str, int]
    window: int = 60
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RateLimiter:
        """Build from ``RATE_LIMIT_AGENT``, ``RATE_LIMIT_ADMIN`` and ``RATE_LIMIT_WINDOW``."""
        return cls(
            limits={"agent": int(config["RATE_LIMIT_AGENT"]),
                    "admin": int(config["RATE_LIMIT_ADMIN"])},
            window=max(1, int(config["RATE_LIMIT_WINDOW"])),
        )

    @property
    def enabled(self) -> bool:
        """Whether any kind is limited at all (when not, no counter is kept)."""
        return any(limit > 0 for limit in self.limits.values())

    def queue(self, pipe, token_digest: str) -> int:
        """Queue the counter increment on ``pipe``; return the window index it counts in.

        The count (this request included) is the pipeline's reply to this one command.
        """
        window = int(self.clock() // self.window)
        # Lives two windows: never outlives its use, even with some clock skew between hosts.
        # EVAL, not EVALSHA: the script is tiny, and EVAL can never answer NOSCRIPT, which
        # would cost a second round trip on the token lookup.
        pipe.eval(COUNT_SCRIPT, 1, keys.rate_limit(token_digest, window), 2 * self.window)
        return window

    def check(self, kind: str, count: int, window: int) -> None:
        """Raise RateLimited when ``count`` requests in ``window`` exceed the limit of ``kind``."""
        limit = self.limits.get(kind, 0)
        if limit > 0 and count > limit:
            retry_after = max(1, math.ceil((window + 1) * self.window - self.clock()))
            raise RateLimited(
                f"Too many requests for this token: at most {limit} per {self.window} s",
                retry_after=retry_after,
            )


def init_app(app: Flask) -> None:
    """Attach the limiter built from the app's configuration."""
    app.extensions[EXTENSION] = RateLimiter.from_config(app.config)
