"""Upgrade from the release before series (6d52368): data made by that release's own code,
on a real Valkey data dir, keeps every number, entry, reference and audit record after this
release starts on it, numbering continues exactly, and the migration is idempotent and safe
when several processes start at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pytest
import redis

from coordinator import auth, keys
from coordinator.app import create_app
from coordinator.numbering import migrate as migration
from tests.support import legacy_data_dir, snapshot, upgraded_copy
from tests.support import previous_release as checkout

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE = "6d52368"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """A checkout of the release before series, from this repository's history."""
    return checkout(PREVIOUS_RELEASE, tmp_path_factory.mktemp("release-6d52368"))


@pytest.fixture(scope="module")
def legacy_dir(previous_release, tmp_path_factory) -> tuple[Path, dict]:
    """A stopped Valkey data dir filled by the previous release's code, and what it did."""
    data = tmp_path_factory.mktemp("legacy-valkey")
    return data, legacy_data_dir(previous_release, HERE / "legacy_release.py", data)


@pytest.fixture
def upgraded(legacy_dir, tmp_path):
    """This release's Valkey started on a copy of the legacy data dir (AOF reloaded)."""
    source, done = legacy_dir
    with upgraded_copy(source, tmp_path) as (server, client):
        yield server, client, done


def _legacy_dumps(client: redis.Redis) -> dict[str, bytes]:
    found = {}
    for sequence in ("invoice", "credit_note"):
        for key in client.scan_iter(match=keys.legacy_seq_prefix(sequence) + "*"):
            if not key.endswith(":settings"):
                found[key] = client.dump(key)
    return found


def _new_name(legacy_key: str) -> str:
    sequence, rest = legacy_key[len("{seq:"):].split("}:", 1)
    return keys.seq_prefix(sequence) + rest


