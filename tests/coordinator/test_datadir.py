"""One ``invoice-sync serve`` per data dir: a second one leaves the running one alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from coordinator.ops.datadir import EXIT_DATA_DIR_IN_USE, LOCK_FILE_NAME, embedded_socket
from coordinator.ops.embedded import free_port
from tests.support import interrupt

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_URL = "https://93.184.216.34/includes/api.php"  # an IP literal: no DNS, never contacted


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("INVOICE_SYNC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"PYTHONPATH": str(ROOT), "HOME": str(home)})
    return env


def _serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "coordinator", "serve", "--port", str(port),
             "--data-dir", str(data_dir), "--workers", "1", "--no-sync-worker"],
            cwd=data_dir.parent, env=_env(data_dir.parent), stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "serve did not become ready:\n" + log.read_text()
        time.sleep(0.1)


def _allocate(url: str, token: str, reference: str) -> requests.Response:
    return requests.post(url + "/v1/allocations", timeout=10,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"document": "invoice", "reference": reference})


def test_second_serve_on_same_data_dir_exits_and_leaves_the_first_working(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()  # the same port for both, as a user repeating the command would
    url = f"http://127.0.0.1:{port}"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _serve(data_dir, port, first_log)
    try:
        _wait_ready(url, first, first_log)
        admin = (data_dir / "admin-token").read_text().strip()
        created = requests.post(url + "/v1/systems", timeout=10,
                                headers={"Authorization": f"Bearer {admin}"},
                                json={"name": "blue", "url": PUBLIC_URL, "api_identifier": "i",
                                      "api_secret": "s", "exchange_rate": "1.0000"})
        assert created.status_code == 201, created.text
        agent = created.json()["agent_token"]
        assert _allocate(url, agent, "1").json()["number"] == 1

        socket_path = embedded_socket(data_dir)
        socket_inode = socket_path.stat().st_ino
        valkey_files = {p.name: p.stat().st_mtime_ns for p in (data_dir / "valkey").iterdir()
                        if p.name != "appendonlydir"}
        metrics = sorted(p.name for p in (data_dir / "metrics").iterdir())

        second = _serve(data_dir, port, second_log)
        try:
            code = second.wait(30)
        finally:
            interrupt(second)
        output = second_log.read_text()
        assert code == EXIT_DATA_DIR_IN_USE, output
        assert f"is in use by another `invoice-sync serve` (pid {first.pid})" in output
        assert "embedded Valkey" not in output  # it started none

        # It touched nothing: the same socket file, Valkey's config/log/pid, the metrics files.
        assert socket_path.stat().st_ino == socket_inode
        assert {p.name: p.stat().st_mtime_ns for p in (data_dir / "valkey").iterdir()
                if p.name != "appendonlydir"} == valkey_files
        assert sorted(p.name for p in (data_dir / "metrics").iterdir()) == metrics
        assert (data_dir / LOCK_FILE_NAME).read_text().strip() == str(first.pid)

        # And the first one goes on numbering.
        assert first.poll() is None
        answer = _allocate(url, agent, "2")
        assert answer.status_code == 201, answer.text
        assert answer.json()["number"] == 2
    finally:
        interrupt(first)


def test_data_dir_is_free_again_after_serve_exits(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "serve.log"
    for _ in range(2):  # the kernel drops the lock with the process: no stale lock file
        process = _serve(data_dir, port, log)
        try:
            _wait_ready(f"http://127.0.0.1:{port}", process, log)
        finally:
            interrupt(process)
