"""Allocation over HTTP against a real Valkey: replays, periods, credit notes, scopes, input."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from coordinator import keys
from coordinator.numbering import sequences
from tests.support import snapshot

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]


def take(client, headers, reference, document="invoice", date="2026-11-21"):
    body = {"document": document, "reference": reference}
    if date is not None:
        body["date"] = date
    return client.post("/v1/allocations", json=body, headers=headers)


def _counted(result: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("invoice_sync_allocations_total", {
        "series": "default", "sequence": "invoice", "result": result}) or 0.0


def test_new_then_replay_same_number(client, agent):
    blue = agent("blue")
    counted = _counted("new"), _counted("replay")  # docs/MONITORING.md
    first = take(client, blue, "10234")
    assert first.status_code == 201
    body = first.get_json()
    assert body["id"] == "invoice:2026:1"
    assert body["formatted"] == "INV-2026-000001"
    assert (body["system"], body["document"], body["reference"], body["status"]) == (
        "blue", "invoice", "10234", "issued")
    assert body["issued_at"].endswith("Z")
    again = take(client, blue, "10234", date="2026-01-02")  # same period: same answer
    assert again.status_code == 200
    assert again.get_json() == body
    assert take(client, blue, "10235").get_json()["number"] == 2
    assert (_counted("new"), _counted("replay")) == (counted[0] + 2, counted[1] + 1)


def test_same_reference_different_systems_get_different_numbers(client, agent):
    assert take(client, agent("blue"), "1").get_json()["number"] == 1
    assert take(client, agent("red"), "1").get_json()["number"] == 2


def test_replay_with_date_in_other_period_is_409_and_changes_nothing(client, agent, valkey):
    blue = agent("blue")
    take(client, blue, "7", date="2026-12-31")
    before = snapshot(valkey.url)
    response = take(client, blue, "7", date="2027-01-01")
    assert response.status_code == 409
    assert "invoice:2026:1" in response.get_json()["message"]
    # The field at fault, as for any field error (the agent shows it next to the date).
    assert response.get_json()["errors"] == {
        "json": {"date": ["Does not match the period of the existing allocation."]}}
    assert snapshot(valkey.url) == before


def test_yearly_reset_follows_document_date_not_clock(client, agent, admin):
    blue = agent("blue")
    assert take(client, blue, "a", date="2025-12-31").get_json()["id"] == "invoice:2025:1"
    assert take(client, blue, "b", date="2026-01-01").get_json()["id"] == "invoice:2026:1"
    late = take(client, blue, "c", date="2025-06-01").get_json()
    assert (late["id"], late["formatted"]) == ("invoice:2025:2", "INV-2025-000002")


def test_monthly_reset_and_day_tags(client, agent, admin):
    response = client.patch("/v1/sequences/invoice", headers=admin, json={
        "reset": "monthly", "format": "R{YEAR}{MONTH}{DAY}-{NUMBER}", "padding": 3})
    assert response.status_code == 200, response.get_json()
    blue = agent("blue")
    assert take(client, blue, "a", date="2026-11-30").get_json()["formatted"] == "R20261130-001"
    assert take(client, blue, "b", date="2026-11-02").get_json()["formatted"] == "R20261102-002"
    december = take(client, blue, "c", date="2026-12-01").get_json()
    assert (december["id"], december["formatted"]) == ("invoice:2026-12:1", "R20261201-001")


def test_reset_never(client, agent, admin):
    client.patch("/v1/sequences/invoice", headers=admin, json={"reset": "never",
                                                                "format": "{NUMBER}"})
    blue = agent("blue")
    assert take(client, blue, "a", date="2025-01-01").get_json()["id"] == "invoice:all:1"
    assert take(client, blue, "b", date="2030-01-01").get_json()["formatted"] == "000002"


def test_increment_is_followed(client, agent, admin):
    client.patch("/v1/sequences/invoice", headers=admin, json={"increment": 10})
    blue = agent("blue")
    assert [take(client, blue, str(i)).get_json()["number"] for i in range(3)] == [10, 20, 30]


def test_date_defaults_to_today(client, agent):
    body = take(client, agent("blue"), "x", date=None).get_json()
    assert body["period"] == str(sequences.utcnow().year)


def test_credit_notes_dedicated_by_default(client, agent):
    blue = agent("blue")
    note = take(client, blue, "5", document="credit_note").get_json()
    assert (note["id"], note["formatted"]) == ("credit_note:2026:1", "CN-2026-000001")
    # Same WHMCS id as an invoice is another document: its own number.
    assert take(client, blue, "5").get_json()["id"] == "invoice:2026:1"


def test_credit_notes_shared_draw_from_invoice(client, agent, admin):
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"dedicated": False}).status_code == 200
    blue = agent("blue")
    assert take(client, blue, "1").get_json()["number"] == 1
    note = take(client, blue, "1", document="credit_note")
    assert note.status_code == 201
    assert (note.get_json()["id"], note.get_json()["document"]) == ("invoice:2026:2",
                                                                    "credit_note")
    assert take(client, blue, "2").get_json()["number"] == 3
    assert take(client, blue, "1", document="credit_note").status_code == 200


@pytest.mark.parametrize("start_dedicated", [True, False])
def test_dedicated_toggle_refused_once_credit_notes_exist(client, agent, admin,
                                                         start_dedicated, valkey):
    """The hazard: a replay must never find itself in the other sequence and get a 2nd number."""
    client.patch("/v1/sequences/credit_note", headers=admin, json={"dedicated": start_dedicated})
    blue = agent("blue")
    note = take(client, blue, "cn-1", document="credit_note").get_json()
    before = snapshot(valkey.url)
    refused = client.patch("/v1/sequences/credit_note", headers=admin,
                           json={"dedicated": not start_dedicated})
    assert refused.status_code == 409
    home = "credit_note" if start_dedicated else "invoice"
    assert refused.get_json()["message"] == (
        f"dedicated cannot change: 1 credit note(s) were numbered in the {home} sequence, "
        "and replays of them must keep their numbers")
    assert snapshot(valkey.url) == before
    replay = take(client, blue, "cn-1", document="credit_note")
    assert (replay.status_code, replay.get_json()["id"]) == (200, note["id"])


def test_toggle_before_use_and_stale_routing_hint(client, agent, admin, app_config):
    """Another coordinator process still believing the old routing is corrected by the script."""
    from coordinator.app import create_app

    other = create_app(app_config).test_client()  # same process-wide hint, on purpose stale
    blue = agent("blue")
    take(other, blue, "inv", document="invoice")
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"dedicated": False}).status_code == 200
    note = take(other, blue, "cn", document="credit_note").get_json()
    assert note["sequence"] == "invoice"
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"dedicated": True}).status_code == 409
    for sequence in sequences.SEQUENCES:  # one record of the switch in each sequence's audit
        audit = client.get(f"/v1/sequences/{sequence}/audit",
                           headers=admin).get_json()["records"]
        (record,) = audit
        assert record == {"at": record["at"], "by": record["by"], "period": None,
                          "before": {"dedicated": True}, "after": {"dedicated": False}}
        assert re.fullmatch(r"admin:\S+", record["by"])
        assert abs(datetime.fromisoformat(record["at"]) - datetime.now(UTC)) < timedelta(hours=1)


def test_interrupted_toggle_answers_503_then_repairs(client, agent, admin, redis_client):
    blue = agent("blue")
    take(client, blue, "warm-up")
    # Half a switch to dedicated=False: credit_note closed, invoice not yet opened.
    redis_client.hset(keys.seq_settings("credit_note"), "dedicated", "0")
    assert take(client, blue, "n", document="credit_note").status_code == 503
    assert redis_client.hget(keys.seq_stats("invoice"), "credit_notes") is None
    assert client.patch("/v1/sequences/credit_note", headers=admin,
                        json={"dedicated": False}).status_code == 200
    assert take(client, blue, "n", document="credit_note").get_json()["sequence"] == "invoice"


def test_agent_scopes(client, agent, admin):
    blue, red = agent("blue"), agent("red")
    entry = take(client, blue, "1").get_json()
    url = f"/v1/allocations/{entry['id']}"
    assert client.get(url, headers=red).status_code == 403
    assert client.post(url + "/confirm", headers=red,
                       json={"invoicenum": entry["formatted"]}).status_code == 403
    assert client.post(url + "/void", headers=red, json={"reason": "x"}).status_code == 403
    for method, path in [("get", "/v1/sequences"), ("get", "/v1/sequences/invoice"),
                         ("patch", "/v1/sequences/invoice"),
                         ("get", "/v1/sequences/invoice/ledger"),
                         ("get", "/v1/sequences/invoice/gaps"),
                         ("get", "/v1/sequences/invoice/audit")]:
        response = getattr(client, method)(path, headers=blue, json={"increment": 2}
                                           if method == "patch" else None)
        assert response.status_code == 403, path
    assert take(client, admin, "1").status_code == 403  # an admin has no system to number for
    assert take(client, {}, "1").status_code == 401
    assert client.get(url, headers=blue).get_json() == entry
    assert client.get(url, headers=admin).status_code == 200


def test_confirm_and_void_transitions(client, agent, admin):
    blue = agent("blue")
    one, two, three = (take(client, blue, r).get_json() for r in ("1", "2", "3"))
    url = "/v1/allocations/{}/"
    wrong = client.post(url.format(one["id"]) + "confirm", headers=blue,
                        json={"invoicenum": "INV-2026-000002"})
    assert wrong.status_code == 409
    ok = client.post(url.format(one["id"]) + "confirm", headers=blue,
                     json={"invoicenum": one["formatted"]})
    assert ok.status_code == 200
    confirmed = ok.get_json()
    assert (confirmed["status"], confirmed["confirmed_by"]) == ("confirmed", "agent:blue")
    again = client.post(url.format(one["id"]) + "confirm", headers=blue,
                        json={"invoicenum": one["formatted"]})
    assert again.get_json() == confirmed  # idempotent, times unchanged
    # An agent cannot void a confirmed number; an admin can.
    assert client.post(url.format(one["id"]) + "void", headers=blue,
                       json={"reason": "oops"}).status_code == 403
    voided = client.post(url.format(one["id"]) + "void", headers=admin, json={"reason": "oops"})
    assert voided.get_json()["voided_by"].startswith("admin:")
    # Void an issued number (agent), then it cannot be confirmed; repeat void is idempotent.
    void = client.post(url.format(two["id"]) + "void", headers=blue,
                       json={"reason": "deleted before sending"}).get_json()
    assert (void["status"], void["void_reason"]) == ("void", "deleted before sending")
    assert client.post(url.format(two["id"]) + "confirm", headers=blue,
                       json={"invoicenum": two["formatted"]}).status_code == 409
    assert client.post(url.format(two["id"]) + "void", headers=blue,
                       json={"reason": "other"}).get_json() == void
    assert client.post(url.format(three["id"]) + "void", headers=blue,
                       json={}).status_code == 422
    assert client.post("/v1/allocations/invoice:2026:99/void", headers=admin,
                       json={"reason": "x"}).status_code == 404
    assert client.get("/v1/allocations/nonsense", headers=admin).status_code == 404


def test_confirm_is_agent_only(client, agent, admin):
    entry = take(client, agent("blue"), "1").get_json()
    assert client.post(f"/v1/allocations/{entry['id']}/confirm", headers=admin,
                       json={"invoicenum": entry["formatted"]}).status_code == 403


BAD_BODIES = [
    {"document": "quote", "reference": "1"},
    {"document": "invoice", "reference": ""},
    {"document": "invoice", "reference": "x" * 129},
    {"document": "invoice", "reference": "a\x00b"},
    {"document": "invoice", "reference": "a\nb"},
    {"document": "invoice", "reference": "a\u200bb"},
    {"document": "invoice", "reference": 12},
    {"document": "invoice", "reference": "1", "date": "21.11.2026"},
    {"document": "invoice", "reference": "1", "date": "2026-02-30"},
    {"document": "invoice", "reference": "1", "date": "2026-11-21T10:00:00"},
    {"document": "invoice", "reference": "1", "date": "0001-01-01"},
    {"document": "invoice", "reference": "1", "system": "red"},
    {"reference": "1"},
    [],
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_allocation_input_changes_nothing(client, agent, valkey, body):
    blue = agent("blue")
    take(client, blue, "warm-up")
    before = snapshot(valkey.url)
    response = client.post("/v1/allocations", json=body, headers=blue)
    assert 400 <= response.status_code < 500
    error = response.get_json()
    assert error["code"] == response.status_code and error["message"]
    assert snapshot(valkey.url) == before


def test_a_refused_reference_or_date_says_exactly_what_is_wrong(client, agent, valkey):
    """The agent shows the field's error next to the document: each is the documented text,
    a date outside the years a period can name is refused, and the first and last years it
    can name are numbered."""
    blue = agent("blue")
    take(client, blue, "warm-up")
    before = snapshot(valkey.url)
    for reference, date, errors in (
        ("a\x07b", "2026-11-21",
         {"reference": ["Must contain printable characters only (no control characters)."]}),
        ("old", "1899-12-31", {"date": ["Year must be between 1900 and 9999."]}),
    ):
        response = take(client, blue, reference, date=date)
        assert (response.status_code, response.get_json().get("errors")) == (422, {"json": errors})
    assert snapshot(valkey.url) == before
    for date, formatted in (("1900-01-01", "INV-1900-000001"), ("9999-12-31", "INV-9999-000001")):
        taken = take(client, blue, f"edge-{date}", date=date)
        assert (taken.status_code, taken.get_json().get("formatted")) == (201, formatted)


@pytest.mark.parametrize("raw, content_type, code", [
    (b"{not json", "application/json", 400),
    (b'{"document": "invoice", "reference": "' + b"x" * 70000 + b'"}', "application/json", 413),
])
def test_malformed_and_oversized_bodies(client, agent, valkey, raw, content_type, code):
    blue = agent("blue")
    take(client, blue, "warm-up")
    before = snapshot(valkey.url)
    response = client.post("/v1/allocations", data=raw,
                           headers={**blue, "Content-Type": content_type})
    assert response.status_code == code
    assert response.get_json()["code"] == code
    assert snapshot(valkey.url) == before


def test_padding_exhausted_is_a_clear_409(client, agent, admin, valkey):
    client.patch("/v1/sequences/invoice", headers=admin,
                 json={"padding": 2, "next_number": 99, "period": "2026"})
    blue = agent("blue")
    assert take(client, blue, "last").get_json()["formatted"] == "INV-2026-99"
    before = snapshot(valkey.url)
    response = take(client, blue, "one-too-many")
    assert response.status_code == 409
    assert "exhausted" in response.get_json()["message"]
    assert response.get_json()["errors"] == {}  # no field of the request is at fault
    assert snapshot(valkey.url) == before
    # The next year starts over, so only that period is exhausted.
    assert take(client, blue, "next-year", date="2027-01-01").status_code == 201


def test_cap_below_2_53_is_exact_and_never_wraps(client, agent, admin, valkey):
    client.patch("/v1/sequences/invoice", headers=admin, json={
        "padding": 0, "next_number": sequences.MAX_NUMBER - 1, "period": "2026"})
    blue = agent("blue")
    numbers = [take(client, blue, r).get_json()["number"] for r in ("a", "b")]
    assert numbers == [sequences.MAX_NUMBER - 1, sequences.MAX_NUMBER]
    assert take(client, blue, "b").get_json()["formatted"] == f"INV-2026-{sequences.MAX_NUMBER}"
    before = snapshot(valkey.url)
    response = take(client, blue, "c")
    assert response.status_code == 409 and "exhausted" in response.get_json()["message"]
    assert snapshot(valkey.url) == before


def test_allocation_body_is_exactly_the_schema_dump(client, agent, admin):
    # The hot path shapes the body without marshmallow; it must stay what the schema dumps
    # (fields, types and order), for new, replayed, confirmed and voided entries alike.
    from coordinator.numbering.schemas import AllocationSchema

    schema, blue = AllocationSchema(), agent("blue")

    def same_as_dump(response):
        raw = response.get_json()
        stored = client.get(f"/v1/allocations/{raw['id']}", headers=admin).get_json()
        assert list(raw.items()) == list(schema.dump(stored).items())
        return raw

    new = same_as_dump(take(client, blue, "shape-1"))
    client.post(f"/v1/allocations/{new['id']}/confirm", headers=blue,
                json={"invoicenum": new["formatted"]})
    assert same_as_dump(take(client, blue, "shape-1"))["status"] == "confirmed"
    voided = same_as_dump(take(client, blue, "shape-2"))
    client.post(f"/v1/allocations/{voided['id']}/void", headers=blue, json={"reason": "x"})
    assert same_as_dump(take(client, blue, "shape-2"))["void_reason"] == "x"


def test_each_refused_transition_says_exactly_why(client, agent, admin):
    # The whole message: it is what the agent logs and an admin reads to reconcile.
    blue, red = agent("blue"), agent("red")
    take(client, blue, "1")
    take(client, blue, "2")

    def refusal(path, headers, body):
        answer = client.post(f"/v1/allocations/{path}", headers=headers, json=body)
        return answer.status_code, answer.get_json()["message"]

    assert refusal("invoice:2026:9/confirm", blue, {"invoicenum": "X"}) == (
        404, "No allocation 'invoice:2026:9'")
    # an id that is no allocation id at all, and the default series spelled out (its ids never are)
    assert refusal("nonsense/confirm", blue, {"invoicenum": "X"}) == (
        404, "No allocation 'nonsense'")
    assert refusal("default/invoice:2026:1/confirm", blue, {"invoicenum": "X"}) == (
        404, "No allocation 'default/invoice:2026:1'")
    # reading a well-formed id that was never allocated names it the same way
    missing = client.get("/v1/allocations/invoice:2026:9", headers=admin)
    assert (missing.status_code, missing.get_json()["message"]) == (
        404, "No allocation 'invoice:2026:9'")
    assert refusal("invoice:2026:1/confirm", red, {"invoicenum": "INV-2026-000001"}) == (
        403, "This agent token belongs to another system")
    assert refusal("invoice:2026:1/confirm", blue, {"invoicenum": "INV-2026-1"}) == (
        409, "invoicenum 'INV-2026-1' is not the allocated number 'INV-2026-000001'")
    assert client.post("/v1/allocations/invoice:2026:1/confirm", headers=blue,
                       json={"invoicenum": "INV-2026-000001"}).status_code == 200
    assert refusal("invoice:2026:1/void", blue, {"reason": "typo"}) == (
        403, "invoice:2026:1 is confirmed: only an admin can void it")
    assert client.post("/v1/allocations/invoice:2026:2/void", headers=blue,
                       json={"reason": "invoice deleted"}).status_code == 200
    assert refusal("invoice:2026:2/confirm", blue, {"invoicenum": "INV-2026-000002"}) == (
        409, "invoice:2026:2 is void and cannot be confirmed")


def test_transition_answers_whether_this_call_changed_the_entry(redis_client, client, agent):
    from coordinator.numbering import allocation

    take(client, agent("blue"), "1")
    who = {"actor_kind": "agent", "actor_system": "blue", "actor": "agent:blue"}
    entry, changed = allocation.transition(redis_client, "invoice:2026:1", "confirm",
                                           "INV-2026-000001", **who)
    assert (entry["status"], changed) == ("confirmed", True)
    entry, changed = allocation.transition(redis_client, "invoice:2026:1", "confirm",
                                           "INV-2026-000001", **who)
    assert (entry["status"], changed) == ("confirmed", False)
    # The repeat still writes (so the WAITAOF after it covers the original confirmation), in
    # the sequence's own keys: one hash slot, as on a Redis Cluster it must be.
    assert redis_client.hget(keys.seq_stats("invoice"), "replays") == "1"


def test_one_allocation_writes_only_keys_of_one_hash_slot(client, agent, redis_client):
    """A Redis Cluster runs a script only on keys of one slot: every key an allocation
    writes carries the same hash tag (on a single server a stray key would go unnoticed)."""
    import re

    blue = agent("blue")
    take(client, blue, "warm-up")  # sequences initialised: their keys exist from here on
    for document, year in (("invoice", "2027"), ("credit_note", "2028")):
        system = agent(f"new-{document}".replace("_", "-"))  # a new system, a new period
        before = set(redis_client.keys("*"))
        assert take(client, system, "1", document=document,
                    date=f"{year}-03-01").status_code == 201
        # ({auth} keys: the request's rate-limit counter, not the allocation)
        written = {k for k in set(redis_client.keys("*")) - before if not k.startswith("{auth}")}
        assert written, "an allocation writes new keys (its reference index at least)"
        tags = {re.match(r"^[^{]*\{([^}]*)\}", key).group(1) for key in written}
        assert len(tags) == 1, sorted(written)


def test_sequences_that_cannot_be_initialised_answer_503_and_do_not_hang(
    client, agent, monkeypatch
):
    """If the sequences' settings cannot be (re)created, allocation answers a clear 503 after
    one attempt to create them, instead of looping."""
    from coordinator.numbering import allocation

    attempts = []
    monkeypatch.setattr(allocation, "ensure_sequences",
                        lambda redis_client, series="default": attempts.append(series))
    answer = take(client, agent("blue"), "1")
    assert answer.status_code == 503
    assert answer.get_json()["message"] == "Sequence invoice is not initialised; retry"
    assert attempts == ["default"]
