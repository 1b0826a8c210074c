"""HTTP views of numbering: parse, call the domain, serialize. No numbering logic here."""

from __future__ import annotations

from flask import current_app, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from coordinator import auth
from coordinator.clock import utcnow
from coordinator.exceptions import NotDurable
from coordinator.numbering import allocation, ledger, schemas, sequences
from coordinator.numbering.scripts import Durability
from coordinator.ops.metrics import ALLOCATIONS, child
from coordinator.ops.redis_client import get_redis

blp = Blueprint("numbering", __name__, url_prefix="/v1",
                description="Invoice and credit-note numbers: allocations, sequences, ledger")


# Instances, not classes: flask-smorest would build a schema per request from a class, which
# is a measurable share of the allocation hot path.
_ALLOCATION_REQUEST = schemas.AllocationRequestSchema()
_ALLOCATION = schemas.AllocationSchema()
_ALLOCATION_FIELDS = tuple(_ALLOCATION.dump_fields)

SERIES = "default"
"""The ``series`` label of the allocation metrics (one series until series land)."""

DURABILITY = "invoice_sync.durability"
"""``app.extensions`` key of the app's :class:`Durability`, read from its config once."""


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
    extensions = current_app.extensions
    durability = extensions.get(DURABILITY)
    if durability is None:
        durability = extensions[DURABILITY] = Durability.from_config(current_app.config)
    return durability


def _period(name: str, given: str | None) -> str:
    if given is not None:
        return given
    settings = sequences.read_settings(get_redis(), name)
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
        try:
            entry, new = allocation.allocate(
                get_redis(), auth.current_principal().system, body["document"],
                body["reference"], day, _durability(),
            )
        except NotDurable:
            # The physical sequence is unknown here; the document names it closely enough.
            child(ALLOCATIONS, SERIES, body["document"], "not_durable").inc()
            raise
        child(ALLOCATIONS, SERIES, entry["sequence"], "new" if new else "replay").inc()
        # A Response passes flask-smorest's @response untouched (see _shaped).
        return jsonify(_shaped(entry)), (201 if new else 200)


@blp.route("/allocations/<string:allocation_id>")
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
    entry, _ = allocation.transition(
        get_redis(), allocation_id, action, value, actor_kind=principal.kind,
        actor_system=principal.system, actor=_actor(), durability=_durability(),
    )
    return entry


@blp.route("/allocations/<string:allocation_id>/confirm")
class Confirm(MethodView):
    @auth.require(auth.AGENT)
    @blp.arguments(schemas.ConfirmSchema)
    @blp.response(200, schemas.AllocationSchema)
    def post(self, body, allocation_id):
        """Record that the number was written into WHMCS (idempotent)."""
        return _transition(allocation_id, "confirm", body["invoicenum"])


@blp.route("/allocations/<string:allocation_id>/void")
class Void(MethodView):
    @auth.require(auth.ADMIN, auth.AGENT)
    @blp.arguments(schemas.VoidSchema)
    @blp.response(200, schemas.AllocationSchema)
    def post(self, body, allocation_id):
        """Void an unused number with a reason (a confirmed one: admins only). Idempotent."""
        return _transition(allocation_id, "void", body["reason"])


@blp.route("/sequences")
class Sequences(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SequenceSchema(many=True))
    def get(self):
        """Both sequences: settings and, per period, the last number issued."""
        return [sequences.describe(get_redis(), name) for name in sequences.SEQUENCES]


@blp.route("/sequences/<string:name>")
class SequenceByName(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SequenceSchema)
    def get(self, name):
        """One sequence: settings and, per period, the last number issued."""
        sequences.check_name(name)
        return sequences.describe(get_redis(), name)

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SequencePatchSchema)
    @blp.response(200, schemas.SequenceSchema)
    @blp.alt_response(409, description="next_number backwards, reset locked, dedicated in use")
    def patch(self, body, name):
        """Change settings; next_number only moves forward. Every change is audited."""
        sequences.check_name(name)
        period = body.pop("period", None)
        return sequences.update(get_redis(), name, body, actor=_actor(), period=period)


@blp.route("/sequences/<string:name>/audit")
class SequenceAudit(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.AuditQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.AuditSchema)
    def get(self, query, name):
        """Settings changes of one sequence (who, when, before, after), oldest first."""
        return {"sequence": name, "records": sequences.audit(get_redis(), name, query["limit"])}


@blp.route("/sequences/<string:name>/ledger")
class SequenceLedger(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.LedgerQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.LedgerPageSchema)
    def get(self, query, name):
        """Issued numbers of one period in number order (cursor: ``after``)."""
        sequences.check_name(name)
        period = _period(name, query["period"])
        entries = ledger.list_ledger(get_redis(), name, period, query["after"], query["limit"])
        next_after = entries[-1]["number"] if len(entries) == query["limit"] else None
        return {"sequence": name, "period": period, "entries": entries, "next_after": next_after}


@blp.route("/sequences/<string:name>/gaps")
class SequenceGaps(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.GapsQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.GapsSchema)
    def get(self, query, name):
        """Voided, skipped, long-unconfirmed and missing numbers of one period."""
        sequences.check_name(name)
        period = _period(name, query["period"])
        found = ledger.gaps(get_redis(), name, period,
                            int(current_app.config["UNCONFIRMED_GRACE_SECONDS"]))
        return {"sequence": name, "period": period, "gaps": found}
