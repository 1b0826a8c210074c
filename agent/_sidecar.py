"""A tiny local HTTP endpoint for the WHMCS PHP hook, so PHP never holds the coordinator token.

Endpoints (JSON in, JSON out; errors in the one ``{code, status, message, errors}`` shape)::

    GET  /health                                      → {"status": "ok"}
    POST /allocate  {"document", "reference", "date"?} → the allocation object
    POST /confirm   {"id", "invoicenum"}              → the allocation object
    POST /void      {"id", "reason"}                  → the allocation object

Only this machine may ask: callers that are not loopback get 403, and binding a non-loopback
address needs ``allow_remote``. A unix socket is created with mode 0660 (owner and group,
e.g. the web server's group).
"""

from __future__ import annotations

import http
import ipaddress
import json
import logging
import os
import socket
import socketserver
import sqlite3
import stat
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent._client import Client, check_date, check_document, check_reference
from agent._config import is_loopback_host
from agent._exceptions import (
    ConfigError,
    CoordinatorBadResponse,
    CoordinatorError,
    CoordinatorRefused,
    JournalError,
    NumberWentBackwards,
)
from agent._journal import Journal

log = logging.getLogger("agent.sidecar")

DEFAULT_LISTEN = "127.0.0.1:8765"
"""Where ``invoice-sync-agent serve`` listens unless told otherwise."""

MAX_BODY = 64 * 1024
"""Largest request body accepted, in bytes (a hook request is well under 1 KiB)."""

REQUEST_TIMEOUT = 30
"""Seconds a connection may idle before the sidecar drops it (slow or stuck callers)."""

SOCKET_MODE = 0o660
"""Mode of a unix socket: the agent's user and group may connect, nobody else."""


