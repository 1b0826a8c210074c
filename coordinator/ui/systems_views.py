"""Systems: list, register (token shown once), edit (secrets write-only), rotate the agent token,
delete with a typed confirmation, and start a sync whose progress the page follows.

Admins only, reading included: the API keeps the systems registry from auditors too.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, redirect, render_template, request, url_for

from coordinator.exceptions import CoordinatorError, NotFound
from coordinator.forecaster import jobs, records
from coordinator.numbering import series as series_domain
from coordinator.ops.redis_client import get_redis
from coordinator.systems import registry
from coordinator.systems.api import get_fernet
from coordinator.systems.schemas import SystemCreateSchema, SystemPatchSchema
from coordinator.systems.urls import UrlPolicy
from coordinator.ui import forms
from coordinator.ui.blueprint import admin_only, bp, status_of
from coordinator.ui.overview import age, systems_with_syncs

_CREATE = SystemCreateSchema()
_PATCH = SystemPatchSchema()
_FIELDS = ("description", "url", "api_identifier", "api_secret", "access_key", "step",
           "exchange_rate", "series")

FIXES = {
    "whmcs_auth": "Check the API identifier and secret (Setup → Staff Management → Manage API "
                  "Credentials in WHMCS) and save them here again.",
    "whmcs_permission": "Give the API role of these credentials the GetInvoices permission "
                        "(Billing) in WHMCS.",
    "whmcs_ip_not_allowed": "Add the coordinator's address, as WHMCS saw it, to General "
                            "Settings → Security → API IP Access Restriction in WHMCS.",
    "whmcs_access_key": "Set the access key here to the $api_access_key of WHMCS's "
                        "configuration.php.",
    "whmcs_ip_banned": "Remove the coordinator's address from WHMCS's Banned IPs "
                       "(Utilities → Security), then fix the credentials that failed.",
    "whmcs_connection": "WHMCS could not be reached: check the URL, DNS and firewalls, then "
                        "sync again.",
    "whmcs_timeout": "WHMCS did not answer in time: try again later, or a smaller step.",
    "whmcs_tls": "Fix WHMCS's TLS certificate, or the URL's scheme.",
    "whmcs_bad_response": "Something in front of WHMCS (a firewall, a maintenance page) answered "
                          "instead of its API; check the URL and that layer.",
    "whmcs_api": "WHMCS refused the call; its own message above says why.",
    "worker_lost": "Start a worker (`invoice-sync worker`) or check its log, then sync again.",
}
"""What an admin should do about a failed sync, by its stable error code."""


def _policy() -> UrlPolicy:
    return UrlPolicy.from_config(current_app.config, current_app.config.get("SYSTEM_URL_RESOLVER"))


def _list_page(status: int = 200, **context: Any):
    client = get_redis()
    return render_template("systems.html", systems=systems_with_syncs(client), age=age,
                           series=series_domain.list_series(client), **context), status


@bp.get("/systems")
@admin_only
def systems():
    """List the systems, with the registration form for admins."""
    return _list_page()


@bp.post("/systems")
def systems_create():
    """Register a system and show its agent token, this once."""
    values = forms.pick(request.form, ("name", *_FIELDS), integers=("step",),
                        optional=("access_key",))
    values["auto_sync"] = "auto_sync" in request.form
    data, errors = forms.load(_CREATE, values)
    if data is not None:
        try:
            system, token = registry.create_system(get_redis(), get_fernet(), data, _policy())
        except CoordinatorError as error:
            errors = forms.field_errors(error) or {"": [error.message]}
        else:
            return render_template("token.html", system=system, token=token, created=True), 201
    shown = {k: v for k, v in request.form.items() if k not in ("api_secret", "access_key")}
    return _list_page(422, errors=errors, form=shown)


def _system_or_404(name: str) -> dict[str, Any]:
    try:
        return registry.get_system(get_redis(), name)
    except NotFound:
        abort(404)


def _detail_page(name: str, status: int = 200, **context: Any):
    system = _system_or_404(name)
    syncs = records.recent(get_redis(), name)
    return render_template("system.html", system=system, syncs=syncs, fixes=FIXES,
                           series=series_domain.list_series(get_redis()), **context), status


@bp.get("/systems/<name>")
@admin_only
def system(name: str):
    """Show one system: settings (secrets only as set/not set), syncs, and the admin's forms."""
    return _detail_page(name)


@bp.post("/systems/<name>")
def system_update(name: str):
    """Save a system's settings; empty secret fields keep the stored secrets."""
    current = _system_or_404(name)
    values = forms.pick(request.form, _FIELDS, integers=("step",),
                        optional=("api_secret", "access_key"))
    if values.get("series") == current["series"]:
        del values["series"]  # not a move: no series lock, no leave/join
    values["auto_sync"] = "auto_sync" in request.form
    if "remove_access_key" in request.form:
        values["access_key"] = None
    data, errors = forms.load(_PATCH, values)
    if data is not None:
        needs_key = any(data.get(field) is not None for field in ("api_secret", "access_key"))
        try:
            registry.update_system(get_redis(), name, data, _policy(),
                                   get_fernet() if needs_key else None)
        except CoordinatorError as error:
            errors = forms.field_errors(error) or {"": [error.message]}
        else:
            return redirect(url_for("ui.system", name=name, saved=1), code=303)
    return _detail_page(name, 422, errors=errors)


@bp.post("/systems/<name>/token")
def system_rotate(name: str):
    """Issue a new agent token (shown once); the old one stops working at once."""
    _system_or_404(name)
    system, token = registry.rotate_agent_token(get_redis(), name)
    return render_template("token.html", system=system, token=token, created=False)


@bp.post("/systems/<name>/delete")
def system_delete(name: str):
    """Delete a system once its name is typed to confirm."""
    _system_or_404(name)
    if request.form.get("confirm", "") != name:
        return _detail_page(name, 422, delete_error=f"Type {name} exactly to delete it.")
    registry.delete_system(get_redis(), name)
    return redirect(url_for("ui.systems", deleted=name), code=303)


@bp.post("/systems/<name>/syncs")
def system_sync(name: str):
    """Queue a sync (``missing``) or a full sync and follow it on its own page."""
    _system_or_404(name)
    mode = request.form.get("mode", "missing")
    try:
        record = jobs.request_sync(get_redis(), name, mode, trigger="dashboard")
    except CoordinatorError as error:
        return _detail_page(name, status_of(error), sync_error=error.message)
    return redirect(url_for("ui.sync", sync_id=record["id"]), code=303)


def _sync_or_404(sync_id: str) -> dict[str, Any]:
    record = records.get(get_redis(), sync_id)
    if record is None:
        abort(404)
    return record


@bp.get("/syncs/<sync_id>")
@admin_only
def sync(sync_id: str):
    """Show a sync's progress; the bar polls until the sync is done or failed."""
    return render_template("sync.html", sync=_sync_or_404(sync_id), fixes=FIXES)


@bp.get("/syncs/<sync_id>/progress")
@admin_only
def sync_progress(sync_id: str):
    """Return the progress fragment (htmx swaps it in every second while the sync runs)."""
    return render_template("_sync_progress.html", sync=_sync_or_404(sync_id), fixes=FIXES)
