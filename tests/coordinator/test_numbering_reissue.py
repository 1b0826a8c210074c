"""An admin's reissue of a void number, on a real Valkey: a new number for the same document,
both entries linked, the reason kept, one chained event, and every refusal changing nothing."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.numbering import allocation, chain
from tests.coordinator import ledger_support
from tests.coordinator.systems_support import body

pytestmark = pytest.mark.integration

# Shared fixtures (an app with a Fernet key, system blue, an auditor).
app_config, blue, auditor = (ledger_support.app_config, ledger_support.blue,
                             ledger_support.auditor)

REASON = "number voided by mistake, see ticket 812"
DAY = date(2026, 11, 21)


def take(client, headers, reference, status=201):
    response = client.post("/v1/allocations", headers=headers, json={
        "document": "invoice", "reference": reference, "date": "2026-11-21"})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def void(client, headers, entry, reason="deleted before sending"):
    response = client.post(f"/v1/allocations/{entry['id']}/void", headers=headers,
                           json={"reason": reason})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def reissue(client, headers, allocation_id, payload=None):
    return client.post(f"/v1/allocations/{allocation_id}/reissue", headers=headers,
                       json={"reason": REASON} if payload is None else payload)


def void_and_reissue(client, headers, admin, entry) -> dict:
    """Void ``entry`` (as ``headers``) and reissue it (as ``admin``): the new allocation."""
    void(client, headers, entry)
    response = reissue(client, admin, entry["id"])
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def numbering_state(redis_client) -> dict:
    """Every numbering key and its exact value (DUMP), to show a refusal changed nothing."""
    return {key: redis_client.dump(key) for key in redis_client.scan_iter("{ser:*")}


def test_reissue_gives_the_document_a_new_number_linked_both_ways(
        client, admin, blue, redis_client):
    first = take(client, blue, "r-1")
    take(client, blue, "r-2")
    void(client, blue, first)
    response = reissue(client, admin, first["id"])
    assert response.status_code == 201, response.get_json()
    # sealed after the answer, as every change of the ledger is (no verify needed)
    assert redis_client.llen(keys.seq_chain("invoice")) == chain.event_count(
        redis_client, "invoice") == 4
    new = response.get_json()
    assert (new["id"], new["number"], new["formatted"]) == (
        "invoice:2026:3", 3, "INV-2026-000003")
    assert (new["status"], new["system"], new["document"], new["reference"], new["date"]) == (
        "issued", "blue", "invoice", "r-1", "2026-11-21")
    assert (new["reissue_of"], new["reissue_reason"]) == (first["id"], REASON)
    assert new["reissued_by"].startswith("admin:tok_")
    old = client.get(f"/v1/allocations/{first['id']}", headers=admin).get_json()
    assert (old["status"], old["void_reason"], old["reissued_as"]) == (
        "void", "deleted before sending", new["id"])
    # The agent's allocation of that reference now answers the new number, as a replay.
    assert take(client, blue, "r-1", status=200) == new
    # The void stays in the ledger; the gap report says what became of it.
    ledger = client.get("/v1/sequences/invoice/ledger?period=2026", headers=admin).get_json()
    assert [(e["number"], e["status"]) for e in ledger["entries"]] == [
        (1, "void"), (2, "issued"), (3, "issued")]
    gaps = client.get("/v1/sequences/invoice/gaps?period=2026", headers=admin).get_json()
    assert [(g["kind"], g.get("reissued_as")) for g in gaps["gaps"]] == [("void", new["id"])]
    # The number is confirmed like any other, and the chain holds one 'reissued' event.
    confirmed = client.post(f"/v1/allocations/{new['id']}/confirm", headers=blue,
                            json={"invoicenum": new["formatted"]})
    assert confirmed.status_code == 200
    events = [json.loads(raw) for raw in redis_client.lrange(keys.seq_events("invoice"), 0, -1)]
    assert [e["type"] for e in events] == ["issued", "issued", "voided", "reissued",
                                          "confirmed"]
    assert events[3] == {**events[3], "id": new["id"], "reissue_of": first["id"],
                         "reason": REASON, "number": "3", "reference": "r-1"}
    result = chain.verify(redis_client, "invoice")
    assert result["ok"] is True and result["events"] == 5
    assert result["unchained_numbers"] == 0  # the reissued number is chained, not "upgraded"


def test_a_reissued_number_voided_again_can_be_reissued_again(client, admin, blue):
    first = take(client, blue, "r-1")
    void(client, blue, first)
    second = reissue(client, admin, first["id"]).get_json()
    void(client, admin, second, "wrong again")
    third = reissue(client, admin, second["id"])
    assert third.status_code == 201
    assert third.get_json()["reissue_of"] == second["id"]
    assert take(client, blue, "r-1", status=200)["id"] == third.get_json()["id"]


def test_reissue_in_a_sequence_that_never_resets(client, admin, blue):
    """Numbers of a sequence without periods (``invoice:all:N``) are reissued there too."""
    patched = client.patch("/v1/sequences/invoice", headers=admin,
                           json={"reset": "never", "format": "{NUMBER}"})
    assert patched.status_code == 200, patched.get_json()
    first = take(client, blue, "r-1")
    assert first["id"] == "invoice:all:1"
    reissued = void_and_reissue(client, blue, admin, first)
    assert (reissued["id"], reissued["formatted"]) == ("invoice:all:2", "000002")


def test_reissue_in_another_series_and_for_a_monthly_credit_note(client, admin, redis_client):
    assert client.post("/v1/series", headers=admin,
                       json={"name": "acme-us"}).status_code == 201
    made = client.post("/v1/systems", headers=admin,
                       json=body(name="red", series="acme-us"))
    assert made.status_code == 201, made.get_json()
    red = {"Authorization": f"Bearer {made.get_json()['agent_token']}"}
    assert client.patch("/v1/series/acme-us/sequences/credit_note", headers=admin, json={
        "reset": "monthly", "format": "CN-{YEAR}{MONTH}-{NUMBER}"}).status_code == 200
    taken = client.post("/v1/allocations", headers=red, json={
        "document": "credit_note", "reference": "c-1", "date": "2026-11-21"}).get_json()
    assert taken["id"] == "acme-us/credit_note:2026-11:1"
    reissued = void_and_reissue(client, red, admin, taken)
    assert (reissued["id"], reissued["formatted"]) == (
        "acme-us/credit_note:2026-11:2", "CN-202611-000002")
    again = client.post("/v1/allocations", headers=red, json={
        "document": "credit_note", "reference": "c-1", "date": "2026-11-21"})
    assert again.status_code == 200 and again.get_json() == reissued
    assert chain.verify(redis_client, "credit_note", series="acme-us")["ok"] is True


def _refused(client, redis_client, allocation_id, headers, payload=None):
    before = numbering_state(redis_client)
    response = reissue(client, headers, allocation_id, payload)
    assert numbering_state(redis_client) == before, "a refused reissue changed stored data"
    body_ = response.get_json()
    assert set(body_) >= {"code", "status", "message", "errors"}, body_
    assert body_["code"] == response.status_code
    return response.status_code, body_["message"]


def test_every_refusal_changes_nothing(client, admin, blue, auditor, redis_client):
    issued = take(client, blue, "r-1")
    confirmed = take(client, blue, "r-2")
    client.post(f"/v1/allocations/{confirmed['id']}/confirm", headers=blue,
                json={"invoicenum": confirmed["formatted"]})
    voided = void(client, blue, take(client, blue, "r-3"))
    chain.seal(redis_client, "invoice")

    assert _refused(client, redis_client, issued["id"], admin) == (
        409, "invoice:2026:1 is issued: only a void number can be reissued (void it first, "
             "with the reason)")
    assert _refused(client, redis_client, confirmed["id"], admin)[0] == 409
    assert _refused(client, redis_client, "invoice:2026:99", admin) == (
        404, "No allocation 'invoice:2026:99'")
    assert _refused(client, redis_client, "not-an-id", admin)[0] == 404
    assert _refused(client, redis_client, voided["id"], auditor)[0] == 403
    assert _refused(client, redis_client, voided["id"], blue)[0] == 403
    assert _refused(client, redis_client, voided["id"], {})[0] == 401
    for bad in ({}, {"reason": ""}, {"reason": "x" * 501}, {"reason": "a\nb"},
                {"reason": 7}, {"reason": REASON, "number": 5}, []):
        status, _ = _refused(client, redis_client, voided["id"], admin, bad)
        assert status == 422, bad
    before = numbering_state(redis_client)
    raw = client.post(f"/v1/allocations/{voided['id']}/reissue", headers={
        **admin, "Content-Type": "application/json"}, data="{not json")
    assert raw.status_code == 400 and numbering_state(redis_client) == before

    # Reissued once: its document has a live number now, so a second reissue is refused.
    assert reissue(client, admin, voided["id"]).status_code == 201
    status, message = _refused(client, redis_client, voided["id"], admin)
    assert status == 409
    assert message == ("The document of invoice:2026:3 (invoice 'r-3' of system 'blue') now "
                       "has number invoice:2026:4; only the document's current number can be "
                       "reissued, and only when it is void")


def test_a_document_numbered_anew_after_a_void_is_not_reissued(client, admin, blue,
                                                              redis_client):
    """The reference index names another number (data from a hand repair): refused."""
    voided = void(client, blue, take(client, blue, "r-1"))
    other = take(client, blue, "r-2")
    redis_client.hset(keys.seq_refs("invoice", "invoice", "blue"), "r-1", other["id"])
    status, message = _refused(client, redis_client, voided["id"], admin)
    assert status == 409 and "now has number invoice:2026:2" in message


def test_damaged_or_half_switched_data_is_refused_by_name_and_changes_nothing(
        client, admin, blue, redis_client):
    """What only a hand repair, damaged data or a half-done switch leaves: each refusal says
    exactly what is wrong (an admin must act on it), and nothing changes."""
    voided = void(client, blue, take(client, blue, "r-1"))
    refs = keys.seq_refs("invoice", "invoice", "blue")
    redis_client.hdel(refs, "r-1")  # the reference index lost the document
    assert _refused(client, redis_client, voided["id"], admin) == (
        409, "The document of invoice:2026:1 (invoice 'r-1' of system 'blue') now has number "
             "none; only the document's current number can be reissued, and only when it is void")
    redis_client.hset(refs, "r-1", voided["id"])
    formatted = keys.series_formatted("default")
    redis_client.hset(formatted, "INV-2026-000002", "credit_note:2026:7")  # printed already
    assert _refused(client, redis_client, voided["id"], admin) == (
        409, "The next invoice number would print as 'INV-2026-000002', which series 'default' "
             "already issued (credit_note:2026:7); no number was taken. Raise next_number or "
             "change the format so the series prints a new string")
    redis_client.hdel(formatted, "INV-2026-000002")
    redis_client.hset(keys.seq_settings("invoice"), "reset", "monthly")  # the entry is yearly
    status, message = _refused(client, redis_client, voided["id"], admin)
    assert status == 500 and message.startswith(  # then the request id of the warning raised
        "Internal error: reissue of invoice:2026:1 refused with 'reset': the stored settings "
        "contradict the ledger entry; no number was taken. This is not a passing outage")
    redis_client.hset(keys.seq_settings("invoice"), "reset", "yearly")
    credit = void(client, blue, client.post("/v1/allocations", headers=blue, json={
        "document": "credit_note", "reference": "c-1", "date": "2026-11-21"}).get_json())
    # Credit notes half switched to the invoice sequence (credit_note closed, invoice not open).
    redis_client.hset(keys.seq_settings("credit_note"), "dedicated", "0")
    assert _refused(client, redis_client, credit["id"], admin) == (
        409, "Credit notes of series 'default' are no longer numbered in credit_note; the "
             "agent's next allocation of this document takes a number in the sequence that "
             "numbers them now")


def test_a_store_of_the_previous_release_is_adopted_and_the_reissue_waits_for_durability(
        redis_client):
    from coordinator.exceptions import NotDurable
    from coordinator.numbering import guard
    from coordinator.numbering.scripts import Durability

    taken, _ = allocation.allocate(redis_client, "blue", "invoice", "r-1", DAY)
    allocation.transition(redis_client, taken["id"], "void", "sent twice", actor_kind="admin",
                          actor_system=None, actor="admin:t")
    redis_client.delete(*(keys.seq_guard(s) for s in ("invoice", "credit_note")))  # no guard
    # Adopted (it has history), then written; a replica that does not acknowledge: a 503.
    with pytest.raises(NotDurable):
        allocation.reissue(redis_client, taken["id"], REASON, actor="admin:t",
                           durability=Durability(replicas=1, timeout_ms=50))
    assert guard.is_initialised(redis_client, "default")
    new = allocation.get(redis_client, allocation.get(redis_client, taken["id"])["reissued_as"])
    assert (new["id"], new["reissue_reason"], new["reissued_by"]) == (
        "invoice:2026:2", REASON, "admin:t")


def test_a_void_number_gone_before_the_script_runs_is_a_404(redis_client, monkeypatch):
    """Removed between the read and the script (a restore replaced the store meanwhile)."""
    from coordinator.exceptions import NotFound

    taken, _ = allocation.allocate(redis_client, "blue", "invoice", "r-1", DAY)
    allocation.transition(redis_client, taken["id"], "void", "sent twice", actor_kind="admin",
                          actor_system=None, actor="admin:t")
    run = allocation.scripts.run

    def gone_first(client, *args):
        client.hdel(keys.seq_ledger("invoice", "2026"), "1")
        return run(client, *args)

    monkeypatch.setattr(allocation.scripts, "run", gone_first)
    with pytest.raises(NotFound) as refused:
        allocation.reissue(redis_client, taken["id"], REASON, actor="admin:t")
    assert refused.value.message == "No allocation 'invoice:2026:1'"


def test_a_system_moved_out_of_the_series_is_refused(client, admin, blue, redis_client):
    voided = void(client, blue, take(client, blue, "r-1"))
    redis_client.hset(keys.series_members("default"), "blue", "closed")
    status, message = _refused(client, redis_client, voided["id"], admin)
    assert status == 409 and message == (
        "System 'blue' is no longer numbered by series 'default'; its documents get numbers "
        "in its current series")


def test_an_exhausted_sequence_takes_no_number(client, admin, blue, redis_client):
    voided = void(client, blue, take(client, blue, "r-1"))
    assert client.patch("/v1/sequences/invoice", headers=admin, json={
        "padding": 1, "next_number": 9, "period": "2026"}).status_code == 200
    take(client, blue, "r-2")  # 9: the last number that fits one digit
    status, message = _refused(client, redis_client, voided["id"], admin)
    assert status == 409 and message.startswith("sequence exhausted: invoice cannot issue")


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.one_of(
    st.text(max_size=600).filter(lambda r: not (0 < len(r) <= 500 and r.isprintable())),
    st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)))
def test_any_unacceptable_reason_is_a_422_that_changes_nothing(
        client, admin, blue, redis_client, reason):
    """Property: whatever the reason is, unless 1-500 printable characters, nothing changes."""
    if not redis_client.exists(keys.seq_ledger("invoice", "2026")):
        void(client, blue, take(client, blue, "r-1"))
    status, _ = _refused(client, redis_client, "invoice:2026:1", admin, {"reason": reason})
    assert status == 422


def test_not_durable_is_503_and_the_retry_names_the_number_taken(
        client, admin, blue, redis_client, monkeypatch):
    """Durable before acknowledged: an unconfirmed write is a 503, never a 201."""
    from coordinator.exceptions import NotDurable

    voided = void(client, blue, take(client, blue, "r-1"))

    def not_durable(wait):
        raise NotDurable("fsync not confirmed in time")

    monkeypatch.setattr(allocation.scripts, "check_durable", not_durable)
    refused = reissue(client, admin, voided["id"])
    assert refused.status_code == 503
    monkeypatch.undo()
    # The number may have been taken: the void entry says which, and a retry is refused 409.
    old = client.get(f"/v1/allocations/{voided['id']}", headers=admin).get_json()
    assert old["reissued_as"] == "invoice:2026:2"
    assert reissue(client, admin, voided["id"]).status_code == 409
