"""Sequence settings (forward-only, audited), ledger paging and the gap report."""

from __future__ import annotations

from datetime import date

import fakeredis
import pytest

from coordinator import keys
from coordinator.exceptions import Conflict, InvalidInput, NotFound, ServiceUnavailable
from coordinator.numbering import (
    allocate,
    compaction,
    gaps,
    list_ledger,
    overlap,
    sequences,
    transition,
)
from coordinator.numbering.series import create_series, delete_series, join, prepare_registration
from tests.support import initialise_numbering, snapshot


def take(client, headers, reference, date="2026-11-21"):
    return client.post("/v1/allocations", headers=headers,
                       json={"document": "invoice", "reference": reference, "date": date})


# --- units (no server) ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt, reset", [
    ("INV-{YEAR}-{NUMBER}", "yearly"), ("{YEAR}/{MONTH}/{DAY}/{NUMBER}", "monthly"),
    ("{NUMBER}", "never"), ("A{YEAR}{MONTH}-{NUMBER}", "monthly"),
])
def test_good_formats(fmt, reset):
    sequences.check_format(fmt, reset)


TAGS_ALLOWED = "allowed: {YEAR}, {MONTH}, {DAY}, {NUMBER}."
ONE_NUMBER = "Must contain {NUMBER} exactly once."
BRACES = f"Unbalanced braces: write each tag as {{NAME}}; {TAGS_ALLOWED}"


@pytest.mark.parametrize("fmt, reset, problems", [
    ("INV-{YEAR}", "yearly", [ONE_NUMBER]),
    ("{NUMBER}-{NUMBER}", "never", [ONE_NUMBER]),
    ("{number}", "never", [f"Unknown tag(s) {{number}}; {TAGS_ALLOWED}", ONE_NUMBER]),
    ("{YEAR-{NUMBER}", "never", [BRACES]),
    ("{ID}-{NUMBER}", "never", [f"Unknown tag(s) {{ID}}; {TAGS_ALLOWED}"]),
    ("{NUMBER}}", "never", [BRACES]),
    ("}{NUMBER}{", "never", [BRACES]),
    ("{ID}-{NUMBER", "never", [f"Unknown tag(s) {{ID}}; {TAGS_ALLOWED}", BRACES, ONE_NUMBER]),
    ("{ID}{MM}-{NUMBER}", "never", [f"Unknown tag(s) {{ID}}, {{MM}}; {TAGS_ALLOWED}"]),
])
def test_bad_formats(fmt, reset, problems):
    # The admin's 422 says what is wrong with the format (API.md error shape, whole).
    with pytest.raises(InvalidInput) as refused:
        sequences.check_format(fmt, reset)
    assert (refused.value.message, refused.value.errors) == (
        "Invalid format", {"json": {"format": problems}})


@pytest.mark.parametrize("fmt, reset, missing", [
    ("INV-{NUMBER}", "yearly", "{YEAR}"), ("{YEAR}-{NUMBER}", "monthly", "{MONTH}"),
    ("{NUMBER}", "monthly", "{YEAR} and {MONTH}")])
def test_formats_that_repeat_across_periods_are_a_conflict(fmt, reset, missing):
    # Two periods would print the same string: refused as an overlap (409), API.md "Series";
    # the admin is told which tags the reset needs (the whole error, as the API returns it).
    with pytest.raises(Conflict) as refused:
        sequences.check_format(fmt, reset)
    assert (refused.value.message, refused.value.errors) == (
        f"A {reset} reset restarts the numbers every period, so {fmt!r} would print the same "
        f"number again; the format needs {missing}",
        {"json": {"format": [f"A {reset} reset needs {missing} in the format."]}})


def test_an_unknown_sequence_is_refused_naming_the_sequences_there_are():
    with pytest.raises(NotFound) as refused:
        sequences.check_name("receipt")
    assert refused.value.message == "No sequence 'receipt'; sequences: invoice, credit_note"


def test_periods_by_document_date():
    assert sequences.periods_of(date(2026, 1, 5)) == ("all", "2026", "2026-01")
    assert sequences.period_of(date(2025, 12, 31), "monthly") == "2025-12"


