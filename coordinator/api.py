"""The flask-smorest ``Api``: blueprints register here; /openapi.json comes from their schemas."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

api = Api()


def init_app(app: Flask) -> None:
    """Configure OpenAPI and attach every blueprint."""
    app.config.setdefault("API_TITLE", "invoice-sync coordinator")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    api.init_app(app)
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})

    # Imported here, not at module top: blueprints import api-level helpers from this module.
    from coordinator.forecaster.api import blp as forecaster_blp
    from coordinator.numbering.api import blp as numbering_blp
    from coordinator.numbering.series_api import blp as series_blp
    from coordinator.ops.health import blp as health_blp
    from coordinator.ops.metrics import blp as metrics_blp
    from coordinator.ops.whoami import blp as whoami_blp
    from coordinator.systems.api import blp as systems_blp
    from coordinator.warnings.api import blp as warnings_blp

    for blueprint in (health_blp, metrics_blp, numbering_blp, series_blp, systems_blp,
                      whoami_blp, forecaster_blp, warnings_blp):
        api.register_blueprint(blueprint)
