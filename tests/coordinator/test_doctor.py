"""``invoice-sync doctor`` against real servers: a durable one passes, a risky one names fixes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from coordinator import auth
from coordinator.cli import main
from coordinator.ops.embedded import ValkeyServer
from tests.support import Serve, user_env

pytestmark = pytest.mark.integration


@pytest.fixture
def environment(monkeypatch):
    for name in ("INVOICE_SYNC_REDIS_URL", "INVOICE_SYNC_SENTINELS", "INVOICE_SYNC_ADMIN_TOKEN",
                 "INVOICE_SYNC_SECRET_KEYS", "INVOICE_SYNC_DURABLE_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    return {"INVOICE_SYNC_SECRET_KEYS": Fernet.generate_key().decode()}


def doctor(env, *args):
    return CliRunner().invoke(main, ["doctor", *args], env=env)


def test_doctor_passes_on_durable_server(valkey, redis_client, environment):
    auth.register_admin_token(redis_client, auth.new_token(auth.ADMIN))
    result = doctor({**environment, "INVOICE_SYNC_REDIS_URL": valkey.url})
    assert result.exit_code == 0, result.output
    assert "✗" not in result.output
    for name in ("Redis reachable", "AOF on", "appendfsync always", "role master",
                 "maxmemory-policy noeviction", "write confirmation", "secret keys"):
        assert f"✓ {name}" in result.output
    assert "all checks passed" in result.output


def test_doctor_fails_on_everysec_and_allkeys_lru(tmp_path, environment):
    server = ValkeyServer(tmp_path, appendfsync="everysec",
                          extra=["maxmemory 64mb", "maxmemory-policy allkeys-lru"]).start()
    try:
        result = doctor({**environment, "INVOICE_SYNC_REDIS_URL": server.url,
                         "INVOICE_SYNC_SECRET_KEYS": "", "INVOICE_SYNC_DURABLE_REPLICAS": "1"})
    finally:
        server.stop()
    assert result.exit_code == 1, result.output
    out = result.output
    # Valkey has WAITAOF: everysec is slow, not unsafe, so advice (!), not a failure (✗).
    assert "! appendfsync always: appendfsync everysec" in out
    assert "set `appendfsync always`" in out
    assert "✗ maxmemory-policy noeviction: maxmemory-policy allkeys-lru" in out
    assert "set `maxmemory-policy noeviction`" in out
    assert "✗ replicas connected" in out
    assert "! min-replicas-to-write" in out and "min-replicas-to-write 1" in out
    assert "✗ secret keys" in out and "Fernet.generate_key" in out
    assert "✗ admin token" in out and "invoice-sync token create-admin" in out
    assert "✓ AOF on" in out
    assert "problem(s) found" in out


def test_doctor_unreachable_redis(environment):
    result = doctor({**environment, "INVOICE_SYNC_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 1
    assert "✗ Redis reachable" in result.output and "fix:" in result.output
    assert "✓ secret keys" in result.output


def test_doctor_embedded_not_running(environment, tmp_path):
    result = doctor(environment, "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "no embedded server running" in result.output


def test_doctor_embedded_running(environment, tmp_path, monkeypatch):
    server = ValkeyServer(tmp_path / "valkey", unixsocket=True).start()
    try:
        result = doctor({**environment, "INVOICE_SYNC_ADMIN_TOKEN": "isa_x"},
                        "--data-dir", str(tmp_path))
    finally:
        server.stop()
    assert result.exit_code == 0, result.output


def test_doctor_rejects_bad_fernet_key(valkey, redis_client, environment):
    result = doctor({**environment, "INVOICE_SYNC_REDIS_URL": valkey.url,
                     "INVOICE_SYNC_ADMIN_TOKEN": "isa_x",
                     "INVOICE_SYNC_SECRET_KEYS": f"{Fernet.generate_key().decode()},nope"})
    assert result.exit_code == 1
    assert "key 2 is not a valid Fernet key" in result.output


def test_doctor_on_a_fresh_quick_start_raises_no_false_alarm(tmp_path):
    """README's quick start: `invoice-sync serve`, then `invoice-sync doctor` in that directory."""
    with Serve(tmp_path / "invoice-sync-data"):
        result = subprocess.run([sys.executable, "-m", "coordinator", "doctor"], cwd=tmp_path,
                                env=user_env(tmp_path), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✗" not in result.stdout
    key_file = (tmp_path / "invoice-sync-data" / "secret-keys").resolve()
    assert f"✓ secret keys: 1 Fernet key(s) from {key_file}" in result.stdout
    assert "✓ admin token: present" in result.stdout


def test_doctor_prefers_the_environment_over_the_key_file(tmp_path, environment):
    (tmp_path / "secret-keys").write_text("not-a-key\n")  # as serve would: ignored here
    result = doctor(environment, "--data-dir", str(tmp_path))
    assert "✓ secret keys: 1 Fernet key(s)\n" in result.output
