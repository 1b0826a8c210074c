"""Shared fixtures: a minimal real coordinator over loopback HTTP, and fast clients.

``FakeCoordinator`` implements API.md's numbering contract as far as the agent uses it
(allocate with replay, confirm, void, get, livez/readyz, 401 on a bad token). It is stdlib
only and keeps its state in memory; the real coordinator's integration tests live with it.
"""

from __future__ import annotations

import datetime as dt
import http
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent import Client, RetryPolicy

TOKEN = "agent-token-blue-0123456789"
"""The agent token the fake coordinator accepts (system "blue")."""


class FakeCoordinator:
    """A loopback HTTP server that numbers like API.md says, with knobs for failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.allocations: dict[str, dict[str, Any]] = {}
        self.by_reference: dict[tuple[str, str], str] = {}
        self.counters: dict[tuple[str, str], int] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        self.fail_next: list[int] = []  # statuses to answer (once each) before working again
        # Called with each allocation just before it is answered: the moment a caller waits
        # for its number (tests let another writer act then).
        self.on_allocate: Callable[[dict[str, Any]], None] | None = None
        self.ready = True
        coordinator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                coordinator._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                coordinator._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FakeCoordinator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts(self, path: str) -> list[dict[str, Any]]:
        """Return the JSON bodies POSTed to ``path``, in order."""
        return [json.loads(b) for m, p, b in self.requests if m == "POST" and p == path]

    # -- the contract ----------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((req.command, req.path, body))
            failing = self.fail_next.pop(0) if self.fail_next else None
        if failing:
            return _send(req, failing, _error(failing, "injected failure"))
        if req.path == "/livez":
            return _send(req, 200, {"status": "ok"})
        if req.path == "/readyz":
            return _send(req, 200 if self.ready else 503, {"status": "ok" if self.ready else "no"})
        if req.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _send(req, 401, _error(401, "Missing or invalid token"))
        if body and req.headers.get_content_type() != "application/json":
            # As the coordinator (coordinator/api.py): a body not sent as JSON is refused.
            return _send(req, 415, _error(415, "The request body must be JSON"))
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return _send(req, 400, _error(400, "Body is not JSON"))
        if req.command == "POST" and req.path == "/v1/allocations":
            code, answer = self._allocate(data)
            if self.on_allocate is not None and code in (200, 201):
                self.on_allocate(answer)
            return _send(req, code, answer)
        m = re.fullmatch(r"/v1/allocations/([^/]+)(/confirm|/void)?", req.path)
        if not m:
            return _send(req, 404, _error(404, "Not Found"))
        with self.lock:
            allocation = self.allocations.get(m.group(1))
            if allocation is None:
                return _send(req, 404, _error(404, "No such allocation"))
            if m.group(2) == "/confirm" and req.command == "POST":
                if allocation["status"] == "void":
                    return _send(req, 409, _error(409, "Allocation is void"))
                allocation.update(status="confirmed", invoicenum=data.get("invoicenum"))
            elif m.group(2) == "/void" and req.command == "POST":
                if allocation["status"] == "confirmed":  # as the coordinator: admins only
                    return _send(req, 403, _error(
                        403, f"{allocation['id']} is confirmed: only an admin can void it"))
                if not data.get("reason"):
                    return _send(req, 422, _error(422, "Validation failed", reason=True))
                allocation.update(status="void", void_reason=data["reason"])  # as API.md
            elif m.group(2) is not None or req.command != "GET":
                return _send(req, 405, _error(405, "Method Not Allowed"))
            return _send(req, 200, dict(allocation))

    def _allocate(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        document, reference = data.get("document"), data.get("reference")
        if document not in ("invoice", "credit_note") or not isinstance(reference, str):
            return 422, _error(422, "Validation failed", reference=True)
        date = data.get("date") or dt.date.today().isoformat()
        period = date[:4]
        with self.lock:
            known = self.by_reference.get((document, reference))
            if known is not None:
                allocation = self.allocations[known]
                if allocation["period"] != period:
                    return 409, _error(409, "Reference already allocated in another period")
                return 200, dict(allocation)
            number = self.counters.get((document, period), 0) + 1
            self.counters[(document, period)] = number
            prefix = "INV" if document == "invoice" else "CN"
            allocation = {
                "id": f"{document}:{period}:{number}",
                "number": number,
                "formatted": f"{prefix}-{period}-{number:06d}",
                "sequence": document,
                "period": period,
                "system": "blue",
                "document": document,
                "reference": reference,
                "status": "issued",
                "issued_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            self.allocations[allocation["id"]] = allocation
            self.by_reference[(document, reference)] = allocation["id"]
            return 201, dict(allocation)


def _error(code: int, message: str, **fields: bool) -> dict[str, Any]:
    return {
        "code": code,
        "status": http.HTTPStatus(code).phrase,
        "message": message,
        "errors": {"json": {name: ["Invalid."] for name in fields}} if fields else {},
    }


def _send(req: BaseHTTPRequestHandler, code: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    req.send_response(code)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)


@pytest.fixture
def coordinator() -> Iterator[FakeCoordinator]:
    """A running fake coordinator on a free loopback port."""
    fake = FakeCoordinator().start()
    yield fake
    fake.stop()


class Sleeps(list):
    """Records the waits a client asked for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


FAST = RetryPolicy(attempts=4, backoff=0.01, backoff_max=0.05, retry_after_max=0.05)
"""A retry policy whose waits are tiny (and anyway recorded, not slept, via ``sleeps``)."""


@pytest.fixture
def client(coordinator: FakeCoordinator, sleeps: Sleeps) -> Iterator[Client]:
    """A client of the fake coordinator that records its waits instead of sleeping."""
    with Client(url=coordinator.url, token=TOKEN, retry=FAST, sleep=sleeps) as c:
        yield c


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Clear every INVOICE_SYNC_AGENT_* variable and point XDG state into tmp_path."""
    import os

    for name in list(os.environ):
        if name.startswith("INVOICE_SYNC_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
