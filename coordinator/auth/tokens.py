"""Bearer tokens: created, listed, revoked and looked up, stored only as SHA-256 hashes.

Tokens are 256-bit random strings, so a plain SHA-256 (no salt, no stretching) is the right
hash: it cannot be brute-forced and is cheap enough for every request on the allocation path.

One hash, :data:`keys.TOKENS`, maps each token's digest to its record; every request looks its
token up there, or in the process's :class:`~coordinator.auth.cache.TokenCache`, which Redis
itself invalidates before it answers any change to the hash, so a revoked token stops working
at once in every worker. A token is named by an *id* (``tok_`` and 16 hex digits), a one-way
function of the stored digest: it names the token in listings and audit records, and neither
it nor anything shown with it helps to find the token or its hash.

Domain code: takes a Redis client and plain values, knows nothing of Flask.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from typing import Any

import redis

from coordinator import keys
from coordinator.auth.cache import TokenCache
from coordinator.auth.roles import ADMIN, AGENT, MANAGED_ROLES, TOKEN_PREFIX, Principal
from coordinator.clock import Clock
from coordinator.clock import iso as _iso
from coordinator.clock import utcnow as _utcnow
from coordinator.exceptions import AuthError, Conflict, InvalidInput, NotFound
from coordinator.ops.ratelimit import RateLimiter

LABEL_MAX = 200
"""Longest label accepted for a token (it is shown in listings and audit records)."""


def new_token(kind: str) -> str:
    """Return a fresh random token of ``kind`` (admin, auditor or agent)."""
    return TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """Return the hex SHA-256 of a token, the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token_digest: str) -> str:
    """Return the public id of the token whose digest is ``token_digest``.

    Derived, not stored, so tokens of the previous release and agent tokens written by the
    systems registry have one too. A second, domain-separated hash: the id does not reveal
    the digest (which an attacker with Redis access could match) nor, of course, the token.
    """
    derived = hashlib.sha256(b"invoice-sync token id\0" + token_digest.encode()).hexdigest()
    return "tok_" + derived[:16]


def agent_token_record(system: str) -> str:
    """Return the stored JSON for an agent token of ``system``."""
    return json.dumps({"kind": AGENT, "system": system, "created_at": _iso(_utcnow())})


def _record(role: str, label: str, created_by: str, now: Clock) -> dict[str, Any]:
    return {"kind": role, "label": label, "created_at": _iso(now()), "created_by": created_by}


def _audit(pipe: Any, action: str, token_digest: str, record: dict[str, Any], by: str,
           now: Clock) -> None:
    entry = {"at": _iso(now()), "action": action, "token": token_id(token_digest),
             "role": record.get("kind"), "label": record.get("label"), "by": by}
    pipe.rpush(keys.TOKEN_AUDIT, json.dumps(entry))


def register_admin_token(
    client: redis.Redis, token: str, label: str = "admin", *, created_by: str = "setup",
    now: Clock = _utcnow,
) -> bool:
    """Store an admin token's hash so every coordinator process accepts it.

    Keeps an existing record as it is (so its creation time survives restarts) and audits
    only a token that was not stored yet. Returns whether it was new.
    """
    token_digest = digest(token)
    record = _record(ADMIN, label, created_by, now)

    def body(pipe: Any) -> bool:
        if pipe.hexists(keys.TOKENS, token_digest):
            return False
        pipe.multi()
        pipe.hset(keys.TOKENS, token_digest, json.dumps(record))
        _audit(pipe, "created", token_digest, record, created_by, now)
        return True

    return client.transaction(body, keys.TOKENS, value_from_callable=True)


def is_revoked(client: redis.Redis, token: str) -> bool:
    """Whether ``token`` was revoked through :func:`revoke_token` (admin and auditor tokens)."""
    return bool(client.sismember(keys.TOKENS_REVOKED, digest(token)))


def create_token(
    client: redis.Redis, role: str, label: str, created_by: str, *, now: Clock = _utcnow,
) -> tuple[dict[str, Any], str]:
    """Create an admin or auditor token; return its public record and the token (shown once).

    Raises:
        InvalidInput: an agent or unknown role (agent tokens come from the systems registry),
            or an empty or over-long label.
    """
    if role not in MANAGED_ROLES:
        raise InvalidInput("Validation failed", {"json": {"role": [
            f"Must be one of: {', '.join(MANAGED_ROLES)} (agent tokens come with their system)."
        ]}})
    label = (label or "").strip()
    if not label or len(label) > LABEL_MAX or not label.isprintable():
        raise InvalidInput("Validation failed", {"json": {"label": [
            f"Give 1-{LABEL_MAX} printable characters saying who or what holds the token."
        ]}})
    token = new_token(role)
    token_digest = digest(token)
    record = _record(role, label, created_by, now)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.TOKENS, token_digest, json.dumps(record))
        _audit(pipe, "created", token_digest, record, created_by, now)
        pipe.execute()
    return _public(token_digest, record, None), token