class SidecarError(Exception):
    """An error the sidecar answers with, in the one JSON error shape."""

    def __init__(self, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors or {}

    def to_json(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.errors)


def error_body(code: int, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the project's one error shape."""
    return {
        "code": code,
        "status": http.HTTPStatus(code).phrase,
        "message": message,
        "errors": errors or {},
    }


class Sidecar:
    """What the sidecar does, apart from HTTP (so it is testable without sockets).

    ::

        sidecar = Sidecar(lambda: Client(config), journal=Journal(config.journal))
        server = make_server("127.0.0.1:8765", sidecar)
        server.serve_forever()

    Args:
        make_client: Returns a fresh :class:`Client`; one is made per request because the
            server runs each request in its own thread.
        journal: Where allocations, confirmations and voids are remembered (optional).
    """

    def __init__(
        self, make_client: Callable[[], Client], *, journal: Journal | None = None
    ) -> None:
        self.make_client = make_client
        self.journal = journal

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one request: return (HTTP status, JSON body)."""
        try:
            route = _ROUTES.get(path.split("?", 1)[0])
            if route is None:
                raise SidecarError(404, f"no such endpoint: {path}")
            want_method, action = route
            if method != want_method:
                raise SidecarError(405, f"{path} takes {want_method}")
            return 200, action(self, _parse(body) if want_method == "POST" else {})
        except SidecarError as exc:
            return exc.code, exc.to_json()
        except CoordinatorRefused as exc:
            # Pass the coordinator's own answer through: 409 tells the hook what 409 means.
            return exc.code or 400, exc.to_json()
        except CoordinatorBadResponse as exc:
            log.error("%s %s: %s", method, path, exc.message)
            return 502, error_body(502, f"coordinator answered garbage: {exc.message}")
        except CoordinatorError as exc:
            log.error("%s %s: %s", method, path, exc.message)
            return 503, error_body(503, f"no number now, try again later: {exc.message}")
        except Exception:  # a bug must not kill the thread silently, nor leak a traceback
            log.exception("%s %s failed", method, path)
            return 500, error_body(500, "internal error in the agent sidecar; see its log")

    # -- actions ---------------------------------------------------------------------------

    def _health(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok"}

    def _allocate(self, data: dict[str, Any]) -> dict[str, Any]:
        fields = _fields(data, required=("document", "reference"), optional=("date",))
        try:
            document = check_document(fields["document"])
            reference = check_reference(fields["reference"])
            date = check_date(fields["date"]) if fields.get("date") is not None else None
        except ValueError as exc:
            raise SidecarError(
                422, "invalid allocation request", {"json": {"_": [str(exc)]}}
            ) from None
        before = self._mark()
        with self.make_client() as client:
            allocation = client.allocate(document, reference, date)
        if self.journal is not None:
            try:
                self.journal.record_allocated(allocation, before=before)
            except NumberWentBackwards as exc:
                # The hook logs this message to WHMCS's activity log: it names both numbers.
                log.error("allocate %s %s: %s", document, reference, exc.message)
                raise SidecarError(409, exc.message, {"number_went_backwards": {
                    "number": exc.formatted, "highest": exc.highest_formatted,
                    "highest_reference": exc.highest_reference}}) from None
            except JournalError as exc:
                # The journal remembers another number for this document: writing this one
                # could give one document two numbers. Fail closed.
                raise SidecarError(409, str(exc)) from None
            except sqlite3.Error as exc:
                # The coordinator's ledger has the allocation; the journal is only a memory aid.
                log.error("journal: cannot record %s: %s", allocation.id, exc)
        return allocation.to_json()

    def _mark(self) -> int | None:
        """Return the journal's mark before asking for a number (None: no check possible)."""
        if self.journal is None:
            return None
        try:
            return self.journal.mark()
        except sqlite3.Error as exc:
            log.error("journal: cannot read the numbers received: %s", exc)
            return None

    def _confirm(self, data: dict[str, Any]) -> dict[str, Any]:
        fields = _fields(data, required=("id", "invoicenum"))
        with self.make_client() as client:
            allocation = self._call(client.confirm, fields["id"], fields["invoicenum"])
        self._journal("mark_confirmed", allocation.id, fields["invoicenum"])
        return allocation.to_json()

    def _void(self, data: dict[str, Any]) -> dict[str, Any]:
        fields = _fields(data, required=("id", "reason"))
        with self.make_client() as client:
            allocation = self._call(client.void, fields["id"], fields["reason"])
        self._journal("mark_voided", allocation.id, fields["reason"])
        return allocation.to_json()

    @staticmethod
    def _call(method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except ValueError as exc:
            raise SidecarError(422, str(exc)) from None

    def _journal(self, what: str, allocation_id: str, value: str) -> None:
        if self.journal is None or self.journal.by_id(allocation_id) is None:
            return  # taken elsewhere (CLI, another agent): nothing to remember here
        try:
            getattr(self.journal, what)(allocation_id, value)
        except (JournalError, sqlite3.Error) as exc:
            log.error("journal: %s %s: %s", what, allocation_id, exc)


_ROUTES: dict[str, tuple[str, Callable[[Sidecar, dict[str, Any]], dict[str, Any]]]] = {
    "/health": ("GET", Sidecar._health),
    "/allocate": ("POST", Sidecar._allocate),
    "/confirm": ("POST", Sidecar._confirm),
    "/void": ("POST", Sidecar._void),
}


def _parse(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise SidecarError(400, "the body must be JSON") from None
    if not isinstance(data, dict):
        raise SidecarError(400, "the body must be a JSON object")
    return data


def _fields(
    data: dict[str, Any], *, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    for name in required:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name == "reference":
            continue  # WHMCS hands the PHP hook invoice ids as ints
        if not isinstance(value, str) or not value.strip():
            errors[name] = ["Missing data for required field."]
    for name in set(data) - set(required) - set(optional):
        errors[name] = ["Unknown field."]
    if errors:
        raise SidecarError(422, "Validation failed", {"json": errors})
    return data


# -- HTTP ----------------------------------------------------------------------------------


def is_local(client_address: Any) -> bool:
    """Return True for a loopback TCP peer or a unix-socket peer (guarded by file mode)."""
    if not client_address or isinstance(client_address, str | bytes):
        return True  # AF_UNIX peers have no address
    try:
        address = ipaddress.ip_address(client_address[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def parse_listen(listen: str) -> tuple[str, Any]:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or ``unix:/path``.

    Returns:
        ``("tcp", (host, port))`` or ``("unix", path)``.
    """
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        if not path:
            raise ConfigError("--listen unix: needs a path, e.g. unix:/run/invoice-sync/agent.sock")
        return "unix", path
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen must be HOST:PORT or unix:/path, not {listen!r}")
    return "tcp", (host, int(port))



class _Handler(BaseHTTPRequestHandler):
    server_version = "invoice-sync-agent-sidecar"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    sidecar: Sidecar
    allow_remote: bool

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(b"")

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(411, error_body(411, "Content-Length required"))
            return
        if int(length) > MAX_BODY:
            self._send(413, error_body(413, f"body larger than {MAX_BODY} bytes"))
            return
        self._serve(self.rfile.read(int(length)))

    def _serve(self, body: bytes) -> None:
        if not (self.allow_remote or is_local(self.client_address)):
            log.warning("refused %s %s from %s", self.command, self.path, self.client_address[0])
            self._send(403, error_body(403, "the sidecar answers only this machine"))
            return
        code, payload = self.sidecar.handle(self.command, self.path, body)
        self._send(code, payload)

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if code >= 400 and self.command == "POST" and code in (411, 413):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return self.client_address[0] if is_tcp(self.client_address) else "unix"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.info("%s %s", self.address_string(), format % args)


def is_tcp(client_address: Any) -> bool:
    return isinstance(client_address, tuple) and bool(client_address)


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.server_address)
        except OSError:
            pass


def make_server(
    listen: str, sidecar: Sidecar, *, allow_remote: bool = False
) -> socketserver.BaseServer:
    """Bind the sidecar (not yet serving; call ``serve_forever()``).

    Raises:
        ConfigError: A bad ``listen``, a non-loopback address without ``allow_remote``, an
            address in use.
    """
    kind, address = parse_listen(listen)
    handler = type("Handler", (_Handler,), {"sidecar": sidecar, "allow_remote": allow_remote})
    try:
        if kind == "unix":
            return _bind_unix(address, handler)
        host, port = address
        if not is_loopback_host(host) and not allow_remote:
            raise ConfigError(
                f"refusing to listen on {host}, which other machines can reach; the sidecar "
                "has no authentication of its own. Use 127.0.0.1 or a unix socket "
                "(or --allow-remote if a firewall really guards it)"
            )
        if not is_loopback_host(host):
            log.warning(
                "listening on %s with --allow-remote: anyone who reaches it can take numbers", host
            )
        cls = _TCP6Server if ":" in host else _TCPServer
        return cls((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def _bind_unix(path: str, handler: type[BaseHTTPRequestHandler]) -> socketserver.BaseServer:
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale socket of a previous run
        else:
            raise ConfigError(f"another process is serving on {path}")
        finally:
            probe.close()
    # Bind under a strict umask so the socket is never, even briefly, open to others.
    old = os.umask(0o777 & ~SOCKET_MODE)
    try:
        server = _UnixServer(path, handler)
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    return server
