"""The files in deploy/ work: gunicorn config (multi-worker metrics), systemd units, Redis and
Sentinel config on the real bundled server, nginx, compose."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests
import yaml

from coordinator import auth, keys
from coordinator.ops.embedded import free_port, server_binary
from tests.support import interrupt, require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration


# --- gunicorn -----------------------------------------------------------------------------


def gunicorn_env(valkey, multiproc: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_SYNC_")}
    env.update({
        "PYTHONPATH": str(ROOT),
        "INVOICE_SYNC_REDIS_URL": valkey.url,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "HOME": str(multiproc.parent),  # a stray ~/.gunicorn would show up here
    })
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(extra)
    return env


def test_gunicorn_config_checks(valkey, tmp_path):
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()  # --check-config loads the app but runs no hooks
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "--config", str(DEPLOY / "gunicorn.conf.py"),
         "--check-config"],
        cwd=tmp_path, env=gunicorn_env(valkey, multiproc), capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_gunicorn_config_reads_environment(monkeypatch):
    monkeypatch.setenv("INVOICE_SYNC_BIND", "127.0.0.1:9999")
    monkeypatch.setenv("INVOICE_SYNC_WORKERS", "3")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/x")
    namespace: dict = {}
    exec(compile((DEPLOY / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"),
         namespace)
    assert namespace["bind"] == ["127.0.0.1:9999"] and namespace["workers"] == 3
    assert namespace["worker_class"] == "coordinator.ops.gunicorn_worker.JsonErrorWorker"
    assert namespace["control_socket_disable"]
    assert callable(namespace["child_exit"]) and callable(namespace["on_starting"])
    assert namespace["wsgi_app"] == "coordinator.app:create_app()"


def test_gunicorn_builds_no_access_line_unless_an_access_log_is_asked_for(monkeypatch):
    """Issue 13: with a logconfig_dict, gunicorn's own logger built every access line (5 % of
    an allocation's CPU) for a logger that sends it nowhere."""
    from gunicorn.config import Config

    from coordinator.ops import gunicorn_defaults
    from coordinator.ops.gunicorn_logger import Logger

    assert gunicorn_defaults.logger_class == "coordinator.ops.gunicorn_logger.Logger"
    built: list = []
    monkeypatch.setattr(Logger, "atoms", lambda self, *args: built.append(args) or {"h": "-"})
    for accesslog, lines in ((None, 0), ("-", 1)):
        logger = Logger.__new__(Logger)  # without setup(): it would configure this process
        # A logger outside the hierarchy: the line goes nowhere, whatever root has.
        logger.cfg, logger.access_log = Config(), logging.Logger("test.gunicorn.access")
        logger.cfg.set("logconfig_dict", gunicorn_defaults.logconfig_dict)
        logger.cfg.set("accesslog", accesslog)
        logger.access(None, None, {}, 0.001)
        assert len(built) == lines


class Gunicorn:
    """A real gunicorn master with the deploy config, on a free port, stderr captured."""

    def __init__(self, valkey, tmp_path: Path, workers: int = 3) -> None:
        self.multiproc = tmp_path / "metrics"
        self.multiproc.mkdir()
        (self.multiproc / "stale_counter_1.db").write_bytes(b"left over")  # must be wiped
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "gunicorn.log"
        self.home = tmp_path
        env = gunicorn_env(valkey, self.multiproc, INVOICE_SYNC_BIND=f"127.0.0.1:{self.port}",
                           INVOICE_SYNC_WORKERS=str(workers))
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "--config", str(DEPLOY / "gunicorn.conf.py")],
            cwd=tmp_path, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/livez", timeout=5).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):  # workers still booting
                pass
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "gunicorn did not come up"
            time.sleep(0.1)

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
                             capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.log.close()
        return self.log_path.read_text()


