"""Series on a real Valkey: the API, systems in series, concurrent numbering in two series,
moves, and the hardening items that live in numbering (issue 8 items 1, 9 and 12)."""

from __future__ import annotations

import datetime as dt
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis
from cryptography.fernet import Fernet

from coordinator import keys
from coordinator.app import create_app
from coordinator.exceptions import Conflict, InvalidInput, NotFound
from coordinator.numbering import (
    allocation,
    api,
    chain,
    checkpoints,
    compaction,
    guard,
    sequences,
)
from coordinator.numbering import series as series_domain
from coordinator.numbering.api import SEALER
from tests.coordinator.systems_support import FakeResolver, body
from tests.support import initialise_numbering, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def app_config(app_config):
    return {**app_config, "SECRET_KEYS": Fernet.generate_key().decode(),
            "SYSTEM_URL_RESOLVER": FakeResolver(), "RATE_LIMIT_AGENT": 0,
            "RATE_LIMIT_ADMIN": 0}


def register(client, admin, name, series=None):
    extra = {} if series is None else {"series": series}
    response = client.post("/v1/systems", headers=admin, json=body(name=name, **extra))
    assert response.status_code == 201, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['agent_token']}"}


def take(client, headers, reference, document="invoice", date="2026-11-21"):
    return client.post("/v1/allocations", headers=headers,
                       json={"document": document, "reference": reference, "date": date})


# --- issue 8 -----------------------------------------------------------------------------


def test_regression_settings_sequence_cannot_make_two_documents_share_a_number(
        client, admin, agent, valkey):
    """Issue 8 item 1 as reproduced: the third step used to make both print INV-2026-000001."""
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"dedicated": False}).status_code == 200
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"format": "INV-{YEAR}-{NUMBER}"}).status_code == 200
    before = snapshot(valkey.url)
    refused = client.patch("/v1/sequences/credit_note", headers=admin, json={"dedicated": True})
    assert refused.status_code == 409
    assert "INV-" in refused.get_json()["message"]
    assert snapshot(valkey.url) == before
    # And the string compare's blind spot: {YEAR}{NUMBER}/6 against {YEAR}0{NUMBER}/5.
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"format": "{YEAR}0{NUMBER}", "padding": 5}).status_code == 200
    assert client.patch("/v1/sequences/invoice", headers=admin,
                        json={"format": "{YEAR}{NUMBER}"}).status_code == 200
    before = snapshot(valkey.url)
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"dedicated": True}).status_code == 409
    assert snapshot(valkey.url) == before
    blue = agent("blue")
    invoice = take(client, blue, "1").get_json()
    note = take(client, blue, "1", document="credit_note").get_json()
    assert invoice["formatted"] != note["formatted"]


def test_padding_change_that_would_meet_the_other_sequence_is_refused(client, admin, valkey):
    """Every change that affects the printed strings is checked, not only ``format``."""
    assert client.patch("/v1/sequences/invoice", headers=admin,
                        json={"format": "{YEAR}{NUMBER}"}).status_code == 200
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"format": "{YEAR}0{NUMBER}", "padding": 4}).status_code == 200
    before = snapshot(valkey.url)
    response = client.patch("/v1/sequences/credit_note", headers=admin, json={"padding": 5})
    assert response.status_code == 409
    assert snapshot(valkey.url) == before


def test_next_number_message_tells_issued_from_skipped(client, admin, agent):
    """Issue 8 item 12: after 1-3 issued and a raise to 100, the 409 said "up to 99 are taken"."""
    blue = agent("blue")
    for reference in "abc":
        take(client, blue, reference)
    assert client.patch("/v1/sequences/invoice", headers=admin,
                        json={"next_number": 100, "period": "2026"}).status_code == 200
    response = client.patch("/v1/sequences/invoice", headers=admin,
                            json={"next_number": 50, "period": "2026"})
    assert response.status_code == 409
    message = response.get_json()["message"]
    assert message == ("next_number can only move forward: in period 2026 the next number is "
                       "100 (numbers up to 3 are issued; 4–99 were skipped (see the audit))")


