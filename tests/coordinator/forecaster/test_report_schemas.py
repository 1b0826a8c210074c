"""Reports as documented: the HTTP answer is the whole report and matches /openapi.json."""

from __future__ import annotations

import datetime as dt

import pytest
from openapi_schema_validator import OAS30Validator

from coordinator.forecaster import reconcile, reports
from coordinator.systems import registry

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 11, 21)


@pytest.fixture
def app_config(app_config):
    return {**app_config, "FORECASTER_TODAY": TODAY}


def _documented(document: dict, path: str) -> dict:
    """The 200 schema of GET ``path``, with the components its $refs point into."""
    schema = document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return {**schema["schema"], "components": document["components"]}


@pytest.mark.parametrize("path, query, compute", [
    ("/v1/reports/revenue", "?from=2025-01&to=2026-12&by=system",
     lambda c, r, b: reports.revenue(c, r, b, "2025-01", "2026-12", "system", today=TODAY)),
    ("/v1/reports/revenue", "",
     lambda c, r, b: reports.revenue(c, r, b, today=TODAY)),
    ("/v1/reports/receivables", "",
     lambda c, r, b: reports.receivables(c, r, b, today=TODAY)),
    ("/v1/reports/forecast", "?months=3",
     lambda c, r, b: reports.forecast(c, r, b, 3, today=TODAY)),
    ("/v1/reports/reconciliation", "",
     lambda c, r, b: reconcile.full_report(c)),
])
def test_report_answer_is_the_whole_report_and_matches_the_document(
        client, admin, redis_client, fake, register, work, path, query, compute):
    fake.app.seed(60, seed=3)
    register("blue", fake, exchange_rate="1.1")
    client.post("/v1/systems/blue/syncs", json={"mode": "full"}, headers=admin)
    work()
    response = client.get(path + query, headers=admin)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    rates = reports.rates_of(registry.list_systems(redis_client))
    expected = compute(redis_client, rates, "EUR")
    body.pop("checked_at", None), expected.pop("checked_at", None)
    # Dumped through the documented schema, and still nothing lost or changed.
    assert body == expected
    assert list(body) == list(expected)  # in the report's own order, for people reading it
    document = client.get("/openapi.json").get_json()
    OAS30Validator(_documented(document, path)).validate(response.get_json())
