"""Turn every error into the one JSON shape of API.md: ``{code, status, message, errors}``.

The only place that knows how domain errors map to HTTP status codes.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from coordinator import exceptions as exc

log = logging.getLogger(__name__)

#: Domain error → HTTP status. Order matters: the first matching class wins (subclasses first).
STATUS_OF: tuple[tuple[type[exc.CoordinatorError], int], ...] = (
    (exc.InvalidInput, 422),
    (exc.NotFound, 404),
    (exc.Conflict, 409),
    (exc.Forbidden, 403),
    (exc.AuthError, 401),
    (exc.RateLimited, 429),
    (exc.ServiceUnavailable, 503),
    (exc.CoordinatorError, 500),
)


def error_response(code: int, message: str, errors: Any = None, headers: dict | None = None):
    """Build the one error response shape."""
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = code
    if headers:
        response.headers.update(headers)
    return response


def _domain_error(error: exc.CoordinatorError):
    code = next(status for cls, status in STATUS_OF if isinstance(error, cls))
    headers = {}
    if isinstance(error, exc.AuthError) and not isinstance(error, exc.Forbidden):
        headers["WWW-Authenticate"] = 'Bearer realm="invoice-sync"'
    if isinstance(error, exc.RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    return error_response(code, error.message, error.errors, headers)


def _http_error(error: HTTPException):
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = data.get("messages")
    # flask-smorest puts marshmallow's field errors under "messages"; name the failure plainly.
    message = data.get("message") or ("Validation failed" if errors else error.description)
    headers = {k: v for k, v in error.get_headers() if k.lower() in {"allow", "retry-after"}}
    return error_response(code, message or HTTPStatus(code).phrase, errors, headers)


def _redis_error(error: redis.RedisError):
    # The agent treats 503 as "retry the same request": safe, because allocation is idempotent.
    log.warning("redis error: %s", type(error).__name__)
    return error_response(503, "The coordinator's Redis is unavailable; retry shortly")


def _recursion(error: RecursionError):
    # json.loads recurses once per nesting level, and webargs only turns JSONDecodeError into
    # a 400: a body like [[[[...]]]] (a few KB) would otherwise surface as a 500.
    if "JSON" in str(error):
        return error_response(400, "Malformed JSON: nested too deeply")
    return _unexpected(error)


def _unexpected(error: Exception):
    log.exception("unhandled error")
    return error_response(500, "Internal server error")


def init_app(app: Flask) -> None:
    """Register the handlers; call after flask-smorest's Api so ours win."""
    app.register_error_handler(exc.CoordinatorError, _domain_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(RecursionError, _recursion)
    app.register_error_handler(Exception, _unexpected)
