"""Reports and reconciliation per series (legal entity)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coordinator import keys
from coordinator.forecaster import reconcile, reports, store
from coordinator.forecaster.reports import SystemRate
from tests.coordinator.forecaster.test_reports import invoice

pytestmark = pytest.mark.integration


def test_revenue_by_series_converts_each_system_then_sums_per_series(redis_client):
    store.upsert(redis_client, "blue", [invoice(1, "10.00")])
    store.upsert(redis_client, "red", [invoice(1, "0.05", currency="USD")])
    store.upsert(redis_client, "orange", [invoice(1, "3.00", currency="GBP")])
    rates = [SystemRate("orange", Decimal("1.2"), "acme"), SystemRate("red", Decimal("1.1")),
             SystemRate("blue", Decimal("1"))]
    out = reports.revenue(redis_client, rates, "EUR", "2026-03", "2026-03", "series")
    assert out["by"] == "series"
    assert out["rows"] == [
        # 10.00 + 0.055 = 10.055 exactly, rounded once (half even) to 10.06
        {"key": "default", "invoices": 2, "net": "10.06", "tax": "0.00", "gross": "10.06"},
        {"key": "acme", "invoices": 1, "net": "3.60", "tax": "0.00", "gross": "3.60"},
    ]
    assert out["total"]["gross"] == "13.66"


def test_reconciliation_is_per_series(redis_client):
    # Both entities print INV-2026-000001: two issuers, no duplicate.
    store.upsert(redis_client, "blue", [invoice(1, "1", invoicenum="INV-2026-000001")])
    store.upsert(redis_client, "orange", [invoice(1, "1", invoicenum="INV-2026-000001"),
                                          invoice(2, "1", invoicenum="INV-2026-000002")])
    for name in ("blue", "orange"):
        redis_client.hset(keys.sys_sync_state(name), "last_full_at", "2026-03-11T00:00:00Z")
    ledger = [
        {"formatted": "INV-2026-000001", "system": "blue", "status": "confirmed",
         "id": "invoice:2026:1", "series": "default"},
        {"formatted": "INV-2026-000001", "system": "orange", "status": "confirmed",
         "id": "acme/invoice:2026:1", "series": "acme"},
        # Issued to blue in default, but only orange (another issuer) shows the string.
        {"formatted": "INV-2026-000002", "system": "blue", "status": "confirmed",
         "id": "invoice:2026:2", "series": "default"},
    ]
    report = reconcile.reconcile(redis_client, ["blue", "orange"], ledger,
                                 series_of={"blue": "default", "orange": "acme"})
    assert report["duplicates"] == []
    assert report["by_series"]["acme"]["not_issued"] == [
        {"number": "INV-2026-000002", "systems": ["orange"]}]
    assert report["by_series"]["default"]["not_seen"] == [
        {"number": "INV-2026-000002", "system": "blue", "allocation": "invoice:2026:2"}]
    assert report["counts"]["not_issued"] == 1 and report["counts"]["not_seen"] == 1
    # Without the series, the old comparison would have called INV-2026-000001 a duplicate.
    merged = reconcile.reconcile(redis_client, ["blue", "orange"], ledger[:1] + ledger[2:])
    assert [d["number"] for d in merged["duplicates"]] == ["INV-2026-000001"]


def test_revenue_by_series_over_http(client, admin):
    response = client.get("/v1/reports/revenue?by=series&from=2026-01&to=2026-02", headers=admin)
    assert response.status_code == 200 and response.get_json()["by"] == "series"
    assert client.get("/v1/reports/revenue?by=entity", headers=admin).status_code == 422
