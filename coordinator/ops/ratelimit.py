"""Per-token rate limits, counted in Redis so every coordinator process shares them.

A fixed window: one counter per token digest and window (``INCR`` then ``EXPIRE``), queued on
the same pipeline as the token lookup, so authentication plus limiting costs one round trip.
A fixed window lets a client burst to twice the limit across a window boundary; that is fine
for its purpose (stop a runaway agent or script), and a sliding window would cost more Redis
work on the allocation path.
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

EXTENSION = "invoice_sync.rate_limiter"
"""``app.extensions`` key of the limiter ``auth.current_principal`` counts requests with."""


@dataclass
class RateLimiter:
    """Limits per principal kind, in requests per ``window`` seconds (0 = unlimited).

    Usage::

        limiter = RateLimiter.from_config(app.config)
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.TOKENS, token_digest)
        window = limiter.queue(pipe, token_digest)   # INCR + EXPIRE on the same pipeline
        record, count = pipe.execute()[:2]
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
        """Queue the counter increment on ``pipe``; return the window index it counts in."""
        window = int(self.clock() // self.window)
        key = keys.rate_limit(token_digest, window)
        pipe.incr(key)
        # Two windows: a counter never outlives its use, even with some clock skew between hosts.
        pipe.expire(key, 2 * self.window)
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