def _public(token_digest: str, record: dict[str, Any], last_used: str | None) -> dict[str, Any]:
    """What listings show of a token: never the token, never its digest."""
    shown = {
        "id": token_id(token_digest),
        "role": record.get("kind"),
        "label": record.get("label"),
        "system": record.get("system"),
        "created_at": record.get("created_at"),
        "created_by": record.get("created_by"),
        "source": "redis",
    }
    if last_used is not None:
        shown["last_used"] = _iso(dt.datetime.fromtimestamp(int(last_used), dt.UTC))
    return shown


def _config_entry(admin_token: str) -> dict[str, Any]:
    return {"id": token_id(digest(admin_token)), "role": ADMIN,
            "label": "INVOICE_SYNC_ADMIN_TOKEN", "system": None, "created_at": None,
            "created_by": None, "source": "environment"}


def list_tokens(client: redis.Redis, admin_token: str | None = None) -> list[dict[str, Any]]:
    """Return every token the coordinator accepts (never a token or its hash), by role and id.

    ``last_used`` (the start of the last rate-limit window the token was used in) is there
    only when its role is rate-limited and the token was used since Redis last started.
    ``admin_token``: the configured INVOICE_SYNC_ADMIN_TOKEN, listed with source
    ``environment``.
    """
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.TOKENS)
        pipe.hgetall(keys.TOKENS_LAST_USED)
        stored, used = pipe.execute()
    shown = [_public(d, json.loads(raw), used.get(d)) for d, raw in stored.items()]
    if admin_token:
        shown.append(_config_entry(str(admin_token)))
    order = {role: n for n, role in enumerate((ADMIN, "auditor", AGENT))}
    shown.sort(key=lambda t: (order.get(t["role"], 9), t["system"] or "", t["created_at"] or "",
                              t["id"]))
    return shown


TOKEN_ID = re.compile(r"tok_[0-9a-f]{16}")
"""What every token id looks like; anything else names no token."""


def _find(stored: dict[str, str], wanted: str) -> str | None:
    # Ids are public names, not secrets: a plain comparison is right (and, unlike
    # hmac.compare_digest, takes any string a client may put in the URL).
    return next((d for d in stored if token_id(d) == wanted), None)


def revoke_token(
    client: redis.Redis, wanted_id: str, by: str, admin_token: str | None = None, *,
    now: Clock = _utcnow,
) -> dict[str, Any]:
    """Revoke the admin or auditor token ``wanted_id`` at once; return what it was.

    Raises:
        NotFound: no such token (or it was revoked already).
        Conflict: an agent token (rotate it through its system), the token set by
            INVOICE_SYNC_ADMIN_TOKEN (change the variable), or the last admin token.
    """
    if not TOKEN_ID.fullmatch(wanted_id):
        raise NotFound(f"No token {wanted_id!r}: token ids look like tok_0123456789abcdef")
    if admin_token and token_id(digest(str(admin_token))) == wanted_id:
        raise Conflict("This admin token is set by INVOICE_SYNC_ADMIN_TOKEN: change or unset "
                       "the variable and restart the coordinator to revoke it")

    def body(pipe: Any) -> dict[str, Any]:
        stored = pipe.hgetall(keys.TOKENS)
        found = _find(stored, wanted_id)
        if found is None:
            raise NotFound(f"No token {wanted_id!r}")
        record = json.loads(stored[found])
        if record.get("kind") == AGENT:
            raise Conflict(
                f"{wanted_id} is the agent token of system {record.get('system')!r}: rotate it "
                f"(POST /v1/systems/{record.get('system')}/agent-token) or delete the system")
        admins = sum(json.loads(raw).get("kind") == ADMIN for raw in stored.values())
        if record.get("kind") == ADMIN and admins == 1 and not admin_token:
            raise Conflict("This is the last admin token: create another admin token first")
        pipe.multi()
        pipe.hdel(keys.TOKENS, found)
        pipe.hdel(keys.TOKENS_LAST_USED, found)
        pipe.sadd(keys.TOKENS_REVOKED, found)
        _audit(pipe, "revoked", found, record, by, now)
        return _public(found, record, None)

    # WATCH the whole hash: a token created or revoked meanwhile re-runs the checks.
    return client.transaction(body, keys.TOKENS, value_from_callable=True)


