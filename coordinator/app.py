"""The application factory: ``create_app(config=None)``. Nothing happens at import time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from coordinator import api, errors, redis_client
from coordinator.config import load_config


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the coordinator app: defaults, then ``INVOICE_SYNC_*`` environment, then ``config``.

    Args:
        config: Overrides, mostly for tests (``{"REDIS_URL": ...}``, ``{"REDIS_CLIENT": c}``).
    """
    app = Flask("coordinator")
    load_config(app, config)
    app.json.sort_keys = False
    redis_client.init_app(app)
    api.init_app(app)
    errors.init_app(app)
    return app
