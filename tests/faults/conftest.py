"""Fixtures of the fault scenarios: private servers a test may kill, gunicorn, agents' tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import requests

from coordinator import auth, keys
from coordinator.ops.embedded import ValkeyServer
from tests.faults.processes import GunicornCoordinator
from tests.support import initialise_numbering


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def own_valkey(request: pytest.FixtureRequest, tmp_path: Path) -> ValkeyServer:
    """A Valkey of this test alone (AOF, appendfsync always): it may be SIGKILLed.

    A test that also takes ``server_binary`` gets that server instead (both in turn).
    """
    binary = (request.getfixturevalue("server_binary")
              if "server_binary" in request.fixturenames else None)
    server = ValkeyServer(tmp_path / "valkey", binary=binary).start()
    yield server
    server.kill()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Callable[..., GunicornCoordinator]:
    """Factory: ``gunicorn(settings, workers=3)`` starts a coordinator, stopped at teardown."""
    started: list[GunicornCoordinator] = []

    def start(settings: dict, **options) -> GunicornCoordinator:
        # Rate limits are evidence of their own (tests/security); here they would only turn
        # a long fault run into a wait for Retry-After.
        settings = {"RATE_LIMIT_AGENT": 0, "RATE_LIMIT_ADMIN": 0, **settings}
        coordinator = GunicornCoordinator(tmp_path / f"gunicorn{len(started)}", settings,
                                          **options)
        started.append(coordinator)
        return coordinator.start()

    yield start
    for coordinator in started:
        coordinator.stop()


def register_agent_token(client: redis.Redis, system: str) -> str:
    """Create an agent token of ``system`` directly in Redis and return it."""
    token = auth.new_token(auth.AGENT)
    client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(system))
    initialise_numbering(client)  # a store of the tests, as serve's first start does
    return token


def register_admin(client: redis.Redis) -> str:
    """Create an admin token directly in Redis and return it."""
    token = auth.new_token(auth.ADMIN)
    auth.register_admin_token(client, token)
    return token


def http_fetch(base_url: str, token: str) -> Callable[[str], tuple[int, object]]:
    """An admin GET for ``tests.faults.history.read_ledger`` over real HTTP."""

    def fetch(path: str) -> tuple[int, object]:
        response = requests.get(base_url + path, timeout=10,
                                headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.json()

    return fetch