def _evalsha_calls(url: str) -> int:
    raw = redis.Redis.from_url(url).info("commandstats")
    return raw.get("cmdstat_evalsha", {}).get("calls", 0)


def test_routing_hints_belong_to_one_app(app_config, valkey, admin_token, agent):
    """Issue 8 item 9: hints were process globals, so one app's answers steered another's."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    first = create_app(app_config).test_client()
    blue = agent("blue")
    assert first.patch("/v1/sequences/credit_note", headers=admin,
                       json={"dedicated": False}).status_code == 200
    assert take(first, blue, "n1", document="credit_note").get_json()["sequence"] == "invoice"
    # The same data seen by an app on another database: credit notes are dedicated there.
    other_db = {**app_config, "REDIS_URL": valkey.url[:-2] + "/1"}
    redis.Redis.from_url(other_db["REDIS_URL"]).flushdb()
    initialise_numbering(redis.Redis.from_url(other_db["REDIS_URL"], decode_responses=True))
    second = create_app(other_db).test_client()
    redis.Redis.from_url(other_db["REDIS_URL"], decode_responses=True).hset(
        keys.TOKENS, mapping=redis.Redis.from_url(valkey.url, decode_responses=True).hgetall(
            keys.TOKENS))
    take(second, blue, "warm-up")
    sealer = second.application.extensions[SEALER]
    assert sealer.drain(30)
    calls = _evalsha_calls(valkey.url)
    note = take(second, blue, "n1", document="credit_note").get_json()
    assert note["sequence"] == "credit_note"
    assert sealer.drain(30)
    # One allocation script run (and the seal of its event): the other app's "credit notes
    # are in invoice" was not a guess here, or its refusal would be one more run.
    assert _evalsha_calls(valkey.url) - calls == 2


# --- the series API -----------------------------------------------------------------------


def test_series_crud_and_rules(client, admin, valkey):
    created = client.post("/v1/series", headers=admin,
                          json={"name": "acme-us", "description": "ACME Inc. (US)"})
    assert created.status_code == 201
    assert created.get_json()["name"] == "acme-us" and created.get_json()["systems"] == []
    assert created.get_json()["description"] == "ACME Inc. (US)"
    assert client.post("/v1/series", headers=admin, json={"name": "acme-us"}).status_code == 409
    for bad in ({"name": "Acme"}, {"name": ""}, {"name": "a/b"}, {"description": "x"},
                {"name": "x", "colour": "red"}, {"name": "default"}):
        before = snapshot(valkey.url)
        response = client.post("/v1/series", headers=admin, json=bad)
        assert response.status_code in (409, 422), bad
        assert snapshot(valkey.url) == before
    # A description (printed on the dashboard and in exports) says what is wrong with it
    for method, path, bad, errors in (
        ("POST", "/v1/series", {"name": "x", "description": "d" * 501},
         {"description": ["Longer than maximum length 500."]}),
        ("POST", "/v1/series", {"name": "x", "description": "a\x07b"},
         {"description": ["Must contain printable characters only (no control characters)."]}),
        ("PATCH", "/v1/series/acme-us", {}, {"description": ["Missing data for required field."]}),
    ):
        before = snapshot(valkey.url)
        response = client.open(path, method=method, headers=admin, json=bad)
        assert (response.status_code, response.get_json().get("errors")) == (422, {"json": errors})
        assert snapshot(valkey.url) == before
    names = [s["name"] for s in client.get("/v1/series", headers=admin).get_json()]
    assert names == ["default", "acme-us"]
    patched = client.patch("/v1/series/acme-us", headers=admin, json={"description": "d" * 500})
    assert patched.get_json() == {**created.get_json(), "description": "d" * 500,
                                  "updated_at": patched.get_json()["updated_at"]}
    assert client.get("/v1/series/acme-us", headers=admin).get_json() == patched.get_json()
    for path, message in (("nope", "No series 'nope'"), ("Nope", "No such series"),
                          ("nope/sequences/invoice", "No series 'nope'"),
                          ("nope/sequences", "No series 'nope'"),
                          ("nope/sequences/invoice/audit", "No series 'nope'"),
                          ("nope/sequences/invoice/ledger?period=2026", "No series 'nope'"),
                          ("nope/sequences/invoice/gaps?period=2026", "No series 'nope'"),
                          ("Nope/sequences", "No such series"),
                          ("Nope/sequences/invoice", "No such series")):
        missing = client.get(f"/v1/series/{path}", headers=admin)
        assert (missing.status_code, missing.get_json()["message"]) == (404, message), path
    before = snapshot(valkey.url)  # a sequence of a series that does not exist is not made
    for name, message in (("nope", "No series 'nope'"), ("Nope", "No such series")):
        missing = client.patch(f"/v1/series/{name}/sequences/invoice", headers=admin,
                               json={"padding": 4})
        assert (missing.status_code, missing.get_json()["message"]) == (404, message)
    assert snapshot(valkey.url) == before
    assert client.get("/v1/series/acme-us/sequences/nope", headers=admin).status_code == 404
    kept = client.delete("/v1/series/default", headers=admin)
    assert kept.get_json()["message"] == "The series 'default' cannot be deleted"
    assert client.delete("/v1/series/acme-us", headers=admin).status_code == 204
    assert client.get("/v1/series/acme-us", headers=admin).status_code == 404
    again = client.post("/v1/series", headers=admin, json={"name": "acme-us"})
    assert (again.status_code, again.get_json()["description"]) == (201, "")


def test_default_series_routes_answer_exactly_as_v1_sequences(client, admin, agent):
    blue = agent("blue")
    for reference in "abc":
        take(client, blue, reference)
    client.patch("/v1/sequences/invoice", headers=admin, json={"increment": 2})
    for tail in ("", "/invoice", "/invoice/ledger?period=2026", "/invoice/gaps?period=2026",
                 "/invoice/audit", "/credit_note"):
        old = client.get(f"/v1/sequences{tail}", headers=admin)
        new = client.get(f"/v1/series/default/sequences{tail}", headers=admin)
        assert (new.status_code, new.data) == (old.status_code, old.data), tail


def test_systems_in_series_numbers_come_only_from_their_series(client, admin, valkey):
    assert client.post("/v1/series", headers=admin, json={"name": "acme"}).status_code == 201
    before = snapshot(valkey.url)
    unknown = client.post("/v1/systems", headers=admin, json=body(name="x", series="nope"))
    assert unknown.status_code == 422 and "series" in unknown.get_json()["errors"]["json"]
    assert snapshot(valkey.url) == before
    blue = register(client, admin, "blue")
    orange = register(client, admin, "orange", series="acme")
    assert client.get("/v1/systems/orange", headers=admin).get_json()["series"] == "acme"
    assert client.get("/v1/systems/blue", headers=admin).get_json()["series"] == "default"
    first_blue = take(client, blue, "1").get_json()
    first_orange = take(client, orange, "1").get_json()
    # Different issuers may print the same string; ids tell the series apart.
    assert first_blue["formatted"] == first_orange["formatted"] == "INV-2026-000001"
    assert (first_blue["id"], first_blue["series"]) == ("invoice:2026:1", "default")
    assert (first_orange["id"], first_orange["series"]) == ("acme/invoice:2026:1", "acme")
    got = client.get("/v1/allocations/acme/invoice:2026:1", headers=orange)
    assert got.get_json() == first_orange
    assert client.get("/v1/allocations/acme/invoice:2026:1", headers=blue).status_code == 403
    assert client.get("/v1/allocations/default/invoice:2026:1",
                      headers=admin).status_code == 404
    confirmed = client.post("/v1/allocations/acme/invoice:2026:1/confirm", headers=orange,
                            json={"invoicenum": "INV-2026-000001"})
    assert confirmed.get_json()["status"] == "confirmed"
    ledger = client.get("/v1/series/acme/sequences/invoice/ledger?period=2026",
                        headers=admin).get_json()
    assert [(e["system"], e["id"]) for e in ledger["entries"]] == [
        ("orange", "acme/invoice:2026:1")]
    assert client.get("/v1/series/acme", headers=admin).get_json()["systems"] == ["orange"]
    listed = client.get("/v1/series", headers=admin).get_json()
    assert [(s["name"], s["systems"]) for s in listed] == [("default", ["blue"]),
                                                           ("acme", ["orange"])]
    # Settings are per series.
    assert client.patch("/v1/series/acme/sequences/invoice", headers=admin,
                        json={"format": "US-{YEAR}-{NUMBER}"}).status_code == 200
    assert take(client, orange, "2").get_json()["formatted"] == "US-2026-000002"
    assert take(client, blue, "2").get_json()["formatted"] == "INV-2026-000002"
    audit = client.get("/v1/series/acme/sequences/invoice/audit", headers=admin).get_json()
    assert audit["records"][-1]["after"]["format"] == "US-{YEAR}-{NUMBER}"
    assert client.get("/v1/sequences/invoice/audit", headers=admin).get_json()["records"] == []
    # A series with a system or a number stays.
    assert client.delete("/v1/series/acme", headers=admin).status_code == 409


def test_a_series_routes_answer_for_that_series_period_and_page(client, admin, monkeypatch,
                                                                redis_client, valkey):
    """/v1/series/<s>/sequences/... answer for <s>: its own settings (their changes sealed in
    its own chain); the period asked for, or today's by the series' own reset when none is;
    the page size asked for; and each body names the sequence and period it is about."""
    today = lambda: datetime(2026, 11, 21, 10, tzinfo=UTC)  # noqa: E731
    monkeypatch.setattr(api, "utcnow", today)
    monkeypatch.setattr(sequences, "utcnow", today)
    assert client.post("/v1/series", headers=admin, json={"name": "acme"}).status_code == 201
    orange = register(client, admin, "orange", series="acme")
    base = "/v1/series/acme/sequences/invoice"
    for change in ({"format": "US-{YEAR}{MONTH}-{NUMBER}", "reset": "monthly"}, {"padding": 5}):
        assert client.patch(base, headers=admin, json=change).status_code == 200
    events = chain.event_count(redis_client, "invoice", series="acme")
    assert events > 0 and redis_client.llen(keys.seq_chain("invoice", "acme")) == events
    old, new = (take(client, orange, reference, date=day).get_json()
                for reference, day in (("old", "2025-06-01"), ("new", "2026-11-21")))
    assert client.post(f"/v1/allocations/{old['id']}/void", headers=orange,
                       json={"reason": "deleted"}).status_code == 200
    # Once the app learnt where orange numbers (series, reset), one script run a number (and
    # the seal of its event), as in `default`
    calls = _evalsha_calls(valkey.url)
    assert take(client, orange, "next", date="2026-10-05").status_code == 201
    assert _evalsha_calls(valkey.url) - calls == 2
    shown = client.get(base, headers=admin).get_json()
    assert (shown["format"], shown["reset"], shown["padding"], shown["period"]) == (
        "US-{YEAR}{MONTH}-{NUMBER}", "monthly", 5, "2026-11")
    assert client.get("/v1/series/acme/sequences", headers=admin).get_json()[0] == shown

    def read(tail):
        answer = client.get(f"{base}/{tail}", headers=admin).get_json()
        listed = answer.get("entries", answer.get("gaps", answer.get("records")))
        return answer.get("sequence"), answer.get("period"), listed, answer.get("next_after")

    assert read("ledger") == ("invoice", "2026-11", [client.get(
        f"/v1/allocations/{new['id']}", headers=admin).get_json()], None)
    _, period, entries, after = read("ledger?period=2025-06&limit=1")
    assert (period, [e["id"] for e in entries], after) == ("2025-06", [old["id"]], 1)
    assert read("gaps") == ("invoice", "2026-11", [], None)
    _, period, gaps, _ = read("gaps?period=2025-06")
    assert (period, [(g["number"], g["reason"]) for g in gaps]) == ("2025-06", [(1, "deleted")])
    _, _, records, _ = read("audit?limit=1")
    assert [(record["before"]["padding"], record["after"]["padding"]) for record in records] == [
        ("6", "5")]
    assert read("audit")[0] == "invoice"


def test_moving_a_system(client, admin, app_config, valkey):
    for name in ("acme", "beta"):
        assert client.post("/v1/series", headers=admin, json={"name": name}).status_code == 201
    orange = register(client, admin, "orange", series="acme")
    green = register(client, admin, "green")
    stale = create_app(app_config).test_client()  # another process: it learnt green's series
    assert take(stale, green, "warm-up", document="credit_note").status_code == 201
    take(client, orange, "1")
    before = snapshot(valkey.url)
    refused = client.patch("/v1/systems/orange", headers=admin, json={"series": "beta"})
    assert (refused.status_code, refused.get_json()["message"]) == (409, (
        "System 'orange' has numbers in series 'acme'; a system that has numbers cannot move "
        "to another series"))
    assert snapshot(valkey.url) == before
    # Its only number a credit note that acme numbers in its invoice sequence: it stays too.
    assert client.patch("/v1/series/acme/sequences/credit_note", headers=admin,
                        json={"dedicated": False}).status_code == 200
    lime = register(client, admin, "lime", series="acme")
    assert take(client, lime, "n1", document="credit_note").get_json()["sequence"] == "invoice"
    assert client.patch("/v1/systems/lime", headers=admin,
                        json={"series": "beta"}).status_code == 409
    teal = register(client, admin, "teal", series="beta")  # beta's credit notes are dedicated
    assert take(client, teal, "n1", document="credit_note").get_json()["sequence"] == "credit_note"
    assert client.patch("/v1/systems/teal", headers=admin,
                        json={"series": "acme"}).status_code == 409
    # green has a number in default too: refused as well; a fresh system moves freely.
    assert client.patch("/v1/systems/green", headers=admin,
                        json={"series": "acme"}).status_code == 409
    violet = register(client, admin, "violet")
    moved = client.patch("/v1/systems/violet", headers=admin, json={"series": "beta"})
    assert moved.status_code == 200 and moved.get_json()["series"] == "beta"
    entry = take(stale, violet, "v1").get_json()
    assert (entry["series"], entry["id"]) == ("beta", "beta/invoice:2026:1")
    # Moved back while it has numbers in beta: refused, numbers stay where they are.
    assert client.patch("/v1/systems/violet", headers=admin,
                        json={"series": "default"}).status_code == 409
    # A system moved (back) into default is numbered there.
    plum = register(client, admin, "plum", series="beta")
    assert client.patch("/v1/systems/plum", headers=admin,
                        json={"series": "default"}).status_code == 200
    assert take(stale, plum, "p1").get_json()["id"] == "invoice:2026:1"


def test_stale_process_never_numbers_a_system_in_its_old_series(client, admin, app_config):
    """A process that numbered indigo in default, after indigo was deleted and registered
    again in acme: the script refuses the stale guess and the number comes from acme."""
    assert client.post("/v1/series", headers=admin, json={"name": "acme"}).status_code == 201
    indigo = register(client, admin, "indigo")
    stale = create_app(app_config).test_client()
    assert take(stale, indigo, "i1").get_json()["series"] == "default"
    assert client.delete("/v1/systems/indigo", headers=admin).status_code == 204
    indigo = register(client, admin, "indigo", series="acme")
    entry = take(stale, indigo, "i2").get_json()
    assert (entry["series"], entry["id"]) == ("acme", "acme/invoice:2026:1")
    hints = stale.application.extensions["invoice_sync.numbering_hints"]
    assert hints.series_of["indigo"] == "acme"
    # The old number stays in default's ledger, under the name it was issued to.
    old = client.get("/v1/allocations/invoice:2026:1", headers=admin).get_json()
    assert (old["system"], old["reference"]) == ("indigo", "i1")


def test_a_registration_stopped_before_its_series_knew_the_system_is_finished(
        client, admin, redis_client, monkeypatch):
    """The registry names acme for orange, but the registration stopped before acme's
    members knew it: the first allocation finishes the join and numbers in acme; a system
    closed meanwhile (an admin's move racing that repair) is never reopened by it."""
    assert client.post("/v1/series", headers=admin, json={"name": "acme"}).status_code == 201
    orange = register(client, admin, "orange", series="acme")
    redis_client.hdel(keys.series_members("acme"), "orange")
    entry = take(client, orange, "o1").get_json()
    assert (entry["series"], entry["id"]) == ("acme", "acme/invoice:2026:1")
    assert redis_client.hget(keys.series_members("acme"), "orange") == "open"

    teal = register(client, admin, "teal", series="acme")
    redis_client.hdel(keys.series_members("acme"), "teal")
    lookup, calls = allocation.series_mod.series_of_system, []

    def closed_meanwhile(client_, system):
        calls.append(system)
        if len(calls) == 2:  # acme refused teal; an admin closes it there right now
            redis_client.hset(keys.series_members("acme"), "teal", "closed")
        return lookup(client_, system)

    monkeypatch.setattr(allocation.series_mod, "series_of_system", closed_meanwhile)
    assert take(client, teal, "t1").status_code == 503
    assert redis_client.hget(keys.series_members("acme"), "teal") == "closed"


def test_delete_system_and_series(client, admin, valkey):
    for name in ("acme", "beta"):
        assert client.post("/v1/series", headers=admin, json={"name": name}).status_code == 201
    register(client, admin, "orange", series="acme")
    register(client, admin, "lime", series="acme")
    refused = client.delete("/v1/series/acme", headers=admin)
    assert (refused.status_code, refused.get_json()["message"]) == (
        409, "Series 'acme' has systems: lime, orange; move or delete them first")
    for name in ("orange", "lime"):
        assert client.delete(f"/v1/systems/{name}", headers=admin).status_code == 204
    assert client.delete("/v1/series/acme", headers=admin).status_code == 204
    # A series that issued a number keeps its ledger, also once its systems are gone.
    take(client, register(client, admin, "plum", series="beta"), "p1")
    assert client.delete("/v1/systems/plum", headers=admin).status_code == 204
    before = snapshot(valkey.url)
    refused = client.delete("/v1/series/beta", headers=admin)
    assert (refused.status_code, refused.get_json()["message"]) == (
        409, "Series 'beta' issued 1 number(s); a series with numbers is kept for its ledger")
    assert snapshot(valkey.url) == before


def test_two_series_allocate_concurrently_without_duplicate_or_gap(client, admin, app_config,
                                                                   redis_client):
    assert client.post("/v1/series", headers=admin, json={"name": "acme"}).status_code == 201
    systems = {"blue": "default", "red": "default", "orange": "acme", "green": "acme"}
    headers = {name: register(client, admin, name, series=series)
               for name, series in systems.items()}
    apps = [create_app(app_config).test_client() for _ in range(4)]
    work = [(name, f"{name}-{i}", "credit_note" if i % 5 == 0 else "invoice")
            for name in systems for i in range(40)] * 2
    random.Random(7).shuffle(work)

    def run(item):
        index, (name, reference, document) = item
        response = take(apps[index % 4], headers[name], reference, document=document)
        return name, reference, document, response.status_code, response.get_json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, enumerate(work)))
    ids: dict[tuple, set] = {}
    for name, reference, document, status, answer in results:
        assert status in (200, 201), answer
        assert answer["series"] == systems[name] and answer["system"] == name
        ids.setdefault((name, reference, document), set()).add(answer["id"])
    assert all(len(found) == 1 for found in ids.values())
    for series in ("default", "acme"):
        for sequence in ("invoice", "credit_note"):
            numbers = sorted(int(next(iter(v)).rsplit(":", 1)[1]) for k, v in ids.items()
                             if systems[k[0]] == series and k[2] == sequence)
            assert numbers == list(range(1, len(numbers) + 1)), (series, sequence)
            prefix = "" if series == "default" else f"/series/{series}"
            path = (f"/v1{prefix}/sequences/{sequence}/gaps?period=2026" if prefix
                    else f"/v1/sequences/{sequence}/gaps?period=2026")
            gaps = client.get(path, headers=admin).get_json()["gaps"]
            assert [g for g in gaps if g["kind"] in ("missing", "skipped")] == []


