"""Numbers per hour for the overview, read back from the ledger's newest entries."""

from __future__ import annotations

import datetime as dt

import pytest

from coordinator.numbering import allocation
from coordinator.ui import activity

pytestmark = pytest.mark.integration

NOW = dt.datetime(2027, 1, 1, 1, 30, tzinfo=dt.UTC)


def take(client, monkeypatch, at: dt.datetime, reference: str, document="invoice") -> None:
    monkeypatch.setattr(allocation, "utcnow", lambda: at)
    allocation.allocate(client, "blue", document, reference, at.date())


def test_counts_each_hour_of_the_window_across_a_period_boundary(redis_client, monkeypatch):
    times = [NOW - dt.timedelta(hours=50),                    # before the window
             NOW - dt.timedelta(hours=47, minutes=20),        # first hour of the window
             dt.datetime(2026, 12, 31, 23, 10, tzinfo=dt.UTC),  # yearly period 2026
             dt.datetime(2026, 12, 31, 23, 50, tzinfo=dt.UTC),
             dt.datetime(2027, 1, 1, 0, 20, tzinfo=dt.UTC),     # period 2027
             NOW]
    for i, at in enumerate(times):
        take(redis_client, monkeypatch, at, str(i))
    take(redis_client, monkeypatch, NOW, "cn", document="credit_note")
    result = activity.per_hour(redis_client, now=NOW)
    counts = dict(zip(result["hours"], result["counts"], strict=True))
    assert len(counts) == 48 and result["complete"]
    assert result["hours"][0] == "2026-12-30T02:00Z" and result["hours"][-1] == "2027-01-01T01:00Z"
    assert counts["2026-12-30T02:00Z"] == 1
    assert counts["2026-12-31T23:00Z"] == 2
    assert counts["2027-01-01T00:00Z"] == 1
    assert counts["2027-01-01T01:00Z"] == 2  # an invoice and a credit note
    assert sum(result["counts"]) == 6


def test_stops_reading_at_the_first_number_older_than_the_window(redis_client, monkeypatch):
    old = NOW - dt.timedelta(days=30)
    for i in range(300):
        take(redis_client, monkeypatch, old, f"old{i}")
    take(redis_client, monkeypatch, NOW, "new")
    read = []
    original = redis_client.hmget
    monkeypatch.setattr(redis_client, "hmget", lambda key, fields: read.append(len(fields))
                        or original(key, fields))
    assert sum(activity.per_hour(redis_client, now=NOW)["counts"]) == 1
    # The newest page of each period: 1 entry of 2027, 64 of the 300 in 2026.
    assert sum(read) == 1 + activity.FIRST_PAGE


def test_counts_every_number_of_a_busy_window_over_several_pages(redis_client, monkeypatch):
    for i in range(200):  # more than the first two pages (64 + 128)
        take(redis_client, monkeypatch, NOW - dt.timedelta(minutes=i), f"r{i}")
    result = activity.per_hour(redis_client, now=NOW)
    assert sum(result["counts"]) == 200
    assert result["counts"][-1] == 31  # 01:30 back to 01:00, minute by minute (i = 0..30)


def test_counts_the_numbers_of_every_series(redis_client, monkeypatch):
    from cryptography.fernet import Fernet

    from coordinator.numbering import series
    from coordinator.systems import registry, secrets
    from coordinator.systems.urls import UrlPolicy

    series.create_series(redis_client, "acme-us")
    registry.create_system(
        redis_client, secrets.fernet_from_config({"SECRET_KEYS": Fernet.generate_key().decode()}),
        {"name": "green", "url": "http://127.0.0.1:9/includes/api.php", "api_identifier": "i",
         "api_secret": "s", "series": "acme-us"},
        UrlPolicy.from_config({"ALLOW_HTTP_SYSTEM_URLS": True,
                               "ALLOW_PRIVATE_SYSTEM_URLS": True}))
    monkeypatch.setattr(allocation, "utcnow", lambda: NOW)
    entry, _ = allocation.allocate(redis_client, "green", "invoice", "g1", NOW.date())
    assert entry["series"] == "acme-us"
    take(redis_client, monkeypatch, NOW, "b1")  # blue, in default
    assert activity.per_hour(redis_client, now=NOW)["counts"][-1] == 2