@pytest.fixture
def gunicorn(valkey, redis_client, tmp_path):
    server = Gunicorn(valkey, tmp_path)
    yield server
    if server.process.poll() is None:
        server.stop()
    server.log.close()


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def test_metrics_sum_across_gunicorn_workers(gunicorn):
    assert not (gunicorn.multiproc / "stale_counter_1.db").exists()
    sent = 0

    def hit(_):
        # A new connection per request, so the kernel spreads them over the workers.
        return requests.get(gunicorn.url + "/livez", headers={"Connection": "close"}).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for _ in range(10):
            assert set(pool.map(hit, range(60))) == {200}
            sent += 60
            pids = {int(m[1]) for f in gunicorn.multiproc.iterdir()
                    if (m := re.search(r"_(\d+)\.db$", f.name))}
            if len(pids & gunicorn.worker_pids()) >= 2:
                break
    assert len(pids & gunicorn.worker_pids()) >= 2, "requests never reached a second worker"

    # Whichever worker answers /metrics, it reports every worker's requests.
    for _ in range(3):
        text = requests.get(gunicorn.url + "/metrics").text
        assert metric(text, "invoice_sync_http_requests_total", endpoint="/livez",
                      method="GET", status="200") >= sent
        assert metric(text, "invoice_sync_http_request_duration_seconds_count",
                      endpoint="/livez") >= sent

    # A worker that dies is replaced; what it counted stays counted.
    victim = next(iter(gunicorn.worker_pids()))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while victim in gunicorn.worker_pids() or len(gunicorn.worker_pids()) < 3:
        assert time.monotonic() < deadline, "gunicorn did not replace the worker"
        time.sleep(0.1)
    text = requests.get(gunicorn.url + "/metrics").text
    assert metric(text, "invoice_sync_http_requests_total", endpoint="/livez") >= sent
    gunicorn.stop()


def test_gunicorn_logs_json_without_secrets(gunicorn, redis_client):
    agent_token = auth.new_token(auth.AGENT)
    redis_client.hset(keys.TOKENS, auth.digest(agent_token), auth.agent_token_record("blue"))
    admin_token = auth.new_token(auth.ADMIN)
    auth.register_admin_token(redis_client, admin_token)
    secret = "whmcs-api-secret-7f3Kq"
    session = requests.Session()
    for token in (agent_token, admin_token, "isa_guessed-token"):
        response = session.post(gunicorn.url + "/v1/systems", timeout=5,
                                headers={"Authorization": f"Bearer {token}",
                                         "X-Request-ID": "trace-1"},
                                json={"name": "blue", "api_secret": secret,
                                      "api_identifier": "ident-9"})
        assert response.headers["X-Request-ID"] == "trace-1"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    session.get(gunicorn.url + f"/livez?token={agent_token}&secret={secret}", timeout=5)
    output = gunicorn.stop()

    lines = [line for line in output.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e.get("logger", "").startswith("gunicorn") for e in entries)
    requests_logged = [e for e in entries if e["logger"] == "coordinator.request"]
    assert {e["request_id"] for e in requests_logged} >= {"trace-1"}
    assert all({"time", "level", "method", "path", "status", "duration_ms"} <= set(e)
               for e in requests_logged)
    for leak in (agent_token, admin_token, "isa_guessed-token", secret, "ident-9", "Bearer"):
        assert leak not in output
    assert not (gunicorn.home / ".gunicorn").exists(), "control socket landed in $HOME"


# --- systemd ------------------------------------------------------------------------------

UNITS = sorted(DEPLOY.glob("*.service")) + sorted(DEPLOY.glob("*.timer"))


def exec_commands(unit: Path) -> list[list[str]]:
    return [line.split("=", 1)[1].split() for line in unit.read_text().splitlines()
            if line.startswith("ExecStart=")]


def test_units_start_programs_the_packages_install():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {u.name for u in UNITS} >= {
        "invoice-sync.service", "invoice-sync-worker.service", "invoice-sync-agent.service",
        "invoice-sync-agent-poll.service", "invoice-sync-agent-poll.timer"}
    commands = [cmd for unit in UNITS for cmd in exec_commands(unit)]
    assert commands
    for command in commands:
        program = Path(command[0]).name
        assert program == "gunicorn" or program in scripts, command
        if program == "gunicorn":
            assert (VENV_BIN / "gunicorn").exists()
    assert ["invoice-sync-agent", "serve", "--listen", "127.0.0.1:8765"] in [
        [Path(c[0]).name, *c[1:]] for c in commands]


def test_units_pass_systemd_analyze_verify(tmp_path):
    require_tool("systemd-analyze", "systemd")
    # The units name /opt/invoice-sync*/bin/...; verify needs them executable, so point them at
    # this venv's gunicorn and at stand-ins for the console scripts pip would create.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gunicorn").symlink_to(VENV_BIN / "gunicorn")
    for name in ("invoice-sync", "invoice-sync-agent"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    for unit in UNITS:
        text = re.sub(r"/opt/invoice-sync(-agent)?/bin/", f"{bin_dir}/", unit.read_text())
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True, text=True, timeout=60,
    )
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- redis.conf and sentinel.conf ----------------------------------------------------------

