"""The ledger's SHA-256 chain on a real Valkey: events appended atomically with each change,
sealed, verified; tampering (a changed byte, a removed event, two swapped) is found by verify
and by the offline check of an export; auditors verify and export; upgraded data verifies."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.cli import main
from coordinator.numbering import allocation, chain, checkpoints, compaction, export, scripts
from coordinator.numbering import ledger as ledger_mod
from coordinator.numbering import sequences as sequences_mod
from coordinator.numbering import series as series_mod
from coordinator.numbering.allocation import Hints
from tests.coordinator import ledger_support
from tests.coordinator.systems_support import body
from tests.support import snapshot

pytestmark = pytest.mark.integration

# Shared fixtures (an app with a Fernet key, system blue, an auditor).
app_config, blue, auditor = (ledger_support.app_config, ledger_support.blue,
                             ledger_support.auditor)

EVENTS = keys.seq_events("invoice")
CHAIN = keys.seq_chain("invoice")
VERIFY = "/v1/series/default/sequences/invoice/ledger/verify"
EXPORT = "/v1/series/default/sequences/invoice/ledger/export"


def take(client, headers, reference, date="2026-11-21"):
    response = client.post("/v1/allocations", headers=headers,
                           json={"document": "invoice", "reference": reference, "date": date})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def history(client, admin, blue):
    """Every kind of event: issued, confirmed, voided, settings changed, next number raised."""
    first = take(client, blue, "r-1")
    second = take(client, blue, "r-2")
    assert client.post(f"/v1/allocations/{first['id']}/confirm", headers=blue,
                       json={"invoicenum": first["formatted"]}).status_code == 200
    assert client.post(f"/v1/allocations/{second['id']}/void", headers=blue,
                       json={"reason": "created by mistake"}).status_code == 200
    assert client.patch("/v1/sequences/invoice", headers=admin,
                        json={"next_number": 10, "period": "2026"}).status_code == 200
    take(client, blue, "r-3")


def verify(client, headers, period=None):
    response = client.get(VERIFY + (f"?period={period}" if period else ""), headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_every_change_appends_one_chained_event_in_order(client, admin, blue, redis_client):
    history(client, admin, blue)
    events = [json.loads(raw) for raw in redis_client.lrange(EVENTS, 0, -1)]
    assert [e["type"] for e in events] == [
        "issued", "issued", "confirmed", "voided", "next_number_raised", "settings_changed",
        "issued"]
    assert [e["seq"] for e in events] == list(range(7))
    assert events[-1]["number"] == "10"
    result = verify(client, admin)
    assert result["ok"] is True and result["events"] == 7
    # The head is the documented rule applied by hand, from 64 zeros.
    prev = "0" * 64
    for event in events:
        encoded = json.dumps({**event, "prev": prev}, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode("utf-8")
        prev = hashlib.sha256(encoded).hexdigest()
    assert result["head"] == prev == redis_client.lindex(CHAIN, -1)
    assert redis_client.llen(CHAIN) == 7


def test_refused_and_replayed_requests_append_no_event(client, admin, blue, redis_client):
    take(client, blue, "r-1")
    replay = client.post("/v1/allocations", headers=blue,
                         json={"document": "invoice", "reference": "r-1", "date": "2026-11-21"})
    assert replay.status_code == 200
    assert client.patch("/v1/sequences/invoice", headers=admin,
                        json={"next_number": 1, "period": "2026"}).status_code == 409
    assert redis_client.llen(EVENTS) == 1


def test_sealing_is_idempotent_and_resumes_after_a_lost_seal(client, admin, blue, redis_client,
                                                             monkeypatch):
    history(client, admin, blue)
    chain.seal(redis_client, "invoice")
    sealed = redis_client.lrange(CHAIN, 0, -1)
    # A coordinator killed between the allocation and its seal leaves events unsealed.
    redis_client.ltrim(CHAIN, 0, 2)
    assert chain.seal(redis_client, "invoice") == 7
    assert chain.seal(redis_client, "invoice") == 7
    assert redis_client.lrange(CHAIN, 0, -1) == sealed
    # Two coordinators sealing at once: the one whose write finds the chain moved reads again
    # and seals the rest.
    redis_client.ltrim(CHAIN, 0, 2)
    real, calls = scripts.SEAL, []

    def raced(client, keys_, args):
        calls.append(int(args[0]))
        if len(calls) == 1:
            redis_client.rpush(CHAIN, sealed[3])  # the other coordinator sealed event 3
        return real(client, keys_, args)

    monkeypatch.setattr(scripts, "SEAL", raced)
    assert chain.seal(redis_client, "invoice") == 7
    assert calls == [3, 4]
    assert redis_client.lrange(CHAIN, 0, -1) == sealed


def _change_a_byte(redis_client, index):
    raw = redis_client.lindex(EVENTS, index)
    redis_client.lset(EVENTS, index, raw.replace('"r-2"', '"r-9"'))


def _delete(redis_client, index):
    raw = redis_client.lindex(EVENTS, index)
    redis_client.lrem(EVENTS, 1, raw)


def _swap(redis_client, index):
    first, second = redis_client.lrange(EVENTS, index, index + 1)
    redis_client.lset(EVENTS, index, second)
    redis_client.lset(EVENTS, index + 1, first)


@pytest.mark.parametrize(("tamper", "reason"), [
    (_change_a_byte, "hash does not match"), (_delete, "removed or re-ordered"),
    (_swap, "removed or re-ordered")])
def test_tampering_is_found_and_named_by_verify_and_by_an_export(
        client, admin, blue, redis_client, tmp_path, tamper, reason):
    history(client, admin, blue)
    before = client.get(EXPORT + "?period=2026", headers=admin)
    assert before.status_code == 200
    taken = tmp_path / "before.jsonl"
    taken.write_bytes(before.data)
    tamper(redis_client, 1)
    result = verify(client, admin)
    assert result["ok"] is False
    assert result["first_bad"]["seq"] == 1 and reason in result["first_bad"]["reason"]
    assert result["events"] == 1
    # The export taken before the tampering still verifies offline, and its head is the one
    # an auditor compares with; an export taken now does not verify.
    runner = CliRunner()
    ok = runner.invoke(main, ["ledger", "verify-export", str(taken)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["events"] == 7
    after = tmp_path / "after.jsonl"
    after.write_bytes(client.get(EXPORT, headers=admin).data)
    broken = runner.invoke(main, ["ledger", "verify-export", str(after)])
    assert broken.exit_code == 1
    assert json.loads(broken.output)["first_bad"]["seq"] == 1


def test_removing_the_last_event_is_found(client, admin, blue, redis_client):
    history(client, admin, blue)
    verify(client, admin)
    redis_client.rpop(EVENTS)
    result = verify(client, admin)
    assert result["ok"] is False and result["first_bad"]["seq"] == 6
    assert "event missing" in result["first_bad"]["reason"]


def test_a_chain_longer_than_a_read_page_seals_verifies_and_exports_every_event(
        client, admin, blue, redis_client, monkeypatch):
    """Sealing, verify and export read a page of events at a time: none is left out, also
    after a break (an auditor sees what follows it) or with events removed at the end."""
    history(client, admin, blue)
    monkeypatch.setattr(chain, "PAGE", 2)
    events, hashes = redis_client.lrange(EVENTS, 0, -1), redis_client.lrange(CHAIN, 0, -1)
    redis_client.ltrim(CHAIN, 0, 3)  # the last three seals lost: two pages to seal
    assert chain.seal(redis_client, "invoice") == 7
    assert redis_client.lrange(CHAIN, 0, -1) == hashes
    assert verify(client, admin)["events"] == 7

    def exported():
        records = list(chain.export_records(redis_client, "invoice"))
        return [(r["seq"], r["event"] is not None, r["hash"] is not None)
                for r in records if r["kind"] == "event"]

    assert exported() == [(seq, True, True) for seq in range(7)]
    # An unreadable event stops sealing there (those before it are sealed); every event after
    # it is still exported.
    redis_client.lset(EVENTS, 1, "not json")
    redis_client.delete(CHAIN)
    assert exported() == [(0, True, True), (1, False, False)] + [
        (seq, True, False) for seq in range(2, 7)]
    # What follows an event without a hash chains to no hash ("" in prev and in the end's head).
    records = list(chain.export_records(redis_client, "invoice"))
    assert [r["prev"] for r in records if r["kind"] == "event"] == [
        chain.GENESIS, hashes[0]] + [""] * 5
    assert records[-1] == {"kind": "end", "events": 7, "head": ""}
    # Events removed at the end: their hashes are still exported, without their events.
    redis_client.delete(EVENTS)
    redis_client.rpush(EVENTS, *events[:3])
    redis_client.rpush(CHAIN, *hashes[1:])
    assert exported() == [(seq, seq < 3, True) for seq in range(7)]


def _export_lines(client, admin, fmt):
    response = client.get(f"{EXPORT}?period=2026&format={fmt}", headers=admin)
    assert response.status_code == 200
    assert response.mimetype == ("text/csv" if fmt == "csv" else "application/x-ndjson")
    return response.get_data(as_text=True)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_holds_events_entries_gaps_and_audit_and_verifies_offline(
        client, admin, blue, redis_client, fmt):
    history(client, admin, blue)
    # The export walks the period (docs/AUDITORS.md), not the gap report's indexes: a void
    # whose index entry was lost (after a report indexed the period) is still in it, where the
    # quick report no longer lists it.
    assert "void" in [gap["kind"] for gap in ledger_mod.gaps(redis_client, "invoice", "2026", 0)]
    redis_client.delete(keys.seq_voids("invoice", "2026"))
    quick = ledger_mod.gaps(redis_client, "invoice", "2026", 10**9)
    assert "void" not in [gap["kind"] for gap in quick]
    # A long settings history is exported whole, not the latest 100 the settings page shows.
    audit_key = keys.seq_audit("invoice")
    redis_client.rpush(audit_key, *[redis_client.lindex(audit_key, 0)] * 100)
    text = _export_lines(client, admin, fmt)
    records = list(export.read(text))
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "header" and kinds[-1] == "end"
    assert records[0]["period"] == "2026"
    assert kinds.count("event") == 7 and kinds.count("entry") == 3
    assert {(r["period"], r["gap"]["kind"]) for r in records if r["kind"] == "gap"} >= {
        ("2026", "void"), ("2026", "skipped")}
    assert kinds.count("audit") == 101
    assert [r["audit"] for r in records if r["kind"] == "audit"] == sequences_mod.audit(
        redis_client, "invoice", 1000)
    assert export.verify_text(text)["ok"] is True


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_tampering_with_an_export_file_is_found(client, admin, blue, fmt):
    history(client, admin, blue)
    text = _export_lines(client, admin, fmt)
    lines = text.splitlines(keepends=True)
    first_event = next(i for i, line in enumerate(lines) if "issued" in line)
    changed = lines.copy()
    changed[first_event] = changed[first_event].replace("r-1", "r-7")
    assert export.verify_text("".join(changed))["first_bad"]["seq"] == 0
    removed = lines[:first_event] + lines[first_event + 1:]
    assert export.verify_text("".join(removed))["first_bad"]["seq"] == 0
    swapped = lines.copy()
    swapped[first_event], swapped[first_event + 1] = swapped[first_event + 1], swapped[
        first_event]
    assert export.verify_text("".join(swapped))["ok"] is False
    cut = [line for line in lines if '"end"' not in line and not line.startswith("end,")]
    assert export.verify_text("".join(cut))["ok"] is False


def test_auditor_verifies_and_exports_but_changes_nothing(client, admin, blue, auditor):
    history(client, admin, blue)
    assert verify(client, auditor, "2026")["ok"] is True
    assert client.get(EXPORT, headers=auditor).status_code == 200
    assert client.post("/v1/allocations/invoice:2026:1/void", headers=auditor,
                       json={"reason": "x"}).status_code == 403
    assert client.get(VERIFY, headers=blue).status_code == 403
    assert client.get(VERIFY).status_code == 401


def test_bad_query_is_a_clear_error(client, admin, blue, redis_client):
    response = client.get(VERIFY + "?period=26", headers=admin)
    assert response.status_code == 422
    assert set(response.get_json()) >= {"code", "status", "message", "errors"}
    assert client.get(EXPORT + "?format=xml", headers=admin).status_code == 422
    take(client, blue, "r-1")
    before = snapshot(redis_client)
    # an unknown series or sequence is a 404 on each ledger route, and writes nothing
    for method, route in (("GET", "verify"), ("GET", "export"), ("POST", "checkpoints")):
        for where in ("nope/sequences/invoice", "default/sequences/nope"):
            path = f"/v1/series/{where}/ledger/{route}"
            assert client.open(path, method=method, headers=admin).status_code == 404, path
    assert snapshot(redis_client) == before
    # no period: the whole ledger, and the download's file name says so
    whole = client.get(EXPORT, headers=admin)
    assert whole.headers["Content-Disposition"] == (
        'attachment; filename="ledger-default-invoice-all.jsonl"')


def test_verify_of_another_series_seals_and_checks_that_series_chain_only(
        client, admin, blue, redis_client):
    """Each series (legal entity) has its own chain: verify reads, seals and counts its own;
    the export and the readers that follow the ledger (the forecaster) read its own too."""
    history(client, admin, blue)  # default/invoice: 7 events, 6 of them archived in blocks
    assert (chain.event_count(redis_client, "invoice"),
            chain.first_listed(redis_client, "invoice")) == (7, 0)
    assert compaction.compact(redis_client, "invoice", block=2, keep=1) == 6
    assert client.post("/v1/series", headers=admin, json={"name": "acme-us"}).status_code == 201
    made = client.post("/v1/systems", headers=admin, json=body(name="red", series="acme-us"))
    assert made.status_code == 201, made.get_json()
    red = {"Authorization": f"Bearer {made.get_json()['agent_token']}"}
    for reference, date in (("u-1", "2025-12-30"), ("u-2", "2026-01-02"), ("u-3", "2026-01-03")):
        take(client, red, reference, date)
    signing = checkpoints.SigningKeys.from_setting(checkpoints.generate_key())
    checkpoints.make(redis_client, signing, "invoice", series="acme-us")
    assert compaction.compact(redis_client, "invoice", series="acme-us", block=2, keep=1) == 2
    last = take(client, red, "u-4", "2026-01-04")
    ours = keys.seq_chain("invoice", "acme-us")
    assert redis_client.llen(ours) == 4  # sealed after the response, in its own chain
    head = redis_client.lindex(ours, -1)
    redis_client.rpop(ours)  # the last seal lost (a coordinator killed in the window)
    result = chain.verify(redis_client, "invoice", "2026", series="acme-us", signing=signing)
    assert result == {"ok": True, "events": 4, "entries": 3, "head": head, "checkpoints": 1,
                      "series": "acme-us", "sequence": "invoice", "period": "2026",
                      "unchained_numbers": 0}
    assert redis_client.llen(ours) == 4
    default = chain.verify(redis_client, "invoice", signing=signing)
    assert default == {**default, "ok": True, "events": 7, "checkpoints": 0,
                       "series": "default", "period": None, "unchained_numbers": 0}
    # A follower reads this series' events from its cursor; the archived ones come as None.
    events = [json.loads(raw) for raw in redis_client.lrange(keys.seq_events(
        "invoice", "acme-us"), 2, -1)]
    assert [e["seq"] for e in events] == [2, 3]
    assert chain.events_from(redis_client, "invoice", 1, 2, series="acme-us") == [
        (1, None), (2, events[0])]
    assert chain.events_from(redis_client, "invoice", 3, series="acme-us") == [(3, events[1])]
    assert [(chain.event_count(redis_client, "invoice", series=s),
             chain.first_listed(redis_client, "invoice", series=s))
            for s in ("acme-us", "default")] == [(4, 2), (7, 6)]
    # The export seals this series' pending events first, and names the series it is of.
    redis_client.rpop(ours)
    records = list(chain.export_records(redis_client, "invoice", "2026", series="acme-us",
                                        signing=signing))
    assert records[0] == {
        "kind": "header", "format": "invoice-sync-ledger/1", "series": "acme-us",
        "sequence": "invoice", "period": "2026", "genesis": "0" * 64,
        "hash": "sha256(json.dumps({**event, 'prev': prev}, sort_keys=True, "
                "separators=(',', ':'), ensure_ascii=False).encode('utf-8'))",
        "public_keys": {kid: checkpoints.public_pem(key)
                        for kid, key in signing.public().items()}}
    assert [(r["seq"], r["hash"] is not None) for r in records[1:-2]] == [
        (seq, True) for seq in range(4)]
    assert records[-2:] == [
        {"kind": "checkpoint", "checkpoint": checkpoints.stored(
            redis_client, "invoice", series="acme-us")[0]},
        {"kind": "end", "events": 4, "head": head}]
    # A confirm's events are sealed after its response too (the sealer reads them).
    assert client.post(f"/v1/allocations/{last['id']}/confirm", headers=red, json={
        "invoicenum": last["formatted"]}).status_code == 200
    assert redis_client.llen(ours) == 5
    # The auditor's file of this series (export.records, what the API and the CLI write): its
    # own entries, gaps and settings audit, of every period when none is named (its numbers
    # span 2025 and 2026, default's only 2026), of the one named otherwise.
    u2 = next(ledger_mod.iter_ledger(redis_client, "invoice", "2026", series="acme-us"))
    assert client.post(f"/v1/allocations/{u2['id']}/void", headers=red,
                       json={"reason": "typo"}).status_code == 200
    assert sequences_mod.audit(redis_client, "invoice") != sequences_mod.audit(
        redis_client, "invoice", series="acme-us")
    for period, references in ((None, ["u-1", "u-2", "u-3", "u-4"]),
                               ("2026", ["u-2", "u-3", "u-4"])):
        found = list(export.records(redis_client, "invoice", period, 10**9, series="acme-us",
                                    signing=signing))
        assert {key: found[0][key] for key in ("series", "period")} == {
            "series": "acme-us", "period": period}
        assert [r["entry"]["reference"] for r in found if r["kind"] == "entry"] == references
        assert [(r["period"], r["gap"]["kind"], r["gap"]["reference"])
                for r in found if r["kind"] == "gap"] == [("2026", "void", "u-2")]
        assert [r["audit"] for r in found if r["kind"] == "audit"] == sequences_mod.audit(
            redis_client, "invoice", series="acme-us")
        assert found[-1] == {"kind": "end", "events": 6, "head": redis_client.lindex(ours, -1)}


def test_upgraded_data_without_events_verifies_and_counts_unchained_numbers(
        client, admin, blue, redis_client):
    take(client, blue, "r-1")
    take(client, blue, "r-2")
    # The previous layout had no events and no chain: what an upgraded store looks like.
    redis_client.delete(EVENTS, CHAIN)
    result = verify(client, admin)
    assert result == {**result, "ok": True, "events": 0, "head": "0" * 64,
                      "unchained_numbers": 2}
    take(client, blue, "r-3")
    result = verify(client, admin)
    assert result["ok"] is True and result["events"] == 1 and result["unchained_numbers"] == 2


def test_numbers_issued_before_the_chain_are_counted_in_their_series_also_once_settled(
        redis_client):
    """An upgraded series' numbers have no events: verify counts them as unchained, those
    still in the ledger and those settled out of it, in that series only."""
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    hints = Hints(series_of={"blue": "eu"})
    for i in range(4):
        entry, _ = allocation.allocate(redis_client, "blue", "invoice", f"r-{i}",
                                       dt.date(2026, 11, 21), None, hints)
        allocation.transition(redis_client, entry["id"], "confirm", entry["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue")
    redis_client.delete(keys.seq_events("invoice", "eu"), keys.seq_chain("invoice", "eu"))
    settle = {"LEDGER_ARCHIVE_BLOCK": 2, "LEDGER_ARCHIVE_KEEP": 1,
              "LEDGER_SETTLE_AFTER_SECONDS": 0}
    assert compaction.run(redis_client, "invoice", settle, series="eu")["entries"] == 2
    result = chain.verify(redis_client, "invoice", series="eu")
    assert (result["ok"], result["events"], result["unchained_numbers"]) == (True, 0, 4)
    assert chain.verify(redis_client, "invoice")["unchained_numbers"] == 0


def test_cli_verify_exits_0_then_1_after_tampering(client, admin, blue, redis_client, valkey,
                                                   monkeypatch):
    history(client, admin, blue)
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    runner = CliRunner()
    ok = runner.invoke(main, ["ledger", "verify", "--period", "2026"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["entries"] >= 3
    _swap(redis_client, 2)
    broken = runner.invoke(main, ["ledger", "verify"])
    assert broken.exit_code == 1
    assert json.loads(broken.output)["first_bad"]["seq"] == 2


def test_cli_export_then_verify_export_in_a_python_without_redis(
        client, admin, blue, valkey, monkeypatch, tmp_path):
    history(client, admin, blue)
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    out = tmp_path / "ledger.csv"
    done = CliRunner().invoke(main, ["ledger", "export", "--period", "2026", "--format", "csv",
                                     "--output", str(out)])
    assert done.exit_code == 0, done.output
    # The README's standard-library-only script, run by a bare interpreter (-I: no site, no
    # project on the path), on a JSON lines export.
    jsonl = tmp_path / "ledger.jsonl"
    jsonl.write_bytes(client.get(EXPORT, headers=admin).data)
    script = tmp_path / "check.py"
    script.write_text(README_SCRIPT)
    ran = subprocess.run([sys.executable, "-I", str(script), str(jsonl)], capture_output=True,
                         text=True, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.split()[-1] == client.get(VERIFY, headers=admin).get_json()["head"]
    verified = CliRunner().invoke(main, ["ledger", "verify-export", str(out)])
    assert verified.exit_code == 0, verified.output


def _readme_script() -> str:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "AUDITORS.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


README_SCRIPT = _readme_script()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=8),
                                max_size=4), min_size=1, max_size=6),
       st.data())
def test_any_single_change_to_a_chain_is_found(payloads, data):
    """Property: for any events, changing one, removing one or swapping two is found."""
    events = [{**payload, "seq": index} for index, payload in enumerate(payloads)]
    prev, hashes = chain.GENESIS, []
    for event in events:
        prev = chain.event_hash(event, prev)
        hashes.append(prev)
    raws = [json.dumps(e) for e in events]
    assert chain.check(zip(range(len(raws)), raws, hashes, strict=True))["ok"]
    index = data.draw(st.integers(0, len(raws) - 1))
    action = data.draw(st.sampled_from(["change", "remove", "swap"]))
    tampered = raws.copy()
    if action == "change":
        tampered[index] = json.dumps({**events[index], "~": "tampered"})
    elif action == "remove":
        del tampered[index]
    else:
        other = data.draw(st.integers(0, len(raws) - 1).filter(lambda i: i != index)) \
            if len(raws) > 1 else index
        tampered[index], tampered[other] = tampered[other], tampered[index]
        if other == index:
            return
    records = [(i, tampered[i] if i < len(tampered) else None, hashes[i])
               for i in range(len(hashes))]
    result = chain.check(records)
    assert result["ok"] is False
    assert result["first_bad"]["seq"] == (min(index, other) if action == "swap" else index)