# --- series.py on the domain: what the API's answers do not show (issue 17, mutation triage) --

T1 = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 11, 2, 10, 30, tzinfo=dt.UTC)


def test_a_series_shows_when_it_was_made_and_last_described(redis_client):
    assert series_domain.get_series(redis_client, "default") == {
        "name": "default", "description": "The default series", "created_at": None,
        "updated_at": None}
    made = series_domain.create_series(redis_client, "acme", "ACME", now=lambda: T1)
    assert made == {"name": "acme", "description": "ACME", "created_at": "2026-11-01T09:00:00Z",
                    "updated_at": "2026-11-01T09:00:00Z"}
    assert series_domain.get_series(redis_client, "acme") == made
    described = series_domain.update_series(redis_client, "acme", {"description": "ACME Inc."},
                                     now=lambda: T2)
    assert described == {**made, "description": "ACME Inc.", "updated_at": "2026-11-02T10:30:00Z"}
    assert series_domain.update_series(redis_client, "acme", {}, now=lambda: T1) == described
    # default has no record until an admin describes it: that is when it was made.
    main = series_domain.update_series(redis_client, "default", {"description": "Main"},
                                       now=lambda: T2)
    assert main == {"name": "default", "description": "Main",
                    "created_at": "2026-11-02T10:30:00Z", "updated_at": "2026-11-02T10:30:00Z"}
    redis_client.sadd(keys.SERIES, "half")  # a creation interrupted before its record
    assert series_domain.list_series(redis_client) == [main, described]


