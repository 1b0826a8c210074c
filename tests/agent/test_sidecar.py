"""The sidecar: answers this machine (TCP loopback or unix socket), refuses everyone else."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent._sidecar
from agent import Client, ConfigError, Journal, Sidecar, make_server

from .conftest import FAST, TOKEN, FakeCoordinator, Sleeps


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.sqlite3") as j:
        yield j


@pytest.fixture
def sidecar(coordinator: FakeCoordinator, journal: Journal, sleeps: Sleeps) -> Sidecar:
    return Sidecar(
        lambda: Client(url=coordinator.url, token=TOKEN, retry=FAST, sleep=sleeps),
        journal=journal,
    )


def serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return thread


@pytest.fixture
def tcp(sidecar: Sidecar) -> Iterator[tuple[str, int]]:
    server = make_server("127.0.0.1:0", sidecar)
    serve(server)
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()


def call(
    address: tuple[str, int], method: str, path: str, body: Any = None, source: str | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(
        *address, timeout=10, source_address=(source, 0) if source else None
    )
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


def test_health(tcp) -> None:
    assert call(tcp, "GET", "/health") == (200, {"status": "ok"})


def test_allocate_confirm_void_and_the_journal(
    tcp, coordinator: FakeCoordinator, journal: Journal
) -> None:
    code, a = call(
        tcp, "POST", "/allocate", {"document": "invoice", "reference": 10234, "date": "2026-11-21"}
    )
    assert code == 200 and a["formatted"] == "INV-2026-000001" and a["reference"] == "10234"
    assert journal.by_id(a["id"]).state == "allocated"
    assert (
        call(
            tcp,
            "POST",
            "/allocate",
            {"document": "invoice", "reference": "10234", "date": "2026-11-21"},
        )[1]
        == a
    )
    code, confirmed = call(tcp, "POST", "/confirm", {"id": a["id"], "invoicenum": a["formatted"]})
    assert code == 200 and confirmed["status"] == "confirmed"
    assert journal.by_id(a["id"]).state == "confirmed"

    _, b = call(tcp, "POST", "/allocate", {"document": "credit_note", "reference": "9"})
    code, voided = call(tcp, "POST", "/void", {"id": b["id"], "reason": "hook failed"})
    assert code == 200 and voided["status"] == "void"
    assert journal.by_id(b["id"]).void_reason == "hook failed"
    assert journal.pending() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", "/allocate", {"document": "invoice"}, 422),
        ("POST", "/allocate", {"document": "receipt", "reference": "1"}, 422),
        ("POST", "/allocate", {"document": "invoice", "reference": "1", "date": "tomorrow"}, 422),
        ("POST", "/allocate", {"document": "invoice", "reference": "1", "token": "x"}, 422),
        ("POST", "/allocate", ["invoice"], 400),
        ("POST", "/confirm", {"id": "invoice:2026:1"}, 422),
        ("POST", "/void", {"id": "invoice:2026:1", "reason": ""}, 422),
        ("GET", "/allocate", None, 405),
        ("GET", "/nope", None, 404),
    ],
)
def test_bad_requests_get_the_one_error_shape(tcp, coordinator, method, path, body, code) -> None:
    status, payload = call(tcp, method, path, body)
    assert status == code
    assert set(payload) == {"code", "status", "message", "errors"} and payload["code"] == code
    assert coordinator.posts("/v1/allocations") == []


def test_coordinator_answers_pass_through(tcp, coordinator: FakeCoordinator) -> None:
    call(tcp, "POST", "/allocate", {"document": "invoice", "reference": "1", "date": "2026-01-01"})
    status, payload = call(
        tcp, "POST", "/allocate", {"document": "invoice", "reference": "1", "date": "2027-01-01"}
    )
    assert (status, payload["code"]) == (409, 409)
    coordinator.fail_next = [503] * FAST.attempts
    status, payload = call(tcp, "POST", "/allocate", {"document": "invoice", "reference": "2"})
    assert status == 503 and "try again later" in payload["message"]
    assert TOKEN not in json.dumps(payload)


def test_journal_conflict_fails_closed(tcp, journal: Journal, coordinator) -> None:
    from .test_journal import allocation

    journal.record_allocated(allocation("77", 999))  # a number the coordinator never gave
    status, payload = call(tcp, "POST", "/allocate", {"document": "invoice", "reference": "77"})
    assert status == 409 and "already holds" in payload["message"]
    assert "formatted" not in payload


def test_a_number_that_went_backwards_is_refused_naming_both(
    tcp, journal: Journal, coordinator: FakeCoordinator
) -> None:
    for reference in ("1", "2", "3"):
        assert call(tcp, "POST", "/allocate", {"document": "invoice", "reference": reference,
                                               "date": "2026-11-21"})[0] == 200
    with coordinator.lock:  # restored from an old backup: the coordinator forgot 2 and 3
        for number, reference in ((2, "2"), (3, "3")):
            del coordinator.allocations[f"invoice:2026:{number}"]
            del coordinator.by_reference[("invoice", reference)]
        coordinator.counters[("invoice", "2026")] = 1
    status, payload = call(tcp, "POST", "/allocate", {"document": "invoice", "reference": "4",
                                                      "date": "2026-11-21"})
    assert status == 409
    assert set(payload) == {"code", "status", "message", "errors"}
    assert "INV-2026-000002 (2)" in payload["message"]
    assert "INV-2026-000003 (3)" in payload["message"]
    assert payload["errors"]["number_went_backwards"] == {
        "number": "INV-2026-000002", "highest": "INV-2026-000003", "highest_reference": "3"}
    assert journal.get("invoice", "4") is None
    # The same document asking again (the hook's second event) is refused again.
    assert call(tcp, "POST", "/allocate", {"document": "invoice", "reference": "4",
                                           "date": "2026-11-21"})[0] == 409


def test_refuses_to_bind_a_non_loopback_address(sidecar: Sidecar) -> None:
    with pytest.raises(ConfigError, match="allow-remote"):
        make_server("0.0.0.0:0", sidecar)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        make_server("8765", sidecar)


def outward_ip() -> str | None:
    """Return this machine's non-loopback address (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def test_refuses_callers_that_are_not_loopback(sidecar: Sidecar, monkeypatch) -> None:
    ip = outward_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    # Lift only the bind guard, so the caller check is what stands between a remote and a number.
    monkeypatch.setattr(agent._sidecar, "is_loopback_host", lambda host: True)
    server = make_server("0.0.0.0:0", sidecar)
    serve(server)
    try:
        port = server.server_address[1]
        status, payload = call(
            (ip, port), "POST", "/allocate", {"document": "invoice", "reference": "1"}, source=ip
        )
        assert status == 403 and payload["code"] == 403
        assert call(("127.0.0.1", port), "GET", "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_is_local() -> None:
    from agent._sidecar import is_local

    assert is_local(("127.0.0.1", 1)) and is_local(("::1", 1, 0, 0))
    assert is_local(("::ffff:127.0.0.1", 1, 0, 0)) and is_local("")
    assert not is_local(("10.0.0.5", 1)) and not is_local(("::ffff:10.0.0.5", 1, 0, 0))


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def test_unix_socket_mode_0660_and_stale_socket_replaced(sidecar: Sidecar, tmp_path: Path):
    path = str(tmp_path / "agent.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a crashed run leaves its socket file behind
    server = make_server(f"unix:{path}", sidecar)
    serve(server)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(ConfigError, match="another process"):
            make_server(f"unix:{path}", sidecar)
        conn = UnixHTTPConnection(path)
        conn.request(
            "POST",
            "/allocate",
            body=b'{"document": "invoice", "reference": "5"}',
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["reference"] == "5"
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert not os.path.exists(path)


def test_will_not_replace_a_regular_file(sidecar: Sidecar, tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="not a socket"):
        make_server(f"unix:{path}", sidecar)
    assert path.read_text() == "keep me"


def test_oversized_and_lengthless_bodies(tcp) -> None:
    conn = http.client.HTTPConnection(*tcp, timeout=10)
    conn.request("POST", "/allocate", body=b"x" * (agent._sidecar.MAX_BODY + 1))
    assert conn.getresponse().status == 413
    conn.close()
