"""Durable before acknowledged: restarts, kill -9, replicas that are missing or stalled."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.numbering import iter_ledger
from coordinator.ops.durability import ServerFacts
from coordinator.ops.embedded import ValkeyServer
from tests.support import initialise_numbering

pytestmark = [pytest.mark.integration, pytest.mark.faults]


# A primary starts a replica's first sync at once: Valkey and Redis wait 5 s by default
# (repl-diskless-sync-delay) for more replicas to share it, which only costs these tests time.
PRIMARY = ["repl-diskless-sync-delay 0"]


def _agent(url: str, system: str = "blue") -> dict:
    client = redis.Redis.from_url(url, decode_responses=True)
    token = auth.new_token(auth.AGENT)
    client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(system))
    initialise_numbering(client)
    client.close()
    return {"Authorization": f"Bearer {token}"}


def _app(url: str, **config):
    return create_app({"TESTING": True, "REDIS_URL": url, **config}).test_client()


def _take(client, headers, reference):
    return client.post("/v1/allocations", headers=headers, json={
        "document": "invoice", "reference": reference, "date": "2026-03-03"})


def _wait_replica(url: str) -> None:
    """Wait until one replica has caught up (WAIT: there is no WAITAOF before 7.2)."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    deadline = time.monotonic() + 10
    admin.incr("probe")
    while admin.execute_command("WAIT", 1, 100) < 1:
        assert time.monotonic() < deadline, "replica did not sync"
    admin.close()


@pytest.mark.parametrize("crash", [True, False], ids=["kill-9", "sigterm"])
def test_counter_and_ledger_survive_restart(tmp_path, crash, server_binary):
    server = ValkeyServer(tmp_path / "v", binary=server_binary).start()
    try:
        headers = _agent(server.url)
        client = _app(server.url)
        taken = [_take(client, headers, f"r{i}").get_json() for i in range(25)]
        server.kill() if crash else server.stop()
        server.start()
        client = _app(server.url)
        # Every acknowledged number is still there, replays answer the same, the next is 26.
        assert _take(client, headers, "r3").get_json() == taken[3]
        assert _take(client, headers, "new").get_json()["number"] == 26
        reader = redis.Redis.from_url(server.url, decode_responses=True)
        assert [e["number"] for e in iter_ledger(reader, "invoice", "2026")] == list(
            range(1, 27))
        reader.close()
    finally:
        server.stop()


def test_missing_replica_answers_503_and_retry_returns_same_number(tmp_path, server_binary):
    primary = ValkeyServer(tmp_path / "p", binary=server_binary, extra=PRIMARY).start()
    replica = None
    try:
        headers = _agent(primary.url)
        strict = _app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=200)
        refused = _take(strict, headers, "10234")
        assert refused.status_code == 503
        assert refused.get_json()["code"] == 503
        assert "0 replica(s) connected and in sync, INVOICE_SYNC_DURABLE_REPLICAS wants 1" in \
            refused.get_json()["message"]
        # Known missing before writing: refused without taking a number.
        reader = redis.Redis.from_url(primary.url, decode_responses=True)
        assert list(iter_ledger(reader, "invoice", "2026")) == []
        reader.close()
        replica = ValkeyServer(tmp_path / "r", binary=server_binary, extra=[
            f"replicaof {primary.host} {primary.port}"]).start()
        _wait_replica(primary.url)
        retried = _take(_app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=3000),
                        headers, "10234")
        assert (retried.status_code, retried.get_json()["number"]) == (201, 1)
        relaxed = _take(_app(primary.url), headers, "10234")
        assert (relaxed.status_code, relaxed.get_json()["number"]) == (200, 1)
    finally:
        if replica:
            replica.stop()
        primary.stop()