def test_a_deleted_series_leaves_nothing_behind_and_its_name_starts_afresh(redis_client):
    before = snapshot(redis_client)
    series_domain.create_series(redis_client, "acme", now=lambda: T1)
    for name in sequences.SEQUENCES:  # settings changed (audit), numbers skipped in 2026
        sequences.update(redis_client, name, {"padding": 5, "next_number": 40}, actor="admin:t",
                         period="2026", series="acme")
    guard.mark_initialised(redis_client, "test", series="acme")
    # Its ledger's chain: sealed, signed (the scheduler's periodic checkpoint, which leaves a
    # claim per chain for its interval), its oldest events archived (as the scheduler does).
    assert checkpoints.due(redis_client, {"LEDGER_CHECKPOINT_SECONDS": 3600,
                                          "LEDGER_SIGNING_KEYS": checkpoints.generate_key()}) == [
        "acme/invoice", "acme/credit_note"]
    assert compaction.compact(redis_client, "invoice", series="acme", block=1, keep=1) == 1
    series_domain.delete_series(redis_client, "acme", [])
    assert snapshot(redis_client) == before
    again = series_domain.create_series(redis_client, "acme", now=lambda: T2)
    assert again["created_at"] == "2026-11-02T10:30:00Z"
    assert sequences.describe(redis_client, "invoice", series="acme")["padding"] == 6


