"""Marshmallow schemas of the forecaster's HTTP API (they validate and document at once)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coordinator.api import FullMatch
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


_MONTH = FullMatch(r"^[0-9]{4}-(0[1-9]|1[0-2])$", error="Must be a month, YYYY-MM.")


class RevenueQuerySchema(Schema):
    from_ = fields.String(data_key="from", validate=_MONTH)
    to = fields.String(validate=_MONTH)
    by = fields.String(load_default="month", validate=validate.OneOf(reports.BY))


class ForecastQuerySchema(Schema):
    months = fields.Integer(load_default=6, strict=False, validate=validate.Range(
        1, reports.FORECAST_MAX_MONTHS))


# -- reports: what each answer holds (money as exact decimal strings in the base currency) ---

_MONEY = {"description": "Exact decimal string in the base currency, e.g. `\"1520.00\"`"}


def _money(**kwargs) -> fields.String:
    return fields.String(metadata={**_MONEY, **kwargs})


# Functions, not a base class: inherited fields would come first in every answer.
def _currency() -> fields.String:
    return fields.String(metadata={"description": "The base currency (BASE_CURRENCY)"})


def _rounding() -> fields.String:
    return fields.String(metadata={"description": "How every figure was rounded"})


def _mixed() -> fields.List:
    return fields.List(fields.String(), metadata={
        "description": "Systems whose invoices carry more than one currency (see warnings)"})


class RevenueTotalSchema(Schema):
    invoices = fields.Integer()
    net = _money(description="WHMCS's subtotal")
    tax = _money(description="tax + tax2")
    gross = _money(description="WHMCS's total")


class RevenueRowSchema(Schema):
    key = fields.String(metadata={"description": "The month (YYYY-MM), the system or the series"})
    invoices = fields.Integer()
    net = _money(description="WHMCS's subtotal")
    tax = _money(description="tax + tax2")
    gross = _money(description="WHMCS's total")


class RevenueSchema(Schema):
    currency = _currency()
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    by = fields.String(metadata={"description": "`month`, `system` or `series`"})
    rows = fields.List(fields.Nested(RevenueRowSchema))
    total = fields.Nested(RevenueTotalSchema)
    rounding = _rounding()
    mixed_currency_systems = _mixed()


class ReceivablesTotalSchema(Schema):
    invoices = fields.Integer()
    gross = _money(description="WHMCS's invoice totals")


class ReceivablesRowSchema(Schema):
    key = fields.String(metadata={"description": "Bucket, due month or system"})
    invoices = fields.Integer()
    gross = _money(description="WHMCS's invoice totals")


class ReceivablesSchema(Schema):
    currency = _currency()
    as_of = fields.String(metadata={"description": "The day (YYYY-MM-DD) days past due count to"})
    status = fields.String(metadata={"description": "`Unpaid`"})
    buckets = fields.List(fields.Nested(ReceivablesRowSchema), metadata={
        "description": "By days past due: not_due, 1-30, 31-60, 61-90, over_90, no_due_date"})
    by_due_month = fields.List(fields.Nested(ReceivablesRowSchema))
    by_system = fields.List(fields.Nested(ReceivablesRowSchema))
    total = fields.Nested(ReceivablesTotalSchema)
    rounding = _rounding()
    mixed_currency_systems = _mixed()


class ForecastMethodSchema(Schema):
    revenue = fields.String()
    collections = fields.String()
    trend_per_month = _money()


class ForecastRowSchema(Schema):
    month = fields.String()
    revenue = _money()
    collections = _money()


class ForecastTotalSchema(Schema):
    revenue = _money()
    collections = _money()


class ForecastSchema(Schema):
    currency = _currency()
    months = fields.Integer()
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    method = fields.Nested(ForecastMethodSchema)
    history = fields.List(fields.Nested(RevenueRowSchema), metadata={
        "description": "Paid revenue of the 12 complete months before, by month"})
    rows = fields.List(fields.Nested(ForecastRowSchema))
    total = fields.Nested(ForecastTotalSchema)
    rounding = _rounding()
    mixed_currency_systems = _mixed()


class ReconciliationCountsSchema(Schema):
    numbers_seen = fields.Integer()
    numbers_issued = fields.Integer()
    duplicates = fields.Integer()
    not_issued = fields.Integer()
    not_seen = fields.Integer()


class DuplicateWhereSchema(Schema):
    system = fields.String()
    invoices = fields.Integer()


class DuplicateSchema(Schema):
    number = fields.String()
    systems = fields.List(fields.Nested(DuplicateWhereSchema))


class NotIssuedSchema(Schema):
    number = fields.String()
    systems = fields.List(fields.String())


class NotSeenSchema(Schema):
    number = fields.String()
    system = fields.String()
    allocation = fields.String(allow_none=True)


class ReconciliationSeriesSchema(Schema):
    systems = fields.List(fields.String())
    counts = fields.Nested(ReconciliationCountsSchema)
    duplicates = fields.List(fields.Nested(DuplicateSchema))
    not_issued = fields.List(fields.Nested(NotIssuedSchema))
    not_seen = fields.List(fields.Nested(NotSeenSchema))


class ReconciliationSchema(Schema):
    checked_at = fields.String()
    systems = fields.List(fields.String())
    systems_synced = fields.List(fields.String())
    ledger_compared = fields.Boolean()
    counts = fields.Nested(ReconciliationCountsSchema)
    duplicates = fields.List(fields.Nested(DuplicateSchema))
    not_issued = fields.List(fields.Nested(NotIssuedSchema))
    not_seen = fields.List(fields.Nested(NotSeenSchema))
    by_series = fields.Dict(
        keys=fields.String(), values=fields.Nested(ReconciliationSeriesSchema),
        metadata={"description": "Each series' systems against that series' ledger (the lists "
                                 "above are all series' findings together)"})
