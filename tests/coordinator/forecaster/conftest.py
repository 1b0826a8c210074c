"""Fixtures of the forecaster tests: a fake WHMCS over loopback HTTP, registered systems, and a
real RQ worker (SimpleWorker, burst) on the session's Valkey."""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal

import pytest
import redis
from cryptography.fernet import Fernet
from rq import SimpleWorker

from coordinator.config import load_settings
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs
from coordinator.forecaster import defaults
from coordinator.forecaster.connections import with_decoding
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy

IDENT, SECRET = "ident-0123456789", "secret-abcdefghijkl"


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def settings(monkeypatch, valkey, secret_key) -> dict:
    """The workers' environment: our Valkey, a secret key, loopback http URLs allowed."""
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", secret_key)
    monkeypatch.setenv("INVOICE_SYNC_ALLOW_HTTP_SYSTEM_URLS", "true")
    monkeypatch.setenv("INVOICE_SYNC_ALLOW_PRIVATE_SYSTEM_URLS", "true")
    return load_settings()


@pytest.fixture
def app_config(app_config, secret_key):
    return {**app_config, "SECRET_KEYS": secret_key}


@pytest.fixture
def fake():
    """A served fake WHMCS; ``fake.app`` is the FakeWhmcs, ``fake.url`` its api.php."""
    app = FakeWhmcs(IDENT, SECRET)
    with serve_fake_whmcs(app) as server:
        yield server


@pytest.fixture
def register(redis_client, settings):
    """Register a system pointing at a fake: ``register("blue", fake, exchange_rate="1.1")``."""

    def _register(name, server, **fields):
        values = {"name": name, "url": server.url, "api_identifier": IDENT,
                  "api_secret": SECRET, "step": 100, "auto_sync": True, **fields}
        return registry.create_system(redis_client, secrets.fernet_from_config(settings),
                                      values, UrlPolicy.from_config(settings))[0]

    return _register


@pytest.fixture
def work(redis_client, settings):
    """Run the queued jobs with a real RQ worker until the queue is empty."""

    def _work():
        worker = SimpleWorker([defaults.QUEUE_NAME],
                              connection=with_decoding(redis_client, False))
        worker.work(burst=True)

    return _work


def expected_aggregates(snapshot) -> dict:
    """Sum the fake's own invoices per (month, status, currency), independently of the store."""
    sums: dict = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0)])
    for inv in snapshot:
        cell = sums[(inv["date"][:7], inv["status"], inv["currencycode"])]
        cell[0] += 1
        cell[1] += Decimal(inv["subtotal"])
        cell[2] += Decimal(inv["tax"]) + Decimal(inv["tax2"])
        cell[3] += Decimal(inv["total"])
    return {k: tuple(v) for k, v in sums.items()}


def stored_aggregates(client: redis.Redis, system: str) -> dict:
    from coordinator.forecaster import money, store

    return {
        (c.month, c.status, c.currency): (
            c.n, *(money.from_minor(v, c.currency) for v in (c.net, c.tax, c.gross))
        )
        for c in store.read_aggregates(client, system)
    }


def wait_for(condition, what: str, limit: float = 30.0) -> None:
    """Wait until ``condition()`` holds (a state to reach, not a duration to assert)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)