def test_creating_a_series_writes_its_own_keys_only_and_a_refusal_writes_nothing(redis_client):
    assert sequences.update(redis_client, "invoice", {"format": "D-{YEAR}-{NUMBER}"},
                            actor="admin:t")["format"] == "D-{YEAR}-{NUMBER}"
    before = snapshot(redis_client)
    series_domain.create_series(redis_client, "acme", now=lambda: T1)
    after = snapshot(redis_client)
    made = {key.decode() for key in after.keys() | before.keys()
            if after.get(key) != before.get(key)}
    assert made == {keys.SERIES, keys.series_record("acme"),
                    *(keys.seq_settings(name, "acme") for name in sequences.SEQUENCES)}
    for name in sequences.SEQUENCES:
        assert redis_client.hgetall(keys.seq_settings(name, "acme")) == sequences.DEFAULTS[name]
    for name, error, message, errors in (
            ("acme", Conflict, "A series named 'acme' already exists", None),
            ("default", Conflict, "The series 'default' always exists", None),
            ("Acme", InvalidInput, "Validation failed",
             {"json": {"name": ["Not a valid series name."]}})):
        with pytest.raises(error) as refused:
            series_domain.create_series(redis_client, name, now=lambda: T2)
        assert (refused.value.message, refused.value.errors) == (message, errors), name
    assert snapshot(redis_client) == after


