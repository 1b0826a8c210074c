"""Ledgers of every series: a sequence's numbers with paging, the search by WHMCS reference
(every series), gaps and voids, the hash chain's verify and the auditor's export, and one
allocation with the numbers it was reissued as (or from) — and, for admins, its reissue."""

from __future__ import annotations

import re
from typing import Any

import redis
from flask import Response, abort, current_app, redirect, render_template, request, url_for
from marshmallow import ValidationError

from coordinator import keys
from coordinator.exceptions import CoordinatorError, NotFound
from coordinator.numbering import allocation, chain, checkpoints, export, ledger, sequences
from coordinator.numbering import series as series_domain
from coordinator.numbering.schemas import PERIOD, ReissueSchema
from coordinator.ops import confirmation
from coordinator.ops.redis_client import get_redis
from coordinator.ui import forms
from coordinator.ui.blueprint import bp, status_of, viewer
from coordinator.ui.numbering_views import sequence_or_404, series_or_404

PAGE = 50
_REISSUE = ReissueSchema()
EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}

_REFS = re.compile(r"^\{ser:(?P<series>[^}]+)\}:(?P<sequence>[a-z_]+):refs:"
                   r"(?P<document>[a-z_]+):(?P<system>.+)$")


def _period_arg(name: str, series: str, *, required: bool = True) -> str | None:
    """Return the period asked for (checked), else today's (``required``) or None (all)."""
    given = request.args.get("period", "").strip()
    if given:
        try:
            PERIOD(given)
        except ValidationError:
            abort(422, "A period is 'all', a year (2026) or a month (2026-11).")
        return given
    if not required:
        return None
    settings = sequences.read_settings(get_redis(), name, series)
    return sequences.period_of(sequences.utcnow().date(), settings["reset"])


def _signing() -> checkpoints.SigningKeys:
    # The keys the API verifies and exports with: checkpoints are checked the same way here.
    return checkpoints.SigningKeys.from_config(current_app.config)


def _sequence(series: str, name: str) -> None:
    series_or_404(series)
    sequence_or_404(name)


def find_by_reference(client: redis.Redis, reference: str) -> list[dict[str, Any]]:
    """Return every allocation numbering WHMCS document ``reference``: any series, sequence,
    document type and system, deleted systems' too (their numbers stay in the ledger).

    The reference indexes are found with one SCAN: a few keys per system and series, never
    per invoice. Only keys exactly of the index's shape, of a series that exists, count.
    """
    known = {record["name"] for record in series_domain.list_series(client)}
    found = []
    pattern = keys.series_tag("*") + ":*:refs:*:*"
    for key in sorted(client.scan_iter(match=pattern, count=1000)):
        match = _REFS.match(key)
        if match is None or match["series"] not in known:
            continue
        parts = match.group("sequence", "document", "system", "series")
        if (parts[0] not in sequences.SEQUENCES or parts[1] not in sequences.DOCUMENTS
                or key != keys.seq_refs(*parts)):
            continue
        allocation_id = client.hget(key, reference)
        if allocation_id:
            found.append(allocation.get(client, allocation_id))
    return found


@bp.get("/references")
def references():
    """Show the allocations of one WHMCS reference, in every series."""
    reference = request.args.get("reference", "").strip()
    entries = find_by_reference(get_redis(), reference) if reference else []
    return render_template("references.html", reference=reference, entries=entries)


@bp.get("/series/<series>/sequences/<name>/ledger")
def ledger_page(series: str, name: str):
    """Show a page of a sequence's ledger (cursor ``after``)."""
    _sequence(series, name)
    client = get_redis()
    period = _period_arg(name, series)
    after = forms.integer(request.args.get("after", "0"))
    after = after if isinstance(after, int) and after >= 0 else 0
    entries = ledger.list_ledger(client, name, period, after, PAGE, series=series)
    next_after = entries[-1]["number"] if len(entries) == PAGE else None
    return render_template("ledger.html", series=series, name=name, period=period,
                           entries=entries, next_after=next_after,
                           periods=ledger.periods(client, name, series=series))


