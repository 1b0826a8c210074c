"""HTTP views of numbering: parse, call the domain, serialize. No numbering logic here."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from coordinator import auth
from coordinator.clock import utcnow
from coordinator.exceptions import NotDurable
from coordinator.numbering import allocation, chain, ledger, migrate, schemas, sequences
from coordinator.numbering.allocation import Hints
from coordinator.numbering.scripts import Durability
from coordinator.ops import confirmation
from coordinator.ops.metrics import ALLOCATIONS, child
from coordinator.ops.redis_client import get_redis

blp = Blueprint("numbering", __name__, url_prefix="/v1",
                description="Invoice and credit-note numbers: allocations, sequences, ledger")


# Instances, not classes: flask-smorest would build a schema per request from a class, which
# is a measurable share of the allocation hot path.
_ALLOCATION_REQUEST = schemas.AllocationRequestSchema()
_ALLOCATION = schemas.AllocationSchema()
_ALLOCATION_FIELDS = tuple(_ALLOCATION.dump_fields)

SERIES_UNKNOWN = "-"
"""The ``series`` label of an allocation refused before its series was looked up."""

HINTS = "invoice_sync.numbering_hints"
"""``app.extensions`` key of the app's allocation :class:`Hints` (never shared between apps)."""

SEALER = "invoice_sync.numbering_sealer"
"""``app.extensions`` key of the app's :class:`chain.Sealer`."""

READY = "invoice_sync.numbering_ready"
"""``app.extensions`` key set once this app saw the numbering data in the series layout."""


@blp.before_request
def ensure_layout() -> None:
    """Once per app, before it reads or writes a number: migrate an older layout (idempotent).

    ``invoice-sync serve`` migrates before it starts serving; this covers coordinators started
    another way (gunicorn directly), so no request ever sees the old keys as missing.
    """
    extensions = current_app.extensions
    if not extensions.get(READY):
        # Read-only unless there is old data to move: a request refused later (bad body,
        # bad token) must change nothing. A fresh store is initialised by its first number.
        client = get_redis()
        if migrate.needs_migration(client):
            migrate.migrate(client)
        extensions[READY] = True


@blp.before_request
def batch_body_limit() -> None:
    """A batch of 1000 items is larger than other bodies: its own limit, for its route only."""
    if request.endpoint == "numbering.AllocationBatches":
        request.max_content_length = int(current_app.config["MAX_BATCH_CONTENT_LENGTH"])


def hints() -> Hints:
    """Return this app's allocation hints."""
    found = current_app.extensions.get(HINTS)
    if found is None:
        found = current_app.extensions[HINTS] = Hints()
    return found


def _shaped(entry: dict) -> dict:
    """Return ``entry`` as ``AllocationSchema().dump(entry)`` would, without marshmallow.

    The entry comes from ``allocation.entry_out``: strings, and ``number`` already an int, so
    the dump would only pick and order the schema's fields, at several times the cost on the
    allocation hot path. A test holds the two equal; /openapi.json still documents the schema.
    """
    return {name: entry[name] for name in _ALLOCATION_FIELDS if name in entry}


def _actor() -> str:
    """Name the caller for records: ``agent:<system>`` or ``admin:<token id>`` (as listed by
    ``GET /v1/tokens``)."""
    return auth.current_principal().actor


def _durability() -> Durability:
    # The same verdict as /readyz and the doctor: 503 before writing when the server cannot
    # keep what it acknowledges (coordinator.ops.durability).
    return confirmation.guard_for(current_app).current(get_redis())


def sealer() -> chain.Sealer:
    """Return this app's :class:`chain.Sealer` (its thread seals after the responses)."""
    found = current_app.extensions.get(SEALER)
    if found is None:
        found = current_app.extensions.setdefault(SEALER, chain.Sealer())
    return found


def _seal_after(series: str, *sequences: str) -> None:
    """Have the new events of ``sequences`` sealed by the app's sealer thread.

    Sealing is idempotent and verify/export seal first, so a failure there only leaves the
    events unsealed a little longer; it is logged, never raised. (No events handed over: the
    sealer reads what is unsealed.)
    """
    client, handed = get_redis(), sealer()
    for sequence in sequences:
        handed.submit(client, chain.Appended(series, sequence, 0, "", ()))


def _seal_appended(appended: list[chain.Appended]) -> None:
    """Have the events an allocation appended sealed by the app's sealer thread: one round
    trip per sequence (the script returned what to hash), however many numbers a batch took,
    shared by every allocation that waits meanwhile (:class:`chain.Sealer`)."""
    client, handed = get_redis(), sealer()
    for each in appended:
        handed.submit(client, each)


