"""The real coordinator over real HTTP, with fake WHMCS installations registered in it.

Used through the ``live_coordinator`` fixture (tests/conftest.py)::

    def test_something(live_coordinator):
        blue = live_coordinator.register("blue", currency="EUR")
        blue.whmcs.add_invoice(status="Paid", subtotal="10.00")
        config = blue.agent_config(tmp_path / "journal.sqlite3")
        ...
        live_coordinator.ledger("invoice")   # the admin's view of the numbers

The app is the one ``create_app`` builds, served by a threaded werkzeug server on a free
loopback port, on the test session's Valkey; systems are registered through
``POST /v1/systems`` (with a Fernet key configured), so their agent tokens are real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from agent import Config
from coordinator.demo.fake_whmcs import FakeWhmcs, FakeWhmcsServer, serve_fake_whmcs


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclasses.dataclass
class LiveSystem:
    """One registered system: its agent token and its fake WHMCS, served over HTTP."""

    name: str
    token: str
    whmcs: FakeWhmcs
    whmcs_server: FakeWhmcsServer
    identifier: str
    secret: str
    coordinator_url: str

    @property
    def whmcs_url(self) -> str:
        return self.whmcs_server.url

    def agent_env(self, journal: Path, number_on: str = "paid") -> dict[str, str]:
        """Return the ``INVOICE_SYNC_AGENT_*`` variables of this system's agent."""
        return {
            "INVOICE_SYNC_AGENT_URL": self.coordinator_url,
            "INVOICE_SYNC_AGENT_TOKEN": self.token,
            "INVOICE_SYNC_AGENT_WHMCS_URL": self.whmcs_url,
            "INVOICE_SYNC_AGENT_WHMCS_IDENTIFIER": self.identifier,
            "INVOICE_SYNC_AGENT_WHMCS_SECRET": self.secret,
            "INVOICE_SYNC_AGENT_NUMBER_ON": number_on,
            "INVOICE_SYNC_AGENT_JOURNAL": str(journal),
        }

    def agent_config(self, journal: Path, number_on: str = "paid") -> Config:
        """Return this system's agent configuration."""
        return Config(url=self.coordinator_url, token=self.token, whmcs_url=self.whmcs_url,
                      whmcs_identifier=self.identifier, whmcs_secret=self.secret,
                      number_on=number_on, journal=journal)

    def invoicenums(self) -> dict[int, str]:
        """Return ``{invoice id: invoicenum}`` as this WHMCS holds them now."""
        return {int(r["id"]): r["invoicenum"] for r in self.whmcs.invoices_snapshot()}


class LiveCoordinator:
    """A running coordinator: ``url``, admin ``headers``, and helpers to register systems."""

    def __init__(self, app: Any, admin_token: str) -> None:
        self.app = app
        self.admin_token = admin_token
        self.headers = {"Authorization": f"Bearer {admin_token}"}
        self._stack = contextlib.ExitStack()
        self._server: BaseWSGIServer | None = None
        self.url = ""

    def start(self) -> LiveCoordinator:
        server = make_server("127.0.0.1", 0, self.app, threaded=True,
                             request_handler=_QuietHandler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="live-coordinator", daemon=True)
        thread.start()
        self._server = server
        self._thread = thread
        self.url = f"http://127.0.0.1:{server.server_port}"
        return self

    def stop(self) -> None:
        """Stop serving HTTP (the port then refuses connections); the fakes keep running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def close(self) -> None:
        self.stop()
        self._stack.close()

    # -- admin helpers ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an admin request to the coordinator."""
        return requests.request(method, self.url + path, headers=self.headers, timeout=30,
                                **kwargs)

    def register(
        self, name: str, *, currency: str = "EUR", exchange_rate: str = "1.0000",
        whmcs: FakeWhmcs | None = None,
    ) -> LiveSystem:
        """Serve a fake WHMCS for ``name`` and register it (``POST /v1/systems``).

        ``currency`` is the currency of the clients the returned fake's ``add_client`` is
        expected to use; it is recorded in the description only.
        """
        identifier = f"ident-{name}"
        secret = secrets.token_urlsafe(24)
        fake = whmcs or FakeWhmcs(identifier, secret)
        fake.identifier, fake.secret = identifier, secret
        server = self._stack.enter_context(serve_fake_whmcs(fake))
        response = self.request("POST", "/v1/systems", json={
            "name": name, "description": f"{name} ({currency})", "url": server.url,
            "api_identifier": identifier, "api_secret": secret, "step": 100,
            "auto_sync": False, "exchange_rate": exchange_rate,
        })
        assert response.status_code == 201, response.text
        return LiveSystem(name, response.json()["agent_token"], fake, server, identifier,
                          secret, self.url)

    def ledger(self, sequence: str = "invoice", period: str | None = None) -> list[dict]:
        """Return every ledger entry of ``sequence`` in ``period`` (this year by default)."""
        period = period or str(dt.date.today().year)
        entries: list[dict] = []
        after = 0
        while True:
            response = self.request("GET", f"/v1/sequences/{sequence}/ledger",
                                    params={"period": period, "after": after, "limit": 1000})
            assert response.status_code == 200, response.text
            page = response.json()
            entries.extend(page["entries"])
            if page["next_after"] is None:
                return entries
            after = page["next_after"]


@contextlib.contextmanager
def live_coordinator(app: Any, admin_token: str) -> Iterator[LiveCoordinator]:
    """Run ``app`` over HTTP on a free loopback port until the block ends."""
    live = LiveCoordinator(app, admin_token).start()
    try:
        yield live
    finally:
        live.close()