def test_a_system_that_joined_after_the_listing_keeps_its_series(redis_client):
    """The API lists a series' systems from the registry, then deletes: a registration that
    joined in between is seen by the series itself, which refuses."""
    series_domain.create_series(redis_client, "acme", now=lambda: T1)
    series_domain.join(redis_client, "acme", "orange")
    before = snapshot(redis_client)
    with pytest.raises(Conflict) as refused:
        series_domain.delete_series(redis_client, "acme", [])
    assert refused.value.message == "Series 'acme' serves a system; move or delete it first"
    assert snapshot(redis_client) == before


def test_joining_a_series_that_is_gone_is_refused_and_default_needs_no_record(redis_client):
    before = snapshot(redis_client)
    with pytest.raises(NotFound) as refused:
        series_domain.join(redis_client, "gone", "orange")
    assert refused.value.message == "No series 'gone'"
    assert snapshot(redis_client) == before
    series_domain.join(redis_client, "default", "orange")
    assert redis_client.hget(keys.series_members("default"), "orange") == "open"


def test_a_series_change_racing_another_is_retried_and_refused_when_it_keeps_losing(
        redis_client, valkey):
    other, members, tries = redis.Redis.from_url(valkey.url), keys.series_members("acme"), []

    def body(races):
        def change(pipe):  # another admin's change lands while this one is being made
            tries.append(pipe)
            if len(tries) <= races:
                other.hset(members, "other", len(tries))
            pipe.multi()
            pipe.hset(members, "mine", "1")
        return change

    series_domain._transaction(redis_client, [members], body(2))
    assert len(tries) == 3
    assert redis_client.hgetall(members) == {"other": "2", "mine": "1"}
    redis_client.delete(members)
    tries.clear()
    with pytest.raises(Conflict) as refused:
        series_domain._transaction(redis_client, [members], body(1000))
    assert refused.value.message == "The series was changed concurrently too often; retry"
    assert len(tries) == 20 and redis_client.hget(members, "mine") is None


def test_a_series_deleted_right_after_the_check_is_not_brought_back(redis_client, monkeypatch):
    """Another admin deletes acme between this change's check and its transaction."""
    check = series_domain.require

    def deleted_meanwhile(client, name):
        check(client, name)
        monkeypatch.setattr(series_domain, "require", check)
        series_domain.delete_series(client, name, [])

    for change in (lambda: series_domain.update_series(redis_client, "acme", {"description": "x"}),
                   lambda: series_domain.delete_series(redis_client, "acme", [])):
        series_domain.create_series(redis_client, "acme", now=lambda: T1)
        monkeypatch.setattr(series_domain, "require", deleted_meanwhile)
        with pytest.raises(NotFound) as gone:
            change()
        assert gone.value.message == "No series 'acme'"
        assert redis_client.keys("{ser:acme}*") == [] and not series_domain.exists(redis_client,
                                                                                    "acme")
