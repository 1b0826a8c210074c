"""Shared fixtures: a real Valkey server on a free loopback port, the app, admin credentials."""

from __future__ import annotations

import pytest
import redis

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.ops.embedded import ValkeyServer
from tests.support import initialise_numbering


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run the long-form (slow) scenarios")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long-form run: pass --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> ValkeyServer:
    """One real Redis-compatible server (AOF, appendfsync always) for the whole session."""
    server = ValkeyServer(tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(valkey: ValkeyServer) -> redis.Redis:
    """A client of the session server, emptied before each test.

    Its numbering is initialised, as the first ``serve`` on a new data dir does (an empty
    store refuses to number otherwise: tests of that flush it again).
    """
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    client.flushall()
    initialise_numbering(client)
    yield client
    client.close()


@pytest.fixture
def app_config(valkey: ValkeyServer) -> dict:
    """Config overrides for ``create_app``; tests may extend it before ``app`` is built."""
    return {"TESTING": True, "REDIS_URL": valkey.url, "ALLOW_HTTP_SYSTEM_URLS": True,
            "ALLOW_PRIVATE_SYSTEM_URLS": True}


@pytest.fixture
def app(app_config: dict, redis_client: redis.Redis):
    """The coordinator app on the session server."""
    return create_app(app_config)


@pytest.fixture
def client(app):
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def admin_token(redis_client: redis.Redis) -> str:
    """A registered admin token."""
    token = auth.new_token(auth.ADMIN)
    auth.register_admin_token(redis_client, token)
    return token


@pytest.fixture
def admin(admin_token: str) -> dict:
    """Headers of an admin request."""
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def agent(redis_client: redis.Redis):
    """Factory: ``agent("blue")`` registers an agent token of system blue, returns its headers.

    Stores the token the way the systems registry does (hash -> agent record in TOKENS).
    """

    def make(system: str) -> dict:
        token = auth.new_token(auth.AGENT)
        redis_client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(system))
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def live_coordinator(app_config: dict, redis_client: redis.Redis, admin_token: str):
    """The real coordinator served over HTTP on loopback (see tests/live.py).

    ``live_coordinator.register("blue")`` serves a fake WHMCS and registers it through
    ``POST /v1/systems``, returning its real agent token. SECRET_KEYS gets a fresh Fernet key.
    """
    from cryptography.fernet import Fernet

    from tests.live import live_coordinator as serve_live

    config = {**app_config, "TESTING": False, "SECRET_KEYS": Fernet.generate_key().decode()}
    with serve_live(create_app(config), admin_token) as live:
        yield live

