"""Invariants 1-3 while gunicorn workers are SIGKILLed at random under concurrent agents.

Agents run as threads *and* as separate processes, across several systems, each retrying the
same reference until it is acknowledged. A killer thread SIGKILLs a random worker at intervals;
requests in flight die with it. Afterwards the ledger must account for every number.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from tests.faults.history import History
from tests.faults.load import (
    agent_run,
    collect_processes,
    percentile,
    run_threads,
    spawn_agent_process,
)
from tests.faults.scenario import SYSTEMS, agent_tokens, register_admin, verify

pytestmark = pytest.mark.faults


def _run(tmp_path, gunicorn, own_valkey, *, seconds, per_agent, threads, procs, kill_every):
    client = redis.Redis.from_url(own_valkey.url, decode_responses=True)
    tokens = agent_tokens(client)
    admin = register_admin(client)
    coordinator = gunicorn({"REDIS_URL": own_valkey.url}, workers=3, threads=4)
    rng = random.Random(20261121)
    stop = threading.Event()

    def killer():
        while not stop.wait(rng.uniform(*kill_every)):
            coordinator.kill_random_worker(rng)

    history = History()
    started = time.monotonic()
    kill_thread = threading.Thread(target=killer, daemon=True)
    kill_thread.start()
    children = []
    for i in range(procs):
        system = SYSTEMS[i % len(SYSTEMS)]
        out = tmp_path / f"agent-proc{i}.jsonl"
        children.append((spawn_agent_process(coordinator.url, tokens[system], system,
                                             f"p{i}", per_agent, seconds, out), out))
    run_threads(
        (lambda i=i: agent_run(coordinator.url, tokens[SYSTEMS[i % 3]], SYSTEMS[i % 3], f"t{i}",
                               per_agent, seconds, history,
                               documents=("invoice", "credit_note")))
        for i in range(threads)
    )
    collect_processes(children, history, timeout=seconds + 30)
    stop.set()
    kill_thread.join()
    elapsed = time.monotonic() - started
    verdict = verify(coordinator.url, admin, history, "gunicorn workers SIGKILLed")
    lat = history.latencies()
    print(f"  {len(coordinator.killed)} workers killed in {elapsed:.1f}s; "
          f"{verdict.counts['acks'] / elapsed:.0f} acks/s; "
          f"p50 {percentile(lat, .5) * 1000:.0f} ms, p99 {percentile(lat, .99) * 1000:.0f} ms")
    assert verdict.ok, verdict.line()
    assert coordinator.killed, "the scenario must actually kill workers"
    assert verdict.counts["acks"] >= verdict.counts["acked_refs"] > 0
    # every reference was retried to the end: none may be left without its number
    assert verdict.counts["acked_refs"] == verdict.counts["references"]


def test_worker_kills_short(tmp_path, gunicorn, own_valkey):
    _run(tmp_path, gunicorn, own_valkey, seconds=5, per_agent=100000, threads=4, procs=2,
         kill_every=(0.4, 0.9))


@pytest.mark.slow
def test_worker_kills_long(tmp_path, gunicorn, own_valkey):
    _run(tmp_path, gunicorn, own_valkey, seconds=60, per_agent=100000, threads=8, procs=4,
         kill_every=(0.2, 1.0))
