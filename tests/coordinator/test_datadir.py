"""One ``invoice-sync serve`` per data dir: a second one leaves the running one alone."""

from __future__ import annotations

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
        second = Serve(data_dir, first.port)
        try:
            code = second.process.wait(30)
        finally:
            second.stop()
        assert code == EXIT_DATA_DIR_IN_USE, second.output()
        assert (f"is in use by another `invoice-sync serve` (pid {first.process.pid})"
                in second.output())
        assert "embedded Valkey" not in second.output()  # it started none

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
