"""Who may do what: bearer tokens (stored as hashes), roles, and the guard on every view.

    tokens   create, list, revoke, look up; the previous release's tokens moved at start
    roles    admin, auditor, agent; the Principal a request authenticates as
    api      the request's principal, ``require(*roles)`` on views, and ``/v1/tokens``

Callers use the package: ``from coordinator import auth`` then ``@auth.require(auth.ADMIN)``.
"""

from coordinator.auth.api import blp, current_principal, require, require_system_access
from coordinator.auth.roles import (
    ADMIN,
    AGENT,
    AUDITOR,
    MANAGED_ROLES,
    READERS,
    ROLES,
    TOKEN_PREFIX,
    Principal,
)
from coordinator.auth.tokens import (
    agent_token_record,
    authenticate,
    create_token,
    digest,
    list_tokens,
    migrate_legacy,
    new_token,
    register_admin_token,
    revoke_token,
    token_id,
)
from coordinator.exceptions import AuthError, Forbidden

__all__ = [
    "ADMIN",
    "AGENT",
    "AUDITOR",
    "MANAGED_ROLES",
    "READERS",
    "ROLES",
    "TOKEN_PREFIX",
    "AuthError",
    "Forbidden",
    "Principal",
    "agent_token_record",
    "authenticate",
    "blp",
    "create_token",
    "current_principal",
    "digest",
    "list_tokens",
    "migrate_legacy",
    "new_token",
    "register_admin_token",
    "require",
    "require_system_access",
    "revoke_token",
    "token_id",
]
