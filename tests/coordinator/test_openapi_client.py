"""The main flows through a client generated from the served /openapi.json (openapi-python-client).

What an admin does who generates a client instead of reading prose: register a system, let its
agent allocate and confirm, read the ledger, sync and read the revenue report. Every answer must
parse into the typed model the document promises (a wrong or missing schema shows up here as
``None``, a dict, or a parse error).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from rq import SimpleWorker

from coordinator.app import create_app
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs
from coordinator.forecaster import defaults as forecaster_defaults
from coordinator.forecaster import reports
from coordinator.forecaster.connections import with_decoding
from coordinator.systems import registry
from tests.live import live_coordinator

pytestmark = pytest.mark.integration

PACKAGE = "invoice_sync_client"
TODAY = dt.date(2026, 11, 21)


def _generate(url: str, where: Path):
    """Generate the client package from the served document into ``where``; import it."""
    document = requests.get(f"{url}/openapi.json", timeout=30).json()
    spec = where / "openapi.json"
    spec.write_text(json.dumps(document))
    bin_dir = Path(sys.executable).parent
    # Its post-generation hooks run ruff: the one installed beside it, even without an
    # activated virtualenv.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    # The ledger export is JSON lines, one record per line: to a client, text to split.
    config = where / "config.json"
    config.write_text(json.dumps({"content_type_overrides": {
        "application/x-ndjson": "text/plain"}}))
    result = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", str(spec),
         "--meta", "none", "--output-path", str(where / PACKAGE), "--config", str(config)],
        capture_output=True, text=True, timeout=300, cwd=where, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


@pytest.fixture
def generated(tmp_path, app_config, redis_client, admin_token, monkeypatch):
    key = Fernet.generate_key().decode()
    # The sync worker reads its settings from the environment, like a real RQ worker.
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", app_config["REDIS_URL"])
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", key)
    monkeypatch.setenv("INVOICE_SYNC_ALLOW_HTTP_SYSTEM_URLS", "true")
    monkeypatch.setenv("INVOICE_SYNC_ALLOW_PRIVATE_SYSTEM_URLS", "true")
    app = create_app({**app_config, "TESTING": False, "SECRET_KEYS": key,
                      "FORECASTER_TODAY": TODAY})
    with live_coordinator(app, admin_token) as live:
        package = _generate(live.url, tmp_path)
        yield live, package
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def _module(package, path: str):
    return importlib.import_module(f"{package.__name__}.{path}")


def test_main_flows_through_a_generated_client(generated, redis_client, admin_token):
    live, package = generated
    models = _module(package, "models")
    admin = package.AuthenticatedClient(base_url=live.url, token=admin_token)

    # Register a system: the answer is typed and carries the agent token.
    whmcs = FakeWhmcs("ident-blue", "secret-blue-0123456789")
    whmcs.seed(40, seed=5)
    with serve_fake_whmcs(whmcs) as served:
        created = _module(package, "api.systems.post_v1_systems").sync(
            client=admin, body=models.SystemCreate(
                name="blue", url=served.url, api_identifier="ident-blue",
                api_secret="secret-blue-0123456789", exchange_rate="1.1", auto_sync=False))
        assert isinstance(created, models.SystemWithToken), created
        assert created.name == "blue" and created.has_api_secret is True
        assert created.agent_token.startswith("isg_")

        # The agent takes a number (201), replays it (200), confirms it.
        agent = package.AuthenticatedClient(base_url=live.url, token=created.agent_token)
        allocate = _module(package, "api.numbering.post_v1_allocations")
        request = models.AllocationRequest(
            document=models.AllocationRequestDocument.INVOICE, reference="10234",
            date=dt.date(2026, 11, 21))
        first = allocate.sync_detailed(client=agent, body=request)
        assert first.status_code == 201 and isinstance(first.parsed, models.Allocation)
        taken = first.parsed
        assert (taken.number, taken.system, taken.period, taken.status) == (
            1, "blue", "2026", "issued")
        replay = allocate.sync_detailed(client=agent, body=request)
        assert replay.status_code == 200 and replay.parsed.id == taken.id
        confirm = _module(package, "api.numbering.post_v1_allocations_allocation_id_confirm")
        confirmed = confirm.sync(allocation_id=taken.id, client=agent,
                                 body=models.Confirm(invoicenum=taken.formatted))
        assert isinstance(confirmed, models.Allocation) and confirmed.status == "confirmed"

        # The admin reads the ledger: typed page of typed entries.
        page = _module(package, "api.numbering.get_v1_sequences_name_ledger").sync(
            name="invoice", client=admin, period="2026")
        assert isinstance(page, models.LedgerPage)
        assert [(e.id, e.status) for e in page.entries] == [(taken.id, "confirmed")]
        assert page.next_after is None

        # Sync the WHMCS (a real RQ worker), then the revenue report, typed to the cent.
        sync = _module(package, "api.forecaster.post_v1_systems_name_syncs").sync(
            name="blue", client=admin, body=models.SyncRequest(
                mode=models.SyncRequestMode.FULL))
        assert isinstance(sync, models.Sync) and sync.state == "queued"
        SimpleWorker([forecaster_defaults.QUEUE_NAME],
                     connection=with_decoding(redis_client, False)).work(burst=True)
    revenue = _module(package, "api.forecaster.get_v1_reports_revenue").sync(
        client=admin, from_="2024-01", to="2026-12",
        by=models.GetV1ReportsRevenueBy.SYSTEM)
    assert isinstance(revenue, models.Revenue)
    expected = reports.revenue(redis_client,
                               reports.rates_of(registry.list_systems(redis_client)), "EUR",
                               "2024-01", "2026-12", "system", today=TODAY)
    assert revenue.total.invoices == expected["total"]["invoices"] > 0
    assert revenue.total.gross == expected["total"]["gross"]
    assert [(r.key, r.net, r.tax) for r in revenue.rows] == [
        (r["key"], r["net"], r["tax"]) for r in expected["rows"]]
    assert revenue.from_ == "2024-01" and revenue.currency == "EUR"

    # Errors parse as the one Error model, with errors {} when there are none.
    missing = _module(package, "api.systems.get_v1_systems_name").sync(name="nope", client=admin)
    assert isinstance(missing, models.Error)
    assert (missing.code, missing.status) == (404, "Not Found")
    assert missing.errors.to_dict() == {}
    refused = _module(package, "api.systems.get_v1_systems").sync(client=agent)
    assert isinstance(refused, models.Error) and refused.code == 403

    # Health, no token: typed too.
    public = package.Client(base_url=live.url)
    assert _module(package, "api.health.get_livez").sync(client=public).status == "ok"
    ready = _module(package, "api.health.get_readyz").sync(client=public)
    assert isinstance(ready, models.Readiness) and ready.status == "ok"
