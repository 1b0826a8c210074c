"""Load the coordinator's configuration in layers: defaults, environment, explicit overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from coordinator import defaults

ENV_PREFIX = "INVOICE_SYNC"


def load_config(app: Flask, overrides: Mapping[str, Any] | None = None) -> None:
    """Fill ``app.config``: defaults, then ``INVOICE_SYNC_*`` variables, then ``overrides``."""
    for name in dir(defaults):
        if name.isupper():
            app.config[name] = getattr(defaults, name)
    app.config.from_prefixed_env(ENV_PREFIX)
    if overrides:
        app.config.update(overrides)


def load_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the same layered settings outside Flask (RQ workers, the scheduler, the CLI)."""
    app = Flask("coordinator-settings")
    load_config(app, overrides)
    return dict(app.config)
