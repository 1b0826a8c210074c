"""The coordinator on a real Redis/Valkey Cluster: three masters, one replica each.

- Allocations from several systems (invoices and dedicated credit notes: two sequences, two
  hash slots, on two different masters) while the master serving invoices is SIGKILLed and its
  replica promoted: with ``DURABLE_REPLICAS=1`` each number is acknowledged only after WAIT
  (and WAITAOF where the server has it) on that master's connection confirmed the replica has
  it, so the checker finds no acknowledged number lost or issued twice.
- The doctor and /readyz see every master; without ``INVOICE_SYNC_QUEUE_REDIS_URL`` the doctor
  says the sync jobs need one.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from click.testing import CliRunner
from cryptography.fernet import Fernet
from redis.cluster import key_slot

from coordinator import keys
from coordinator.cli import main
from coordinator.ops.redis_client import for_key
from tests.conftest import SERVERS, resolve_server
from tests.faults.cluster import ClusterDeployment
from tests.faults.history import History
from tests.faults.load import agent_run, allocate_until_acked, run_threads
from tests.faults.scenario import DATE, SYSTEMS, agent_tokens, register_admin, verify

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module", params=SERVERS)
def cluster(request, tmp_path_factory):
    """One cluster per server for this module (starting one takes seconds): the kill test
    leaves it healthy (the old master back as a replica); the doctor test, last, kills a
    replica."""
    binary = resolve_server(request.config, request.param)
    with ClusterDeployment(tmp_path_factory.mktemp("cluster"), binary=binary) as deployment:
        yield deployment


def test_allocations_survive_a_master_kill_on_a_cluster(cluster, gunicorn):
    client = cluster.client()
    tokens = agent_tokens(client)
    admin = register_admin(client)
    # The tokens' master may be the one killed below: make sure its replica has them.
    assert for_key(client, keys.TOKENS).execute_command("WAIT", 1, 5000) >= 1
    # Every key of a series shares one hash tag, so the default series (invoices and credit
    # notes) lives on one master: that master is killed mid-load.
    invoice_master = cluster.master_of(keys.seq_settings("invoice"))
    assert key_slot(keys.seq_settings("invoice").encode()) == key_slot(
        keys.seq_settings("credit_note").encode())
    coordinator = gunicorn({"REDIS_CLUSTER": cluster.seeds, "DURABLE_REPLICAS": 1,
                            "REDIS_SOCKET_TIMEOUT": 2}, workers=2, threads=4)
    history = History()
    killed = {}

    def killer():
        time.sleep(3)
        killed["acked_before"] = len(history.acknowledged)
        cluster.kill(invoice_master)
        killed["at"] = time.monotonic()
        killed["new"] = cluster.wait_promoted(invoice_master, keys.seq_settings("invoice"))
        killed["promoted"] = time.monotonic()
        # The promoted master has no replica now: its slots are refused (503) until the old
        # master comes back, as its replica.
        cluster.node(invoice_master).start()
        cluster.wait_healthy()
        killed["rejoined"] = time.monotonic()

    thread = threading.Thread(target=killer)
    thread.start()
    run_threads(
        (lambda i=i: agent_run(coordinator.url, tokens[SYSTEMS[i % 3]], SYSTEMS[i % 3], f"a{i}",
                               100000, 12, history,
                               documents=("invoice",) if i < 3 else ("credit_note",)))
        for i in range(6)
    )
    thread.join()
    deadline = time.monotonic() + 60
    told = list({a.ref: a for a in history.acknowledged}.values())
    run_threads(
        (lambda part=told[k::6]: [
            allocate_until_acked(coordinator.url, tokens[a.system], history, a.system,
                                 a.document, a.reference, DATE, deadline) for a in part])
        for k in range(6))
    verdict = verify(coordinator.url, admin, history, "Cluster: master SIGKILLed, replica "
                                                      "promoted")
    documents = {a.document for a in history.acknowledged}
    print(f"  series default on :{invoice_master} (killed after {killed['acked_before']} acks, "
          f"replica :{killed['new']} promoted {killed['promoted'] - killed['at']:.1f}s later, "
          f"old master back as its replica after {killed['rejoined'] - killed['at']:.1f}s)")
    assert killed["acked_before"] > 0, "the kill must hit mid-load"
    assert documents == {"invoice", "credit_note"}
    assert killed["new"] != invoice_master
    assert verdict.ok, verdict.line()
    assert verdict.counts["acked_refs"] == verdict.counts["references"]
    # Numbering went on on the promoted master once it had a replica again.
    after = [a for a in history.acknowledged if a.started > killed["promoted"]]
    assert after, "nothing was numbered after the failover"


def test_doctor_and_readyz_on_a_cluster(cluster, gunicorn, monkeypatch):
    cluster.wait_healthy()
    env = {"INVOICE_SYNC_REDIS_CLUSTER": cluster.seeds, "INVOICE_SYNC_DURABLE_REPLICAS": "1",
           "INVOICE_SYNC_SECRET_KEYS": Fernet.generate_key().decode()}
    for name in ("INVOICE_SYNC_REDIS_URL", "INVOICE_SYNC_SENTINELS",
                 "INVOICE_SYNC_QUEUE_REDIS_URL", "INVOICE_SYNC_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    register_admin(cluster.client())
    result = CliRunner().invoke(main, ["doctor"], env=env)
    out = result.output
    assert "✓ Cluster: 3 masters" in out, out
    assert "✓ replicas connected: 1 in sync of 1 connected," in out, out
    assert "✗ job queue: INVOICE_SYNC_QUEUE_REDIS_URL is not set" in out, out
    assert "RQ does not run on a Redis Cluster" in out
    assert result.exit_code == 1

    coordinator = gunicorn({"REDIS_CLUSTER": cluster.seeds, "DURABLE_REPLICAS": 1},
                           workers=1, threads=2)
    ready = requests.get(coordinator.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.json()
    assert len(ready.json()["redis"]["cluster_masters"]) == 3
    admin = {"Authorization": f"Bearer {register_admin(cluster.client())}"}
    created = requests.post(coordinator.url + "/v1/tokens", headers=admin, timeout=10,
                            json={"role": "auditor", "label": "before"})
    assert created.status_code == 201, created.json()
    # The token store's master loses its replica: not durable, for the doctor and /readyz
    # alike, and a token transaction (on that master's connection) is not acknowledged.
    cluster.kill(cluster.replica_of(cluster.master_of(keys.TOKENS)))
    deadline = time.monotonic() + 20
    while requests.get(coordinator.url + "/readyz", timeout=10).status_code != 503:
        assert time.monotonic() < deadline, "readyz stayed ok with a replica missing"
        time.sleep(0.2)
    result = CliRunner().invoke(main, ["doctor"], env=env)
    assert "✗ replicas connected: 0 in sync of 0 connected," in result.output, result.output
    for attempt in (
        lambda: requests.post(coordinator.url + "/v1/tokens", headers=admin, timeout=10,
                              json={"role": "auditor", "label": "after"}),
        lambda: requests.delete(coordinator.url + f"/v1/tokens/{created.json()['id']}",
                                headers=admin, timeout=10),
    ):
        response = attempt()
        assert response.status_code == 503, response.json()
