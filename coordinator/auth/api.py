"""Authentication of HTTP requests, the role guard of every view, and ``/v1/tokens``."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from coordinator.auth import schemas, tokens
from coordinator.auth.cache import EXTENSION as TOKEN_CACHE
from coordinator.auth.cache import TokenCache
from coordinator.auth.roles import ADMIN, AUDITOR, READERS, Principal
from coordinator.exceptions import Forbidden
from coordinator.ops import ratelimit
from coordinator.ops.redis_client import get_redis

MIGRATED = "invoice_sync.tokens_migrated"
"""``app.extensions`` flag: this app moved the previous release's tokens (or found none)."""


def _migrate_once(app, client) -> None:
    # Once per process, before its first lookup: every lookup then finds a token of the
    # previous release in the new hash. Idempotent, so two threads doing it is harmless.
    if not app.extensions.get(MIGRATED):
        tokens.migrate_legacy(client)
        app.extensions[MIGRATED] = True


def current_principal() -> Principal:
    """Authenticate the current request once and remember the result on ``g``."""
    context = g._get_current_object()  # one proxy lookup, not one per attribute
    principal = context.get("principal")
    if principal is None:
        app = current_app._get_current_object()
        client = get_redis()
        _migrate_once(app, client)
        principal = context.principal = tokens.authenticate(
            client,
            request.headers.get("Authorization"),
            app.config["ADMIN_TOKEN"],
            app.extensions.get(ratelimit.EXTENSION),
            request.remote_addr or "",
            _token_cache(app),
        )
    return principal


def _token_cache(app) -> TokenCache | None:
    """The app's token cache (one per app, made on first use), or None when TOKEN_CACHE is
    off."""
    found = app.extensions.get(TOKEN_CACHE)
    if found is None and app.config["TOKEN_CACHE"]:
        found = app.extensions.setdefault(TOKEN_CACHE, TokenCache())
    return found


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
    """Allow admins, auditors (they read), and the agent of ``system``; refuse other agents."""
    principal = current_principal()
    if principal.kind in READERS or principal.system == system:
        return principal
    raise Forbidden("This agent token belongs to another system")


blp = Blueprint("tokens", __name__, url_prefix="/v1/tokens",
                description="Admin and auditor tokens: create, list, revoke (admin)")


@blp.route("")
class Tokens(MethodView):
    @require(ADMIN)
    @blp.response(200, schemas.TokenSchema(many=True))
    def get(self):
        """List every token the coordinator accepts: id, role, label, times; never a token."""
        return tokens.list_tokens(get_redis(), current_app.config["ADMIN_TOKEN"])

    @require(ADMIN)
    @blp.arguments(schemas.TokenCreateSchema)
    @blp.response(201, schemas.TokenCreatedSchema)
    def post(self, body):
        """Create an admin or auditor token; the answer carries it, shown this once."""
        record, token = tokens.create_token(get_redis(), body["role"], body["label"],
                                            current_principal().actor)
        return {**record, "token": token}


@blp.route("/<string:token_id>")
class TokenById(MethodView):
    @require(ADMIN)
    @blp.response(200, schemas.TokenSchema)
    @blp.alt_response(409, description="An agent token, the configured or the last admin token")
    def delete(self, token_id):
        """Revoke a token at once, in every coordinator process. Agent tokens: 409."""
        return tokens.revoke_token(get_redis(), token_id, current_principal().actor,
                                   current_app.config["ADMIN_TOKEN"])


@blp.route("/audit")
class TokenAudit(MethodView):
    @require(ADMIN, AUDITOR)
    @blp.arguments(schemas.TokenAuditQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.TokenAuditSchema(many=True))
    def get(self, query):
        """Token creations and revocations (who, when, which id), oldest first."""
        return tokens.audit(get_redis(), query["limit"])