def test_allocation_logic_on_fakeredis():
    client = fakeredis.FakeRedis(decode_responses=True)
    initialise_numbering(client)
    entry, new = allocate(client, "blue", "invoice", "1", date(2026, 2, 3))
    assert new and (entry["formatted"], entry["number"]) == ("INV-2026-000001", 1)
    again, new = allocate(client, "blue", "invoice", "1", date(2026, 7, 3))
    assert not new and again == entry


def test_a_change_to_a_series_deleted_meanwhile_answers_503_and_writes_nothing(monkeypatch):
    client = fakeredis.FakeRedis(decode_responses=True)
    create_series(client, "eu")
    sequences.ensure_sequences(client, "eu")
    chosen = sequences.period_of

    def deleted_meanwhile(day, reset):  # another admin deletes the (unused) series now
        delete_series(client, "eu", [])
        return chosen(day, reset)

    monkeypatch.setattr(sequences, "period_of", deleted_meanwhile)
    with pytest.raises(ServiceUnavailable) as refused:
        sequences.update(client, "invoice", {"next_number": 5}, actor="admin:a", series="eu")
    assert refused.value.message == "Sequence invoice of series eu is not initialised; retry"
    assert client.keys("*eu*") == []


def test_a_dedicated_switch_in_a_series_deleted_meanwhile_answers_404_and_writes_nothing(
        monkeypatch):
    client = fakeredis.FakeRedis(decode_responses=True)
    create_series(client, "eu")
    sequences.set_dedicated(client, False, actor="admin:a", series="eu")
    checked = overlap.check_sequences

    def deleted_meanwhile(invoice, credit_note):  # another admin deletes the series now
        checked(invoice, credit_note)
        delete_series(client, "eu", [])

    monkeypatch.setattr(overlap, "check_sequences", deleted_meanwhile)
    with pytest.raises(NotFound) as refused:
        sequences.set_dedicated(client, True, actor="admin:a", series="eu")
    assert refused.value.message == "No series 'eu'"
    assert client.keys("*eu*") == []


def series_eu_with_orange(client=None):
    """A store (fakeredis unless given) with series ``eu`` numbering system ``orange`` (as the
    registry does), and ``default`` numbering ``blue``."""
    client = client or fakeredis.FakeRedis(decode_responses=True)
    create_series(client, "eu")
    prepare_registration(client, "eu", "orange")
    client.hset(keys.system("orange"), mapping={"name": "orange", "series": "eu"})
    join(client, "eu", "orange")
    initialise_numbering(client)
    return client


def test_switching_dedicated_in_one_series_leaves_the_others_as_they_were():
    client = series_eu_with_orange()
    day = date(2026, 3, 4)
    allocate(client, "blue", "credit_note", "1", day)  # default's own credit notes count not
    default_before = {name: client.hgetall(keys.seq_settings(name)) for name in sequences.SEQUENCES}
    switched = sequences.update(client, "credit_note", {"dedicated": False}, actor="admin:a",
                                series="eu")  # as PATCH /v1/series/eu/sequences/credit_note
    assert switched == sequences.describe(client, "credit_note", series="eu")
    assert switched["dedicated"] is False
    assert client.hget(keys.seq_settings("invoice", "eu"), "credit_notes") == "1"
    assert {name: sequences.audit(client, name, series="eu")[-1]["after"]
            for name in sequences.SEQUENCES} == {name: {"dedicated": False}
                                                for name in sequences.SEQUENCES}
    # eu's credit notes, now numbered in eu's invoice sequence, keep eu from switching back
    assert allocate(client, "orange", "credit_note", "1", day)[0]["sequence"] == "invoice"
    with pytest.raises(Conflict) as refused:
        sequences.update(client, "credit_note", {"dedicated": True}, actor="admin:a",
                         series="eu")
    assert refused.value.message.startswith("dedicated cannot change: 1 credit note(s) were "
                                            "numbered in the invoice sequence")
    assert {name: client.hgetall(keys.seq_settings(name))
            for name in sequences.SEQUENCES} == default_before
    assert [sequences.audit(client, name) for name in sequences.SEQUENCES] == [[], []]


def contents(client, series):
    """Every key of ``series`` with what it holds (the part of a ``snapshot`` that is its)."""
    prefix = f"{{ser:{series}}}".encode()
    return {key: held for key, held in snapshot(client).items() if key.startswith(prefix)}


