"""kill -9 of the coordinator between an allocation's response and the seal of its event.

The number is acknowledged, its ``issued`` event is in Redis (same script), its SHA-256 is not
appended yet. The coordinator dies there (a real gunicorn, master and worker, SIGKILLed while
tests/faults/hold_seal.py parks the worker's sealer thread in that window). After a restart
the chain is sealed by the next verify, and holds every event once: none lost, none doubled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis
import requests

from coordinator import keys
from tests.faults.conftest import register_agent_token
from tests.faults.processes import GunicornCoordinator
from tests.faults.scenario import DATE, register_admin

pytestmark = pytest.mark.faults

EVENTS, CHAIN = keys.seq_events("invoice"), keys.seq_chain("invoice")
VERIFY = "/v1/series/default/sequences/invoice/ledger/verify"


class HoldingCoordinator(GunicornCoordinator):
    """The gunicorn coordinator with tests.faults.hold_seal's sealer hook."""

    def __init__(self, log_dir: Path, settings: dict, hold_dir: Path) -> None:
        super().__init__(log_dir, settings, workers=1, threads=2)
        self.hold_dir = hold_dir

    def _env(self) -> dict[str, str]:
        return {**super()._env(), "HOLD_SEAL_DIR": str(self.hold_dir),
                "GUNICORN_CMD_ARGS": "--config python:tests.faults.hold_seal"}


def _wait(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _take(url: str, token: str, reference: str) -> requests.Response:
    return requests.post(url + "/v1/allocations", timeout=30,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"document": "invoice", "reference": reference, "date": DATE})


def test_kill_9_between_the_response_and_the_seal_loses_and_doubles_nothing(
        tmp_path, own_valkey):
    client = redis.Redis.from_url(own_valkey.url, decode_responses=True)
    token = register_agent_token(client, "blue")
    admin = {"Authorization": f"Bearer {register_admin(client)}"}
    settings = {"REDIS_URL": own_valkey.url, "RATE_LIMIT_AGENT": 0, "RATE_LIMIT_ADMIN": 0}
    hold = tmp_path / "hold"
    hold.mkdir()
    coordinator = HoldingCoordinator(tmp_path / "first", settings, hold).start()
    try:
        for reference in ("r-1", "r-2"):
            assert _take(coordinator.url, token, reference).status_code == 201
        _wait(lambda: client.llen(CHAIN) == 2, "the first two events to be sealed")

        (hold / "hold").touch()
        taken = _take(coordinator.url, token, "r-3")
        assert taken.status_code == 201  # acknowledged: the agent has the number
        _wait((hold / "held").exists, "the sealer to park between response and seal")
        # In the window: the event is there, its hash is not.
        assert (client.llen(EVENTS), client.llen(CHAIN)) == (3, 2)
        os.killpg(coordinator.process.pid, signal.SIGKILL)
        coordinator.process.wait(30)
    finally:
        coordinator.stop()
    assert (client.llen(EVENTS), client.llen(CHAIN)) == (3, 2)  # nobody sealed it

    (hold / "hold").unlink()
    with GunicornCoordinator(tmp_path / "second", settings, workers=1, threads=2) as restarted:
        verified = requests.get(restarted.url + VERIFY, headers=admin, timeout=30).json()
        assert verified == {**verified, "ok": True, "events": 3, "unchained_numbers": 0}
        assert client.llen(CHAIN) == 3
        # The retry answers the same number, and adds no event.
        replay = _take(restarted.url, token, "r-3")
        assert (replay.status_code, replay.json()) == (200, taken.json())
        assert _take(restarted.url, token, "r-4").status_code == 201
        _wait(lambda: client.llen(CHAIN) == 4, "the new event to be sealed")
        again = requests.get(restarted.url + VERIFY, headers=admin, timeout=30).json()
        assert again["ok"] is True and again["events"] == 4
    events = [json.loads(raw) for raw in client.lrange(EVENTS, 0, -1)]
    assert [(e["type"], e["reference"], e["number"]) for e in events] == [
        ("issued", f"r-{n}", str(n)) for n in range(1, 5)]
