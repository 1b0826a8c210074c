"""`invoice-sync serve` for real, and the other commands finding it through its data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from coordinator.ops.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordinator", *args], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


class Serve:
    """`python -m coordinator serve` on a free port with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout = data_dir.parent / f"serve-{self.port}.out"

    def start(self) -> Serve:
        self.out = open(self.stdout, "w")  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--workers", "1"],
            env=_env(**self.env), cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.stdout.read_text()
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or too busy starting to answer within a second
            assert time.monotonic() < deadline, self.stdout.read_text()
            time.sleep(0.2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.out.close()
        return code


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_serve_embedded_default_end_to_end(data_dir):
    serve = Serve(data_dir).start()
    try:
        token = (data_dir / "admin-token").read_text().strip()
        assert token in serve.stdout.read_text(), "first start prints the admin token once"
        admin = {"Authorization": f"Bearer {token}"}
        assert requests.get(serve.url + "/v1/sequences", headers=admin, timeout=10).ok
        # serve built the reconciliation's findings before serving (before its worker and
        # scheduler started): no 503 on a new store.
        assert "reconciliation: findings built" in serve.stdout.read_text()
        assert requests.get(serve.url + "/v1/reports/reconciliation", headers=admin,
                            timeout=10).status_code == 200

        # Other commands reach the running serve through its data dir, with no Redis URL.
        created = _cli("token", "create-admin", "--data-dir", str(data_dir))
        assert created.returncode == 0, created.stderr
        second = {"Authorization": f"Bearer {created.stdout.strip()}"}
        assert requests.get(serve.url + "/v1/systems", headers=second, timeout=10).ok
        report = _cli("report", "revenue", "--data-dir", str(data_dir))
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["total"]["invoices"] == 0
        # The reconciliation's kept findings: rebuilt by hand and checked against a full
        # computation (exit 1 on any difference), then read as the GET reads them.
        rebuilt = _cli("reconcile", "--rebuild", "--verify", "--data-dir", str(data_dir))
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert json.loads(rebuilt.stdout)["counts"]["not_issued"] == 0
        recon = _cli("report", "reconciliation", "--data-dir", str(data_dir))
        assert recon.returncode == 0 and json.loads(recon.stdout)["ledger_compared"]
        missing = _cli("sync", "nosuch", "--data-dir", str(data_dir))
        assert missing.returncode != 0 and "nosuch" in missing.stderr

        taken = requests.post(serve.url + "/v1/sequences/invoice", headers=admin, timeout=10)
        assert taken.status_code == 405  # sequences are PATCHed, not POSTed: JSON error shape
        assert taken.json()["code"] == 405
    finally:
        assert serve.stop() == 0
    # The embedded Valkey stopped with it (its socket is gone).
    assert not (data_dir / "valkey" / "valkey.sock").exists()

    # Second start: nothing printed, the same token still works, data kept.
    again = Serve(data_dir).start()
    try:
        assert token not in again.stdout.read_text()
        listed = requests.get(again.url + "/v1/systems", headers=admin, timeout=10)
        assert listed.status_code == 200
    finally:
        assert again.stop() == 0


def test_commands_without_a_running_serve_say_what_to_do(data_dir):
    result = _cli("report", "revenue", "--data-dir", str(data_dir))
    assert result.returncode != 0
    assert "invoice-sync serve" in result.stderr and "INVOICE_SYNC_REDIS_URL" in result.stderr


def test_admin_token_from_the_environment_replaces_the_generated_one(data_dir):
    serve = Serve(data_dir, INVOICE_SYNC_ADMIN_TOKEN="isa_from-the-environment").start()
    try:
        assert not (data_dir / "admin-token").exists()
        assert "admin token" not in serve.stdout.read_text()
        admin = {"Authorization": "Bearer isa_from-the-environment"}
        assert requests.get(serve.url + "/v1/systems", headers=admin, timeout=10).ok
    finally:
        assert serve.stop() == 0
