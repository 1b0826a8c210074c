"""marshmallow schemas of the numbering API: they validate input and document the output.

marshmallow 4 raises on unknown fields by default; ``unknown = RAISE`` is spelled out anyway,
because a typo in a field name must never be silently ignored on a legal numbering.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from coordinator.api import FullMatch
from coordinator.numbering.ledger import MAX_PAGE
from coordinator.numbering.sequences import (
    DOCUMENTS,
    MAX_INCREMENT,
    MAX_NUMBER,
    MAX_PADDING,
    RESETS,
)

PERIOD = FullMatch(r"^(all|[0-9]{4}|[0-9]{4}-(0[1-9]|1[0-2]))$",
                   error="Not a period: 'all', 'YYYY' or 'YYYY-MM'.")


def _printable(value: str) -> None:
    if not value.isprintable():
        raise ValidationError("Must contain printable characters only (no control characters).")


def _year_in_range(value) -> None:
    # Periods and {YEAR} are four digits; a year outside this range is a typo, not a document.
    if not 1900 <= value.year <= 9999:
        raise ValidationError("Year must be between 1900 and 9999.")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class AllocationRequestSchema(StrictSchema):
    document = fields.String(required=True, validate=validate.OneOf(DOCUMENTS))
    reference = fields.String(required=True, validate=[validate.Length(1, 128), _printable])
    date = fields.Date(load_default=None, validate=_year_in_range,
                       metadata={"description": "Document date (default: today, UTC)."})


class ConfirmSchema(StrictSchema):
    invoicenum = fields.String(required=True, validate=[validate.Length(1, 255), _printable])


class VoidSchema(StrictSchema):
    reason = fields.String(required=True, validate=[validate.Length(1, 500), _printable])


class ReissueSchema(StrictSchema):
    reason = fields.String(required=True, validate=[validate.Length(1, 500), _printable],
                           metadata={"description": "Why the document needs a new number "
                                                    "(kept in the ledger and its chain).",
                                     "example": "number voided by mistake, see ticket 812"})


class AllocationSchema(Schema):
    id = fields.String(metadata={
        "description": "`<sequence>:<period>:<number>` in the default series, "
                       "`<series>/<sequence>:<period>:<number>` in others."})
    number = fields.Integer()
    formatted = fields.String()
    sequence = fields.String()
    period = fields.String()
    system = fields.String()
    document = fields.String()
    reference = fields.String()
    date = fields.String()
    status = fields.String()
    issued_at = fields.String()
    confirmed_at = fields.String()
    confirmed_by = fields.String()
    voided_at = fields.String()
    voided_by = fields.String()
    void_reason = fields.String()
    reissued_as = fields.String(metadata={
        "description": "On a void entry: the id of the number its document got instead."})
    reissued_at = fields.String()
    reissued_by = fields.String()
    reissue_of = fields.String(metadata={
        "description": "On a reissued number: the id of the void entry it replaces."})
    reissue_reason = fields.String()
    series = fields.String(metadata={"description": "The series (legal entity) of the number."})


class PeriodRowSchema(Schema):
    period = fields.String()
    last_number = fields.Integer(allow_none=True)
    next_number = fields.Integer()
    issued = fields.Integer()


class SequenceSchema(Schema):
    name = fields.String()
    next_number = fields.Integer(metadata={"description": "Next number of `period` (today's)."})
    increment = fields.Integer()
    format = fields.String()
    padding = fields.Integer()
    reset = fields.String()
    dedicated = fields.Boolean()
    period = fields.String()
    periods = fields.List(fields.Nested(PeriodRowSchema))


class SequencePatchSchema(StrictSchema):
    next_number = fields.Integer(strict=True, validate=validate.Range(1, MAX_NUMBER))
    increment = fields.Integer(strict=True, validate=validate.Range(1, MAX_INCREMENT))
    format = fields.String(validate=[validate.Length(1, 64), _printable])
    padding = fields.Integer(strict=True, validate=validate.Range(0, MAX_PADDING))
    reset = fields.String(validate=validate.OneOf(RESETS))
    dedicated = fields.Boolean()
    period = fields.String(validate=PERIOD, metadata={
        "description": "Period next_number applies to (default: today's period, UTC)."})

    @validates_schema
    def _not_empty(self, data, **kwargs) -> None:
        if not data:
            raise ValidationError("Send at least one setting to change.")


class AuditQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class LedgerQuerySchema(StrictSchema):
    period = fields.String(load_default=None, validate=PERIOD)
    after = fields.Integer(load_default=0, validate=validate.Range(0, MAX_NUMBER))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_PAGE))


class GapsQuerySchema(StrictSchema):
    period = fields.String(load_default=None, validate=PERIOD)


class LedgerPageSchema(Schema):
    sequence = fields.String()
    period = fields.String()
    entries = fields.List(fields.Nested(AllocationSchema))
    next_after = fields.Integer(allow_none=True, metadata={
        "description": "Pass as `after` for the next page; null on the last page."})


class AuditSchema(Schema):
    sequence = fields.String()
    records = fields.List(fields.Dict(), metadata={
        "description": "Settings changes, oldest first: who, when, before, after"})


class GapsSchema(Schema):
    sequence = fields.String()
    period = fields.String()
    gaps = fields.List(fields.Dict())


SERIES_NAME = FullMatch(
    r"^[a-z0-9][a-z0-9_-]{0,62}$",
    error="Must be 1 to 63 characters: lowercase letters, digits, '-' and '_', starting with "
          "a letter or digit.")


def _description(**kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(max=500), _printable], **kwargs)


class SeriesCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=SERIES_NAME,
                         metadata={"example": "acme-us"})
    description = _description(load_default="", metadata={"example": "ACME Inc. (US)"})


class SeriesPatchSchema(StrictSchema):
    description = _description(required=True)


class SeriesSchema(Schema):
    name = fields.String()
    description = fields.String()
    created_at = fields.String(allow_none=True)
    updated_at = fields.String(allow_none=True)
    systems = fields.List(fields.String(), metadata={
        "description": "Registered systems whose documents this series numbers."})
