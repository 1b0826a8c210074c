"""Rate limits, counted in Redis so every coordinator process shares them.

Two budgets, both per fixed window:

- each **known token** has one, by the role of its token (``RATE_LIMIT_AGENT`` / ``_ADMIN`` /
  ``_AUDITOR``): it stops a runaway agent or script;
- each **client address** has one for *failed* authentications (``RATE_LIMIT_AUTH_FAILURES``):
  past it, an unknown token gets 429 instead of 401. A valid token is still served from that
  address: behind a proxy that is not trusted, every client shares the proxy's address, and one
  misconfigured agent must not lock out the others. (Guessing is no threat to 256-bit tokens;
  the budget exists so that a flood of made-up tokens costs bounded memory and is told to
  back off.)

The lookup and the counting are one script (``ratelimit.lua``), so authentication plus limiting
costs one round trip, and only known tokens get a counter of their own: failures go into one
hash per window with at most ``RATE_LIMIT_AUTH_FAILURE_ADDRESSES`` fields (later addresses share
one). IPv6 clients are counted per /64, the block one host usually holds. The address is
``request.remote_addr``, which reads X-Forwarded-For only when ``TRUSTED_PROXIES`` says a proxy
sets it (werkzeug's ProxyFix, see ``headers.py``); otherwise anyone could pick their address.

A fixed window lets a client burst to twice the limit across a window boundary; that is fine
for its purpose, and a sliding window would cost more Redis work on the allocation path.

The counters are written with replication off (``redis.set_repl(redis.REPL_NONE)``): they never
reach the AOF, so with ``appendfsync always`` the token lookup stays a read that needs no
fsync. Counted in a plain ``INCR`` it made every authenticated request wait for one more fsync
than the allocation itself needs (2.2-3.8 ms instead of 0.3 ms per lookup on the bench machine,
and half the bench's throughput, since Valkey fsyncs in its main thread). The price: counters
are lost on a restart or failover, which only restarts the current window.
"""

from __future__ import annotations

import ipaddress
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
"""Lua that looks a token up and counts one request outside the AOF, sent with EVAL on every
request (so never a NOSCRIPT and a second round trip), hence without its comments."""


def client_group(address: str | None) -> str:
    """Return what failed authentications are counted by: the IPv4 address, the IPv6 /64.

    An IPv4-mapped IPv6 address counts as its IPv4 address. Anything else (a unix socket
    peer, an empty address) is one group of its own.
    """
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "unknown")[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class RateLimiter:
    """Limits per role, in requests per ``window`` seconds (0 = unlimited), and failures.

    Usage::

        limiter = RateLimiter.from_config(app.config)
        record, count, window = limiter.lookup(client, token_digest, known=False,
                                               address="203.0.113.9")
        if record is None:
            limiter.check_failures(count, window)   # raises RateLimited (429) past the budget
        else:
            limiter.check("agent", count, window)   # raises RateLimited (429)
    """

    limits: Mapping[str, int]
    window: int = 60
    failures: int = 0
    failure_addresses: int = 10_000
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RateLimiter:
        """Build from the ``RATE_LIMIT_*`` settings (see ``coordinator/defaults.py``)."""
        return cls(
            limits={"agent": int(config["RATE_LIMIT_AGENT"]),
                    "admin": int(config["RATE_LIMIT_ADMIN"]),
                    "auditor": int(config["RATE_LIMIT_AUDITOR"])},
            window=max(1, int(config["RATE_LIMIT_WINDOW"])),
            failures=int(config["RATE_LIMIT_AUTH_FAILURES"]),
            failure_addresses=max(1, int(config["RATE_LIMIT_AUTH_FAILURE_ADDRESSES"])),
        )

    @property
    def enabled(self) -> bool:
        """Whether anything is limited at all (when not, no counter is kept)."""
        return self.failures > 0 or any(limit > 0 for limit in self.limits.values())

    def lookup(
        self, client: Any, token_digest: str, *, known: bool, address: str | None,
    ) -> tuple[str | None, int, int]:
        """Look the token up and count the request, in one round trip.

        Args:
            known: the token is known without a lookup (the configured admin token).
            address: the client's address; None counts no failure.

        Returns:
            ``(record, count, window)``: the stored record (None for an unknown token, and for
            a ``known`` one), the count for its budget, and the window index counted in.
        """
        now = self.clock()
        window = int(now // self.window)
        group = client_group(address) if address is not None and self.failures > 0 else ""
        # Lives two windows: never outlives its use, even with some clock skew between hosts.
        # EVAL, not EVALSHA: EVAL can never answer NOSCRIPT, which would cost a second round
        # trip on the token lookup.
        record, count = client.eval(
            COUNT_SCRIPT, 4, keys.TOKENS, keys.rate_limit(token_digest, window),
            keys.rate_auth_failures(window), keys.TOKENS_LAST_USED,
            token_digest, 2 * self.window, group, self.failure_addresses,
            "1" if known else "0", window * self.window,
        )
        return record, int(count), window

    def _retry_after(self, window: int) -> int:
        return max(1, math.ceil((window + 1) * self.window - self.clock()))

    def check(self, kind: str, count: int, window: int) -> None:
        """Raise RateLimited when ``count`` requests in ``window`` exceed the limit of ``kind``."""
        limit = self.limits.get(kind, 0)
        if limit > 0 and count > limit:
            raise RateLimited(
                f"Too many requests for this token: at most {limit} per {self.window} s",
                retry_after=self._retry_after(window),
            )

    def check_failures(self, count: int, window: int) -> None:
        """Raise RateLimited when an address made more than its failed authentications."""
        if self.failures > 0 and count > self.failures:
            raise RateLimited(
                f"Too many failed authentications from this address: at most {self.failures} "
                f"per {self.window} s",
                retry_after=self._retry_after(window),
            )


def init_app(app: Flask) -> None:
    """Attach the limiter built from the app's configuration."""
    app.extensions[EXTENSION] = RateLimiter.from_config(app.config)
