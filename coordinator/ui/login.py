"""Dashboard logins: a token of role admin or auditor, traded for a server-side session.

The cookie (Flask's signed session, ``__Host-`` prefixed, Secure, HttpOnly, SameSite=Strict)
carries only a random session id and Flask-WTF's CSRF secret — never the token. Redis keeps
``ui:session:<sha256(id)>`` with the *digest* of the token that logged in, for
``UI_SESSION_SECONDS``. Every request re-reads that record and the token's own record in one
round trip, so revoking the token (or deleting the session: logout) ends the login at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

import redis
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from coordinator import auth, clock, keys

ROLES = auth.READERS
"""Roles that may log in to the dashboard: admin and auditor (agent tokens may not)."""

PREFIX = "/ui"
SESSION_ID = "sid"
_SECRET_EXTENSION = "invoice_sync.ui_secret"


@dataclass(frozen=True)
class Viewer:
    """Who is logged in: a role and the digest of their token (for audit records)."""

    kind: str
    token_digest: str

    @property
    def can_change(self) -> bool:
        """Whether this viewer may use forms that change anything (admins only)."""
        return self.kind == auth.ADMIN

    @property
    def actor(self) -> str:
        """How records name this viewer, as the API does: ``admin:<token id>``."""
        return f"{self.kind}:{auth.token_id(self.token_digest)}"


def secret_key(app: Flask, client: redis.Redis) -> str:
    """Return the key signing session cookies: UI_SECRET_KEY, else one kept in Redis.

    The Redis key is created once with SET NX, so concurrent first requests on several
    processes agree on one key.
    """
    key = app.extensions.get(_SECRET_EXTENSION)
    if key is None:
        key = app.config.get("UI_SECRET_KEY")
        if not key:
            client.set(keys.UI_SECRET, secrets.token_urlsafe(48), nx=True)
            key = client.get(keys.UI_SECRET)
        app.extensions[_SECRET_EXTENSION] = key
        app.secret_key = key  # Flask-WTF derives its CSRF tokens from it
    return key


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only under ``/ui`` and keyed lazily.

    The JSON API never gets a session (no cookie, no Redis read for the key): its requests
    open an empty, unsaved one.
    """

    def get_signing_serializer(self, app: Flask):
        from coordinator.ops.redis_client import get_redis

        secret_key(app, get_redis())
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, request):
        if not (request.path == PREFIX or request.path.startswith(PREFIX + "/")):
            return self.session_class()
        return super().open_session(app, request)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def start(client: redis.Redis, kind: str, token_digest: str, seconds: int) -> str:
    """Record a new login; return its session id (for the cookie only)."""
    session_id = secrets.token_urlsafe(32)
    key = keys.ui_session(_digest(session_id))
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={"token": token_digest, "kind": kind,
                                "created_at": clock.iso(clock.utcnow())})
        pipe.expire(key, seconds)
        pipe.execute()
    return session_id


def end(client: redis.Redis, session_id: str | None) -> None:
    """Forget a login (logout); the cookie's session id stops working at once."""
    if session_id:
        client.delete(keys.ui_session(_digest(session_id)))


def resolve(client: redis.Redis, session_id: str | None, admin_token: str | None) -> Viewer | None:
    """Return who a session id belongs to, or None when it is unknown, expired or revoked.

    The token behind the login must still be valid and still of a dashboard role: the
    configured admin token (compared as a digest), or a record in the tokens hash.
    """
    if not session_id or not isinstance(session_id, str):
        return None
    record = client.hgetall(keys.ui_session(_digest(session_id)))
    if not record or "token" not in record:
        return None
    token_digest = record["token"]
    if admin_token and hmac.compare_digest(token_digest, auth.digest(str(admin_token))):
        return Viewer(auth.ADMIN, token_digest)
    raw = client.hget(keys.TOKENS, token_digest)
    if raw is None:
        return None  # revoked (or its system deleted, for an agent token)
    kind = json.loads(raw).get("kind")
    if kind not in ROLES or kind != record.get("kind"):
        return None
    return Viewer(kind, token_digest)


def init_app(app: Flask) -> None:
    """Configure the session cookie the dashboard uses."""
    secure = bool(app.config["UI_COOKIE_SECURE"])
    app.session_interface = DashboardSessionInterface()
    app.config.update(
        # __Host- makes the browser refuse the cookie unless Secure, Path=/ and no Domain.
        SESSION_COOKIE_NAME="__Host-invoice-sync-ui" if secure else "invoice-sync-ui",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=int(app.config["UI_SESSION_SECONDS"])),
    )
