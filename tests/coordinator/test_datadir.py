"""One ``invoice-sync serve`` per data dir: a second one leaves the running one alone."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from coordinator.ops.datadir import EXIT_DATA_DIR_IN_USE, LOCK_FILE_NAME, embedded_socket
from tests.support import Serve

pytestmark = pytest.mark.integration

PUBLIC_URL = "https://93.184.216.34/includes/api.php"  # an IP literal: no DNS, never contacted


def _allocate(url: str, token: str, reference: str) -> requests.Response:
    return requests.post(url + "/v1/allocations", timeout=10,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"document": "invoice", "reference": reference})


def test_second_serve_on_same_data_dir_exits_and_leaves_the_first_working(tmp_path):
    data_dir = tmp_path / "data"
    with Serve(data_dir) as first:
        admin = (data_dir / "admin-token").read_text().strip()
        created = requests.post(first.url + "/v1/systems", timeout=10,
                                headers={"Authorization": f"Bearer {admin}"},
                                json={"name": "blue", "url": PUBLIC_URL, "api_identifier": "i",
                                      "api_secret": "s", "exchange_rate": "1.0000"})
        assert created.status_code == 201, created.text
        agent = created.json()["agent_token"]
        assert _allocate(first.url, agent, "1").json()["number"] == 1

        socket_path = embedded_socket(data_dir)
        socket_inode = socket_path.stat().st_ino
        valkey_files = {p.name: p.stat().st_mtime_ns for p in (data_dir / "valkey").iterdir()
                        if p.name != "appendonlydir"}
        metrics = sorted(p.name for p in (data_dir / "metrics").iterdir())

        # The same port too, as a user repeating the command would (this is how it broke).
        output = _refused(data_dir, first.port)
        assert f"is in use by another `invoice-sync serve` (pid {first.process.pid})" in output
        assert "embedded Valkey" not in output  # it started none

        # It touched nothing: the same socket file, Valkey's config/log/pid, the metrics files.
        assert socket_path.stat().st_ino == socket_inode
        assert {p.name: p.stat().st_mtime_ns for p in (data_dir / "valkey").iterdir()
                if p.name != "appendonlydir"} == valkey_files
        assert sorted(p.name for p in (data_dir / "metrics").iterdir()) == metrics
        assert (data_dir / LOCK_FILE_NAME).read_text().strip() == str(first.process.pid)

        # And the first one goes on numbering.
        assert first.process.poll() is None
        answer = _allocate(first.url, agent, "2")
        assert answer.status_code == 201, answer.text
        assert answer.json()["number"] == 2


def test_data_dir_is_free_again_after_serve_exits(tmp_path):
    data_dir = tmp_path / "data"
    port = None
    for _ in range(2):  # the kernel drops the lock with the process: no stale lock file
        with Serve(data_dir, port) as serve:
            port = serve.port


def test_valkey_left_by_a_killed_serve_still_holds_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    first = Serve(data_dir).wait_ready()
    valkey_pid = int((data_dir / "valkey" / "valkey.pid").read_text())
    try:
        workers = set(_children(first.process.pid)) - {valkey_pid}
        assert workers  # gunicorn's workers: they hold the lock too until they notice and exit
        first.process.kill()  # SIGKILL: serve cannot stop its Valkey, which runs on (own session)
        first.process.wait(30)
        _wait_gone(workers)
        assert _running(valkey_pid)  # still there, with the AOF open
        output = " ".join(_refused(data_dir).split())
        assert (f"(pid {first.process.pid}), which is gone, but its embedded Valkey "
                f"(pid {valkey_pid}) still runs" in output)
        assert _running(valkey_pid)  # and it was left alone
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(valkey_pid, signal.SIGTERM)
    # Once that Valkey (and the killed serve's gunicorn workers) are gone, the data dir is free.
    _wait_lock_free(data_dir / LOCK_FILE_NAME)
    with Serve(data_dir):
        pass


def _refused(data_dir: Path, port: int | None = None) -> str:
    """Start another serve on ``data_dir``; assert it exits as refused; return its output."""
    second = Serve(data_dir, port)
    try:
        code = second.process.wait(30)
    finally:
        second.stop()
    assert code == EXIT_DATA_DIR_IN_USE, second.output()
    return second.output()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a slow init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{pids} did not exit"
        time.sleep(0.05)


def _wait_lock_free(path) -> None:
    deadline = time.monotonic() + 30
    with path.open("rb") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                assert time.monotonic() < deadline, "the data dir lock was never released"
                time.sleep(0.05)
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
                return
