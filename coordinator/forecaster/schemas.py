"""Marshmallow schemas of the forecaster's HTTP API (they validate and document at once)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coordinator.forecaster import records, reports


class SyncRequestSchema(Schema):
    mode = fields.String(load_default="missing", validate=validate.OneOf(records.MODES),
                         metadata={"description": "missing: only new invoices; full: all"})


class SyncSchema(Schema):
    id = fields.String()
    system = fields.String()
    mode = fields.String()
    state = fields.String(metadata={"description": "queued, running, done or failed"})
    pages = fields.Integer()
    invoices = fields.Integer()
    total_hint = fields.Integer(allow_none=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    error_code = fields.String(allow_none=True)
    requested_at = fields.String(allow_none=True)
    trigger = fields.String(allow_none=True)
    inserted = fields.Integer()
    updated = fields.Integer()
    deleted = fields.Integer()
    api_calls = fields.Integer()


_MONTH = validate.Regexp(r"^\d{4}-(0[1-9]|1[0-2])$", error="Must be a month, YYYY-MM.")


class RevenueQuerySchema(Schema):
    from_ = fields.String(data_key="from", validate=_MONTH)
    to = fields.String(validate=_MONTH)
    by = fields.String(load_default="month", validate=validate.OneOf(reports.BY))


class ForecastQuerySchema(Schema):
    months = fields.Integer(load_default=6, strict=False, validate=validate.Range(
        1, reports.FORECAST_MAX_MONTHS))