def test_a_sequence_of_another_series_is_described_and_changed_in_that_series_only(
        redis_client):
    client = series_eu_with_orange(redis_client)  # a real server: settling runs sha1hex
    day, eu = date(2026, 3, 4), {"actor": "admin:a", "series": "eu"}
    sequences.ensure_sequences(client)  # default's settings, as serve's first start writes
    default_before = contents(client, "default")
    sequences.update(client, "invoice", {"format": "EU-{YEAR}-{NUMBER}"}, **eu)
    sequences.update(client, "invoice", {"next_number": 7}, period="2025", **eu)
    assert [allocate(client, "orange", "invoice", ref, day)[0]["formatted"]
            for ref in "ab"] == ["EU-2026-000001", "EU-2026-000002"]
    settings = {"name": "invoice", "increment": 1, "format": "EU-{YEAR}-{NUMBER}",
                "padding": 6, "reset": "yearly"}
    rows = [{"period": "2025", "last_number": None, "next_number": 7, "issued": 0},
            {"period": "2026", "last_number": 2, "next_number": 3, "issued": 2}]
    assert sequences.describe(client, "invoice", date(2026, 5, 1), series="eu") == {
        **settings, "period": "2026", "next_number": 3, "periods": rows}
    # A period with nothing yet is listed too, at its first number.
    new_year = {"period": "2027", "last_number": None, "next_number": 1, "issued": 0}
    assert sequences.describe(client, "invoice", date(2027, 1, 2), series="eu") == {
        **settings, "period": "2027", "next_number": 1, "periods": [*rows, new_year]}
    # A request without changes answers eu's sequence as it is.
    assert sequences.update(client, "invoice", {}, period="2026", **eu) == (
        sequences.describe(client, "invoice", series="eu"))
    # eu's changes are checked against eu's numbers (default issued none).
    with pytest.raises(Conflict) as refused:
        sequences.update(client, "invoice", {"next_number": 2}, period="2026", **eu)
    assert refused.value.message == ("next_number can only move forward: in period 2026 the "
                                     "next number is 3 (numbers up to 2 are issued)")
    with pytest.raises(Conflict) as refused:
        sequences.update(client, "invoice", {"reset": "monthly",
                                             "format": "EU{YEAR}{MONTH}-{NUMBER}"}, **eu)
    assert refused.value.message.startswith("reset cannot change once numbers were issued")
    # The credit notes' change is checked against eu's invoices (not default's).
    sequences.update(client, "credit_note", {"format": "EUCN-{YEAR}-{NUMBER}"}, **eu)
    raised = sequences.update(client, "invoice", {"next_number": 10}, period="2026", **eu)
    assert raised["periods"][1] == {"period": "2026", "last_number": 2, "next_number": 10,
                                    "issued": 2}
    assert allocate(client, "orange", "invoice", "c", day)[0]["formatted"] == "EU-2026-000010"
    row = {"period": "2026", "last_number": 10, "next_number": 11, "issued": 3}
    assert sequences.describe(client, "invoice", date(2026, 5, 1), series="eu")["periods"][1] == row
    # Confirmed numbers settled into blocks still count as issued (and only eu's).
    for ref in "abc":
        entry, _ = allocate(client, "orange", "invoice", ref, day)
        transition(client, entry["id"], "confirm", entry["formatted"], actor_kind="agent",
                   actor_system="orange", actor="agent:orange")
    settle_now = {"LEDGER_ARCHIVE_BLOCK": 2, "LEDGER_ARCHIVE_KEEP": 1,
                  "LEDGER_SETTLE_AFTER_SECONDS": 0}
    assert compaction.run(client, "invoice", settle_now, series="eu")["entries"] == 2
    assert sequences.describe(client, "invoice", date(2026, 5, 1), series="eu")["periods"][1] == row
    assert [record["after"].get("format") for record in sequences.audit(
        client, "invoice", series="eu")] == ["EU-{YEAR}-{NUMBER}"] * 3
    assert sequences.audit(client, "credit_note", series="eu")[-1]["after"]["format"] == (
        "EUCN-{YEAR}-{NUMBER}")
    assert contents(client, "default") == default_before
    assert [sequences.audit(client, name) for name in sequences.SEQUENCES] == [[], []]


