"""HTTP views of series: the series themselves and their sequences, ledgers, gaps and audits.

The sequence views answer exactly as ``/v1/sequences/…`` do (which is the ``default`` series).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from coordinator import auth
from coordinator.numbering import api, schemas, series
from coordinator.ops.redis_client import get_redis

blp = Blueprint("series", __name__, url_prefix="/v1/series",
                description="Series: one numbering (invoice and credit-note sequences, ledger) "
                            "per legal entity (admin)")

blp.before_request(api.ensure_layout)

_NOT_FOUND = {"description": "No such series (or sequence)"}


def _systems_of(client, name: str) -> list[str]:
    from coordinator.systems import registry

    return [s["name"] for s in registry.list_systems(client) if s["series"] == name]


def _shown(record: dict) -> dict:
    return {**record, "systems": _systems_of(get_redis(), record["name"])}


def _existing(name: str) -> str:
    series.require(get_redis(), name)
    return name


@blp.route("")
class SeriesList(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, schemas.SeriesSchema(many=True))
    def get(self):
        """Every series, ``default`` first, with the systems it numbers."""
        client = get_redis()
        from coordinator.systems import registry

        systems = registry.list_systems(client)
        return [{**record, "systems": [s["name"] for s in systems
                                       if s["series"] == record["name"]]}
                for record in series.list_series(client)]

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SeriesCreateSchema)
    @blp.response(201, schemas.SeriesSchema)
    @blp.alt_response(409, description="A series of that name exists")
    def post(self, body):
        """Create a series with both sequences at their default settings."""
        record = series.create_series(get_redis(), body["name"], body["description"])
        return {**record, "systems": []}


@blp.route("/<string:name>")
class SeriesByName(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, schemas.SeriesSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, name):
        """One series and the systems it numbers."""
        return _shown(series.get_series(get_redis(), name))

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SeriesPatchSchema)
    @blp.response(200, schemas.SeriesSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def patch(self, body, name):
        """Change the series' description."""
        return _shown(series.update_series(get_redis(), name, body))

    @auth.require(auth.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, **_NOT_FOUND)
    @blp.alt_response(409, description="default, or a series with a system or a number")
    def delete(self, name):
        """Delete a series that has no system and never issued a number."""
        client = get_redis()
        series.delete_series(client, name, _systems_of(client, name))


@blp.route("/<string:name>/sequences")
class SeriesSequences(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, schemas.SequenceSchema(many=True))
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, name):
        """Both sequences of the series, as ``GET /v1/sequences`` shows default's."""
        return api.list_sequences(_existing(name))


@blp.route("/<string:name>/sequences/<string:sequence>")
class SeriesSequence(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, schemas.SequenceSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, name, sequence):
        """One sequence of the series: settings and, per period, the last number issued."""
        return api.show_sequence(_existing(name), sequence)

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SequencePatchSchema)
    @blp.response(200, schemas.SequenceSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    @blp.alt_response(409, description="next_number backwards, reset locked, dedicated in use, "
                                       "or settings that could print one number twice")
    def patch(self, body, name, sequence):
        """Change settings of one sequence of the series (as ``PATCH /v1/sequences/…``)."""
        return api.patch_sequence(_existing(name), sequence, body)


@blp.route("/<string:name>/sequences/<string:sequence>/audit")
class SeriesSequenceAudit(MethodView):
    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.AuditQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.AuditSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, name, sequence):
        """Settings changes of one sequence of the series, oldest first."""
        return api.sequence_audit(_existing(name), sequence, query["limit"])


@blp.route("/<string:name>/sequences/<string:sequence>/ledger")
class SeriesSequenceLedger(MethodView):
    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.LedgerQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.LedgerPageSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, name, sequence):
        """Issued numbers of one period of one sequence of the series, in number order."""
        return api.sequence_ledger(_existing(name), sequence, query)


@blp.route("/<string:name>/sequences/<string:sequence>/gaps")
class SeriesSequenceGaps(MethodView):
    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.GapsQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.GapsSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, name, sequence):
        """Voided, skipped, long-unconfirmed and missing numbers of one period of the series."""
        return api.sequence_gaps(_existing(name), sequence, query)
