"""The fault harness does what it says: gunicorn workers die and come back, the proxy misbehaves."""

from __future__ import annotations

import random
import time

import pytest
import requests

from tests.faults.chaos import Action, ChaosProxy

pytestmark = pytest.mark.faults


@pytest.fixture
def coordinator(gunicorn, own_valkey):
    return gunicorn({"REDIS_URL": own_valkey.url}, workers=2, threads=2)


def test_killed_workers_are_replaced(coordinator):
    before = set(coordinator.worker_pids())
    killed = coordinator.kill_random_worker(random.Random(1))
    assert killed in before
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = set(coordinator.worker_pids())
        if killed not in now and len(now) == 2:
            break
        time.sleep(0.1)
    assert killed not in coordinator.worker_pids()
    assert requests.get(coordinator.url + "/livez", timeout=5).status_code == 200


def test_proxy_actions(coordinator):
    expected = {"pass": True, "delay": True, "refuse": False, "cut_request": False,
                "cut_response": False, "blackhole": False}
    for kind, reaches in expected.items():
        action = Action(kind, delay=0.05, keep_bytes=10)
        with ChaosProxy(("127.0.0.1", coordinator.port), lambda a=action: a,
                        hold_limit=3) as proxy:
            try:
                response = requests.get(proxy.url + "/livez", timeout=1.0,
                                        headers={"Connection": "close"})
                got = response.status_code == 200
            except requests.RequestException:
                got = False
        assert got is reaches, kind
        assert proxy.stats[kind] == 1