def test_a_replica_still_in_its_first_sync_does_not_count(tmp_path, server_binary):
    # The primary holds the replica's first sync back for a minute: it stays connected in state
    # wait_bgsave, where it acknowledges nothing, so a durable write is refused before it is sent.
    primary = ValkeyServer(tmp_path / "p", binary=server_binary,
                           extra=["repl-diskless-sync-delay 60"]).start()
    replica = ValkeyServer(tmp_path / "r", binary=server_binary, extra=[
        f"replicaof {primary.host} {primary.port}"]).start()
    try:
        headers = _agent(primary.url)
        reader = redis.Redis.from_url(primary.url, decode_responses=True)
        deadline = time.monotonic() + 10
        while reader.info("replication")["connected_slaves"] < 1:
            assert time.monotonic() < deadline, "replica did not connect"
            time.sleep(0.05)
        facts = ServerFacts.probe(reader)
        assert (facts.connected_replicas, facts.replicas_in_sync) == (1, 0)
        refused = _take(_app(primary.url, DURABLE_REPLICAS=1), headers, "10234")
        assert refused.status_code == 503
        assert refused.get_json()["message"] == (
            "Redis is not durable: 0 replica(s) connected and in sync (1 more still in their "
            "first sync), INVOICE_SYNC_DURABLE_REPLICAS wants 1: start the missing replica(s) "
            "(`replicaof <master> <port>`, with `appendonly yes`), wait for their sync, or lower "
            "INVOICE_SYNC_DURABLE_REPLICAS")
        assert list(iter_ledger(reader, "invoice", "2026")) == []
        reader.close()
    finally:
        replica.stop()
        primary.stop()


def test_replica_fsync_is_learned_without_waiting_for_its_periodic_ack(tmp_path,
                                                                      server_binary):
    """A replica reports its fsynced offset on its own only once a second; the allocation
    asks for the ack (WAIT) so a healthy replica confirms well within a 900 ms budget.
    Without that every allocation after the first would wait for the next periodic ack,
    ~1 s after the previous one, and answer 503. The first request also runs the one-off
    layout migration on a cold connection; it is taken before the budget is set, so a
    loaded machine cannot make it miss a budget that is not what this test is about."""
    primary = ValkeyServer(tmp_path / "p", binary=server_binary, extra=PRIMARY).start()
    replica = ValkeyServer(tmp_path / "r", binary=server_binary,
                           extra=[f"replicaof {primary.host} {primary.port}"])
    try:
        replica.start()
        _wait_replica(primary.url)
        headers = _agent(primary.url)
        warm = _take(_app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=10_000),
                     headers, "warm-up")
        assert warm.status_code == 201, warm.get_json()
        client = _app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=900)
        statuses = [_take(client, headers, f"ha-{i}").status_code for i in range(10)]
        assert statuses == [201] * 10
    finally:
        replica.stop()
        primary.stop()


def test_replay_waits_for_the_original_write_not_just_its_own(tmp_path):
    """A replay on a fresh connection has written nothing, so a bare WAITAOF would return at
    once with the stalled replica counted; the replay's own tiny write makes it wait."""
    primary = ValkeyServer(tmp_path / "p", extra=PRIMARY).start()
    replica = ValkeyServer(tmp_path / "r", extra=[f"replicaof {primary.host} {primary.port}"])
    replica.start()
    try:
        headers = _agent(primary.url)
        admin = redis.Redis.from_url(primary.url, decode_responses=True)
        deadline = time.monotonic() + 10
        admin.incr("probe")
        while admin.execute_command("WAITAOF", 0, 1, 100)[1] < 1:
            assert time.monotonic() < deadline, "replica did not sync"
        config = {"DURABLE_REPLICAS": 1, "DURABILITY_TIMEOUT_MS": 2000}
        assert _take(_app(primary.url, **config), headers, "warm").status_code == 201

        os.kill(replica.process.pid, signal.SIGSTOP)  # connected, but acknowledges nothing
        try:
            assert _take(_app(primary.url, **config), headers, "10234").status_code == 503
            # Proof the naive wait would lie: a fresh connection with no write of its own.
            fresh = redis.Redis.from_url(primary.url)
            assert fresh.execute_command("WAITAOF", 1, 1, 2000) == [1, 1]
            fresh.close()
            replays = int(admin.hget(keys.seq_stats("invoice"), "replays") or 0)
            replay = _take(_app(primary.url, **config), headers, "10234")
            assert replay.status_code == 503
            assert int(admin.hget(keys.seq_stats("invoice"), "replays")) == replays + 1
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        done = _take(_app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=3000),
                     headers, "10234")
        assert (done.status_code, done.get_json()["number"]) == (200, 2)
        admin.close()
    finally:
        replica.stop()
        primary.stop()


