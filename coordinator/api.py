"""The flask-smorest ``Api``: blueprints register here; /openapi.json comes from their schemas.

What every operation of the document states, whichever blueprint it comes from, is completed
here by one apispec plugin (so an endpoint added later is held to it without extra work):

* who may call it: the roles of ``auth.require(...)`` (read from the view's
  ``_invoice_sync_auth``), as a security requirement per role and in the description;
* its error answers, each with the one error schema ``{code, status, message, errors}``.

Also here, because they hold for every JSON endpoint alike: the body must be sent as JSON
(415 otherwise), and patterns are written so JSON Schema tools read them as Python does.
"""

from __future__ import annotations

from apispec import BasePlugin
from flask import Flask, request
from flask_smorest import Api
from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.routing import Rule

AUTH_ATTRIBUTE = "_invoice_sync_auth"
"""Set by ``auth.require(*roles)`` on the view it wraps: the token roles it accepts."""

ROLE_DESCRIPTIONS = {
    "admin": "An admin token: manages sequences, systems, syncs, reports and warnings.",
    "auditor": "An auditor token: reads sequences, ledgers, audits, reports and warnings.",
    "agent": "A system's agent token: takes, confirms and voids that system's numbers.",
}
"""How each role is described in ``components.securitySchemes`` (any other role: generically)."""

HTML_PREFIXES = ("/ui/", "/ui")
"""Routes under these prefixes are the dashboard's HTML pages, not part of the JSON API."""


def is_json_api_rule(rule: Rule) -> bool:
    """Whether ``rule`` belongs to the JSON API (documented) rather than HTML or static files.

    The one rule for what must appear in /openapi.json and docs/API.md: everything except
    static files and the dashboard under ``/ui``.
    """
    if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
        return False
    return not (rule.rule == "/ui" or rule.rule.startswith("/ui/"))


class ErrorSchema(Schema):
    """The one error shape of every 4xx and 5xx answer."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code"})
    status = fields.String(required=True, metadata={"description": "Its reason phrase"})
    message = fields.String(required=True, metadata={"description": "What went wrong"})
    errors = fields.Dict(required=True, metadata={
        "description": "Errors by location and field, e.g. `{\"json\": {\"date\": [\"…\"]}}`; "
                       "`{}` when there are none"})


class FullMatch(validate.Regexp):
    """A ``validate.Regexp`` that must match the whole value, read alike by Python and JSON tools.

    Write the pattern as ``^…$`` in the subset ECMA-262 and Python agree on (``[0-9]``, not
    ``\\d``; no ``\\Z``): JSON Schema tools search it in JavaScript, where ``$`` ends the text.
    Python's ``$`` also matches before a final newline, so the value is checked with
    ``fullmatch``, which that newline cannot pass.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class _Api(Api):
    ERROR_SCHEMA = ErrorSchema


api = _Api()

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

_RETRY_AFTER = {"Retry-After": {
    "description": "Seconds to wait before sending the same request again",
    "schema": {"type": "integer", "minimum": 0}}}

_SECURED_ERRORS = {
    "401": "Missing, unknown or revoked token",
    "403": "A valid token of a role (or system) that may not do this",
    "429": "Too many requests for this token; see `Retry-After`",
    "503": "Redis unavailable or a write not confirmed durable: send the same request again "
           "after `Retry-After` seconds",
}
_ALWAYS_ERRORS = {
    "500": "Something is broken (a bug, damaged data): retrying will not help; it is raised "
           "as an `internal_error` warning",
}