def _headers(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_upgrade_keeps_every_number_and_numbering_continues(upgraded, previous_release):
    server, client, done = upgraded
    before = _legacy_dumps(client)
    old_audit = {s: client.lrange(f"{{seq:{s}}}:audit", 0, -1) for s in ("invoice", "credit_note")}
    app = create_app({"TESTING": True, "REDIS_URL": server.url})
    http = app.test_client()
    tokens = done["tokens"]
    blue, red, admin = (_headers(tokens[k]) for k in ("blue", "red", "admin"))

    # The agent's first request after the upgrade may well be a confirm of an old number.
    latest = {}
    for answer in done["answers"]:
        if answer["path"].startswith("/v1/allocations") and answer["status"] in (200, 201):
            latest[answer["json"]["id"]] = answer["json"]
    third = latest["invoice:2026:3"]
    confirmed = http.post("/v1/allocations/invoice:2026:3/confirm", headers=blue,
                          json={"invoicenum": third["formatted"]})
    assert confirmed.status_code == 200, confirmed.get_json()
    latest["invoice:2026:3"] = {**third, **{k: v for k, v in confirmed.get_json().items()
                                            if k.startswith("confirmed")}, "status": "confirmed"}

    # Every key's content is there, byte for byte, under its new name.
    for legacy_key, dumped in before.items():
        if legacy_key == "{seq:invoice}:ledger:2026":
            continue  # changed just now by the confirm
        assert client.dump(_new_name(legacy_key)) == dumped, legacy_key
    # Every allocation reads back as the old release answered it, plus its series.
    for allocation_id, old in latest.items():
        now = http.get(f"/v1/allocations/{allocation_id}", headers=admin).get_json()
        assert now == {**old, "series": "default"}, allocation_id
    for sequence, records in old_audit.items():
        audit = http.get(f"/v1/sequences/{sequence}/audit", headers=admin).get_json()
        assert [json.dumps(r, sort_keys=True) for r in audit["records"]] == [
            json.dumps(json.loads(r), sort_keys=True) for r in records]
    gaps = http.get("/v1/sequences/invoice/gaps?period=2026", headers=admin).get_json()["gaps"]
    assert {"kind": "skipped", "after": 4, "next": 100,
            "explanation": "next_number raised by an admin (see the audit)"} in gaps
    assert any(g["kind"] == "void" and g["number"] == 2 for g in gaps)

    # References still answer with their numbers; new numbers continue from the counters.
    replay = http.post("/v1/allocations", headers=red, json={
        "document": "invoice", "reference": "r2", "date": "2026-04-01"})
    assert (replay.status_code, replay.get_json()["id"]) == (200, "invoice:2026:100")
    fresh = http.post("/v1/allocations", headers=red, json={
        "document": "invoice", "reference": "r3", "date": "2026-05-01"}).get_json()
    assert (fresh["id"], fresh["formatted"]) == ("invoice:2026:101", "INV-2026-000101")
    late = http.post("/v1/allocations", headers=blue, json={
        "document": "invoice", "reference": "old-2", "date": "2025-06-01"}).get_json()
    assert late["id"] == "invoice:2025:2"
    assert http.get("/v1/systems/blue", headers=admin).get_json()["series"] == "default"

    # The old release printed INV-2026-000001 twice; the index knows every old string, so the
    # next credit note (number 2 under the invoices' format) is refused, no number taken.
    warnings = http.get("/v1/warnings", headers=admin).get_json()
    [twice] = [w for w in warnings if w["type"] == "duplicate_number"]
    assert (twice["id"], twice["code"], twice["message"]) == (
        "duplicate_number:migration", "duplicate_number",
        "1 formatted number(s) were issued twice before the upgrade to series: INV-2026-000001 "
        "(invoice:2026:1 and credit_note:2026:1). New allocations can no longer repeat a number.")
    untouched = snapshot(server.url)
    refused = http.post("/v1/allocations", headers=blue, json={
        "document": "credit_note", "reference": "c2", "date": "2026-05-02"})
    assert refused.status_code == 409
    assert "INV-2026-000002" in refused.get_json()["message"]
    assert snapshot(server.url) == untouched
    fixed = http.patch("/v1/sequences/credit_note", headers=admin,
                       json={"format": "CN-{YEAR}-{NUMBER}"})
    assert fixed.status_code == 200, fixed.get_json()
    note = http.post("/v1/allocations", headers=blue, json={
        "document": "credit_note", "reference": "c2", "date": "2026-05-02"}).get_json()
    assert (note["id"], note["formatted"]) == ("credit_note:2026:2", "CN-2026-000002")

    # A coordinator of the old release still running can no longer number anything: with a
    # token it can read (the upgrade moved the tokens where it no longer looks: a 401 would
    # prove nothing), its allocation stops at the fence (its code knows no reset 'migrated').
    counters = {k: client.get(k) for k in client.scan_iter(match="{ser:default}:*counter:*")}
    red = auth.digest(tokens["red"])
    client.hset(keys.LEGACY_TOKENS, red, client.hget(keys.TOKENS, red))
    old = subprocess.run(
        [sys.executable, "-c", OLD_ALLOCATION, server.url, tokens["red"]],
        env={**os.environ, "PYTHONPATH": str(previous_release)}, cwd=previous_release,
        capture_output=True, text=True, timeout=120)
    assert old.stdout.strip() == "500", old.stdout
    assert "ValueError: tuple.index(x): x not in tuple" in old.stderr, old.stderr[-2000:]
    assert {k: client.get(k) for k in client.scan_iter(match="{ser:default}:*counter:*")} \
        == counters
    # What is left of the old layout: both sequences' settings, fenced.
    assert {k: client.hget(k, "reset") for k in client.scan_iter(match="{seq:*")} == {
        "{seq:invoice}:settings": "migrated", "{seq:credit_note}:settings": "migrated"}


OLD_ALLOCATION = """
import sys
from coordinator.app import create_app
app = create_app({"TESTING": True, "REDIS_URL": sys.argv[1]})
response = app.test_client().post("/v1/allocations", json={
    "document": "invoice", "reference": "from-old-code", "date": "2026-06-01"},
    headers={"Authorization": "Bearer " + sys.argv[2]})
print(response.status_code)
"""


def test_migration_is_idempotent_and_safe_under_concurrent_starts(upgraded):
    server, client, _ = upgraded
    before = _legacy_dumps(client)
    reports: list = []
    barrier = threading.Barrier(4)

    def start() -> None:
        own = redis.Redis.from_url(server.url, decode_responses=True)
        barrier.wait()
        reports.append(migration.migrate(own))
        own.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    states = sorted(report.state for report in reports)
    assert states.count("migrated") == 1 and len(states) == 4, states
    # The one that moved the data says what it moved: every old key (and the index of formatted
    # numbers), every ledger entry, the number printed twice by the old release.
    [moved] = [report for report in reports if report.state == "migrated"]
    assert moved.keys == len(before) + 1
    assert moved.entries == sum(client.hlen(_new_name(key)) for key in before if ":ledger:" in key)
    assert moved.duplicates == {"INV-2026-000001": ["invoice:2026:1", "credit_note:2026:1"]}
    for legacy_key, dumped in before.items():
        assert client.dump(_new_name(legacy_key)) == dumped, legacy_key
        assert not client.exists(legacy_key)
    assert not list(client.scan_iter(match="{ser:default}:migrating:*"))
    done = snapshot(server.url)
    assert migration.migrate(client).state == "current"
    assert snapshot(server.url) == done


# Data of the old layout written by hand, the way release 6d52368 kept it (the tests above use
# data made by that release's own code; these need settings it was not run with, and faults).
def _old_layout(client: redis.Redis, duplicates: int = 0) -> dict[str, bytes]:
    """Old keys of both sequences (monthly invoices, never-reset credit notes); with
    ``duplicates``, that many credit notes printed an invoice's string. Returns their dumps."""
    client.hset("{seq:invoice}:settings", mapping={
        "increment": "1", "format": "A-{YEAR}-{MONTH}-{NUMBER}", "padding": "3",
        "reset": "monthly", "credit_notes": "0"})
    client.hset("{seq:credit_note}:settings", mapping={
        "increment": "1", "format": "CN-{NUMBER}", "padding": "4", "reset": "never",
        "dedicated": "1"})
    client.set("{seq:invoice}:counter:2026-05", "41")
    client.set("{seq:credit_note}:counter:all", "7")
    for number in (40, 41):
        client.hset("{seq:invoice}:ledger:2026-05", str(number), json.dumps({
            "id": f"invoice:2026-05:{number}", "formatted": f"A-2026-05-{number:03d}"}))
    client.hset("{seq:credit_note}:ledger:all", "7", json.dumps(
        {"id": "credit_note:all:7", "formatted": "CN-0007"}))
    for number in range(1, duplicates + 1):
        client.hset("{seq:invoice}:ledger:2026-04", str(number), json.dumps({
            "id": f"invoice:2026-04:{number}", "formatted": f"A-2026-04-{number:03d}"}))
        client.hset("{seq:credit_note}:ledger:2026", str(number), json.dumps({
            "id": f"credit_note:2026:{number}", "formatted": f"A-2026-04-{number:03d}"}))
    return {key: client.dump(key) for key in client.scan_iter(match="{seq:*")
            if not key.endswith(":settings")}


def _no_staged_copies(client: redis.Redis) -> bool:
    return not [key for key in client.scan_iter(count=1000) if ":migrating:" in key]


def test_an_upgrade_keeps_each_sequences_reset_and_numbering_continues_in_its_period(
        redis_client):
    from coordinator.numbering import allocation

    old = _old_layout(redis_client)
    report = migration.migrate(redis_client)
    # Five keys moved (two counters, two ledgers and the index of formatted numbers built from
    # their three entries), the four old keys removed; the old settings stay, fenced.
    assert report == migration.MigrationReport("migrated", keys=5, entries=3, cleaned=4)
    assert report.line() == ("moved 5 key(s) with 3 ledger entries into the series 'default'; "
                             "removed 4 key(s) of the old layout")
    assert redis_client.hgetall(keys.seq_settings("invoice")) == {
        "increment": "1", "format": "A-{YEAR}-{MONTH}-{NUMBER}", "padding": "3",
        "reset": "monthly", "credit_notes": "0"}
    assert redis_client.hgetall(keys.seq_settings("credit_note")) == {
        "increment": "1", "format": "CN-{NUMBER}", "padding": "4", "reset": "never",
        "dedicated": "1"}
    for sequence, reset in (("invoice", "monthly"), ("credit_note", "never")):
        assert redis_client.hgetall(f"{{seq:{sequence}}}:settings")["reset"] == "migrated"
        assert redis_client.hget(f"{{seq:{sequence}}}:settings", "migrated_reset") == reset
    for legacy_key, dumped in old.items():
        assert redis_client.dump(_new_name(legacy_key)) == dumped, legacy_key
        assert not redis_client.exists(legacy_key)
    assert redis_client.hgetall(keys.series_formatted("default")) == {
        "A-2026-05-040": "invoice:2026-05:40", "A-2026-05-041": "invoice:2026-05:41",
        "CN-0007": "credit_note:all:7"}
    assert _no_staged_copies(redis_client)
    # The next numbers follow the old counters, in the periods of the old resets.
    invoice, _ = allocation.allocate(redis_client, "blue", "invoice", "n1", date(2026, 5, 20))
    note, _ = allocation.allocate(redis_client, "blue", "credit_note", "c1", date(2026, 5, 20))
    assert (invoice["id"], invoice["formatted"]) == ("invoice:2026-05:42", "A-2026-05-042")
    assert (note["id"], note["formatted"]) == ("credit_note:all:8", "CN-0008")
    assert migration.ensure_layout(redis_client) == migration.MigrationReport("current")
    assert migration.ensure_layout(redis_client).line() == (
        "numbering data is already in the series layout")


def test_numbers_issued_twice_before_the_upgrade_are_reported_twenty_at_most(redis_client):
    from coordinator.warnings import store as warnings

    _old_layout(redis_client, duplicates=21)
    report = migration.migrate(redis_client)
    assert report.duplicates == {f"A-2026-04-{n:03d}": [f"invoice:2026-04:{n}",
                                                        f"credit_note:2026:{n}"]
                                 for n in range(1, 22)}
    assert report.line() == (
        "moved 7 key(s) with 45 ledger entries into the series 'default'; 21 formatted "
        "number(s) were already issued twice before the upgrade (see the warnings); "
        "removed 6 key(s) of the old layout")
    shown = ", ".join(f"A-2026-04-{n:03d} (invoice:2026-04:{n} and credit_note:2026:{n})"
                      for n in range(1, 21))
    [warning] = warnings.list_warnings(redis_client)
    assert {k: warning[k] for k in ("id", "type", "system", "message", "code")} == {
        "id": "duplicate_number:migration", "type": "duplicate_number", "system": None,
        "code": "duplicate_number",
        "message": f"21 formatted number(s) were issued twice before the upgrade to series: "
                   f"{shown}. New allocations can no longer repeat a number."}


def _on_commit(monkeypatch, before_commit) -> None:
    """Call ``before_commit(keys)`` just before each run of migrate_commit.lua."""
    from coordinator.numbering import scripts

    run = scripts.run

    def spy(client, script, script_keys, args, *rest):
        if script is scripts.MIGRATE_COMMIT:
            before_commit(script_keys)
        return run(client, script, script_keys, args, *rest)

    monkeypatch.setattr(scripts, "run", spy)


def test_a_run_that_another_committed_before_joins_it_and_leaves_no_copy(redis_client,
                                                                          monkeypatch):
    old = _old_layout(redis_client)
    other: list = []

    def another_process_first(_keys):
        if not other:
            other.append(None)
            other[0] = migration.migrate(redis_client)

    _on_commit(monkeypatch, another_process_first)
    joined = migration.migrate(redis_client)
    assert other[0].state == "migrated"
    assert joined == migration.MigrationReport("joined")
    assert joined.line() == "another process moved the numbering data; nothing left to do"
    for legacy_key, dumped in old.items():
        assert redis_client.dump(_new_name(legacy_key)) == dumped, legacy_key
    assert _no_staged_copies(redis_client)


def test_a_staged_copy_lost_before_the_commit_is_copied_again(redis_client, monkeypatch):
    old = _old_layout(redis_client)
    lost: list = []

    def lose_one(script_keys):
        if not lost:
            lost.append(script_keys[2])
            redis_client.delete(script_keys[2])

    _on_commit(monkeypatch, lose_one)
    report = migration.migrate(redis_client)
    assert ":migrating:" in lost[0]
    # The second try's copies were committed; the first try's four left (of its five) were
    # removed with the four old keys.
    assert report == migration.MigrationReport("migrated", keys=5, entries=3, cleaned=4 + 4)
    for legacy_key, dumped in old.items():
        assert redis_client.dump(_new_name(legacy_key)) == dumped, legacy_key
    assert _no_staged_copies(redis_client)


def test_a_migration_whose_copies_keep_vanishing_gives_up_and_keeps_the_old_data(
        redis_client, monkeypatch):
    old = _old_layout(redis_client)
    _on_commit(monkeypatch, lambda script_keys: redis_client.delete(script_keys[2]))
    with pytest.raises(RuntimeError) as raised:
        migration.migrate(redis_client)
    assert str(raised.value) == ("numbering migration: staged copies kept disappearing; "
                                 "run it again")
    assert not redis_client.exists(keys.seq_settings("invoice"))
    assert {key: redis_client.dump(key) for key in old} == old


def test_a_start_after_a_crash_between_commit_and_clean_up_finishes_the_clean_up(
        redis_client, monkeypatch):
    old = _old_layout(redis_client)

    class Killed(Exception):
        pass

    def killed(_client):
        raise Killed("the process died after the commit")

    monkeypatch.setattr(migration, "_clean_up", killed)
    with pytest.raises(Killed):
        migration.migrate(redis_client)
    monkeypatch.undo()
    report = migration.migrate(redis_client)
    assert report == migration.MigrationReport("current", cleaned=4)
    assert report.line() == ("numbering data is already in the series layout; removed 4 key(s) "
                             "of the old layout")
    for legacy_key, dumped in old.items():
        assert redis_client.dump(_new_name(legacy_key)) == dumped, legacy_key
        assert not redis_client.exists(legacy_key)


def test_old_keys_of_a_sequence_whose_fence_was_lifted_are_left_alone(redis_client):
    _old_layout(redis_client)
    migration.migrate(redis_client)
    # Old keys written after the upgrade (a coordinator of the old release still running, which
    # docs/SERIES.md says to stop first), and the invoices' fence lifted: the fenced sequence's
    # old keys are removed, the other's are not the migration's to delete.
    redis_client.hset("{seq:invoice}:settings", "reset", "monthly")
    redis_client.set("{seq:invoice}:counter:2026-06", "1")
    redis_client.set("{seq:credit_note}:counter:all", "8")
    report = migration.migrate(redis_client)
    assert report == migration.MigrationReport("current", cleaned=1)
    assert redis_client.get("{seq:invoice}:counter:2026-06") == "1"  # not fenced: not ours
    assert not redis_client.exists("{seq:credit_note}:counter:all")


def test_a_refused_first_request_on_a_new_store_writes_nothing(client, agent, valkey):
    # The layout check before the first numbering request only reads: old data is moved, but a
    # new store is set up by its first number, not by a request that is refused.
    for headers, body in ((agent("blue"), {"document": "invoice"}),
                          ({"Authorization": "Bearer nope"}, {"document": "invoice",
                                                              "reference": "1"})):
        before = snapshot(valkey.url)
        refused = client.post("/v1/allocations", json=body, headers=headers)
        assert refused.status_code in (401, 422), refused.get_json()
        assert snapshot(valkey.url) == before


def test_keys_that_scan_returns_twice_are_moved_once(redis_client, monkeypatch):
    # SCAN may return a key more than once (Redis docs: while the keyspace is resized, e.g. by
    # another process's writes during a long scan); each old key must still be moved once.
    old = _old_layout(redis_client)
    scan = redis.Redis.scan_iter

    def twice(self, *args, **kwargs):
        for key in scan(self, *args, **kwargs):
            yield key
            yield key

    monkeypatch.setattr(redis.Redis, "scan_iter", twice)
    report = migration.migrate(redis_client)
    assert report == migration.MigrationReport("migrated", keys=5, entries=3, cleaned=4)
    for legacy_key, dumped in old.items():
        assert redis_client.dump(_new_name(legacy_key)) == dumped, legacy_key
