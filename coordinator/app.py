"""The application factory: ``create_app(config=None)``. Nothing happens at import time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from coordinator import api, errors, ui
from coordinator.config import load_config
from coordinator.ops import headers, logs, metrics, ratelimit, redis_client


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the coordinator app: defaults, then ``INVOICE_SYNC_*`` environment, then ``config``.

    Args:
        config: Overrides, mostly for tests (``{"REDIS_URL": ...}``, ``{"REDIS_CLIENT": c}``).
    """
    app = Flask("coordinator")
    load_config(app, config)
    app.json.sort_keys = False
    # Logs first: its before_request gives every later hook and line the request id.
    logs.init_app(app)
    metrics.init_app(app)
    headers.init_app(app)
    redis_client.init_app(app)
    ratelimit.init_app(app)
    api.init_app(app)
    ui.init_app(app)
    errors.init_app(app)
    return app
