"""Dashboard pages and forms through the Flask test client: bad input is refused with the
reason and changes nothing; secrets stay write-only; paging, search, CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from coordinator import auth, keys
from coordinator.numbering import allocation, sequences
from tests.support import snapshot

pytestmark = pytest.mark.integration

SYSTEM = {"name": "blue", "description": "EU", "url": "http://127.0.0.1:9/includes/api.php",
          "api_identifier": "ident", "api_secret": "s3cret-value-1234", "step": "100",
          "exchange_rate": "1.0000", "auto_sync": "on"}


def register(as_admin, **changes):
    return as_admin.post("/ui/systems", {**SYSTEM, **changes}, page="/ui/systems")


def test_register_shows_the_token_once_and_the_secret_never(as_admin, redis_client):
    response = register(as_admin)
    assert response.status_code == 201
    body = response.get_data(as_text=True)
    assert 'id="agent-token"' in body and "isg_" in body
    assert "s3cret-value-1234" not in body
    detail = as_admin.get("/ui/systems/blue").get_data(as_text=True)
    assert "isg_" not in detail and "s3cret-value-1234" not in detail
    assert redis_client.hget(keys.system("blue"), "auto_sync") == "1"


@pytest.mark.parametrize("changes, field", [
    ({"name": "Blue!"}, "name"), ({"step": "many"}, "step"), ({"exchange_rate": "-1"},
                                                              "exchange_rate"),
    ({"url": "ftp://x/includes/api.php"}, "url"), ({"api_secret": ""}, "api_secret"),
])
def test_bad_registration_is_refused_with_the_reason_and_changes_nothing(as_admin, valkey,
                                                                         changes, field):
    before = snapshot(valkey.url)
    response = register(as_admin, **changes)
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert f'id="f-{field}"' in body and 'aria-invalid="true"' in body
    assert "s3cret-value-1234" not in body  # the secret is not echoed back into the form
    assert {k: v for k, v in snapshot(valkey.url).items() if not k.startswith(b"ui:")} == {
        k: v for k, v in before.items() if not k.startswith(b"ui:")}


def test_edit_keeps_the_secret_unless_a_new_one_is_typed(as_admin, redis_client):
    register(as_admin)
    stored = redis_client.hget(keys.system("blue"), "api_secret_enc")
    form = {k: v for k, v in SYSTEM.items() if k != "name"}
    response = as_admin.post("/ui/systems/blue", {**form, "api_secret": "", "description": "x"},
                             page="/ui/systems/blue")
    assert response.status_code == 303
    assert redis_client.hget(keys.system("blue"), "api_secret_enc") == stored
    assert redis_client.hget(keys.system("blue"), "description") == "x"
    as_admin.post("/ui/systems/blue", {**form, "api_secret": "another-secret-99"},
                  page="/ui/systems/blue")
    assert redis_client.hget(keys.system("blue"), "api_secret_enc") != stored


def test_delete_needs_the_exact_name(as_admin, redis_client):
    register(as_admin)
    wrong = as_admin.post("/ui/systems/blue/delete", {"confirm": "Blue"}, page="/ui/systems/blue")
    assert wrong.status_code == 422 and redis_client.sismember(keys.SYSTEMS, "blue")
    right = as_admin.post("/ui/systems/blue/delete", {"confirm": "blue"}, page="/ui/systems/blue")
    assert right.status_code == 303 and not redis_client.sismember(keys.SYSTEMS, "blue")


def test_rotating_shows_a_new_token_and_the_old_one_stops(as_admin, redis_client):
    first = register(as_admin).get_data(as_text=True)
    old = first.split('value="isg_')[1].split('"')[0]
    rotated = as_admin.post("/ui/systems/blue/token", page="/ui/systems/blue")
    new = rotated.get_data(as_text=True).split('value="isg_')[1].split('"')[0]
    assert new != old
    assert redis_client.hget(keys.TOKENS, auth.digest("isg_" + old)) is None
    assert redis_client.hget(keys.TOKENS, auth.digest("isg_" + new)) is not None


def test_next_number_only_moves_forward(as_admin, redis_client, admin_token):
    day = sequences.utcnow().date()
    for reference in range(5):
        allocation.allocate(redis_client, "blue", "invoice", str(reference), day)
    before = sequences.describe(redis_client, "invoice")
    settings = "/ui/series/default/sequences/invoice"
    lower = as_admin.post(settings, {"next_number": "3"}, page="/ui/series/default")
    assert lower.status_code == 422
    assert "only move forward" in lower.get_data(as_text=True)
    assert sequences.describe(redis_client, "invoice") == before
    raised = as_admin.post(settings, {"next_number": "100"}, page="/ui/series/default")
    assert raised.status_code == 303
    assert sequences.describe(redis_client, "invoice")["next_number"] == 100
    # Recorded as the API records it: the role and the token's public id.
    assert sequences.audit(redis_client, "invoice")[-1]["by"] == (
        f"admin:{auth.token_id(auth.digest(admin_token))}")


def test_ledger_pages_and_searches_by_reference(as_admin, redis_client):
    day = dt.date(2026, 3, 1)
    for reference in range(120):
        allocation.allocate(redis_client, "blue", "invoice", f"r{reference}", day)
    ledger = "/ui/series/default/sequences/invoice/ledger"
    first = as_admin.get(ledger + "?period=2026").get_data(as_text=True)
    assert first.count("<tr data-id=") == 50
    assert "after=50" in first
    third = as_admin.get(ledger + "?period=2026&after=100")
    assert third.get_data(as_text=True).count("<tr data-id=") == 20
    found = as_admin.get("/ui/references?reference=r77")
    assert found.get_data(as_text=True).count("<tr data-id=") == 1
    assert "INV-2026-000078" in found.get_data(as_text=True)
    assert as_admin.get(ledger + "?period=20x6").status_code == 422
    assert as_admin.get("/ui/series/default/sequences/nope/ledger").status_code == 404
    assert as_admin.get("/ui/series/nope/sequences/invoice/ledger").status_code == 404
    # The addresses from before series lead to the default series' pages.
    moved = as_admin.get("/ui/numbering/invoice/ledger?period=2026&after=50")
    assert moved.status_code == 308
    assert moved.headers["Location"] == ledger + "?period=2026&after=50"


def test_revenue_csv_matches_the_report(as_admin, redis_client, app):
    from coordinator.forecaster import reports

    register(as_admin)
    response = as_admin.get("/ui/revenue.csv?from=2026-01&to=2026-03")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:2] == ["month", "blue gross"]
    assert [row[0] for row in rows[1:]] == ["2026-01", "2026-02", "2026-03", "total"]
    report = reports.revenue(redis_client, reports.rates_of([{"name": "blue",
                                                               "exchange_rate": "1"}]),
                             "EUR", "2026-01", "2026-03")
    assert rows[-1][-2] == report["total"]["gross"]
    bad = as_admin.get("/ui/revenue?from=2026-13")
    assert bad.status_code == 422 and "YYYY-MM" in bad.get_data(as_text=True)


def test_warnings_filter_and_acknowledge(as_admin, redis_client):
    from coordinator.warnings import store

    store.raise_warning(redis_client, store.SYNC_FAILED, "blue broke", system="blue")
    store.raise_warning(redis_client, store.MIXED_CURRENCIES, "red mixed", system="red")
    page = as_admin.get("/ui/warnings?system=red").get_data(as_text=True)
    assert "red mixed" in page and "blue broke" not in page
    response = as_admin.post("/ui/warnings/ack", {"id": "sync_failed:blue",
                                                  "back": "/ui/warnings?state=all"},
                             page="/ui/warnings")
    assert response.status_code == 303 and response.headers["Location"] == "/ui/warnings?state=all"
    assert store.get(redis_client, "sync_failed:blue")["acked"]
    assert "blue broke" not in as_admin.get("/ui/warnings").get_data(as_text=True)
    off_site = as_admin.post("/ui/warnings/ack", {"id": "mixed_currencies:red",
                                                  "back": "https://evil.example/"},
                             page="/ui/warnings")
    assert off_site.headers["Location"] == "/ui/"


def test_pages_send_a_strict_content_security_policy(as_admin):
    response = as_admin.get("/ui/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"