def audit(client: redis.Redis, limit: int = 1000) -> list[dict[str, Any]]:
    """Return the latest ``limit`` token creations and revocations, oldest first."""
    return [json.loads(raw) for raw in client.lrange(keys.TOKEN_AUDIT, -limit, -1)]


def any_admin(client: redis.Redis) -> bool:
    """Whether Redis holds an admin token (in this release's hash or the previous one's)."""
    return any(json.loads(raw).get("kind") == ADMIN
               for key in (keys.TOKENS, keys.LEGACY_TOKENS) for raw in client.hvals(key))


def migrate_legacy(client: redis.Redis) -> int:
    """Move tokens of the previous release (``auth:tokens``) into :data:`keys.TOKENS`.

    Idempotent and safe when several processes start at once: the move is one transaction
    under WATCH of the old hash, so it happens exactly once and a token revoked after it can
    never be copied back. A digest already in the new hash keeps its new record. Returns how
    many tokens were moved (0 when there was nothing to do).

    Every key of the move would be in one slot only on a single Redis; a Cluster never held
    the previous release's layout, and the EXISTS check keeps the move off it.
    """

    def body(pipe: Any) -> int:
        old = pipe.hgetall(keys.LEGACY_TOKENS)
        if not old:
            return 0
        pipe.multi()
        for token_digest, raw in old.items():
            pipe.hsetnx(keys.TOKENS, token_digest, raw)
        pipe.delete(keys.LEGACY_TOKENS)
        return len(old)

    if not client.exists(keys.LEGACY_TOKENS):
        return 0
    return client.transaction(body, keys.LEGACY_TOKENS, value_from_callable=True)


def _principal(raw: str, token_digest: str) -> Principal:
    record: dict[str, Any] = json.loads(raw)
    return Principal(record["kind"], record.get("system"), token_id(token_digest))


def authenticate(
    client: redis.Redis,
    header: str | None,
    admin_token: str | None,
    limiter: RateLimiter | None = None,
    address: str | None = None,
    cache: TokenCache | None = None,
) -> Principal:
    """Resolve an ``Authorization`` header to a principal, counting it against its rate limit.

    With a ``limiter``, the lookup and the counting are one script, one round trip: a known
    token counts against its own budget; an unknown one counts against the failure budget of
    the client ``address`` (a fixed number of Redis keys, whatever tokens are tried). With a
    ``cache``, a token found there whose role has no limit costs no round trip at all (the
    cache is invalidated by Redis, :mod:`coordinator.auth.cache`); a limited role is still
    counted, and looked up, by the script.

    Raises:
        AuthError: no bearer token, or one the coordinator does not know (401).
        RateLimited: the token has used up its requests for this window, or ``address`` its
            failed attempts (429).
    """
    if not header or not header.startswith("Bearer "):
        raise AuthError("Missing bearer token: send `Authorization: Bearer <token>`")
    token = header[len("Bearer "):].strip()
    token_digest = digest(token)
    is_config_admin = bool(admin_token) and hmac.compare_digest(
        token_digest, digest(str(admin_token))
    )
    limited = limiter is not None and limiter.enabled
    if cache is not None and not is_config_admin and not (
            limited and all(limit > 0 for limit in limiter.limits.values())):
        try:
            cached = cache.get(client, token_digest)
        except redis.RedisError:
            cached = None  # its connection broke: the lookup below goes through the client
        if cached is not None:
            principal = _principal(cached, token_digest)
            if not limited or limiter.limits.get(principal.kind, 0) <= 0:
                return principal
    if limited:
        raw, count, window = limiter.lookup(client, token_digest, known=is_config_admin,
                                            address=address)
    else:
        raw = None if is_config_admin else client.hget(keys.TOKENS, token_digest)
        limiter = None
    if is_config_admin:
        principal = Principal(ADMIN, None, token_id(token_digest))
    elif raw is None:
        if limiter is not None:
            limiter.check_failures(count, window)
        raise AuthError("Invalid or revoked token")
    else:
        principal = _principal(raw, token_digest)
    if limiter is not None:
        limiter.check(principal.kind, count, window)
    return principal
