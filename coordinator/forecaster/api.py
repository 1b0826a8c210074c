"""HTTP views of the forecaster: syncs (admin), reports (admin, auditor). Parse, call, reply."""

from __future__ import annotations

import datetime as dt

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from coordinator import auth
from coordinator.clock import utcnow
from coordinator.exceptions import NotFound, ReconciliationNotReady
from coordinator.forecaster import jobs, reconcile_state, records, reports
from coordinator.forecaster.schemas import (
    ForecastQuerySchema,
    ForecastSchema,
    ReceivablesSchema,
    ReconciliationSchema,
    RevenueQuerySchema,
    RevenueSchema,
    SyncRequestSchema,
    SyncSchema,
)
from coordinator.ops.redis_client import get_redis

blp = Blueprint("forecaster", __name__,
                description="Syncs from WHMCS (admin) and reports (admin, auditor)")


def _today() -> dt.date:
    # FORECASTER_TODAY: tests pin the date receivables and forecasts are computed for.
    return current_app.config.get("FORECASTER_TODAY") or utcnow().date()


def _rates() -> list[reports.SystemRate]:
    from coordinator.systems import registry

    return reports.rates_of(registry.list_systems(get_redis()))


@blp.route("/v1/systems/<name>/syncs")
class SystemSyncs(MethodView):
    @auth.require(auth.ADMIN)
    @blp.arguments(SyncRequestSchema, required=False)
    @blp.response(202, SyncSchema)
    @blp.alt_response(409, description="A sync of this system is queued or running")
    def post(self, body, name):
        """Queue a sync of the system (``missing`` by default, or ``full``)."""
        return jobs.request_sync(get_redis(), name, (body or {}).get("mode", "missing"))

    @auth.require(auth.ADMIN)
    @blp.response(200, SyncSchema(many=True))
    def get(self, name):
        """List the system's recent syncs, newest first."""
        from coordinator.systems import registry

        registry.get_system(get_redis(), name)  # 404 for an unknown system
        return records.recent(get_redis(), name)


@blp.route("/v1/syncs/<sync_id>")
class Sync(MethodView):
    @auth.require(auth.ADMIN)
    @blp.response(200, SyncSchema)
    def get(self, sync_id):
        """Show one sync as it progresses (queued, running, done or failed)."""
        record = records.get(get_redis(), sync_id)
        if record is None:
            raise NotFound(f"No sync {sync_id!r}")
        return record


@blp.route("/v1/reports/revenue")
class Revenue(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(RevenueQuerySchema, location="query")
    @blp.response(200, RevenueSchema)
    def get(self, query):
        """Revenue of Paid invoices by month, system or series, in the base currency."""
        return reports.revenue(get_redis(), _rates(), current_app.config["BASE_CURRENCY"],
                               query.get("from_"), query.get("to"), query["by"], today=_today())


@blp.route("/v1/reports/receivables")
class Receivables(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, ReceivablesSchema)
    def get(self):
        """Open receivables (Unpaid, overdue included) by days past due, due month and system."""
        return reports.receivables(get_redis(), _rates(), current_app.config["BASE_CURRENCY"],
                                   today=_today())


@blp.route("/v1/reports/forecast")
class Forecast(MethodView):
    @auth.require(*auth.READERS)
    @blp.arguments(ForecastQuerySchema, location="query")
    @blp.response(200, ForecastSchema)
    def get(self, query):
        """Forecast revenue and collections; the method is stated in the answer."""
        return reports.forecast(get_redis(), _rates(), current_app.config["BASE_CURRENCY"],
                                query["months"], today=_today())


@blp.route("/v1/reports/reconciliation")
class Reconciliation(MethodView):
    @auth.require(*auth.READERS)
    @blp.response(200, ReconciliationSchema)
    @blp.alt_response(503, description="Not built yet (a store of the previous release, before "
                                       "the worker or serve first ran): retry")
    def get(self):
        """Numbers in WHMCS vs numbers issued: duplicates, never issued, issued but not seen.

        Read only: the findings are kept up to date by the worker (after each sync) and the
        scheduler (ledger changes, every tick), which also raise their warnings; a GET reads
        them (``checked_at``: their last update) and changes nothing. 503 until they were
        first built (a store of the previous release, before the worker or ``serve`` ran).
        """
        report = reconcile_state.read(get_redis())
        if report is None:
            raise ReconciliationNotReady(
                "The reconciliation is being built from the stored numbers and the ledger "
                "(after an upgrade); the worker or `invoice-sync serve` builds it, or run "
                "`invoice-sync reconcile --rebuild`. Try again shortly.")
        return report
