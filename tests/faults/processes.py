"""A real coordinator: ``gunicorn 'coordinator.app:create_app()'`` in a subprocess.

Its workers can be SIGKILLed at random (the master forks replacements), and its stderr is
kept in a file so tests can search the logs for leaked secrets.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from coordinator.ops.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


class GunicornCoordinator:
    """Run the coordinator under gunicorn on a free loopback port.

    Example::

        coordinator = GunicornCoordinator(tmp_path, {"REDIS_URL": valkey.url}, workers=3)
        with coordinator:
            requests.get(coordinator.url + "/livez")
            coordinator.kill_random_worker(random.Random(1))

    Args:
        log_dir: Where ``gunicorn.stderr`` is written.
        settings: ``INVOICE_SYNC_*`` settings (without the prefix), passed as environment.
        workers: gunicorn worker processes.
        threads: gthread threads per worker.
    """

    def __init__(self, log_dir: Path, settings: dict, *, workers: int = 3, threads: int = 4):
        self.log_path = Path(log_dir) / "gunicorn.stderr"
        self.settings = settings
        self.workers = workers
        self.threads = threads
        self.port = free_port("127.0.0.1")
        self.process: subprocess.Popen | None = None
        self.killed: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC_")}
        env["PYTHONPATH"] = str(ROOT)
        for key, value in self.settings.items():
            if value is not None:
                env[f"INVOICE_SYNC_{key}"] = str(value)
        return env

    def start(self, timeout: float = 30.0) -> GunicornCoordinator:
        """Start gunicorn and wait until every worker can answer /livez."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed in stop()
        self._stderr = stderr
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn",
             "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers),
             # The production worker class (coordinator/ops/gunicorn_defaults.py).
             "--worker-class", "coordinator.ops.gunicorn_worker.JsonErrorWorker",
             "--threads", str(self.threads),
             "--timeout", "30", "--graceful-timeout", "3", "--keep-alive", "2",
             "coordinator.app:create_app()"],
            cwd=ROOT, env=self._env(), stdin=subprocess.DEVNULL,
            stdout=stderr, stderr=stderr, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.stderr_text()[-3000:]}")
            try:
                if requests.get(self.url + "/livez", timeout=1).status_code == 200 and \
                        len(self.worker_pids()) >= self.workers:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn not ready in {timeout}s:\n{self.stderr_text()}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (the master's children)."""
        if not self.process:
            return []
        try:
            return [c.pid for c in psutil.Process(self.process.pid).children()
                    if c.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []

    def kill_random_worker(self, rng: random.Random) -> int | None:
        """SIGKILL one worker at random (as an OOM kill or a crash would); return its PID."""
        pids = self.worker_pids()
        if not pids:
            return None
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        self.killed.append(pid)
        return pid

    def stderr_text(self) -> str:
        """Everything gunicorn and the app wrote to stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully, then hard."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process:
            self._stderr.close()
        self.process = None

    def __enter__(self) -> GunicornCoordinator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
