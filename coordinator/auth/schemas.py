"""Schemas of the token endpoints: they validate requests and document /openapi.json."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from coordinator.auth.roles import MANAGED_ROLES, ROLES
from coordinator.auth.tokens import LABEL_MAX


class TokenCreateSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(MANAGED_ROLES),
                         metadata={"description": "`admin` or `auditor` (agent tokens come "
                                                  "with their system)"})
    label = fields.String(required=True, validate=validate.Length(min=1, max=LABEL_MAX),
                          metadata={"description": "Who or what holds the token"})


class TokenSchema(Schema):
    id = fields.String(metadata={"description": "Names the token; reveals nothing of it"})
    role = fields.String(validate=validate.OneOf(ROLES))
    label = fields.String(allow_none=True)
    system = fields.String(allow_none=True, metadata={"description": "An agent token's system"})
    created_at = fields.String(allow_none=True)
    created_by = fields.String(allow_none=True)
    last_used = fields.String(metadata={
        "description": "Start of the last rate-limit window the token was used in; absent when "
                       "unknown (its role not rate-limited, or not used since Redis started)"})
    source = fields.String(metadata={
        "description": "`redis` (managed here) or `environment` (INVOICE_SYNC_ADMIN_TOKEN)"})


class TokenCreatedSchema(TokenSchema):
    token = fields.String(metadata={"description": "The token itself, shown this once"})


class TokenAuditSchema(Schema):
    at = fields.String()
    action = fields.String(metadata={"description": "`created` or `revoked`"})
    token = fields.String(metadata={"description": "The token's id"})
    role = fields.String(allow_none=True)
    label = fields.String(allow_none=True)
    system = fields.String()
    by = fields.String(metadata={"description": "Who did it: `admin:<token id>`, `cli:<user>`…"})


class TokenAuditQuerySchema(Schema):
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10_000))
