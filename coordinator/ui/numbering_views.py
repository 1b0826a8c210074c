"""Numbering: every series (one legal entity's numbering), created, described and deleted here;
each series' sequences with their settings (the next number only moves forward) and audits,
and the systems it numbers. Ledgers, gaps, verify and export are in :mod:`.ledger_views`."""

from __future__ import annotations

from typing import Any

from flask import abort, redirect, render_template, request, url_for

from coordinator.exceptions import CoordinatorError, NotFound
from coordinator.numbering import sequences
from coordinator.numbering import series as series_domain
from coordinator.numbering.schemas import (
    SequencePatchSchema,
    SeriesCreateSchema,
    SeriesPatchSchema,
)
from coordinator.ops.redis_client import get_redis
from coordinator.systems import registry
from coordinator.ui import forms
from coordinator.ui.blueprint import bp, viewer

_PATCH = SequencePatchSchema()
_SERIES_CREATE = SeriesCreateSchema()
_SERIES_PATCH = SeriesPatchSchema()


def series_or_404(name: str) -> dict[str, Any]:
    """Return series ``name``, or answer 404."""
    try:
        return series_domain.get_series(get_redis(), name)
    except NotFound:
        abort(404)


def sequence_or_404(name: str) -> str:
    """Return ``name`` if it is a sequence, or answer 404."""
    if name not in sequences.SEQUENCES:
        abort(404)
    return name


def systems_by_series(client) -> dict[str, list[str]]:
    """Return the names of the registered systems of each series."""
    found: dict[str, list[str]] = {}
    for system in registry.list_systems(client):
        found.setdefault(system["series"], []).append(system["name"])
    return found


def every_series(client) -> list[dict[str, Any]]:
    """Return every series with its systems and both sequences as of today."""
    members = systems_by_series(client)
    return [{**record, "systems": members.get(record["name"], []),
             "sequences": [sequences.describe(client, name, series=record["name"])
                           for name in sequences.SEQUENCES]}
            for record in series_domain.list_series(client)]


def _list_page(status: int = 200, **context: Any):
    return render_template("numbering.html", series=every_series(get_redis()),
                           **context), status


@bp.get("/numbering")
def numbering():
    """List every series with its sequences; the form creating a series for admins."""
    return _list_page()


@bp.post("/numbering")
def series_create():
    """Create a series (both sequences at their default settings)."""
    values = forms.pick(request.form, ("name", "description"))
    data, errors = forms.load(_SERIES_CREATE, values)
    if data is not None:
        try:
            series_domain.create_series(get_redis(), data["name"], data["description"])
        except CoordinatorError as error:
            errors = forms.field_errors(error) or {"": [error.message]}
        else:
            return redirect(url_for("ui.series", series=data["name"], created=1), code=303)
    return _list_page(422, errors=errors, form=dict(request.form))


def _series_page(name: str, status: int = 200, **context: Any):
    record = series_or_404(name)
    client = get_redis()
    described = [sequences.describe(client, seq, series=name) for seq in sequences.SEQUENCES]
    audits = {seq: sequences.audit(client, seq, 20, series=name) for seq in sequences.SEQUENCES}
    return render_template("series.html", record=record, sequences=described, audits=audits,
                           systems=systems_by_series(client).get(name, []),
                           **context), status


@bp.get("/series/<series>")
def series(series: str):
    """Show one series: its systems, both sequences' settings and periods, and the audits."""
    return _series_page(series)


@bp.post("/series/<series>")
def series_update(series: str):
    """Save a series' description."""
    series_or_404(series)
    data, errors = forms.load(_SERIES_PATCH, forms.pick(request.form, ("description",)))
    if data is not None:
        series_domain.update_series(get_redis(), series, data)
        return redirect(url_for("ui.series", series=series, saved="description"), code=303)
    return _series_page(series, 422, errors={"series": errors})


@bp.post("/series/<series>/delete")
def series_delete(series: str):
    """Delete a series that has no system and never issued a number, once its name is typed."""
    series_or_404(series)
    if request.form.get("confirm", "") != series:
        return _series_page(series, 422, delete_error=f"Type {series} exactly to delete it.")
    client = get_redis()
    try:
        series_domain.delete_series(client, series, systems_by_series(client).get(series, []))
    except CoordinatorError as error:
        return _series_page(series, 409, delete_error=error.message)
    return redirect(url_for("ui.numbering", deleted=series), code=303)


@bp.post("/series/<series>/sequences/<name>")
def sequence_update(series: str, name: str):
    """Save a sequence's settings; fields left as they are are not sent."""
    series_or_404(series)
    sequence_or_404(name)
    current = sequences.describe(get_redis(), name, series=series)
    values = forms.pick(request.form, ("next_number", "increment", "format", "padding"),
                        integers=("next_number", "increment", "padding"))
    changes = {k: v for k, v in values.items() if v != current.get(k)}
    reset = request.form.get("reset")
    if reset and reset != current["reset"]:
        changes["reset"] = reset
    data, errors = forms.load(_PATCH, changes)
    if data is not None:
        try:
            sequences.update(get_redis(), name, data, actor=viewer().actor, series=series)
        except CoordinatorError as error:
            errors = forms.field_errors(error) or {"": [error.message]}
        else:
            return redirect(url_for("ui.series", series=series, saved=name), code=303)
    return _series_page(series, 422, errors={name: errors})


@bp.post("/series/<series>/dedicated")
def series_dedicated(series: str):
    """Give credit notes their own numbering, or number them in the invoice sequence."""
    series_or_404(series)
    wanted = "dedicated" in request.form
    try:
        sequences.update(get_redis(), sequences.CREDIT_NOTE, {"dedicated": wanted},
                         actor=viewer().actor, series=series)
    except CoordinatorError as error:
        return _series_page(series, 409, errors={sequences.CREDIT_NOTE: {"": [error.message]}})
    return redirect(url_for("ui.series", series=series, saved=sequences.CREDIT_NOTE), code=303)