def _period(name: str, given: str | None, series: str) -> str:
    if given is not None:
        return given
    settings = sequences.read_settings(get_redis(), name, series)
    return sequences.period_of(utcnow().date(), settings["reset"])


@blp.route("/allocations")
class Allocations(MethodView):
    @auth.require(auth.AGENT)
    @blp.arguments(_ALLOCATION_REQUEST)
    @blp.response(201, _ALLOCATION)
    @blp.alt_response(200, schema=_ALLOCATION, description="Replay")
    @blp.alt_response(409, description="Other period, or sequence exhausted")
    @blp.alt_response(503, description="Not confirmed durable: retry the same request")
    def post(self, body):
        """Take the next number for a document of the token's system (or its existing one)."""
        day = body["date"] or utcnow().date()
        appended: list[chain.Appended] = []
        try:
            entry, new = allocation.allocate(
                get_redis(), auth.current_principal().system, body["document"],
                body["reference"], day, _durability(), hints(), appended,
            )
        except NotDurable:
            # Refused before the script ran: neither the series nor the physical sequence is
            # known here (SERIES_UNKNOWN); the document names the sequence closely enough.
            child(ALLOCATIONS, SERIES_UNKNOWN, body["document"], "not_durable").inc()
            raise
        child(ALLOCATIONS, entry["series"], entry["sequence"], "new" if new else "replay").inc()
        if appended:
            _seal_appended(appended)
        # A Response passes flask-smorest's @response untouched (see _shaped).
        return jsonify(_shaped(entry)), (201 if new else 200)


_BATCH_REQUEST = schemas.AllocationBatchRequestSchema()
_BATCH = schemas.AllocationBatchSchema()


@blp.route("/allocation-batches")
class AllocationBatches(MethodView):
    @auth.require(auth.AGENT)
    @blp.arguments(_BATCH_REQUEST)
    @blp.response(200, _BATCH)
    @blp.alt_response(409, description="An item cannot be numbered (errors.json.items.<index> "
                                       "says why); no number of the batch was taken")
    @blp.alt_response(503, description="Not confirmed durable: retry the same request")
    def post(self, body):
        """Number several documents of the token's system at once: all of them or none."""
        today = utcnow().date()
        items = [allocation.Item(item["document"], item["reference"], item["date"] or today)
                 for item in body["items"]]
        appended: list[chain.Appended] = []
        try:
            taken = allocation.allocate_batch(
                get_redis(), auth.current_principal().system, items, _durability(), hints(),
                appended)
        except NotDurable:
            # As for a single allocation: refused before the script ran (SERIES_UNKNOWN).
            for item in items:
                child(ALLOCATIONS, SERIES_UNKNOWN, item.document, "not_durable").inc()
            raise
        out = []
        for entry, new in taken:
            child(ALLOCATIONS, entry["series"], entry["sequence"],
                  "new" if new else "replay").inc()
            shaped = _shaped(entry)
            shaped["replay"] = not new
            out.append(shaped)
        if appended:
            _seal_appended(appended)  # one pass per sequence, however many numbers
        return jsonify({"items": out})


@blp.route("/allocations/<path:allocation_id>")
class AllocationById(MethodView):
    @auth.require(auth.ADMIN, auth.AUDITOR, auth.AGENT)
    @blp.response(200, schemas.AllocationSchema)
    def get(self, allocation_id):
        """Return one allocation (agent of its system, admin or auditor)."""
        entry = allocation.get(get_redis(), allocation_id)
        auth.require_system_access(entry["system"])
        return entry


def _transition(allocation_id: str, action: str, value: str):
    principal = auth.current_principal()
    entry, changed = allocation.transition(
        get_redis(), allocation_id, action, value, actor_kind=principal.kind,
        actor_system=principal.system, actor=_actor(), durability=_durability(),
    )
    if changed:
        _seal_after(entry["series"], entry["sequence"])
    return entry


@blp.route("/allocations/<path:allocation_id>/confirm")
class Confirm(MethodView):
    @auth.require(auth.AGENT)
    @blp.arguments(schemas.ConfirmSchema)
    @blp.response(200, schemas.AllocationSchema)
    def post(self, body, allocation_id):
        """Record that the number was written into WHMCS (idempotent)."""
        return _transition(allocation_id, "confirm", body["invoicenum"])