def test_dedicated_is_changed_alone_and_only_for_credit_notes(redis_client):
    # API.md: the 422 names the field and says what to do; nothing is written.
    alone = ["Change dedicated on its own, in a request without other fields."]
    refusals = [
        ("invoice", {"dedicated": False}, None, ["Only the credit_note sequence has it."]),
        ("credit_note", {"dedicated": False, "increment": 2}, None, alone),
        ("credit_note", {"dedicated": False}, "2026", alone),
    ]
    before = snapshot(redis_client)
    for name, changes, period, why in refusals:
        with pytest.raises(InvalidInput) as refused:
            sequences.update(redis_client, name, changes, actor="admin:a", period=period)
        assert (refused.value.message, refused.value.errors) == (
            "Validation failed", {"json": {"dedicated": why}})
    assert snapshot(redis_client) == before


def test_all_printed_settings_changed_at_once_are_still_checked(redis_client):
    # format, padding and reset in one request: still refused where invoices and credit notes
    # could print one number, or the format is broken; nothing is written.
    sequences.ensure_sequences(redis_client)
    before = snapshot(redis_client)
    with pytest.raises(Conflict, match="could both print"):
        sequences.update(redis_client, "invoice",
                         {"format": "CN-{YEAR}-{NUMBER}", "padding": 6, "reset": "yearly"},
                         actor="admin:a")
    with pytest.raises(InvalidInput):
        sequences.update(redis_client, "invoice",
                         {"format": "INV-{NUMBER", "padding": 6, "reset": "never"},
                         actor="admin:a")
    assert snapshot(redis_client) == before


def test_a_series_that_lost_its_settings_numbers_with_the_defaults_again(redis_client):
    # Settings hashes gone (a partial restore): reading, changing and numbering in that
    # series write the defaults back, in that series only.
    client = series_eu_with_orange(redis_client)
    sequences.update(client, "credit_note", {"dedicated": False}, actor="admin:a")  # default's
    default_before = contents(client, "default")
    eu_settings = [keys.seq_settings(name, "eu") for name in sequences.SEQUENCES]
    client.delete(*eu_settings)
    assert sequences.describe(client, "credit_note", series="eu")["dedicated"] is True
    assert [client.hgetall(key) for key in eu_settings] == [
        sequences.DEFAULTS[name] for name in sequences.SEQUENCES]
    client.delete(*eu_settings)
    sequences.update(client, "invoice", {"increment": 2}, actor="admin:a", series="eu")
    assert [client.hgetall(key) for key in eu_settings] == [
        {**sequences.DEFAULTS["invoice"], "increment": "2"}, sequences.DEFAULTS["credit_note"]]
    client.delete(*eu_settings)
    entry, _ = allocate(client, "orange", "invoice", "1", date(2026, 3, 4))
    assert (entry["series"], entry["formatted"]) == ("eu", "INV-2026-000001")
    assert contents(client, "default") == default_before


def test_a_change_racing_the_deletion_of_its_series_answers_503_and_writes_nothing(
        monkeypatch):
    client = fakeredis.FakeRedis(decode_responses=True)
    create_series(client, "eu")
    client.delete(*(keys.seq_settings(name, "eu") for name in sequences.SEQUENCES))
    ensure = sequences.ensure_sequences

    def deleted_right_after(client, series):  # the defaults are written, then eu is deleted
        ensure(client, series)
        delete_series(client, series, [])

    monkeypatch.setattr(sequences, "ensure_sequences", deleted_right_after)
    with pytest.raises(ServiceUnavailable) as refused:
        sequences.update(client, "invoice", {"increment": 2}, actor="admin:a", series="eu")
    assert refused.value.message == "Series eu is not initialised; retry"
    assert client.keys("*eu*") == []


# --- HTTP on the real server -----------------------------------------------------------------


