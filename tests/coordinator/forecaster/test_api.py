"""The forecaster's and warnings' HTTP API (admin only), shapes per API.md."""

from __future__ import annotations

import pytest

from coordinator import auth, keys
from coordinator.forecaster import reconcile, reconcile_state, records, store
from coordinator.warnings import store as warnings

pytestmark = pytest.mark.integration

SYNC_FIELDS = {"id", "system", "mode", "state", "pages", "invoices", "total_hint", "started_at",
               "finished_at", "error"}


def test_sync_lifecycle_over_http(client, admin, redis_client, fake, register, work):
    fake.app.seed(120, seed=9)
    register("blue", fake)
    response = client.post("/v1/systems/blue/syncs", json={"mode": "full"}, headers=admin)
    assert response.status_code == 202
    body = response.get_json()
    assert SYNC_FIELDS <= set(body)
    assert body["state"] == "queued" and body["mode"] == "full" and body["pages"] == 0
    assert body["error"] is None and body["started_at"] is None
    again = client.post("/v1/systems/blue/syncs", json={"mode": "missing"}, headers=admin)
    assert again.status_code == 409 and again.get_json()["code"] == 409
    work()
    done = client.get(f"/v1/syncs/{body['id']}", headers=admin).get_json()
    assert done["state"] == "done" and done["invoices"] == 120 and done["finished_at"]
    listed = client.get("/v1/systems/blue/syncs", headers=admin).get_json()
    assert [s["id"] for s in listed] == [body["id"]]
    # Without a body the mode is "missing".
    assert client.post("/v1/systems/blue/syncs", headers=admin).get_json()["mode"] == "missing"


def test_reading_a_dead_sync_shows_it_failed_and_writes_nothing(client, admin, redis_client,
                                                                fake, register):
    register("blue", fake)
    sync_id = client.post("/v1/systems/blue/syncs", headers=admin).get_json()["id"]
    # Its worker claimed it and died: the lock lapsed, the record still says running.
    records.update(redis_client, sync_id, state="running")
    redis_client.delete(keys.sys_sync_lock("blue"))
    stored = redis_client.hgetall(keys.sync(sync_id))
    for url in (f"/v1/syncs/{sync_id}", "/v1/systems/blue/syncs"):
        response = client.get(url, headers=admin)
        assert response.status_code == 200
        body = response.get_json()
        shown = body if isinstance(body, dict) else body[0]
        assert (shown["state"], shown["error_code"]) == ("failed", "worker_lost")
        assert redis_client.hgetall(keys.sync(sync_id)) == stored


def test_sync_requests_share_one_connection_pool(client, admin, redis_client, fake, register):
    for i in range(10):
        register(f"s{i}", fake)
    # The first request opens the pools it needs; the next ones must reuse their connections.
    assert client.post("/v1/systems/s0/syncs", headers=admin).status_code == 202
    before = redis_client.info("stats")["total_connections_received"]
    for i in range(1, 10):
        assert client.post(f"/v1/systems/s{i}/syncs", headers=admin).status_code == 202
        assert client.get(f"/v1/systems/s{i}/syncs", headers=admin).status_code == 200
    assert redis_client.info("stats")["total_connections_received"] == before


@pytest.mark.parametrize("url, code", [
    ("/v1/systems/nope/syncs", 404),
    ("/v1/syncs/doesnotexist", 404),
    ("/v1/reports/revenue?from=2026-13", 422),
    ("/v1/reports/revenue?from=2026-05&to=2026-01", 422),
    ("/v1/reports/revenue?by=week", 422),
    ("/v1/reports/forecast?months=0", 422),
    ("/v1/reports/forecast?months=25", 422),
    ("/v1/reports/forecast?months=six", 422),
])
def test_bad_input_gets_the_one_error_shape(client, admin, url, code, settings):
    response = client.get(url, headers=admin)
    assert response.status_code == code
    body = response.get_json()
    assert body["code"] == code and body["status"] and body["message"]


def test_bad_sync_mode_and_unknown_system(client, admin, settings):
    assert client.post("/v1/systems/nope/syncs", json={"mode": "full"},
                       headers=admin).status_code == 404
    bad = client.post("/v1/systems/nope/syncs", json={"mode": "all"}, headers=admin)
    assert bad.status_code == 422 and "mode" in bad.get_json()["errors"]["json"]