def _not_durable() -> float:
    """The refusals `invoice_sync_allocations_total` counts (docs/MONITORING.md; the alert
    `deploy/prometheus/alerts.yml` fires on them): series `-`, refused before it is known."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("invoice_sync_allocations_total", {
        "series": "-", "sequence": "invoice", "result": "not_durable"}) or 0.0


def test_aof_off_is_never_acknowledged(tmp_path, server_binary):
    server = ValkeyServer(tmp_path / "v", binary=server_binary).start()
    try:
        redis.Redis.from_url(server.url).config_set("appendonly", "no")
        refused = _not_durable()
        client, headers = _app(server.url), _agent(server.url)
        response = _take(client, headers, "1")
        assert response.status_code == 503
        assert "appendonly" in response.get_json()["message"]
        assert _not_durable() == refused + 1
        # a refused batch is counted once per item, as that many single refusals would be
        items = [{"document": "invoice", "reference": ref, "date": "2026-03-03"} for ref in "23"]
        batch = client.post("/v1/allocation-batches", headers=headers, json={"items": items})
        assert batch.status_code == 503
        assert _not_durable() == refused + 3
    finally:
        server.stop()


def test_confirm_and_void_wait_for_durability(tmp_path, server_binary):
    """A replica that is connected but acknowledges nothing: the confirm and the void pass the
    check before the script, are written, and still answer 503, because the wait after the
    write is not met; the agent's retry, once the replica answers, gets its 200."""
    primary = ValkeyServer(tmp_path / "p", binary=server_binary, extra=PRIMARY).start()
    replica = ValkeyServer(tmp_path / "r", binary=server_binary,
                           extra=[f"replicaof {primary.host} {primary.port}"])
    replica.start()
    try:
        headers = _agent(primary.url)
        _wait_replica(primary.url)
        app = _app(primary.url)
        confirmed, voided = (_take(app, headers, ref).get_json() for ref in ("1", "2"))
        strict = _app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=300)
        confirm = (f"/v1/allocations/{confirmed['id']}/confirm",
                   {"invoicenum": confirmed["formatted"]})
        void = (f"/v1/allocations/{voided['id']}/void", {"reason": "invoice deleted"})
        # WAITAOF where the server has it (Valkey, Redis 7.2+), WAIT on Debian's Redis 7.0:
        # the capability as the coordinator itself probes it.
        probe = redis.Redis.from_url(primary.url)
        waitaof = ServerFacts.probe(probe).waitaof
        probe.close()
        refusal = ("Not confirmed durable within 300 ms (fsynced locally: True, replicas: 0/1); "
                   "retry the same request") if waitaof else (
                   "Not confirmed on 1 replica(s) within 300 ms (WAIT answered 0); "
                   "retry the same request")
        os.kill(replica.process.pid, signal.SIGSTOP)  # connected, but acknowledges nothing
        try:
            for path, body in (confirm, void):
                response = strict.post(path, headers=headers, json=body)
                assert (response.status_code, response.get_json()["message"]) == (503, refusal)
            # Written before the wait: the 503 came after the script, not from the check.
            assert [app.get(f"/v1/allocations/{e['id']}", headers=headers).get_json()["status"]
                    for e in (confirmed, voided)] == ["confirmed", "void"]
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        patient = _app(primary.url, DURABLE_REPLICAS=1, DURABILITY_TIMEOUT_MS=3000)
        assert [(r.status_code, r.get_json()["status"])
                for r in (patient.post(path, headers=headers, json=body)
                          for path, body in (confirm, void))] == [(200, "confirmed"),
                                                                  (200, "void")]
    finally:
        replica.stop()
        primary.stop()


def test_a_connection_lost_under_a_script_stays_a_connection_error_and_is_probed_again(
        redis_client, monkeypatch):
    """A dropped connection (a failover) under a numbering script: the caller gets the
    connection error (the API's 503), with or without a durability wait, and the cached
    durability verdict is dropped so the next write probes the server again."""
    from coordinator.numbering import scripts
    from coordinator.ops.confirmation import Durability, Guard

    def lost(*args, **kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    guard = Guard({"DURABLE_REPLICAS": 0, "DURABILITY_RECHECK_SECONDS": 3600})
    guard.refresh(redis_client)
    monkeypatch.setattr(scripts.lua, "run", lost)
    for durability in (None, Durability(guard=guard)):
        with pytest.raises(redis.ConnectionError, match="^Connection closed by server.$"):
            scripts.run(redis_client, scripts.SETTINGS, ["{ser:default}:k"], [], durability)
    assert guard._verdict is None  # forgotten: the next write probes again
