"""One idea of "durable": allocations, /readyz and the doctor agree on every server and setting.

Each case runs on both servers (the bundled Valkey, which has WAITAOF, and Debian's
redis-server 7.0, which has not). What is expected is derived from the server's own version
(``--version``), independently of how the coordinator detects WAITAOF (it asks the server).
"""

from __future__ import annotations

import re
import subprocess

import pytest
import redis
from click.testing import CliRunner
from cryptography.fernet import Fernet

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.cli import main
from coordinator.numbering import iter_ledger
from coordinator.ops import confirmation
from coordinator.ops.embedded import ValkeyServer
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

DURABILITY_LINES = ("AOF on", "appendfsync always", "write confirmation", "role master",
                    "replicas connected", "maxmemory-policy noeviction")


def has_waitaof(binary: str) -> bool:
    """Whether the server binary is 7.2 or newer, by its own ``--version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in re.search(r"v=(\d+)\.(\d+)", out).groups())
    return (major, minor) >= (7, 2)


def _agent(client: redis.Redis, system: str = "blue") -> dict:
    initialise_numbering(client)  # a fresh server, as serve's first start leaves it
    token = auth.new_token(auth.AGENT)
    client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(system))
    return {"Authorization": f"Bearer {token}"}


def _doctor(url: str, client: redis.Redis, replicas: int) -> tuple[int, str]:
    auth.register_admin_token(client, auth.new_token(auth.ADMIN))
    result = CliRunner().invoke(main, ["doctor"], env={
        "INVOICE_SYNC_REDIS_URL": url, "INVOICE_SYNC_DURABLE_REPLICAS": str(replicas),
        "INVOICE_SYNC_SECRET_KEYS": Fernet.generate_key().decode(),
        "INVOICE_SYNC_SENTINELS": "", "INVOICE_SYNC_ADMIN_TOKEN": ""})
    return result.exit_code, result.output


CASES = [
    # (appendfsync, DURABLE_REPLICAS, durable on a server with WAITAOF, ... without)
    pytest.param("always", 0, True, True, id="always"),
    pytest.param("everysec", 0, True, False, id="everysec"),
    pytest.param("always", 1, False, False, id="replica-missing"),
]


@pytest.mark.parametrize(("fsync", "replicas", "with_waitaof", "without_waitaof"), CASES)
def test_allocation_readyz_and_doctor_agree(tmp_path, server_binary, fsync, replicas,
                                            with_waitaof, without_waitaof):
    expected = with_waitaof if has_waitaof(server_binary) else without_waitaof
    server = ValkeyServer(tmp_path / "s", binary=server_binary, appendfsync=fsync).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        app = create_app({"TESTING": True, "REDIS_URL": server.url,
                          "DURABLE_REPLICAS": replicas, "DURABILITY_TIMEOUT_MS": 1500})
        http = app.test_client()
        ready = http.get("/readyz")
        allocation = http.post("/v1/allocations", headers=_agent(client), json={
            "document": "invoice", "reference": "1", "date": "2026-03-03"})
        code, report = _doctor(server.url, client, replicas)

        assert (ready.status_code == 200) is expected, ready.get_json()
        assert (allocation.status_code == 201) is expected, allocation.get_json()
        assert (code == 0) is expected, report
        failed = [line for line in report.splitlines() if line.startswith("✗")]
        assert bool(failed) is not expected, report
        assert all(line[2:].split(":")[0] in DURABILITY_LINES for line in failed), report
        if not expected:
            body = allocation.get_json()
            assert body["code"] == 503
            # The same words in all three places, and nothing was taken.
            for problem in ready.get_json()["problems"]:
                assert problem in body["message"]
                assert problem in report
            assert list(iter_ledger(client, "invoice", "2026")) == []
        else:
            strategy = "waitaof" if has_waitaof(server_binary) else "fsync-always"
            assert ready.get_json()["redis"]["confirmation"] == strategy
    finally:
        client.close()
        server.stop()


def test_fsync_policy_changed_at_runtime_is_caught_by_the_next_write(tmp_path,
                                                                   second_server_binary):
    """Without WAITAOF the policy is read back with each write: an `everysec` set a moment ago
    (inside DURABILITY_RECHECK_SECONDS) already makes the next allocation a 503.

    Regression: before, Redis 7.0 answered every allocation 503 ("unknown command 'WAITAOF'")
    while /readyz said ok; a runtime switch would now go unnoticed if only probed periodically.
    """
    binary = second_server_binary
    if has_waitaof(binary):
        pytest.skip("this check is about servers without WAITAOF")
    server = ValkeyServer(tmp_path / "s", binary=binary).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        app = create_app({"TESTING": True, "REDIS_URL": server.url,
                          "DURABILITY_RECHECK_SECONDS": 3600})
        http = app.test_client()
        headers = _agent(client)

        def take(reference):
            return http.post("/v1/allocations", headers=headers, json={
                "document": "invoice", "reference": reference, "date": "2026-03-03"})

        assert take("a").status_code == 201
        client.config_set("appendfsync", "everysec")
        refused = take("b")
        assert refused.status_code == 503
        assert "appendfsync 'everysec'" in refused.get_json()["message"]
        # The write itself went through but was never acknowledged; learned for the next one,
        # which is refused before writing anything.
        assert take("c").status_code == 503
        assert [e["reference"] for e in iter_ledger(client, "invoice", "2026")] == ["a", "b"]
        client.config_set("appendfsync", "always")
        assert http.get("/readyz").status_code == 200
        replay = take("b")
        assert (replay.status_code, replay.get_json()["number"]) == (200, 2)
    finally:
        client.close()
        server.stop()


def test_kill_9_right_after_each_acknowledgement_loses_nothing(tmp_path, server_binary):
    """SIGKILL the server the moment an allocation is acknowledged, over and over: every
    acknowledged number is there after the restart.

    A SIGKILL leaves the kernel's page cache alone, so this proves the write reached the AOF
    before the reply; that fsync came before it too is the server's guarantee (docs/REDIS.md),
    which no test short of pulling the power can show.
    """
    server = ValkeyServer(tmp_path / "s", binary=server_binary).start()
    try:
        admin = redis.Redis.from_url(server.url, decode_responses=True)
        headers = _agent(admin)
        admin.close()
        acknowledged = {}
        for i in range(8):
            app = create_app({"TESTING": True, "REDIS_URL": server.url})
            response = app.test_client().post("/v1/allocations", headers=headers, json={
                "document": "invoice", "reference": f"r{i}", "date": "2026-03-03"})
            assert response.status_code == 201, response.get_json()
            server.kill()  # at once: no SIGTERM, no AOF flush on shutdown
            acknowledged[f"r{i}"] = response.get_json()["number"]
            server.start()
        reader = redis.Redis.from_url(server.url, decode_responses=True)
        stored = {e["reference"]: e["number"] for e in iter_ledger(reader, "invoice", "2026")}
        reader.close()
        assert stored == acknowledged
        assert sorted(stored.values()) == list(range(1, 9))
    finally:
        server.stop()


def test_guard_probes_once_per_recheck_interval(tmp_path):
    """The write path asks the server about itself at most once per interval, not per write."""
    server = ValkeyServer(tmp_path / "s").start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        guard = confirmation.Guard({"DURABILITY_RECHECK_SECONDS": 3600})

        def probes() -> int:  # each probe sends one WAITAOF 0 0 1
            return client.info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0)

        first = guard.current(client)
        assert probes() == 1
        for _ in range(5):
            assert guard.current(client) == first
        assert probes() == 1
        guard.forget()
        guard.current(client)
        assert probes() == 2
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_registry_writes_follow_the_same_verdict(tmp_path, server_binary, fsync):
    """Register, rotate, delete, and token create/revoke are refused exactly when allocations
    are, and then change nothing (regression: they were acknowledged without any wait)."""
    from tests.coordinator.systems_support import FakeResolver, body
    from tests.support import snapshot

    server = ValkeyServer(tmp_path / "s", binary=server_binary, appendfsync=fsync).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        config = {"TESTING": True, "REDIS_URL": server.url, "SYSTEM_URL_RESOLVER": FakeResolver(),
                  "SECRET_KEYS": Fernet.generate_key().decode()}
        token = auth.new_token(auth.ADMIN)
        auth.register_admin_token(client, token)
        admin = {"Authorization": f"Bearer {token}"}
        # Set up through a plain client (no durability wait), whatever the server.
        plain = redis.Redis.from_url(server.url, decode_responses=True)
        setup = create_app({**config, "REDIS_CLIENT": plain}).test_client()
        assert setup.post("/v1/systems", headers=admin, json=body(name="red")).status_code == 201
        auditor = setup.post("/v1/tokens", headers=admin, json={"role": "auditor", "label": "a"})
        assert auditor.status_code == 201, auditor.get_json()
        expected = fsync == "always" or has_waitaof(server_binary)
        for replicas in (1, 0):  # 1: no replica runs, never durable
            durable = expected and replicas == 0
            http = create_app({**config, "DURABLE_REPLICAS": replicas,
                               "DURABILITY_TIMEOUT_MS": 2000}).test_client()
            before = snapshot(client)
            responses = [
                http.post("/v1/systems", headers=admin, json=body(name=f"blue{replicas}")),
                http.post("/v1/systems/red/agent-token", headers=admin),
                http.delete("/v1/systems/red", headers=admin),
                http.post("/v1/tokens", headers=admin, json={"role": "auditor", "label": "b"}),
                http.delete(f"/v1/tokens/{auditor.get_json()['id']}", headers=admin),
            ]
            ready = http.get("/readyz").status_code
            if durable:
                assert [r.status_code for r in responses] == [201, 200, 204, 201, 200], [
                    r.get_json() for r in responses]
                assert ready == 200
            else:
                assert {r.status_code for r in responses} == {503}, [
                    r.get_json() for r in responses]
                assert ready == 503
                assert snapshot(client) == before
    finally:
        client.close()
        server.stop()
