"""Bearer tokens: admin tokens and per-system agent tokens, stored only as SHA-256 hashes.

Tokens are 256-bit random strings, so a plain SHA-256 (no salt, no stretching) is the right
hash: it cannot be brute-forced and is cheap enough for every request on the allocation path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import redis
from flask import current_app, g, request

from coordinator import keys
from coordinator.exceptions import AuthError, Forbidden
from coordinator.ops import ratelimit
from coordinator.ops.ratelimit import RateLimiter
from coordinator.ops.redis_client import get_redis

ADMIN = "admin"
AGENT = "agent"
TOKEN_PREFIX = {ADMIN: "isa_", AGENT: "isg_"}
"""Prefixes make a leaked token recognisable to secret scanners and in support tickets."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, or the agent of one system."""

    kind: str
    system: str | None = None

    @property
    def is_admin(self) -> bool:
        """Whether this is an admin."""
        return self.kind == ADMIN


def new_token(kind: str) -> str:
    """Return a fresh random token of ``kind`` (admin or agent)."""
    return TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """Return the hex SHA-256 of a token, the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def register_admin_token(client: redis.Redis, token: str, label: str = "admin") -> None:
    """Store an admin token's hash so every coordinator process accepts it."""
    client.hset(keys.TOKENS, digest(token), json.dumps({"kind": ADMIN, "label": label}))


def agent_token_record(system: str) -> str:
    """Return the stored JSON for an agent token of ``system``."""
    return json.dumps({"kind": AGENT, "system": system})


def authenticate(
    client: redis.Redis,
    header: str | None,
    admin_token: str | None,
    limiter: RateLimiter | None = None,
) -> Principal:
    """Resolve an ``Authorization`` header to a principal, counting it against its rate limit.

    The token lookup and the rate counter go to Redis on one pipeline: one round trip.

    Raises:
        AuthError: no bearer token, or one the coordinator does not know (401).
        RateLimited: the token has used up its requests for this window (429).
    """
    if not header or not header.startswith("Bearer "):
        raise AuthError("Missing bearer token: send `Authorization: Bearer <token>`")
    token = header[len("Bearer ") :].strip()
    token_digest = digest(token)
    is_config_admin = bool(admin_token) and hmac.compare_digest(
        token_digest, digest(str(admin_token))
    )
    limiting = limiter is not None and limiter.enabled
    if not limiting:
        raw = None if is_config_admin else client.hget(keys.TOKENS, token_digest)
        count = window = 0
    else:
        pipe = client.pipeline(transaction=False)
        if not is_config_admin:
            pipe.hget(keys.TOKENS, token_digest)
        window = limiter.queue(pipe, token_digest)
        results = pipe.execute()
        raw = None if is_config_admin else results[0]
        count = results[-1]
    if is_config_admin:
        principal = Principal(ADMIN)
    elif raw is None:
        raise AuthError("Invalid or revoked token")
    else:
        record: dict[str, Any] = json.loads(raw)
        principal = Principal(record["kind"], record.get("system"))
    if limiting:
        limiter.check(principal.kind, count, window)
    return principal


def current_principal() -> Principal:
    """Authenticate the current request once and remember the result on ``g``."""
    context = g._get_current_object()  # one proxy lookup, not one per attribute
    principal = context.get("principal")
    if principal is None:
        app = current_app._get_current_object()
        principal = context.principal = authenticate(
            get_redis(),
            request.headers.get("Authorization"),
            app.config["ADMIN_TOKEN"],
            app.extensions.get(ratelimit.EXTENSION),
        )
    return principal


def require(*kinds: str) -> Callable:
    """Decorate a view so only principals of ``kinds`` may call it (401/403 otherwise)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal.kind not in kinds:
                raise Forbidden(f"This endpoint needs a token of kind: {', '.join(kinds)}")
            return view(*args, **kwargs)

        wrapper._invoice_sync_auth = kinds  # read by the OpenAPI security annotation
        return wrapper

    return decorator


def require_system_access(system: str) -> Principal:
    """Allow admins, and the agent of ``system``; refuse any other agent (403)."""
    principal = current_principal()
    if principal.is_admin or principal.system == system:
        return principal
    raise Forbidden("This agent token belongs to another system")
