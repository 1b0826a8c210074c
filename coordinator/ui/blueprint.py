"""The dashboard's blueprint and what every one of its requests goes through.

Order, per request: static files pass; the login page passes; everything else needs a live
login (else: a redirect to the login page, or 401 for htmx fragments). Then every form post is
CSRF-checked (Flask-WTF), and only admins may post anything but logout (auditors: 403).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import Forbidden, HTTPException

from coordinator.errors import STATUS_OF
from coordinator.exceptions import CoordinatorError
from coordinator.ops.redis_client import get_redis
from coordinator.ui import login

bp = Blueprint("ui", __name__, url_prefix=login.PREFIX, template_folder="templates",
               static_folder="static", static_url_path="/static")
csrf = CSRFProtect()

OPEN_ENDPOINTS = frozenset({"ui.static", "ui.login", "ui.login_post"})
"""Reachable without a login: the login form itself and the static files (public libraries)."""

READ_ONLY_POSTS = frozenset({"ui.logout"})
"""Posts an auditor may make: they change nothing of the business's data."""

ADMIN_ONLY = "_ui_admin_only"
"""Attribute :func:`admin_only` sets on a view."""


def admin_only(view: Callable) -> Callable:
    """Mark a page as admins' only: auditors get 403, as from the API it stands for."""
    setattr(view, ADMIN_ONLY, True)
    return view

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Everything from the coordinator itself; no inline script or style, no third party."""


@bp.before_request
def _guard() -> Any:
    if request.endpoint in OPEN_ENDPOINTS:
        if request.method == "POST":
            csrf.protect()
        return None
    viewer = login.resolve(get_redis(), session.get(login.SESSION_ID),
                           current_app.config.get("ADMIN_TOKEN"))
    if viewer is None:
        session.pop(login.SESSION_ID, None)
        if request.headers.get("HX-Request"):
            return "Your login has ended; reload the page to log in again.", 401
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")), code=303)
    g.viewer = viewer
    if request.method not in ("GET", "HEAD"):
        csrf.protect()
        if not viewer.can_change and request.endpoint not in READ_ONLY_POSTS:
            raise Forbidden("An auditor's login reads; it changes nothing.")
    elif not viewer.can_change and getattr(current_app.view_functions.get(request.endpoint),
                                           ADMIN_ONLY, False):
        raise Forbidden("The systems registry (WHMCS addresses, API identifiers, sync "
                        "details) is for admins, as in the API; the overview shows each "
                        "system's last sync.")
    return None


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    # Flask-WTF checks the Referer of https form posts against the host; "no-referrer" (the
    # API's policy) would make every dashboard form fail there.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CSRFError)
def _csrf_error(error: CSRFError):
    return _error_page(400, "The form has expired or was not sent from this dashboard",
                       f"{error.description} Reload the page and send the form again.")


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    return _error_page(error.code or 500, error.name, error.description or "")


@bp.errorhandler(CoordinatorError)
def _domain_error(error: CoordinatorError):
    return _error_page(status_of(error), "Cannot do that", error.message)


def status_of(error: CoordinatorError) -> int:
    """Return the HTTP status the API gives ``error`` (coordinator.errors decides)."""
    return next(status for cls, status in STATUS_OF if isinstance(error, cls))


def _error_page(status: int, title: str, detail: str):
    return render_template("error.html", status=status, title=title, detail=detail), status


def safe_target(target: str | None) -> str:
    """Return ``target`` if it is a dashboard path on this site, else the overview's."""
    parts = urlsplit(target or "")
    if (parts.scheme or parts.netloc or "\\" in (target or "")
            or not parts.path.startswith(login.PREFIX + "/")):
        return url_for("ui.overview")
    return target


def viewer() -> login.Viewer:
    """Return who is logged in (the guard has checked)."""
    return g.viewer


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"viewer": g.get("viewer")}


