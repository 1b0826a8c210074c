"""Turn every error into the one JSON shape of API.md: ``{code, status, message, errors}``.

The only place that knows how domain errors map to HTTP status codes. Two kinds of 5xx:

* **try again** (503 with ``Retry-After``): Redis unreachable, timing out, loading, failing
  over, read-only, or a write not confirmed durable. Every write is idempotent, so the agent
  safely sends the same request again.
* **something is broken** (500): a Redis command refused as wrong (a Lua bug, a key of the wrong
  type), stored data contradicting itself, any unexpected exception. The same request would
  fail for ever, so it is not offered for retry; it is logged with its traceback and raised as
  an ``internal_error`` warning so an operator sees it.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from flask import Flask, current_app, g, has_request_context, jsonify, request
from redis import exceptions as rex
from werkzeug.exceptions import HTTPException

from coordinator import exceptions as exc
from coordinator.ops.redis_client import get_redis
from coordinator.warnings import store

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


TRANSIENT_REDIS_ERRORS: tuple[type[redis.RedisError], ...] = (
    rex.ConnectionError,  # refused, reset, LOADING (BusyLoadingError), pool exhausted, Sentinel
    rex.TimeoutError,
    rex.ReadOnlyError,  # READONLY: we reached a replica, e.g. just after a failover
    rex.TryAgainError,  # TRYAGAIN: cluster slot migrating
    rex.ClusterError,  # CLUSTERDOWN (ClusterDownError), MASTERDOWN (MasterDownError), TTL spent
    rex.AskError,  # ASK and MOVED (MovedError): the slot moved
    rex.OutOfMemoryError,  # OOM under noeviction: the write was refused whole
)
"""redis-py classes of errors that retrying the same request can cure."""

BROKEN_CONNECTION_ERRORS: tuple[type[redis.RedisError], ...] = (
    rex.AuthenticationError,
    rex.AuthorizationError,
)
"""ConnectionError subclasses that are configuration faults: wrong password, ACL refusal."""

TRANSIENT_SERVER_CODES = frozenset({
    "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK",
    "NOREPLICAS",  # min-replicas-to-write not met: the write was refused whole
    "BUSY",  # another script runs past lua-time-limit
    "MISCONF",  # persistence is failing: the write was refused, an operator is needed anyway
})
"""Error codes (the first word of the server's answer) after which the same write can succeed.

Matched exactly, as a word: redis-py maps only some codes to classes, and passes the others
(NOREPLICAS, BUSY, MISCONF) as a plain ResponseError whose text starts with the code."""


def server_code(error: redis.RedisError) -> str | None:
    """Return the error code a Redis server answered with (``WRONGTYPE``…), or None."""
    # redis-py >= 6 keeps the code it strips from the message of the classes it maps.
    code = getattr(error, "status_code", None)
    if code:
        return str(code)
    first = str(error).split(" ", 1)[0]
    return first if first.isalpha() and first.isupper() else None


def is_transient(error: redis.RedisError) -> bool:
    """Whether the same request may succeed later (503), as opposed to a broken state (500)."""
    if isinstance(error, BROKEN_CONNECTION_ERRORS):
        return False
    if isinstance(error, TRANSIENT_REDIS_ERRORS):
        return True
    return isinstance(error, rex.ResponseError) and server_code(error) in TRANSIENT_SERVER_CODES


def error_response(code: int, message: str, errors: Any = None, headers: dict | None = None):
    """Build the one error response shape (``errors`` is ``{}`` when there are none)."""
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message,
                            "errors": errors or {}}
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
    if code == 503:
        headers["Retry-After"] = _retry_after()
    message = error.message
    if isinstance(error, exc.InternalFault):
        log.error("internal fault: %s", error.message)
        warning = _report_fault(error.message, type(error).__name__)
        message = _broken_message(error.message, warning)
    return error_response(code, message, error.errors, headers)


def _http_error(error: HTTPException):
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = data.get("messages")
    # flask-smorest puts marshmallow's field errors under "messages"; name the failure plainly.
    message = data.get("message") or ("Validation failed" if errors else error.description)
    headers = {k: v for k, v in error.get_headers() if k.lower() in {"allow", "retry-after"}}
    return error_response(code, message or HTTPStatus(code).phrase, errors, headers)


def _retry_after() -> str:
    return str(int(current_app.config.get("RETRY_AFTER_SECONDS") or 1))


def _redis_error(error: redis.RedisError):
    code = server_code(error)
    name = type(error).__name__ + (f" {code}" if code else "")
    if is_transient(error):
        # The agent treats 503 as "retry the same request": safe, because allocation is
        # idempotent. Not an operator alarm by itself: /readyz and the metrics say if it lasts.
        log.warning("redis unavailable: %s", name)
        return error_response(503, "The coordinator's Redis is unavailable; retry shortly",
                              headers={"Retry-After": _retry_after()})
    # The server's text goes to the log and the warning (operators), not to the caller.
    log.error("redis refused a command: %s: %s", name, str(error)[:300], exc_info=error)
    warning = _report_fault(f"Redis refused a command: {name}: {str(error)[:300]}", name)
    what = f"the coordinator's Redis refused a command ({name})"
    return error_response(500, _broken_message(what, warning))


def _broken_message(what: str, warning: str | None) -> str:
    where = f"; raised as warning {warning!r}" if warning else ""
    request_id = g.get("request_id") if has_request_context() else None
    return (f"Internal error: {what}. This is not a passing outage: the same request will fail "
            f"again until an operator fixes the cause{where} (request id {request_id})")


def _report_fault(message: str, cause: str) -> str | None:
    """Raise the ``internal_error`` warning for this endpoint and cause; return its id.

    One warning per (endpoint, cause), so a fault hit a thousand times is one warning counted a
    thousand times. Best effort: with Redis itself broken the log line must do.
    """
    endpoint = (request.endpoint or "unmatched") if has_request_context() else "unknown"
    where = f"{request.method} {request.path}: " if has_request_context() else ""
    try:
        return store.raise_warning(get_redis(), store.INTERNAL_ERROR, where + message,
                                   detail=f"{endpoint}:{cause}".replace(" ", "-"),
                                   code=store.INTERNAL_ERROR)
    except Exception as error:  # reporting must never replace the answer being sent
        log.error("could not raise the internal_error warning: %s", type(error).__name__)
        return None


def _recursion(error: RecursionError):
    # json.loads recurses once per nesting level, and webargs only turns JSONDecodeError into
    # a 400: a body like [[[[...]]]] (a few KB) would otherwise surface as a 500.
    if "JSON" in str(error):
        return error_response(400, "Malformed JSON: nested too deeply")
    return _unexpected(error)


def _unexpected(error: Exception):
    log.exception("unhandled error")
    warning = _report_fault(f"unhandled {type(error).__name__}", type(error).__name__)
    return error_response(500, _broken_message("an unexpected error (a bug)", warning))


def init_app(app: Flask) -> None:
    """Register the handlers; call after flask-smorest's Api so ours win."""
    app.register_error_handler(exc.CoordinatorError, _domain_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_error)
    app.register_error_handler(RecursionError, _recursion)
    app.register_error_handler(Exception, _unexpected)
