"""Invariant 2 through a hostile network: delays, resets, requests and answers cut mid-way.

Agents talk to gunicorn through the chaos proxy and retry the same reference until it is
acknowledged. A cut answer means the coordinator issued a number the agent never heard of; the
retry must get that same number back (200), so retries never burn a number: each reference has
exactly one number and the ledger has no gap.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.faults.chaos import ChaosProxy, weighted_policy
from tests.faults.history import History
from tests.faults.load import agent_run, run_threads
from tests.faults.scenario import SYSTEMS, agent_tokens, register_admin, verify

pytestmark = pytest.mark.faults

WEIGHTS = {"pass": 4, "delay": 2, "refuse": 1, "cut_request": 1, "cut_response": 2,
           "blackhole": 0.3}


def _run(gunicorn, own_valkey, *, seconds, per_agent, agents, seed):
    client = redis.Redis.from_url(own_valkey.url, decode_responses=True)
    tokens = agent_tokens(client)
    admin = register_admin(client)
    coordinator = gunicorn({"REDIS_URL": own_valkey.url}, workers=2, threads=4)
    history = History()
    with ChaosProxy(("127.0.0.1", coordinator.port), weighted_policy(seed, WEIGHTS),
                    hold_limit=1) as proxy:
        started = time.monotonic()
        run_threads(
            (lambda i=i: agent_run(proxy.url, tokens[SYSTEMS[i % 3]], SYSTEMS[i % 3], f"n{i}",
                                   per_agent, seconds, history,
                                   documents=("invoice", "credit_note")))
            for i in range(agents)
        )
        elapsed = time.monotonic() - started
    verdict = verify(coordinator.url, admin, history, "chaos proxy between agents and coordinator")
    print(f"  proxy actions: {dict(proxy.stats)} in {elapsed:.1f}s")
    assert verdict.ok, verdict.line()
    assert proxy.stats["cut_response"] > 0 and verdict.counts["replays"] > 0, \
        "answers must have been lost and the lost numbers replayed"
    assert verdict.counts["acked_refs"] == verdict.counts["references"]
    assert verdict.counts["issued_unacked"] == 0 and verdict.counts["gaps"] == 0


def test_network_chaos_short(gunicorn, own_valkey):
    _run(gunicorn, own_valkey, seconds=4, per_agent=100000, agents=6, seed=11)


@pytest.mark.slow
def test_network_chaos_long(gunicorn, own_valkey):
    _run(gunicorn, own_valkey, seconds=60, per_agent=100000, agents=12, seed=12)