REDIS_PASSWORD = "CHANGE-ME-long-random-password"


def start_with_config(conf: Path, tmp_path: Path, *overrides: str) -> tuple:
    """Run the real bundled server on ``conf``, with its port, address and dir overridden."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # `dir` is applied (chdir) while the file is read, before command-line overrides: copy.
    copy = tmp_path / conf.name
    copy.write_text(re.sub(r"^dir .*$", f"dir {tmp_path}", conf.read_text(), flags=re.M))
    process = subprocess.Popen(
        [server_binary(), str(copy), "--port", str(port), "--bind", "127.0.0.1",
         "--logfile", str(tmp_path / "server.log"), *overrides],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    client = redis.Redis(port=port, password=REDIS_PASSWORD, decode_responses=True,
                         socket_timeout=2)
    try:
        while True:
            try:
                client.ping()
                return process, client, port
            except redis.exceptions.MasterDownError:
                return process, client, port  # a replica up, not yet synced: fine
            except redis.ConnectionError:
                log = tmp_path / "server.log"
                assert process.poll() is None, log.read_text() if log.exists() else "no log"
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
    except BaseException:
        client.close()
        process.kill()
        process.wait()
        raise


def stop_server(process: subprocess.Popen, client: redis.Redis) -> None:
    client.close()
    # A server still writing its first AOF after a sync logs "Writing initial AOF, can't exit."
    # and ignores that SIGTERM: ask again until it exits, as an operator would.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        process.terminate()
        try:
            process.wait(0.5)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()


def test_redis_conf_runs_durable_and_refuses_writes_without_replica(tmp_path):
    process, client, port = start_with_config(DEPLOY / "redis.conf", tmp_path)
    try:
        settings = {name: client.config_get(name)[name] for name in (
            "appendonly", "appendfsync", "maxmemory-policy", "min-replicas-to-write",
            "protected-mode", "save")}
        assert settings == {"appendonly": "yes", "appendfsync": "always",
                            "maxmemory-policy": "noeviction", "min-replicas-to-write": "1",
                            "protected-mode": "yes", "save": ""}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        # No replica: the master refuses writes it could lose in a failover.
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            client.set("probe", 1)
        with pytest.raises(redis.ResponseError):
            client.flushall()  # renamed away
    finally:
        stop_server(process, client)


def test_redis_conf_passes_doctor_with_one_replica(tmp_path):
    from coordinator.ops import doctor

    # The replica's first sync starts at once, not after the default 5 s wait for more replicas.
    master, client, port = start_with_config(DEPLOY / "redis.conf", tmp_path / "m",
                                             "--repl-diskless-sync-delay", "0")
    replica, replica_client, _ = start_with_config(
        DEPLOY / "redis.conf", tmp_path / "r", "--replicaof", "127.0.0.1", str(port))
    try:
        # The master counts a replica as good for min-replicas-to-write only after its first
        # REPLCONF ACK, which can come after the replica already reports its link "up".
        deadline = time.monotonic() + 15
        while client.info("replication")["min_slaves_good_slaves"] < 1:
            assert time.monotonic() < deadline, "replica did not connect"
            time.sleep(0.1)
        client.set("probe", 1)  # accepted now that a replica holds it too
        config = {"DURABLE_REPLICAS": 1, "ADMIN_TOKEN": "isa_x", "SECRET_KEYS": None}
        checks = doctor.redis_checks(client, config)
        assert all(check.ok for check in checks), [c.line() for c in checks if not c.ok]
        assert {c.name for c in checks} >= {"min-replicas-to-write", "replicas connected"}
    finally:
        stop_server(replica, replica_client)
        stop_server(master, client)


def test_redis_cluster_conf_runs_a_durable_cluster_node(tmp_path, monkeypatch):
    from tests.faults.cluster import cluster_port

    # A cluster node's bus listens on port + 10000: the port must be below 55536.
    monkeypatch.setitem(globals(), "free_port", cluster_port)
    process, client, _ = start_with_config(DEPLOY / "redis-cluster.conf", tmp_path,
                                           "--cluster-config-file", str(tmp_path / "nodes.conf"))
    try:
        settings = {name: client.config_get(name)[name] for name in (
            "cluster-enabled", "cluster-require-full-coverage", "appendonly", "appendfsync",
            "maxmemory-policy", "min-replicas-to-write")}
        assert settings == {"cluster-enabled": "yes", "cluster-require-full-coverage": "no",
                            "appendonly": "yes", "appendfsync": "always",
                            "maxmemory-policy": "noeviction", "min-replicas-to-write": "1"}
        assert client.cluster("info")["cluster_state"] == "fail"  # no slots until `create`
    finally:
        stop_server(process, client)


def test_sentinel_conf_three_sentinels_quorum_two():
    text = (DEPLOY / "sentinel.conf").read_text()
    monitor = re.search(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", text, re.M)
    assert monitor and monitor[1] == "invoice-sync" and monitor[4] == "2"
    assert "three" in text.lower()


def test_sentinel_conf_starts(tmp_path):
    # Sentinel rewrites its file, so run a copy; point it at a master that exists.
    master, client, port = start_with_config(DEPLOY / "redis.conf", tmp_path / "m",
                                             "--min-replicas-to-write", "0")
    conf = tmp_path / "sentinel.conf"
    conf.write_text((DEPLOY / "sentinel.conf").read_text()
                    .replace("redis-1.example.internal 6379", f"127.0.0.1 {port}")
                    .replace("dir /var/lib/redis-sentinel", f"dir {tmp_path}"))
    sentinel_port = free_port()
    sentinel = subprocess.Popen(
        [server_binary(), str(conf), "--sentinel", "--port", str(sentinel_port),
         "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sentinel_client = redis.Redis(port=sentinel_port, password="CHANGE-ME-sentinel-password",
                                      decode_responses=True, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                found = sentinel_client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "invoice-sync")
                break
            except redis.ConnectionError:
                assert sentinel.poll() is None, "sentinel exited"
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert [str(x) for x in found] == ["127.0.0.1", str(port)]
        assert int(sentinel_client.sentinel_master("invoice-sync")["quorum"]) == 2
        # Alone, this sentinel cannot reach the quorum: no single sentinel can fail over.
        with pytest.raises(redis.ResponseError, match="NOQUORUM"):
            sentinel_client.execute_command("SENTINEL", "CKQUORUM", "invoice-sync")
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        stop_server(master, client)


# --- compose and nginx --------------------------------------------------------------------


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"coordinator", "worker", "redis"}
    assert services["worker"]["command"] == ["invoice-sync", "worker"]
    assert any("redis.conf" in v for v in services["redis"]["volumes"])
    for service in services.values():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).exists()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
        for env_file in [service.get("env_file")] if service.get("env_file") else []:
            assert (DEPLOY / f"{env_file}.example").exists()
    assert "deploy/gunicorn.conf.py" in " ".join(services["coordinator"]["command"])
    copied = re.findall(r"^COPY (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert all((ROOT / path).exists() for path in copied), copied


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordinator.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_nginx_conf_passes_nginx_t(tmp_path):
    nginx = require_tool("nginx")
    cert, key = self_signed(tmp_path)
    text = ((DEPLOY / "nginx.conf").read_text()
            .replace("/etc/ssl/invoice-sync/fullchain.pem", str(cert))
            .replace("/etc/ssl/invoice-sync/privkey.pem", str(key))
            .replace("/run/nginx.pid", str(tmp_path / "nginx.pid")))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"error_log {tmp_path / 'error.log'};\n" + text)
    result = subprocess.run([nginx, "-t", "-c", str(conf), "-e", str(tmp_path / "e.log")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_serve_sets_up_multiprocess_metrics(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "metrics").mkdir(parents=True)
    (data_dir / "metrics" / "counter_1.db").write_bytes(b"from a previous run")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("INVOICE_SYNC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    env.pop("XDG_RUNTIME_DIR", None)
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--workers", "2"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/livez", timeout=5).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        for _ in range(9):
            requests.get(url + "/livez", headers={"Connection": "close"}, timeout=5)
        text = requests.get(url + "/metrics", timeout=5).text
        assert metric(text, "invoice_sync_http_requests_total", endpoint="/livez") >= 10
        assert not (data_dir / "metrics" / "counter_1.db").exists()
        assert any((data_dir / "metrics").glob("counter_*.db"))
        # gunicorn opens its control socket from a thread once workers are up: give it time.
        deadline = time.monotonic() + 10
        while not (data_dir / "gunicorn.ctl").exists():
            assert time.monotonic() < deadline, "no control socket in the data dir"
            time.sleep(0.1)
        assert not (tmp_path / ".gunicorn").exists()
    finally:
        interrupt(process)
        log.close()
