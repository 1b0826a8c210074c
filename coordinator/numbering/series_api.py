"""HTTP views of series: the series themselves and their sequences, ledgers, gaps and audits.

The sequence views answer exactly as ``/v1/sequences/…`` do (which is the ``default`` series).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE

from coordinator import auth
from coordinator.numbering import api, schemas
from coordinator.numbering import series as domain
from coordinator.ops.redis_client import get_redis

blp = Blueprint("series", __name__, url_prefix="/v1/series",
                description="Series: one numbering (invoice and credit-note sequences, ledger) "
                            "per legal entity (admin; auditors read)")

blp.before_request(api.ensure_layout)

_NOT_FOUND = {"description": "No such series (or sequence)"}


def _systems_by_series(client) -> dict[str, list[str]]:
    # Imported here: the registry imports numbering, which this blueprint is part of.
    from coordinator.systems import registry

    found: dict[str, list[str]] = {}
    for system in registry.list_systems(client):
        found.setdefault(system["series"], []).append(system["name"])
    return found


def _systems_of(client, name: str) -> list[str]:
    return _systems_by_series(client).get(name, [])


def _shown(record: dict) -> dict:
    return {**record, "systems": _systems_of(get_redis(), record["name"])}


def _existing(name: str) -> str:
    domain.require(get_redis(), name)
    return name


@blp.route("")
class SeriesList(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SeriesSchema(many=True))
    def get(self):
        """Every series, ``default`` first, with the systems it numbers."""
        client = get_redis()
        members = _systems_by_series(client)
        return [{**record, "systems": members.get(record["name"], [])}
                for record in domain.list_series(client)]

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SeriesCreateSchema)
    @blp.response(201, schemas.SeriesSchema)
    @blp.alt_response(409, description="A series of that name exists")
    def post(self, body):
        """Create a series with both sequences at their default settings."""
        record = domain.create_series(get_redis(), body["name"], body["description"])
        return {**record, "systems": []}


@blp.route("/<string:series>")
class SeriesByName(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SeriesSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, series):
        """One series and the systems it numbers."""
        return _shown(domain.get_series(get_redis(), series))

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SeriesPatchSchema)
    @blp.response(200, schemas.SeriesSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def patch(self, body, series):
        """Change the series' description."""
        return _shown(domain.update_series(get_redis(), series, body))

    @auth.require(auth.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, **_NOT_FOUND)
    @blp.alt_response(409, description="default, or a series with a system or a number")
    def delete(self, series):
        """Delete a series that has no system and never issued a number."""
        client = get_redis()
        domain.delete_series(client, series, _systems_of(client, series))


@blp.route("/<string:series>/sequences")
class SeriesSequences(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SequenceSchema(many=True))
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, series):
        """Both sequences of the series, as ``GET /v1/sequences`` shows default's."""
        return api.list_sequences(_existing(series))


@blp.route("/<string:series>/sequences/<string:name>")
class SeriesSequence(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, schemas.SequenceSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, series, name):
        """One sequence of the series: settings and, per period, the last number issued."""
        return api.show_sequence(_existing(series), name)

    @auth.require(auth.ADMIN)
    @blp.arguments(schemas.SequencePatchSchema)
    @blp.response(200, schemas.SequenceSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    @blp.alt_response(409, description="next_number backwards, reset locked, dedicated in use, "
                                       "or settings that could print one number twice")
    def patch(self, body, series, name):
        """Change settings of one sequence of the series (as ``PATCH /v1/sequences/…``)."""
        return api.patch_sequence(_existing(series), name, body)


@blp.route("/<string:series>/sequences/<string:name>/audit")
class SeriesSequenceAudit(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.AuditQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.AuditSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, series, name):
        """Settings changes of one sequence of the series, oldest first."""
        return api.sequence_audit(_existing(series), name, query["limit"])


@blp.route("/<string:series>/sequences/<string:name>/ledger")
class SeriesSequenceLedger(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.LedgerQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.LedgerPageSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, series, name):
        """Issued numbers of one period of one sequence of the series, in number order."""
        return api.sequence_ledger(_existing(series), name, query)


@blp.route("/<string:series>/sequences/<string:name>/gaps")
class SeriesSequenceGaps(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(schemas.GapsQuerySchema, location="query", unknown=RAISE)
    @blp.response(200, schemas.GapsSchema)
    @blp.alt_response(404, **_NOT_FOUND)
    def get(self, query, series, name):
        """Voided, skipped, long-unconfirmed and missing numbers of one period of the series."""
        return api.sequence_gaps(_existing(series), name, query)