@pytest.mark.integration
def test_next_number_only_moves_forward_and_is_audited(client, agent, admin, valkey):
    blue = agent("blue")
    for i in range(3):
        take(client, blue, str(i))
    before = snapshot(valkey.url)
    for wanted in (1, 3):
        response = client.patch("/v1/sequences/invoice", headers=admin,
                                 json={"next_number": wanted, "period": "2026"})
        assert response.status_code == 409
        assert "only move forward" in response.get_json()["message"]
    assert snapshot(valkey.url) == before
    raised = client.patch("/v1/sequences/invoice", headers=admin,
                          json={"next_number": 50, "period": "2026"}).get_json()
    row = next(r for r in raised["periods"] if r["period"] == "2026")
    assert (row["last_number"], row["next_number"]) == (3, 50)
    assert take(client, blue, "x").get_json()["number"] == 50
    record = client.get("/v1/sequences/invoice/audit", headers=admin).get_json()["records"][-1]
    assert record["by"].startswith("admin:") and record["period"] == "2026"
    assert (record["before"]["next_number"], record["after"]["next_number"]) == ("4", "50")


@pytest.mark.integration
def test_reset_locked_once_numbers_issued(client, agent, admin):
    take(client, agent("blue"), "1")
    response = client.patch("/v1/sequences/invoice", headers=admin,
                            json={"reset": "monthly", "format": "{YEAR}{MONTH}{NUMBER}"})
    assert response.status_code == 409


@pytest.mark.integration
def test_each_refused_setting_says_exactly_why(client, agent, admin, valkey):
    """The admin reads why a change was refused (README "Troubleshooting"): whole answers."""

    def refused(body, status):
        response = client.patch("/v1/sequences/invoice", headers=admin, json=body)
        assert response.status_code == status, response.get_json()
        answer = response.get_json()
        return answer["message"], answer["errors"]

    assert client.get("/v1/sequences/invoice", headers=admin).status_code == 200  # defaults
    before = snapshot(valkey.url)
    # Nothing issued: an increment of 5 makes 5 the next number, so 3 goes backwards.
    assert refused({"increment": 5, "next_number": 3, "period": "2026"}, 409) == (
        "next_number can only move forward: in period 2026 the next number is 5 "
        "(no number is issued yet)", {})
    assert refused({"padding": 2, "next_number": 100, "period": "2026"}, 409) == (
        "sequence exhausted: the next number 100 would not fit the padding or the cap "
        f"{sequences.MAX_NUMBER}", {})
    assert refused({"next_number": 9, "period": "2026-11"}, 422) == (
        "Validation failed",
        {"json": {"period": ["Not a period of a yearly reset ('all', 'YYYY' or 'YYYY-MM')."]}})
    assert snapshot(valkey.url) == before
    assert client.patch("/v1/sequences/invoice", headers=admin,
                        json={"next_number": 2, "period": "2026"}).status_code == 200
    assert refused({"next_number": 1, "period": "2026"}, 409)[0] == (
        "next_number can only move forward: in period 2026 the next number is 2 "
        "(no number is issued yet; 1 was skipped (see the audit))")
    take(client, agent("blue"), "a")
    assert refused({"next_number": 1, "period": "2026"}, 409)[0] == (
        "next_number can only move forward: in period 2026 the next number is 3 "
        "(numbers up to 2 are issued)")
    assert refused({"reset": "monthly", "format": "{YEAR}{MONTH}{NUMBER}"}, 409) == (
        "reset cannot change once numbers were issued in this sequence: the new periods "
        "would restart and repeat formatted numbers", {})


BAD_PATCHES = [
    {"increment": 0}, {"increment": -1}, {"increment": 10**9}, {"increment": "2"},
    {"next_number": 10**16}, {"next_number": 0}, {"padding": 16}, {"padding": -1},
    {"format": "INV-{YEAR}-{NUM}"}, {"format": "INV-{NUMBER}"}, {"format": "x\x07{NUMBER}"},
    {"reset": "weekly"}, {"colour": "red"}, {}, {"next_number": 9, "period": "2026-13"},
    {"next_number": 9, "period": "2026-11"}, {"dedicated": True},
    {"format": "CN-{YEAR}-{NUMBER}"},
]


