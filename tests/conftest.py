"""Shared fixtures: a real Valkey server on a free loopback port, the app, admin credentials.

Two servers: the bundled Valkey (or ``INVOICE_SYNC_REDIS_SERVER``, which then runs everything)
and a second one, Debian's ``redis-server`` 7.0 by default (``--redis-server PATH`` or
``INVOICE_SYNC_TEST_REDIS_SERVER``). Tests marked ``both_servers``, and tests that take the
``server_binary`` fixture, run on both; the others on the first. A missing second server is a
skip, or a failure under ``INVOICE_SYNC_REQUIRE_TOOLS=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
from functools import cache

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.numbering.api import SEALER
from coordinator.ops.embedded import ValkeyServer
from coordinator.ops.embedded import server_binary as default_server_binary
from tests.support import initialise_numbering

# Property tests check what holds, never how fast: on CI's two loaded cores a generated example
# may take longer than hypothesis's 200 ms deadline or trip its "too slow" health check, which
# would fail a correct test. Tests that set their own settings keep them.
settings.register_profile("invoice-sync", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("invoice-sync")

SERVERS = ("valkey", "redis")
"""Ids of the two servers the parametrized tests run on (see the module docstring)."""


@pytest.fixture(autouse=True)
def _environment_is_restored():
    """Give every test the environment it started with back afterwards.

    ``serve`` publishes the key files' keys in ``os.environ`` for its workers; a test that runs
    it in-process would otherwise hand those keys to every later test (that once made a
    dashboard test see a signing key it never configured)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run the long-form (slow) scenarios")
    parser.addoption(
        "--redis-server", default=os.environ.get("INVOICE_SYNC_TEST_REDIS_SERVER"),
        help="second server binary for the both_servers tests (default: redis-server on PATH; "
             "env INVOICE_SYNC_TEST_REDIS_SERVER)")


@cache
def _second_server(option: str | None) -> str | None:
    return option or shutil.which("redis-server")


def resolve_server(config: pytest.Config, which: str) -> str:
    """The binary of server ``which`` (``valkey`` or ``redis``); fail or skip when missing."""
    if which == "valkey":
        return default_server_binary()
    binary = _second_server(config.getoption("--redis-server"))
    if binary and os.access(binary, os.X_OK):
        return binary
    message = (f"second server {binary or 'redis-server'} not found: install Debian's "
               "redis-server or pass --redis-server PATH")
    if os.environ.get("INVOICE_SYNC_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both = metafunc.definition.get_closest_marker("both_servers") is not None
    if "server_binary" in metafunc.fixturenames:
        metafunc.parametrize("server_binary", SERVERS, indirect=True)
    elif both and "valkey" in metafunc.fixturenames:
        # Session scope: pytest groups the tests by server, so each starts about once.
        metafunc.parametrize("valkey", SERVERS, indirect=True, scope="session")


@pytest.fixture
def second_server_binary(request: pytest.FixtureRequest) -> str:
    """The second server's binary (Debian's redis-server 7.0 by default)."""
    return resolve_server(request.config, "redis")


@pytest.fixture
def server_binary(request: pytest.FixtureRequest) -> str:
    """The path of the server this test runs on (parametrized over both servers)."""
    return resolve_server(request.config, request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long-form run: pass --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def valkey(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> ValkeyServer:
    """One real Redis-compatible server (AOF, appendfsync always) for the whole session.

    The bundled Valkey; for ``both_servers`` tests also the second server (see above).
    """
    binary = resolve_server(request.config, getattr(request, "param", "valkey"))
    server = ValkeyServer(tmp_path_factory.mktemp("valkey"), binary=binary).start()
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


class SealedClient(FlaskClient):
    """Flask's test client, waiting after each request until the app's ledger sealer thread
    has sealed what the request appended (it seals beside the response, see
    ``coordinator.numbering.chain.Sealer``), so a test reads Redis in that settled state.
    The sealer's own tests, and the gunicorn ones, see it run concurrently."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        sealer = self.application.extensions.get(SEALER)
        assert sealer is None or sealer.drain(30), "the sealer thread did not finish in 30 s"
        return response


@pytest.fixture
def app(app_config: dict, redis_client: redis.Redis):
    """The coordinator app on the session server (its test client: :class:`SealedClient`)."""
    made = create_app(app_config)
    made.test_client_class = SealedClient
    return made


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

