"""HTTP views of the ledger chain: verify and export (admins and auditors)."""

from __future__ import annotations

from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from coordinator import auth
from coordinator.numbering import api, chain, chain_schemas, checkpoints, export
from coordinator.numbering import series as series_mod
from coordinator.numbering.sequences import check_name
from coordinator.ops.redis_client import get_redis

blp = Blueprint("ledger_chain", __name__, url_prefix="/v1/series",
                description="The ledger's SHA-256 chain: verify it, export it for auditors")

blp.before_request(api.ensure_layout)

_NOT_FOUND = {"description": "No such series (or sequence)"}


def _signing() -> checkpoints.SigningKeys:
    return checkpoints.SigningKeys.from_config(current_app.config)


def _existing(series: str, name: str) -> None:
    series_mod.require(get_redis(), series)
    check_name(name)


@blp.route("/<string:series>/sequences/<string:name>/ledger/verify")
class LedgerVerify(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(chain_schemas.VerifyQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, chain_schemas.VerifySchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, series, name):
        """Recompute the sequence's hash chain; `ok: false` names the first bad event."""
        _existing(series, name)
        return chain.verify(get_redis(), name, query["period"], series=series,
                            signing=_signing())


@blp.route("/<string:series>/sequences/<string:name>/ledger/export")
class LedgerExport(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(chain_schemas.ExportQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, chain_schemas.ExportRecordSchema, content_type="application/x-ndjson",
                  description="One record per line (`format=csv`: `text/csv`), streamed: "
                              "header, chained events, entries, gaps, audit, end")
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, series, name):
        """Stream the sequence's chained events with the period's entries, gaps and audit."""
        _existing(series, name)
        found = export.records(get_redis(), name, query["period"],
                               int(current_app.config["UNCONFIRMED_GRACE_SECONDS"]),
                               series=series, signing=_signing())
        if query["format"] == "csv":
            body, mimetype = export.csv_rows(found), "text/csv"
        else:
            body, mimetype = export.jsonl(found), "application/x-ndjson"
        filename = f"ledger-{series}-{name}-{query['period'] or 'all'}.{query['format']}"
        # No request context needed while streaming: the generator holds its client and values.
        return Response(body, mimetype=mimetype, headers={
            "Content-Disposition": f'attachment; filename="{filename}"'})


@blp.route("/<string:series>/sequences/<string:name>/ledger/checkpoints")
class LedgerCheckpoints(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(201, chain_schemas.CheckpointSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    @blp.alt_response(409, description="The chain has no events yet")
    @blp.alt_response(503, description="No signing key configured (LEDGER_SIGNING_KEYS)")
    def post(self, series, name):
        """Sign the chain's head now (the scheduler also does, every LEDGER_CHECKPOINT_SECONDS)."""
        _existing(series, name)
        return checkpoints.make(get_redis(), _signing(), name, series=series)
