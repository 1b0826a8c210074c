"""Numbering: each sequence's settings (next number forward-only), its ledger with paging and a
search by WHMCS reference, and its gaps (voids with reasons, long-unconfirmed numbers)."""

from __future__ import annotations

from typing import Any

import redis
from flask import abort, current_app, redirect, render_template, request, url_for
from marshmallow import ValidationError

from coordinator import keys
from coordinator.exceptions import CoordinatorError
from coordinator.numbering import allocation, ledger, sequences
from coordinator.numbering.schemas import PERIOD, SequencePatchSchema
from coordinator.ops.redis_client import get_redis
from coordinator.ui import forms
from coordinator.ui.blueprint import bp, viewer

PAGE = 50
_PATCH = SequencePatchSchema()


def _sequence_or_404(name: str) -> str:
    if name not in sequences.SEQUENCES:
        abort(404)
    return name


def _period(name: str) -> str:
    given = request.args.get("period", "").strip()
    if given:
        try:
            PERIOD(given)
        except ValidationError:
            abort(422, "A period is 'all', a year (2026) or a month (2026-11).")
        return given
    settings = sequences.read_settings(get_redis(), name)
    return sequences.period_of(sequences.utcnow().date(), settings["reset"])


def find_by_reference(client: redis.Redis, name: str, reference: str) -> list[dict[str, Any]]:
    """Return the allocations of ``name`` numbering WHMCS document ``reference``, any system.

    Every system's reference index is looked in, deleted systems' too (their numbers stay in
    the ledger). The indexes are found with SCAN: a few keys per system, never per invoice.
    """
    prefix = keys.seq_refs(name, "", "")[: -len("::")] + ":"
    found = []
    for key in sorted(client.scan_iter(match=keys.seq_refs(name, "*", "*"), count=1000)):
        document, _, system = key[len(prefix):].partition(":")
        if document in sequences.DOCUMENTS and system:
            allocation_id = client.hget(key, reference)
            if allocation_id:
                found.append(allocation.get(client, allocation_id))
    return found


def _page(status: int = 200, **context: Any):
    client = get_redis()
    described = [sequences.describe(client, name) for name in sequences.SEQUENCES]
    audits = {name: sequences.audit(client, name, 20) for name in sequences.SEQUENCES}
    return render_template("numbering.html", sequences=described, audits=audits,
                           **context), status


@bp.get("/numbering")
def numbering():
    """Show both sequences' settings and periods, and the settings forms for admins."""
    return _page()


@bp.post("/numbering/<name>")
def numbering_update(name: str):
    """Save a sequence's settings; fields left as they are are not sent."""
    _sequence_or_404(name)
    current = sequences.describe(get_redis(), name)
    values = forms.pick(request.form, ("next_number", "increment", "format", "padding"),
                        integers=("next_number", "increment", "padding"))
    changes = {k: v for k, v in values.items() if v != current.get(k)}
    reset = request.form.get("reset")
    if reset and reset != current["reset"]:
        changes["reset"] = reset
    data, errors = forms.load(_PATCH, changes)
    if data is not None:
        try:
            sequences.update(get_redis(), name, data, actor=viewer().actor)
        except CoordinatorError as error:
            errors = forms.field_errors(error) or {"": [error.message]}
        else:
            return redirect(url_for("ui.numbering", saved=name), code=303)
    return _page(422, errors={name: errors})


@bp.get("/numbering/<name>/ledger")
def numbering_ledger(name: str):
    """Show a page of the ledger (cursor ``after``), or the entries of one reference."""
    _sequence_or_404(name)
    client = get_redis()
    period = _period(name)
    reference = request.args.get("reference", "").strip()
    if reference:
        entries, next_after = find_by_reference(client, name, reference), None
    else:
        after = forms.integer(request.args.get("after", "0"))
        after = after if isinstance(after, int) and after >= 0 else 0
        entries = ledger.list_ledger(client, name, period, after, PAGE)
        next_after = entries[-1]["number"] if len(entries) == PAGE else None
    return render_template("ledger.html", name=name, period=period, entries=entries,
                           next_after=next_after, reference=reference,
                           periods=ledger.periods(client, name))


@bp.get("/numbering/<name>/gaps")
def numbering_gaps(name: str):
    """Show the voided, skipped, long-unconfirmed and missing numbers of a period."""
    _sequence_or_404(name)
    client = get_redis()
    period = _period(name)
    grace = int(current_app.config["UNCONFIRMED_GRACE_SECONDS"])
    return render_template("gaps.html", name=name, period=period, grace=grace,
                           gaps=ledger.gaps(client, name, period, grace),
                           periods=ledger.periods(client, name))