class ContractPlugin(BasePlugin):
    """Complete each operation with its security requirement and its error answers."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.spec = None

    def init_spec(self, spec) -> None:
        """Remember the spec, to register a security scheme per role met."""
        self.spec = spec

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        """Fill in ``security``, the role in the description, and the error responses."""
        rule = kwargs.get("rule")
        view = self.app.view_functions.get(rule.endpoint) if rule is not None else None
        for method, operation in (operations or {}).items():
            func = getattr(getattr(view, "view_class", None), method, view)
            roles = tuple(getattr(func, AUTH_ATTRIBUTE, ()) or ())
            self._security(operation, roles)
            self._errors(operation, roles, bool(rule is not None and rule.arguments))

    def _security(self, operation: dict, roles: tuple[str, ...]) -> None:
        if roles:
            for role in roles:
                self._scheme(role)
            operation["security"] = [{role: []} for role in roles]
            names = " or ".join(f"`{role}`" for role in roles)
            line = f"**Auth:** a bearer token of role {names}."
        else:
            operation["security"] = []
            line = "**Auth:** none (public)."
        operation["x-token-roles"] = list(roles)
        described = operation.get("description")
        operation["description"] = f"{described}\n\n{line}" if described else line

    def _scheme(self, role: str) -> None:
        if self.spec is None or role in self.spec.components.security_schemes:
            return
        text = ROLE_DESCRIPTIONS.get(role, f"A token of role `{role}`.")
        self.spec.components.security_scheme(role, {
            "type": "http", "scheme": "bearer", "description": text})

    @staticmethod
    def _errors(operation: dict, roles: tuple[str, ...], has_path_args: bool) -> None:
        responses = operation.setdefault("responses", {})
        wanted = dict(_ALWAYS_ERRORS)
        if roles:
            wanted.update(_SECURED_ERRORS)
        if has_path_args:
            wanted["404"] = "No such resource"
        if "requestBody" in operation:
            wanted["415"] = "The body was not sent as `Content-Type: application/json`"
        for code, description in wanted.items():
            if code not in responses and int(code) not in responses:
                responses[code] = {"description": description}
        for code, response in responses.items():
            if str(code) == "default" or int(code) >= 400:
                if isinstance(response, dict) and "content" not in response:
                    response["content"] = _ERROR_CONTENT
                    if str(code) in ("429", "503"):
                        response["headers"] = _RETRY_AFTER


def _require_json_body() -> None:
    """Refuse (415) a body not sent as JSON: it would otherwise read as "no fields sent"."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE") or request.is_json:
        return
    if not (request.content_length or request.headers.get("Transfer-Encoding")):
        return  # no body at all: the schema says what is missing
    if request.url_rule is None or not is_json_api_rule(request.url_rule):
        return  # unknown routes answer 404; HTML forms are the dashboard's business
    sent = request.headers.get("Content-Type") or "no Content-Type"
    error = UnsupportedMediaType(
        f"The request body must be JSON sent with `Content-Type: application/json` "
        f"(this one came with {sent!r})")
    error.data = {"messages": {"headers": {"Content-Type": ["Must be application/json."]}},
                  "message": error.description}
    raise error


def init_app(app: Flask) -> None:
    """Configure OpenAPI and attach every blueprint."""
    app.config.setdefault("API_TITLE", "invoice-sync coordinator")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault("API_SPEC_OPTIONS", {"info": {"description": (
        "The HTTP contract of the invoice-sync coordinator; docs/API.md says the same in prose. "
        "Every error answer is `{code, status, message, errors}`."
    )}})
    api.init_app(app, spec_kwargs={"extra_plugins": [ContractPlugin(app)]})
    app.before_request(_require_json_body)

    # Imported here, not at module top: blueprints import api-level helpers from this module.
    from coordinator.auth.api import blp as tokens_blp
    from coordinator.forecaster.api import blp as forecaster_blp
    from coordinator.numbering.api import blp as numbering_blp
    from coordinator.numbering.chain_api import blp as chain_blp
    from coordinator.numbering.series_api import blp as series_blp
    from coordinator.ops.health import blp as health_blp
    from coordinator.ops.metrics import blp as metrics_blp
    from coordinator.ops.whoami import blp as whoami_blp
    from coordinator.systems.api import blp as systems_blp
    from coordinator.warnings.api import blp as warnings_blp

    for blueprint in (health_blp, metrics_blp, numbering_blp, series_blp, systems_blp,
                      whoami_blp, forecaster_blp, warnings_blp, tokens_blp, chain_blp):
        api.register_blueprint(blueprint)

