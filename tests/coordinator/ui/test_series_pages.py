"""Series on the dashboard through Flask's test client: create, describe, delete; settings per
series; systems registered in and moved between series; every series' ledger, gaps, verify,
export and reference search; the auditor reads all of it and changes none of it."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from coordinator import keys
from coordinator.numbering import allocation, chain, checkpoints, export, sequences
from coordinator.numbering import series as series_domain
from tests.coordinator.ui.test_pages import SYSTEM
from tests.support import snapshot

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 3, 1)
ACME = "/ui/series/acme-us"
ACME_INVOICE = ACME + "/sequences/invoice"


def create_acme(as_admin):
    return as_admin.post("/ui/numbering", {"name": "acme-us", "description": "ACME Inc. (US)"},
                         page="/ui/numbering")


def register(as_admin, name: str, series: str):
    response = as_admin.post("/ui/systems", {**SYSTEM, "name": name, "series": series},
                             page="/ui/systems")
    assert response.status_code == 201, response.get_data(as_text=True)


@pytest.fixture
def acme(as_admin, redis_client):
    """Series acme-us with system green in it: three invoices, the second voided."""
    assert create_acme(as_admin).status_code == 303
    register(as_admin, "green", "acme-us")
    ids = [allocation.allocate(redis_client, "green", "invoice", f"g{i}", DAY)[0]["id"]
           for i in range(1, 4)]
    allocation.transition(redis_client, ids[1], "void", "printed twice", actor_kind="admin",
                          actor_system=None, actor="admin:test")
    return ids


def rows(response) -> int:
    return response.get_data(as_text=True).count("<tr data-id=")


def test_create_describe_and_list_series(as_admin, redis_client):
    response = create_acme(as_admin)
    assert response.status_code == 303
    assert response.headers["Location"] == ACME + "?created=1"
    assert series_domain.get_series(redis_client, "acme-us")["description"] == "ACME Inc. (US)"
    listing = as_admin.get("/ui/numbering").get_data(as_text=True)
    assert 'data-series="default"' in listing and 'data-series="acme-us"' in listing
    described = as_admin.post(ACME, {"description": "ACME US LLC"}, page=ACME)
    assert described.status_code == 303
    assert "ACME US LLC" in as_admin.get(ACME).get_data(as_text=True)


@pytest.mark.parametrize(("form", "message"), [
    ({"name": "ACME"}, "Must be 1 to 63 characters"), ({"name": ""}, "Must be 1 to 63"),
    ({"name": "default"}, "The series &#39;default&#39; always exists"),
    ({"name": "x", "description": "a\x07b"}, "Must contain printable characters only"),
])
def test_bad_series_is_refused_with_the_reason_and_changes_nothing(as_admin, valkey, form,
                                                                   message):
    as_admin.get("/ui/numbering")  # default's settings are written on first read
    before = snapshot(valkey.url, skip=(b"ui:",))
    response = as_admin.post("/ui/numbering", form, page="/ui/numbering")
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert message in body
    assert snapshot(valkey.url, skip=(b"ui:",)) == before


def test_an_existing_name_is_refused(as_admin):
    create_acme(as_admin)
    again = create_acme(as_admin)
    assert again.status_code == 422
    assert "already exists" in again.get_data(as_text=True)


def test_settings_of_a_series_change_that_series_only(as_admin, redis_client, acme):
    default_before = sequences.describe(redis_client, "invoice")
    lower = as_admin.post(ACME_INVOICE, {"next_number": "2"}, page=ACME)
    assert lower.status_code == 422 and "only move forward" in lower.get_data(as_text=True)
    raised = as_admin.post(ACME_INVOICE, {"next_number": "50", "format": "US-{YEAR}-{NUMBER}"},
                           page=ACME)
    assert raised.status_code == 303
    acme_now = sequences.describe(redis_client, "invoice", series="acme-us")
    assert (acme_now["format"], acme_now["next_number"]) == ("US-{YEAR}-{NUMBER}", 50)
    assert sequences.describe(redis_client, "invoice") == default_before
    audit = sequences.audit(redis_client, "invoice", series="acme-us")
    assert audit[-1]["by"].startswith("admin:")
    assert "US-{YEAR}-{NUMBER}" in as_admin.get(ACME).get_data(as_text=True)


def test_delete_needs_the_name_and_a_series_without_systems_or_numbers(as_admin, redis_client,
                                                                       acme):
    wrong = as_admin.post(ACME + "/delete", {"confirm": "acme"}, page=ACME)
    assert wrong.status_code == 422
    used = as_admin.post(ACME + "/delete", {"confirm": "acme-us"}, page=ACME)
    assert used.status_code == 409 and "green" in used.get_data(as_text=True)
    assert series_domain.exists(redis_client, "acme-us")
    as_admin.post("/ui/numbering", {"name": "empty"}, page="/ui/numbering")
    gone = as_admin.post("/ui/series/empty/delete", {"confirm": "empty"}, page="/ui/series/empty")
    assert gone.status_code == 303 and gone.headers["Location"] == "/ui/numbering?deleted=empty"
    assert not series_domain.exists(redis_client, "empty")
    assert as_admin.get("/ui/series/empty").status_code == 404


def test_systems_show_their_series_and_cannot_move_once_numbered(as_admin, redis_client, acme):
    assert 'href="/ui/series/acme-us">acme-us</a>' in as_admin.get("/ui/systems").get_data(
        as_text=True)
    detail = as_admin.get("/ui/systems/green").get_data(as_text=True)
    assert 'id="system-series"><a href="/ui/series/acme-us">' in detail
    assert ">green</a>" in as_admin.get(ACME).get_data(as_text=True)
    form = {k: v for k, v in SYSTEM.items() if k not in ("name", "api_secret")}
    moved = as_admin.post("/ui/systems/green", {**form, "series": "default"},
                          page="/ui/systems/green")
    assert moved.status_code == 422
    assert "cannot move" in moved.get_data(as_text=True)
    assert redis_client.hget(keys.system("green"), "series") == "acme-us"
    # A system without numbers moves.
    register(as_admin, "teal", "default")
    assert as_admin.post("/ui/systems/teal", {**form, "series": "acme-us"},
                         page="/ui/systems/teal").status_code == 303
    assert redis_client.hget(keys.system("teal"), "series") == "acme-us"
    unknown = as_admin.post("/ui/systems/teal", {**form, "series": "nope"},
                            page="/ui/systems/teal")
    assert unknown.status_code == 422 and "No series" in unknown.get_data(as_text=True)


def test_ledger_gaps_and_overview_of_another_series(as_admin, redis_client, acme):
    allocation.allocate(redis_client, "blue", "invoice", "b1", DAY)  # default: not shown below
    ledger = as_admin.get(ACME_INVOICE + "/ledger?period=2026")
    assert rows(ledger) == 3
    assert f'data-id="{acme[1]}"' in ledger.get_data(as_text=True)
    gaps = as_admin.get(ACME_INVOICE + "/gaps?period=2026").get_data(as_text=True)
    assert "printed twice" in gaps
    overview = as_admin.get("/ui/").get_data(as_text=True)
    assert 'data-series="acme-us" data-sequence="invoice"' in overview
    detail = as_admin.get(f"/ui/allocations/{acme[1]}").get_data(as_text=True)
    assert "printed twice" in detail and "g2" in detail
    assert as_admin.get("/ui/allocations/acme-us/invoice:2026:99").status_code == 404


def test_reference_search_covers_every_series_and_deleted_systems(as_admin, redis_client, acme):
    allocation.allocate(redis_client, "blue", "invoice", "g1", DAY)  # same reference, default
    found = as_admin.get("/ui/references?reference=g1")
    assert rows(found) == 2
    body = found.get_data(as_text=True)
    assert f'data-id="{acme[0]}"' in body and 'data-id="invoice:2026:1"' in body
    # Index keys of a migration's staging area and glob characters are not matches.
    assert rows(as_admin.get("/ui/references?reference=*")) == 0
    as_admin.post("/ui/systems/green/delete", {"confirm": "green"}, page="/ui/systems/green")
    assert rows(as_admin.get("/ui/references?reference=g3")) == 1


def test_verify_shows_the_head_and_then_the_first_broken_event(as_admin, redis_client, acme):
    page = as_admin.get(ACME_INVOICE + "/verify?period=2026").get_data(as_text=True)
    expected = chain.verify(redis_client, "invoice", "2026", series="acme-us")
    assert expected["ok"] and 'data-ok="true"' in page
    assert f'<code id="verify-head">{expected["head"]}</code>' in page
    assert f'id="verify-entries">{expected["entries"]}<' in page
    events = keys.seq_events("invoice", "acme-us")
    raw = redis_client.lindex(events, 1)
    redis_client.lset(events, 1, raw.replace('"g2"', '"g9"'))
    broken = as_admin.get(ACME_INVOICE + "/verify").get_data(as_text=True)
    assert 'data-ok="false"' in broken
    assert "event 1 (" in broken and "hash does not match" in broken


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_downloads_what_the_api_streams_and_verifies_offline(as_admin, client, admin,
                                                                    acme, fmt):
    response = as_admin.get(f"{ACME_INVOICE}/export?period=2026&format={fmt}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="ledger-acme-us-invoice-2026.{fmt}"')
    text = response.get_data(as_text=True)
    assert export.verify_text(text)["ok"]
    api = client.get(f"/v1/series/acme-us/sequences/invoice/ledger/export?period=2026&format={fmt}",
                     headers=admin)
    assert text == api.get_data(as_text=True)
    kinds = [json.loads(r)["kind"] for r in text.splitlines()] if fmt == "jsonl" else []
    assert fmt == "csv" or kinds.count("entry") == 3
    assert as_admin.get(f"{ACME_INVOICE}/export?format=xml").status_code == 422


def test_auditor_reads_every_series_page_and_changes_nothing(acme, dashboard, auditor_token,
                                                            valkey):
    as_auditor = dashboard  # acme was made by an admin, in the same browser
    assert as_auditor.login(auditor_token).status_code == 303
    for path in ("/ui/numbering", ACME, ACME_INVOICE + "/ledger?period=2026",
                 ACME_INVOICE + "/gaps?period=2026", ACME_INVOICE + "/verify",
                 f"/ui/allocations/{acme[1]}", "/ui/references?reference=g1"):
        response = as_auditor.get(path)
        assert response.status_code == 200, path
        assert response.get_data(as_text=True).count('method="post"') == 1, path  # logout
    before = snapshot(valkey.url, skip=(b"ui:",))
    for path, form in [("/ui/numbering", {"name": "evil"}), (ACME, {"description": "x"}),
                       (ACME + "/delete", {"confirm": "acme-us"}),
                       (ACME_INVOICE, {"next_number": "90"})]:
        assert as_auditor.post(path, form, page=ACME).status_code == 403, path
    assert snapshot(valkey.url, skip=(b"ui:",)) == before


def test_credit_notes_move_to_the_invoice_sequence_until_one_is_numbered(as_admin, redis_client,
                                                                         acme):
    off = as_admin.post(ACME + "/dedicated", {}, page=ACME)
    assert off.status_code == 303
    assert not sequences.read_settings(redis_client, "credit_note", "acme-us")["dedicated"]
    entry, _ = allocation.allocate(redis_client, "green", "credit_note", "c1", DAY)
    assert entry["sequence"] == "invoice"
    back = as_admin.post(ACME + "/dedicated", {"dedicated": "on"}, page=ACME)
    assert back.status_code == 409
    assert "dedicated cannot change" in back.get_data(as_text=True)
    assert not sequences.read_settings(redis_client, "credit_note", "acme-us")["dedicated"]
    assert 'id="f-dedicated" name="dedicated" aria' in back.get_data(as_text=True)  # unchecked


def test_an_admin_reissues_a_void_number_with_a_reason(as_admin, redis_client, valkey, acme):
    void = f"/ui/allocations/{acme[1]}"
    assert 'id="reissue-form"' in as_admin.get(void).get_data(as_text=True)
    before = snapshot(valkey.url, skip=(b"ui:",))
    for reason, message in (("", "Length must be between 1 and 500."),
                            ("a\x07b", "Must contain printable characters only")):
        refused = as_admin.post(void + "/reissue", {"reason": reason}, page=void)
        assert refused.status_code == 422 and message in refused.get_data(as_text=True)
    live = as_admin.post(f"/ui/allocations/{acme[0]}/reissue", {"reason": "why not"}, page=void)
    assert live.status_code == 409
    assert "only a void number can be reissued" in live.get_data(as_text=True)
    assert snapshot(valkey.url, skip=(b"ui:",)) == before

    done = as_admin.post(void + "/reissue", {"reason": "voided by mistake, ticket 812"},
                         page=void)
    assert done.status_code == 303
    new_id = done.headers["Location"].split("/ui/allocations/")[1].split("?")[0]
    new = allocation.get(redis_client, new_id)
    assert (new["reissue_of"], new["reissue_reason"]) == (acme[1], "voided by mistake, ticket 812")
    assert (new["reference"], new["status"], new["number"]) == ("g2", "issued", 4)
    assert allocation.allocate(redis_client, "green", "invoice", "g2", DAY)[0]["id"] == new_id
    page = as_admin.get(done.headers["Location"]).get_data(as_text=True)
    assert "Reissued: the document" in page and f">{acme[1]}</a>" in page
    old = as_admin.get(void).get_data(as_text=True)
    assert f'id="reissued-as"><a href="/ui/allocations/{new_id}">' in old
    assert 'id="reissue-form"' not in old  # once: the document has a live number again
    again = as_admin.post(void + "/reissue", {"reason": "twice"}, page=void)
    assert again.status_code == 409 and "now has number" in again.get_data(as_text=True)


def test_an_auditor_sees_a_void_number_without_reissue_and_cannot_post_one(
        acme, dashboard, auditor_token, valkey):
    assert dashboard.login(auditor_token).status_code == 303
    void = f"/ui/allocations/{acme[1]}"
    assert 'id="reissue-form"' not in dashboard.get(void).get_data(as_text=True)
    before = snapshot(valkey.url, skip=(b"ui:",))
    assert dashboard.post(void + "/reissue", {"reason": "x"}, page=void).status_code == 403
    assert snapshot(valkey.url, skip=(b"ui:",)) == before


def test_signing_the_head_needs_a_key_and_then_verify_checks_it(as_admin, redis_client, app,
                                                                 acme):
    verify = ACME_INVOICE + "/verify"
    store = keys.seq_checkpoints("invoice", "acme-us")
    # Explicitly none: the environment may hold a key (serve's key file puts it there).
    app.config["LEDGER_SIGNING_KEYS"] = None
    unsigned = as_admin.post(ACME_INVOICE + "/checkpoints", page=verify)
    assert unsigned.status_code == 503
    assert "INVOICE_SYNC_LEDGER_SIGNING_KEYS" in unsigned.get_data(as_text=True)
    assert redis_client.llen(store) == 0
    app.config["LEDGER_SIGNING_KEYS"] = checkpoints.generate_key()
    signed = as_admin.post(ACME_INVOICE + "/checkpoints", page=verify)
    assert signed.status_code == 303 and signed.headers["Location"] == verify + "?signed=1"
    assert redis_client.llen(store) == 1
    page = as_admin.get(verify).get_data(as_text=True)
    assert 'data-ok="true"' in page and 'id="verify-checkpoints">1 ' in page
    # Another key cannot vouch for it: verify on the page says so.
    app.config["LEDGER_SIGNING_KEYS"] = checkpoints.generate_key()
    assert 'data-ok="false"' in as_admin.get(verify).get_data(as_text=True)
    empty = as_admin.post("/ui/series/default/sequences/credit_note/checkpoints",
                          page="/ui/series/default/sequences/credit_note/verify")
    assert empty.status_code == 409 and "nothing to sign" in empty.get_data(as_text=True)
