"""JSON log lines on stderr, one object per line, and the request id that ties them together.

Every request gets an id: the caller's ``X-Request-ID`` when it is short and made of safe
characters (so a load balancer's id carries through), else a fresh one. It is echoed on every
response and added to every log line written while the request runs.

What is never logged: the ``Authorization`` header, tokens, request bodies (WHMCS API secrets
travel in them) and query strings. The request line logs the URL path only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, g, has_request_context, request

_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""Accepted incoming ids: up to 128 characters that cannot break a log line or a header."""

log = logging.getLogger("coordinator.request")

# LogRecord attributes that are not extra fields passed with ``extra=``.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        # One line per request goes through here: time.strftime and a dict comprehension cost
        # a fraction of datetime.isoformat() and a loop of membership tests.
        message = record.getMessage()
        if "\x1b[" in message:  # RQ colours parts of its messages when stdout is a terminal
            message = _ANSI_COLOUR.sub("", message)
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        entry.update({key: value for key, value in vars(record).items()
                      if key not in _RESERVED and key[0] != "_"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RequestIdFilter(logging.Filter):
    """Add ``request_id`` to records written while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = g.get("request_id")
        return True


class StderrHandler(logging.StreamHandler):
    """A stream handler bound to whatever ``sys.stderr`` is at the time of each record.

    Test runners and daemon managers swap ``sys.stderr``; a handler that kept the object it was
    created with would write to a closed or forgotten stream.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: str | int = "INFO") -> None:
    """Send the root logger to stderr as JSON lines, once per process (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(handler, StderrHandler) for handler in root.handlers):
        root.addHandler(StderrHandler())
    root.setLevel(level)


RQ_LOGGERS = ("rq", "rq.worker", "rq.job", "rq.scheduler", "rq.queue")
"""Loggers RQ writes to. RQ gives them plain-text handlers (stdout, stderr) of its own unless a
handler already catches their records."""


def configure_worker_logging(level: str | int = "INFO") -> None:
    """Make every line an RQ worker process writes a JSON line on stderr.

    RQ's messages, its "job failed" tracebacks included, then leave as one JSON object each
    (the traceback inside ``message``, or in ``exception``), like every other line.
    """
    configure_logging(level)
    for name in RQ_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if not isinstance(handler, StderrHandler):
                logger.removeHandler(handler)
        logger.propagate = True


def request_id_from(header: str | None) -> str:
    """Return the incoming id when acceptable, else a fresh one."""
    if header and REQUEST_ID_PATTERN.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _begin() -> None:
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.log_started = time.perf_counter()


def _finish(response):
    context = g._get_current_object()  # one proxy lookup instead of one per attribute
    request_id = context.get("request_id") or request_id_from(None)
    response.headers[REQUEST_ID_HEADER] = request_id
    status = response.status_code
    level = logging.ERROR if status >= 500 else logging.INFO
    if not log.isEnabledFor(level):
        return response
    started = context.get("log_started")
    method, path = request.method, request.path
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
    }
    principal = context.get("principal")
    if principal is not None:
        fields["principal"] = principal.kind
        if principal.system:
            fields["system"] = principal.system
    log.log(level, "%s %s %s", method, path, status, extra=fields)
    return response


def init_app(app: Flask) -> None:
    """Log one JSON line per request and echo ``X-Request-ID``; configure stderr logging."""
    configure_logging(app.config["LOG_LEVEL"])
    app.before_request(_begin)
    app.after_request(_finish)
