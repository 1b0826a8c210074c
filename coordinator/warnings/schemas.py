"""Marshmallow schemas of the warnings API."""

from __future__ import annotations

import datetime as dt

from marshmallow import Schema, fields


class WarningsQuerySchema(Schema):
    since = fields.AwareDateTime(default_timezone=dt.UTC, metadata={
        "description": "ISO 8601 UTC; only warnings seen at or after it"})


class WarningSchema(Schema):
    id = fields.String()
    type = fields.String()
    system = fields.String(allow_none=True)
    message = fields.String()
    code = fields.String(allow_none=True)
    first_seen = fields.String()
    last_seen = fields.String()
    count = fields.Integer()
    acked = fields.Boolean()
    acked_at = fields.String(allow_none=True)
