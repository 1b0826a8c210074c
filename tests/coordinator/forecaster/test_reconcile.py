"""Reconciliation against the real numbering ledger after real syncs."""

from __future__ import annotations

import datetime as dt

import pytest

from coordinator.forecaster import jobs, reconcile, records
from coordinator.forecaster.reconcile import ledger_entries
from coordinator.numbering import allocation
from coordinator.warnings import store as warnings
from tests.support import snapshot

pytestmark = pytest.mark.integration


def confirm(client, system, reference, day=dt.date(2026, 3, 1)):
    entry, _ = allocation.allocate(client, system, "invoice", reference, day)
    allocation.transition(client, entry["id"], "confirm", entry["formatted"], actor_kind="agent",
                          actor_system=system, actor="test")
    return entry["formatted"]


def test_findings_after_a_sync(redis_client, fake, register, work):
    register("blue", fake)
    good = confirm(redis_client, "blue", "1")
    lost = confirm(redis_client, "blue", "2")  # confirmed, then the invoice vanished from WHMCS
    fake.app.add_invoice(subtotal="10.00", invoicenum=good, status="Paid", currencycode="EUR")
    fake.app.add_invoice(subtotal="10.00", invoicenum="HAND-7", status="Paid",
                         currencycode="EUR")
    fake.app.add_invoice(subtotal="10.00", invoicenum="HAND-7", status="Paid",
                         currencycode="EUR")
    jobs.request_sync(redis_client, "blue", "full")
    work()
    report = reconcile.reconcile(redis_client, ["blue"], ledger_entries(redis_client))
    assert report["ledger_compared"] and report["systems_synced"] == ["blue"]
    assert report["duplicates"] == [{"number": "HAND-7",
                                     "systems": [{"system": "blue", "invoices": 2}]}]
    assert report["not_issued"] == [{"number": "HAND-7", "systems": ["blue"]}]
    assert [item["number"] for item in report["not_seen"]] == [lost]
    # The worker raised the findings' warnings when the sync completed.
    ids = [w["id"] for w in warnings.list_warnings(redis_client)
           if w["type"] != warnings.MIXED_CURRENCIES]
    assert sorted(ids) == ["duplicate_number:blue", "issued_number_not_seen:blue",
                           "number_not_issued:blue"]
    assert lost in warnings.get(redis_client, "issued_number_not_seen:blue")["message"]


def test_reading_the_reconciliation_report_writes_nothing(client, admin, redis_client, fake,
                                                          register, work):
    register("blue", fake)
    fake.app.add_invoice(subtotal="10.00", invoicenum="HAND-7", status="Paid")
    fake.app.add_invoice(subtotal="10.00", invoicenum="HAND-7", status="Paid")
    jobs.request_sync(redis_client, "blue", "full")
    work()
    before = snapshot(redis_client)
    response = client.get("/v1/reports/reconciliation", headers=admin)
    assert response.status_code == 200
    assert response.get_json()["counts"]["duplicates"] == 1
    assert snapshot(redis_client) == before  # rate-limit counters aside (tests/support.py)


def test_issued_numbers_of_unsynced_systems_are_not_reported_missing(redis_client, fake,
                                                                     register):
    register("blue", fake)
    confirm(redis_client, "blue", "1")
    report = reconcile.reconcile(redis_client, ["blue"], ledger_entries(redis_client))
    assert report["not_seen"] == [] and report["systems_synced"] == []


def test_a_failing_reconciliation_does_not_fail_the_sync(redis_client, fake, register, work,
                                                         monkeypatch):
    register("blue", fake)
    fake.app.add_invoice(subtotal="10.00", status="Paid")

    def broken(client):
        raise RuntimeError("injected: reconciliation broke")

    monkeypatch.setattr(reconcile, "check", broken)
    record = jobs.request_sync(redis_client, "blue", "full")
    work()
    assert records.get(redis_client, record["id"])["state"] == "done"