def test_admin_only(client, redis_client, settings):
    agent = auth.new_token(auth.AGENT)
    redis_client.hset("auth:tokens", auth.digest(agent), auth.agent_token_record("blue"))
    for url in ("/v1/reports/revenue", "/v1/warnings", "/v1/syncs/x"):
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": f"Bearer {agent}"}).status_code == 403


def test_reports_over_http(client, admin, redis_client, fake, register, app):
    from tests.coordinator.forecaster.test_reports import invoice

    register("blue", fake, exchange_rate="0.5")
    register("red", fake, exchange_rate="2")
    store.upsert(redis_client, "blue", [invoice(1, "10.00", date="2026-01-03")])
    store.upsert(redis_client, "red", [invoice(1, "1.00", date="2026-02-03", invoicenum="A-1"),
                                       invoice(2, "5.00", status="Unpaid", due="2026-02-01")])
    store.upsert(redis_client, "blue", [invoice(2, "1.00", invoicenum="A-1")])
    body = client.get("/v1/reports/revenue?from=2026-01&to=2026-02&by=month",
                      headers=admin).get_json()
    assert body["currency"] == "EUR" and body["by"] == "month"
    assert body["rows"] == [
        {"key": "2026-01", "invoices": 1, "net": "5.00", "tax": "0.00", "gross": "5.00"},
        {"key": "2026-02", "invoices": 1, "net": "2.00", "tax": "0.00", "gross": "2.00"},
    ]
    assert body["total"] == {"invoices": 2, "net": "7.00", "tax": "0.00", "gross": "7.00"}
    receivables = client.get("/v1/reports/receivables", headers=admin).get_json()
    assert receivables["total"]["gross"] == "10.00"
    forecast = client.get("/v1/reports/forecast?months=3", headers=admin).get_json()
    assert len(forecast["rows"]) == 3 and forecast["method"]["revenue"]
    reconcile_state.refresh(redis_client)  # what the worker does after each sync
    recon = client.get("/v1/reports/reconciliation", headers=admin).get_json()
    assert recon["duplicates"] == [{"number": "A-1", "systems": [
        {"system": "blue", "invoices": 1}, {"system": "red", "invoices": 1}]}]
    # Reading the report raised nothing; the worker's check after a sync does.
    assert warnings.get(redis_client, "duplicate_number:red") is None
    reconcile.check(redis_client)
    assert warnings.get(redis_client, "duplicate_number:red")["count"] == 1


def test_warnings_list_since_and_ack(client, admin, redis_client, settings):
    import datetime as dt

    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    warnings.raise_warning(redis_client, "sync_failed", "old one", system="red", now=old)
    wid = warnings.raise_warning(redis_client, "sync_failed", "boom", system="blue")
    warnings.raise_warning(redis_client, "sync_failed", "boom again", system="blue")
    listed = client.get("/v1/warnings?since=2026-06-01T00:00:00Z", headers=admin).get_json()
    assert [w["id"] for w in listed] == ["sync_failed:blue"]
    assert listed[0]["count"] == 2 and listed[0]["message"] == "boom again"
    assert len(client.get("/v1/warnings", headers=admin).get_json()) == 2
    acked = client.post(f"/v1/warnings/{wid}/ack", headers=admin).get_json()
    assert acked["acked"] is True and acked["acked_at"]
    assert client.post("/v1/warnings/nope/ack", headers=admin).status_code == 404
    assert client.get("/v1/warnings?since=yesterday", headers=admin).status_code == 422
    # It recurs: unacknowledged again, counted on.
    warnings.raise_warning(redis_client, "sync_failed", "boom 3", system="blue")
    assert warnings.get(redis_client, wid)["acked"] is False
    assert warnings.unacked_by_type(redis_client)["sync_failed"] == 2


def test_metrics_count_unacked_warnings_by_kind(client, admin, redis_client, settings):
    wid = warnings.raise_warning(redis_client, "sync_failed", "boom", system="blue")
    warnings.raise_warning(redis_client, "sync_failed", "boom", system="red")
    warnings.raise_warning(redis_client, "mixed_currencies", "two", system="red")
    client.post(f"/v1/warnings/{wid}/ack", headers=admin)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'invoice_sync_warnings_open{kind="sync_failed"} 1.0' in text
    assert 'invoice_sync_warnings_open{kind="mixed_currencies"} 1.0' in text
    assert 'invoice_sync_warnings_open{kind="duplicate_number"} 0.0' in text
