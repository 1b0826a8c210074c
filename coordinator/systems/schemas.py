"""Marshmallow schemas of the systems API: they validate requests and write the OpenAPI doc.

Unknown fields are rejected (marshmallow's default, RAISE). Error messages never quote the
value that was sent: a mistyped secret must not come back in a response or a log.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from coordinator.api import FullMatch
from coordinator.exceptions import UnsafeURL
from coordinator.systems.urls import MAX_URL_LENGTH, check_url_shape

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # FullMatch: no trailing newline passes "$"
_NAME_MESSAGE = ("Must be 1 to 63 characters: lowercase letters, digits, '-' and '_', "
                 "starting with a letter or digit.")
_RATE_RE = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,10})?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CREDENTIAL_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MAX_DESCRIPTION = 500
MAX_CREDENTIAL = 512


class StrictBoolean(fields.Boolean):
    """JSON ``true``/``false`` only: ``"yes"``, ``1`` or ``"false"`` are mistakes, not booleans."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictInteger(fields.Integer):
    """A JSON integer only (no strings, no 1.5, no ``true``, which Python counts as 1)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class ExchangeRate(fields.Field):
    """A positive decimal as a string (``"1.0823"``); numbers are taken exactly via ``str``.

    At most 12 integer and 10 fractional digits, no exponent, never a float at rest: the
    string is stored and shown as given, and converted with ``Decimal`` where it is used.
    """

    default_error_messages = {
        "invalid": "Must be a positive decimal given as a string, like \"1.0823\" "
                   "(at most 12 integer and 10 fractional digits, no exponent).",
        "positive": "Must be greater than 0.",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        # A string as given, a number exactly as written; the str() of anything else JSON holds
        # (true, a list, an object) fails the pattern.
        text = str(value)
        if not _RATE_RE.fullmatch(text):
            raise self.make_error("invalid")
        if not text.strip("0."):
            raise self.make_error("positive")
        return text


def _no_control(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Must not contain control characters.")


def _credential(value: str) -> None:
    if _CREDENTIAL_CONTROL.search(value):
        raise ValidationError("Must not contain control characters.")
    if value != value.strip():
        raise ValidationError("Must not start or end with whitespace.")


def _url_shape(value: str) -> None:
    try:
        check_url_shape(value)
    except UnsafeURL as error:
        raise ValidationError(error.message) from None


def _description(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(max=MAX_DESCRIPTION), _no_control], **kwargs)


def _url(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=[validate.Length(max=MAX_URL_LENGTH), _url_shape],
        metadata={"description": "WHMCS API endpoint; https unless the coordinator allows http",
                  "example": "https://billing.blue.example/includes/api.php"}, **kwargs)


def _credential_field(**kwargs: Any) -> fields.String:
    return fields.String(load_only=True,
                         validate=[validate.Length(min=1, max=MAX_CREDENTIAL), _credential],
                         **kwargs)


def _series(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=FullMatch(NAME_RE, error=_NAME_MESSAGE),
        metadata={"description": "The series (legal entity) that numbers its documents; a "
                                 "system that has numbers cannot move", "example": "default"},
        **kwargs)


class SystemCreateSchema(Schema):
    """Body of ``POST /v1/systems``."""

    name = fields.String(required=True,
                         validate=FullMatch(NAME_RE, error=_NAME_MESSAGE),
                         metadata={"description": "Slug naming the system", "example": "blue"})
    description = _description(load_default="")
    url = _url(required=True)
    api_identifier = _credential_field(required=True)
    api_secret = _credential_field(required=True,
                                   metadata={"description": "Encrypted at rest, never returned"})
    access_key = _credential_field(allow_none=True, load_default=None,
                                   metadata={"description": "WHMCS accesskey, if configured"})
    step = StrictInteger(load_default=100, validate=validate.Range(min=1, max=1000),
                         metadata={"description": "Invoices per GetInvoices page"})
    auto_sync = StrictBoolean(load_default=True)
    exchange_rate = ExchangeRate(load_default="1",
                                 metadata={"description": "To the base currency",
                                           "example": "1.0000", "type": "string"})
    series = _series(load_default="default")
    central_poll = StrictBoolean(
        load_default=False,
        metadata={"description": "The coordinator numbers what this WHMCS's hooks missed "
                                 "(its API role then needs GetInvoice and UpdateInvoice too)"})
    central_poll_minutes = StrictInteger(
        load_default=5, validate=validate.Range(min=1, max=1440),
        metadata={"description": "Minutes between central polls"})
    number_on = fields.String(
        load_default="paid", validate=validate.OneOf(("paid", "created")),
        metadata={"description": "When this WHMCS numbers invoices: `paid` (proforma) or "
                                 "`created` (the central poll follows it)"})


class SystemPatchSchema(Schema):
    """Body of ``PATCH /v1/systems/{name}``: any field but the name; ``access_key: null``
    removes the access key."""

    description = _description()
    url = _url()
    api_identifier = _credential_field()
    api_secret = _credential_field()
    access_key = _credential_field(allow_none=True)
    step = StrictInteger(validate=validate.Range(min=1, max=1000))
    auto_sync = StrictBoolean()
    exchange_rate = ExchangeRate(metadata={"type": "string"})
    series = _series()
    central_poll = StrictBoolean()
    central_poll_minutes = StrictInteger(validate=validate.Range(min=1, max=1440))
    number_on = fields.String(validate=validate.OneOf(("paid", "created")))


class SystemSchema(Schema):
    """A system as the API shows it: never a secret, only whether one is set."""

    name = fields.String(required=True)
    description = fields.String()
    url = fields.String()
    api_identifier = fields.String()
    has_api_secret = fields.Boolean()
    has_access_key = fields.Boolean()
    step = fields.Integer()
    auto_sync = fields.Boolean()
    exchange_rate = fields.String()
    series = fields.String(metadata={"description": "The series that numbers its documents"})
    central_poll = fields.Boolean()
    central_poll_minutes = fields.Integer()
    number_on = fields.String()
    central_poll_last = fields.Dict(
        allow_none=True,
        metadata={"description": "The last central poll: state (done|failed), at, message, "
                                 "numbered, failed, whmcs_calls, failures (in a row), "
                                 "last_ok_at, missing_actions (API actions the WHMCS role "
                                 "refuses), access_problem, access_checked_at; null before "
                                 "the first"})
    agent_token_issued_at = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()


class SystemWithTokenSchema(SystemSchema):
    """A system plus its agent token, in the one answer that shows the token."""

    agent_token = fields.String(metadata={"description": "Shown once; store it in the agent"})
