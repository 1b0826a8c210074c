"""Invariants 1-2 across a Redis crash: SIGKILL mid-load, restart from the AOF.

With ``appendfsync always`` (and WAITAOF before the answer) every acknowledged number is on disk
before the agent hears of it, so after the restart no acknowledged number is issued again and
the retry of an acknowledged reference returns the same number.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.faults.history import History
from tests.faults.load import agent_run, allocate_until_acked, run_threads
from tests.faults.scenario import DATE, SYSTEMS, agent_tokens, register_admin, verify

pytestmark = pytest.mark.faults


def _run(gunicorn, own_valkey, *, seconds, per_agent, agents, crashes, down_for):
    client = redis.Redis.from_url(own_valkey.url, decode_responses=True)
    tokens = agent_tokens(client)
    admin = register_admin(client)
    coordinator = gunicorn({"REDIS_URL": own_valkey.url, "REDIS_SOCKET_TIMEOUT": 1},
                           workers=2, threads=4)
    history = History()
    crash_log = []

    def crasher():
        for _ in range(crashes):
            time.sleep(seconds / (crashes + 1))
            acked_before = len(history.acknowledged)
            own_valkey.kill()
            time.sleep(down_for)
            own_valkey.start()
            crash_log.append(acked_before)

    thread = threading.Thread(target=crasher)
    thread.start()
    run_threads(
        (lambda i=i: agent_run(coordinator.url, tokens[SYSTEMS[i % 3]], SYSTEMS[i % 3], f"a{i}",
                               per_agent, seconds, history))
        for i in range(agents)
    )
    thread.join()
    # The agent's retry after the restart: every acknowledged reference asked again.
    deadline = time.monotonic() + 30
    told = list({a.ref: a for a in history.acknowledged}.values())
    replays = [r for part in run_threads(
        (lambda part=told[k::agents]: [
            allocate_until_acked(coordinator.url, tokens[a.system], history, a.system,
                                 a.document, a.reference, DATE, deadline) for a in part])
        for k in range(agents)) for r in part]
    assert all(r is not None and r.status == 200 for r in replays), "replays must be 200"
    verdict = verify(coordinator.url, admin, history, "Redis SIGKILLed and restarted from AOF")
    print(f"  crashes after {crash_log} acknowledgements; down {down_for}s each; "
          f"{len(replays)} replays after restart")
    assert len(crash_log) == crashes and crash_log[0] > 0, "the crash must hit mid-load"
    assert verdict.ok, verdict.line()
    assert verdict.counts["acked_refs"] == verdict.counts["references"]
    statuses = history.status_counts()
    assert statuses[503] + statuses["no-answer"] > 0, "the agents must have felt the crash"


def test_redis_restart_short(gunicorn, server_binary, own_valkey):
    _run(gunicorn, own_valkey, seconds=4, per_agent=100000, agents=4, crashes=1, down_for=0.5)


@pytest.mark.slow
def test_redis_restart_long(gunicorn, own_valkey):
    _run(gunicorn, own_valkey, seconds=60, per_agent=100000, agents=8, crashes=5, down_for=2)
