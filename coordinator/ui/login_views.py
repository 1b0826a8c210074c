"""Log in with a token (admin or auditor role) and log out."""

from __future__ import annotations

from flask import current_app, redirect, render_template, request, session, url_for

from coordinator import auth
from coordinator.exceptions import AuthError, RateLimited
from coordinator.ops import ratelimit
from coordinator.ops.redis_client import get_redis
from coordinator.ui import login
from coordinator.ui.blueprint import bp, safe_target


@bp.get("/login", endpoint="login")
def login_form():
    """Show the login form."""
    return render_template("login.html", next=request.args.get("next", ""))


@bp.post("/login")
def login_post():
    """Trade a token of a dashboard role for a session; refuse any other token."""
    token = request.form.get("token", "").strip()
    app = current_app._get_current_object()
    client = get_redis()
    error = None
    # Tokens of the previous release move to their new place first (idempotent, as the API's
    # first lookup does it); failed logins count against this address, like failed API calls.
    auth.migrate_legacy(client)
    try:
        principal = auth.authenticate(client, f"Bearer {token}", app.config.get("ADMIN_TOKEN"),
                                      app.extensions.get(ratelimit.EXTENSION),
                                      request.remote_addr or "")
    except RateLimited as refused:
        error, status = refused.message, 429
    except AuthError:
        error, status = "That token is not valid (or was revoked).", 401
    else:
        if principal.kind not in login.ROLES:
            error, status = "Agent tokens cannot log in: use an admin or auditor token.", 403
    if error:
        return render_template("login.html", error=error, next=request.form.get("next", "")), status
    # A fresh session: nothing from before the login (e.g. a planted id) survives it.
    login.end(client, session.get(login.SESSION_ID))
    session.clear()
    session.permanent = True
    session[login.SESSION_ID] = login.start(client, principal.kind, auth.digest(token),
                                            int(app.config["UI_SESSION_SECONDS"]))
    return redirect(safe_target(request.form.get("next")), code=303)


@bp.post("/logout")
def logout():
    """End the login here and in Redis."""
    login.end(get_redis(), session.get(login.SESSION_ID))
    session.clear()
    return redirect(url_for("ui.login"), code=303)