@bp.get("/series/<series>/sequences/<name>/gaps")
def gaps_page(series: str, name: str):
    """Show the voided, skipped, long-unconfirmed and missing numbers of a period."""
    _sequence(series, name)
    client = get_redis()
    period = _period_arg(name, series)
    grace = int(current_app.config["UNCONFIRMED_GRACE_SECONDS"])
    return render_template("gaps.html", series=series, name=name, period=period, grace=grace,
                           gaps=ledger.gaps(client, name, period, grace, series=series),
                           periods=ledger.periods(client, name, series=series))


def _verify(series: str, name: str, status: int = 200, **context: Any):
    client = get_redis()
    period = _period_arg(name, series, required=False)
    return render_template("verify.html", series=series, name=name, period=period,
                           result=chain.verify(client, name, period, series=series,
                                               signing=_signing()),
                           periods=ledger.periods(client, name, series=series),
                           **context), status


@bp.get("/series/<series>/sequences/<name>/verify")
def verify_page(series: str, name: str):
    """Recompute the sequence's hash chain: ok with its head, or the first event that fails."""
    _sequence(series, name)
    return _verify(series, name)


@bp.post("/series/<series>/sequences/<name>/checkpoints")
def checkpoint_create(series: str, name: str):
    """Sign the chain's head now (the scheduler also does, hourly), as the API's checkpoints."""
    _sequence(series, name)
    try:
        checkpoints.make(get_redis(), _signing(), name, series=series)
    except CoordinatorError as error:
        return _verify(series, name, status_of(error), sign_error=error.message)
    return redirect(url_for("ui.verify_page", series=series, name=name, signed=1), code=303)


@bp.get("/series/<series>/sequences/<name>/export")
def export_download(series: str, name: str):
    """Download the sequence's export (JSON lines or CSV), as ``…/ledger/export`` streams it."""
    _sequence(series, name)
    period = _period_arg(name, series, required=False)
    fmt = request.args.get("format", "jsonl")
    if fmt not in EXPORT_FORMATS:
        abort(422, "The format is jsonl or csv.")
    found = export.records(get_redis(), name, period,
                           int(current_app.config["UNCONFIRMED_GRACE_SECONDS"]), series=series,
                           signing=_signing())
    body = export.csv_rows(found) if fmt == "csv" else export.jsonl(found)
    filename = f"ledger-{series}-{name}-{period or 'all'}.{fmt}"
    return Response(body, mimetype=EXPORT_FORMATS[fmt], headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/numbering/<name>/ledger")
@bp.get("/numbering/<name>/gaps")
def default_series_pages(name: str):
    """Send the addresses of the dashboard before series to the default series' pages."""
    sequence_or_404(name)
    endpoint = "ui.ledger_page" if request.path.endswith("/ledger") else "ui.gaps_page"
    return redirect(url_for(endpoint, series=series_domain.DEFAULT, name=name,
                            **request.args), code=308)


def allocation_or_404(allocation_id: str) -> dict[str, Any]:
    """Return one allocation, or answer 404."""
    try:
        return allocation.get(get_redis(), allocation_id)
    except NotFound:
        abort(404)


@bp.get("/allocations/<path:allocation_id>")
def allocation_page(allocation_id: str):
    """Show one allocation: its document, status, times, and the number it was reissued as."""
    return render_template("allocation.html", entry=allocation_or_404(allocation_id))


@bp.post("/allocations/<path:allocation_id>/reissue")
def allocation_reissue(allocation_id: str):
    """Give a void number's document a new number, with the reason (as the API's reissue)."""
    entry = allocation_or_404(allocation_id)
    data, errors = forms.load(_REISSUE, forms.pick(request.form, ("reason",)))
    status = 422
    if data is not None:
        client = get_redis()
        try:
            # Durable before the page says so, exactly as the API answers 201 (503 otherwise).
            new, _ = allocation.reissue(
                client, allocation_id, data["reason"], actor=viewer().actor,
                durability=confirmation.guard_for(current_app).current(client))
        except CoordinatorError as error:
            errors, status = {"": [error.message]}, status_of(error)
            entry = allocation_or_404(allocation_id)
        else:
            # The new event is sealed by the next verify, export or checkpoint (sealing is
            # idempotent and each of them seals first).
            return redirect(url_for("ui.allocation_page", allocation_id=new["id"],
                                    reissued=1), code=303)
    return render_template("allocation.html", entry=entry, errors=errors,
                           reason=request.form.get("reason", "")), status
