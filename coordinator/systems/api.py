"""HTTP views of the systems registry (admin only): parse, call the registry, serialize."""

from __future__ import annotations

import logging

from cryptography.fernet import MultiFernet
from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from coordinator import auth
from coordinator.ops.redis_client import get_redis
from coordinator.systems import registry, secrets
from coordinator.systems.schemas import (
    SystemCreateSchema,
    SystemPatchSchema,
    SystemSchema,
    SystemWithTokenSchema,
)
from coordinator.systems.urls import UrlPolicy

log = logging.getLogger(__name__)

blp = Blueprint("systems", __name__, url_prefix="/v1/systems",
                description="WHMCS systems: registration, API credentials, agent tokens (admin)")

FERNET_EXTENSION = "invoice_sync.fernet"


def get_fernet() -> MultiFernet:
    """Return the app's MultiFernet, built from SECRET_KEYS on first use (503 if unset)."""
    fernet = current_app.extensions.get(FERNET_EXTENSION)
    if fernet is None:
        fernet = secrets.fernet_from_config(current_app.config)
        current_app.extensions[FERNET_EXTENSION] = fernet
    return fernet


def _policy() -> UrlPolicy:
    # SYSTEM_URL_RESOLVER: tests inject a resolver (like REDIS_CLIENT) instead of real DNS.
    return UrlPolicy.from_config(current_app.config, current_app.config.get("SYSTEM_URL_RESOLVER"))


@blp.route("")
class Systems(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, SystemSchema(many=True))
    def get(self):
        """List every registered system (never its secrets)."""
        return registry.list_systems(get_redis())

    @auth.require(auth.ADMIN)
    @blp.arguments(SystemCreateSchema)
    @blp.response(201, SystemWithTokenSchema)
    @blp.alt_response(409, description="A system of that name exists")
    @blp.alt_response(503, description="INVOICE_SYNC_SECRET_KEYS is not set")
    def post(self, data):
        """Register a system; the answer carries its agent token, shown this once."""
        system, token = registry.create_system(get_redis(), get_fernet(), data, _policy())
        log.info("system registered: %s", system["name"])
        return {**system, "agent_token": token}


@blp.route("/<name>")
class System(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, SystemSchema)
    def get(self, name: str):
        """Show one system (never its secrets) and how its last central poll went."""
        from coordinator.forecaster import central_poll

        client = get_redis()
        system = registry.get_system(client, name)
        return {**system, "central_poll_last": central_poll.status(client, name)}

    @auth.require(auth.ADMIN)
    @blp.arguments(SystemPatchSchema)
    @blp.response(200, SystemSchema)
    def patch(self, data, name: str):
        """Change a system's settings or credentials (not its name)."""
        needs_key = any(data.get(field) is not None for field in ("api_secret", "access_key"))
        fernet = get_fernet() if needs_key else None
        system = registry.update_system(get_redis(), name, data, _policy(), fernet)
        if data:
            log.info("system updated: %s (%s)", name, ", ".join(sorted(data)))
        return system

    @auth.require(auth.ADMIN)
    @blp.response(204)
    def delete(self, name: str):
        """Delete a system: its agent token stops working; issued numbers stay in the ledger."""
        purged = registry.delete_system(get_redis(), name)
        log.info("system deleted: %s (%d data keys purged)", name, purged)


@blp.route("/<name>/agent-token")
class AgentToken(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, SystemWithTokenSchema)
    def post(self, name: str):
        """Issue a new agent token (shown once); the old one stops working at once."""
        system, token = registry.rotate_agent_token(get_redis(), name)
        log.info("agent token rotated: %s", name)
        return {**system, "agent_token": token}
