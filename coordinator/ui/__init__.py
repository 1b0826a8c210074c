"""The web dashboard at ``/ui/``: server-side pages for admins (read and change) and auditors
(read only), on the same domain modules the HTTP API calls — never through HTTP to itself.

``init_app(app)`` attaches the blueprint, the session cookie (see :mod:`.login`) and CSRF
protection (Flask-WTF's ``CSRFProtect``, checked on every dashboard form, never on the JSON API,
which authenticates with bearer tokens and so is not exposed to CSRF).
"""

from __future__ import annotations

from flask import Flask

from coordinator.ui import login
from coordinator.ui.blueprint import bp, csrf


def init_app(app: Flask) -> None:
    """Attach the dashboard to the coordinator app."""
    # Only views that call csrf.protect() (the dashboard's) are checked; see blueprint.py.
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", int(app.config["UI_SESSION_SECONDS"]))
    login.init_app(app)
    csrf.init_app(app)
    # Imported for their routes on ``bp``.
    from coordinator.ui import (  # noqa: F401
        ledger_views,
        login_views,
        numbering_views,
        overview,
        revenue_views,
        systems_views,
        warnings_views,
    )

    app.register_blueprint(bp)
