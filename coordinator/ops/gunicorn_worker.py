"""A gunicorn worker whose own error answers have the coordinator's shape and headers.

gunicorn answers requests it cannot parse (a request line past ``limit_request_line``, broken
headers, bad chunking) itself, before the app sees them, with an HTML page. Clients of this API
expect the one JSON error shape everywhere and the security headers on every response, so this
worker lets gunicorn classify the error as usual, then writes that status in our shape.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from coordinator.ops.headers import SECURITY_HEADERS


class _Recorder:
    """Stands in for the client socket while gunicorn writes its HTML error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # gunicorn then writes straight through sendall, without setblocking

    def sendall(self, data: bytes) -> None:
        self.data += data


def error_response(raw: bytes) -> bytes:
    """Rewrite gunicorn's HTML error response ``raw`` into the API's JSON error response."""
    try:
        code = int(raw.split(b" ", 2)[1])
        phrase = HTTPStatus(code).phrase
    except (IndexError, ValueError):
        code, phrase = 400, HTTPStatus.BAD_REQUEST.phrase
    message = (
        "Internal server error" if code >= 500 and code != 501
        else f"The request could not be parsed: {phrase}"
    )
    body = json.dumps({"code": code, "status": phrase, "message": message,
                       "errors": {}}).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **SECURITY_HEADERS,
    }
    head = f"HTTP/1.1 {code} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker, answering its own errors as JSON with security headers."""

    def handle_error(self, req, client, addr, exc):
        recorder = _Recorder()
        # gunicorn classifies the error, logs it and writes its page into the recorder.
        super().handle_error(req, recorder, addr, exc)
        try:
            util.write_nonblock(client, error_response(recorder.data))
        except Exception:
            self.log.debug("Failed to send error message.")