@pytest.mark.integration
@pytest.mark.parametrize("body", BAD_PATCHES)
def test_bad_patches_change_nothing(client, admin, agent, valkey, body):
    take(client, agent("blue"), "warm-up")
    before = snapshot(valkey.url)
    response = client.patch("/v1/sequences/invoice", headers=admin, json=body)
    assert 400 <= response.status_code < 500, body
    assert response.get_json()["code"] == response.status_code
    assert snapshot(valkey.url) == before
    if not body:  # nothing to change is an error, saying so
        assert (response.status_code, response.get_json()["errors"]) == (
            422, {"json": {"_schema": ["Send at least one setting to change."]}})


@pytest.mark.integration
def test_credit_note_format_must_differ_from_invoices(client, admin):
    # The admin is told which settings meet and one number both would print (SERIES.md).
    response = client.patch("/v1/sequences/credit_note", headers=admin,
                            json={"format": "INV-{YEAR}-{NUMBER}"})
    assert response.status_code == 409
    answer = response.get_json()
    assert (answer["message"], answer["errors"]) == (
        "Invoices ('INV-{YEAR}-{NUMBER}', padding 6) and dedicated credit notes "
        "('INV-{YEAR}-{NUMBER}', padding 6) could both print 'INV-1000-100000'; give them "
        "formats that cannot meet",
        {"json": {"format": ["Invoices and dedicated credit notes need formats that can never "
                             "print the same number."]}})


@pytest.mark.integration
def test_ledger_pages_in_number_order(client, agent, admin):
    blue = agent("blue")
    for i in range(7):
        take(client, blue, f"r{i}")
    page = client.get("/v1/sequences/invoice/ledger?period=2026&limit=3", headers=admin)
    body = page.get_json()
    assert [e["number"] for e in body["entries"]] == [1, 2, 3] and body["next_after"] == 3
    rest = client.get("/v1/sequences/invoice/ledger?period=2026&after=3&limit=10",
                      headers=admin).get_json()
    assert [e["number"] for e in rest["entries"]] == [4, 5, 6, 7] and rest["next_after"] is None
    for query in ("limit=0", "limit=100000", "after=-1", "period=26", "cursor=1"):
        assert client.get(f"/v1/sequences/invoice/ledger?{query}",
                          headers=admin).status_code == 422
    assert client.get("/v1/sequences/nope/ledger", headers=admin).status_code == 404


@pytest.mark.integration
def test_gaps_list_void_unconfirmed_skipped_and_missing(app_config, redis_client, agent, admin):
    from coordinator.app import create_app

    client = create_app({**app_config, "UNCONFIRMED_GRACE_SECONDS": 0}).test_client()
    blue = agent("blue")
    one, two, three = (take(client, blue, r).get_json() for r in "abc")
    client.post(f"/v1/allocations/{one['id']}/void", headers=blue, json={"reason": "dup"})
    client.post(f"/v1/allocations/{two['id']}/confirm", headers=blue,
                json={"invoicenum": two["formatted"]})
    client.patch("/v1/sequences/invoice", headers=admin, json={"next_number": 10,
                                                               "period": "2026"})
    ten = take(client, blue, "d").get_json()
    eleven = take(client, blue, "e").get_json()
    take(client, blue, "f")
    # Simulate lost data (impossible through the API): number 11's ledger entry disappears.
    redis_client.hdel(keys.seq_ledger("invoice", "2026"), "11")
    redis_client.zrem(keys.seq_ledger_order("invoice", "2026"), "11")
    found = client.get("/v1/sequences/invoice/gaps?period=2026",
                       headers=admin).get_json()["gaps"]
    kinds = [(g["kind"], g.get("number", g.get("after"))) for g in found]
    assert ("void", 1) in kinds and ("unconfirmed", 3) in kinds
    assert ("skipped", 3) in kinds and ("unconfirmed", ten["number"]) in kinds
    assert {"kind": "missing", "after": 10, "before": 12} in found
    assert all(g.get("number") != two["number"] for g in found)  # confirmed: no gap
    assert eleven["number"] == 11
    assert next(g for g in found if g["kind"] == "void")["reason"] == "dup"


@pytest.mark.integration
def test_domain_ledger_api(redis_client):
    for i in range(3):
        allocate(redis_client, "blue", "invoice", str(i), date(2026, 1, 1))
    assert [e["number"] for e in list_ledger(redis_client, "invoice", "2026")] == [1, 2, 3]
    assert gaps(redis_client, "invoice", "2026", grace_seconds=10**9) == []
