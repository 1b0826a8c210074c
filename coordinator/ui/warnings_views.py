"""Warnings: list, filter by type, system and state, acknowledge."""

from __future__ import annotations

from flask import redirect, render_template, request

from coordinator.ops.redis_client import get_redis
from coordinator.ui.blueprint import bp, safe_target
from coordinator.warnings import store

STATES = ("open", "acknowledged", "all")


@bp.get("/warnings")
def warnings():
    """List warnings, most recent first, filtered by the query."""
    everything = store.list_warnings(get_redis())
    kind = request.args.get("type", "")
    system = request.args.get("system", "")
    state = request.args.get("state", "open")
    state = state if state in STATES else "open"
    shown = [
        w for w in everything
        if (not kind or w["type"] == kind) and (not system or w["system"] == system)
        and (state == "all" or w["acked"] == (state == "acknowledged"))
    ]
    return render_template(
        "warnings.html", warnings=shown, states=STATES, state=state, kind=kind, system=system,
        types=sorted({w["type"] for w in everything} | set(store.TYPES)),
        systems=sorted({w["system"] for w in everything if w["system"]}),
    )


@bp.post("/warnings/ack")
def warnings_ack():
    """Acknowledge one warning; back to the list as it was filtered."""
    store.ack(get_redis(), request.form.get("id", ""))
    return redirect(safe_target(request.form.get("back")), code=303)