@blp.route("/allocations/<path:allocation_id>/void")
class Void(MethodView):
    @auth.require(auth.ADMIN, auth.AGENT)
    @blp.arguments(schemas.VoidSchema)
    @blp.response(200, schemas.AllocationSchema)
    def post(self, body, allocation_id):
        """Void an unused number with a reason (a confirmed one: admins only). Idempotent."""
        return _transition(allocation_id, "void", body["reason"])


@blp.route("/allocations/<path:allocation_id>/reissue")
class Reissue(MethodView):
    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.ReissueSchema)
    @blp.response(201, schemas.AllocationSchema)
    @blp.alt_response(404, description="No such allocation")
    @blp.alt_response(409, description="Not void, its document has another number, or no "
                                       "number can be taken")
    @blp.alt_response(503, description="Not confirmed durable: the number may be taken; "
                                       "read the void entry's `reissued_as`")
    def post(self, body, allocation_id):
        """Give a void number's document a new number, with the reason (admins only).

        The void entry stays in the ledger; both name each other (`reissued_as` /
        `reissue_of`), and the agent's next allocation of the document answers the new number.
        """
        entry, _ = allocation.reissue(get_redis(), allocation_id, body["reason"],
                                      actor=_actor(), durability=_durability())
        _seal_after(entry["series"], entry["sequence"])
        return entry


def list_sequences(series: str) -> list[dict]:
    """Both sequences of ``series``."""
    return [sequences.describe(get_redis(), name, series=series) for name in sequences.SEQUENCES]


def show_sequence(series: str, name: str) -> dict:
    """One sequence of ``series``."""
    sequences.check_name(name)
    return sequences.describe(get_redis(), name, series=series)


def patch_sequence(series: str, name: str, body: dict) -> dict:
    """Change settings of one sequence of ``series``."""
    sequences.check_name(name)
    period = body.pop("period", None)
    described = sequences.update(get_redis(), name, body, actor=_actor(), period=period,
                                 series=series)
    _seal_after(series, name)
    return described


def sequence_audit(series: str, name: str, limit: int) -> dict:
    """Settings changes of one sequence of ``series``."""
    return {"sequence": name,
            "records": sequences.audit(get_redis(), name, limit, series=series)}


def sequence_ledger(series: str, name: str, query: dict) -> dict:
    """One page of the ledger of one sequence of ``series``."""
    sequences.check_name(name)
    period = _period(name, query["period"], series)
    entries = ledger.list_ledger(get_redis(), name, period, query["after"], query["limit"],
                                 series=series)
    next_after = entries[-1]["number"] if len(entries) == query["limit"] else None
    return {"sequence": name, "period": period, "entries": entries, "next_after": next_after}


def sequence_gaps(series: str, name: str, query: dict) -> dict:
    """The gap report of one period of one sequence of ``series``."""
    sequences.check_name(name)
    period = _period(name, query["period"], series)
    found = ledger.gaps(get_redis(), name, period,
                        int(current_app.config["UNCONFIRMED_GRACE_SECONDS"]), series=series)
    return {"sequence": name, "period": period, "gaps": found}


DEFAULT = sequences.DEFAULT_SERIES


@blp.route("/sequences")
class Sequences(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SequenceSchema(many=True))
    def get(self):
        """Both sequences: settings and, per period, the last number issued."""
        return list_sequences(DEFAULT)


@blp.route("/sequences/<string:name>")
class SequenceByName(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SequenceSchema)
    def get(self, name):
        """One sequence: settings and, per period, the last number issued."""
        return show_sequence(DEFAULT, name)

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SequencePatchSchema)
    @blp.response(200, schemas.SequenceSchema)
    @blp.alt_response(409, description="next_number backwards, reset locked, dedicated in use, "
                                       "or settings that could print one number twice")
    def patch(self, body, name):
        """Change settings; next_number only moves forward. Every change is audited."""
        return patch_sequence(DEFAULT, name, body)


@blp.route("/sequences/<string:name>/audit")
class SequenceAudit(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.AuditQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.AuditSchema)
    def get(self, query, name):
        """Settings changes of one sequence (who, when, before, after), oldest first."""
        return sequence_audit(DEFAULT, name, query["limit"])


@blp.route("/sequences/<string:name>/ledger")
class SequenceLedger(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.LedgerQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.LedgerPageSchema)
    def get(self, query, name):
        """Issued numbers of one period in number order (cursor: ``after``)."""
        return sequence_ledger(DEFAULT, name, query)


@blp.route("/sequences/<string:name>/gaps")
class SequenceGaps(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.GapsQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.GapsSchema)
    def get(self, query, name):
        """Voided, skipped, long-unconfirmed and missing numbers of one period."""
        return sequence_gaps(DEFAULT, name, query)
