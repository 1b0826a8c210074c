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
from pathlib import Path

import pytest
import redis

from coordinator import keys
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
    assert any("INV-2026-000001" in w["message"] for w in warnings)
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

    # A coordinator of the old release still running can no longer number anything.
    counters = {k: client.get(k) for k in client.scan_iter(match="{ser:default}:*counter:*")}
    old = subprocess.run(
        [sys.executable, "-c", OLD_ALLOCATION, server.url, tokens["red"]],
        env={**os.environ, "PYTHONPATH": str(previous_release)}, cwd=previous_release,
        capture_output=True, text=True, timeout=120)
    assert old.stdout.strip() not in ("200", "201"), old.stdout
    assert {k: client.get(k) for k in client.scan_iter(match="{ser:default}:*counter:*")} \
        == counters
    assert not [k for k in client.scan_iter(match="{seq:*") if not k.endswith(":settings")]


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
    for legacy_key, dumped in before.items():
        assert client.dump(_new_name(legacy_key)) == dumped, legacy_key
        assert not client.exists(legacy_key)
    assert not list(client.scan_iter(match="{ser:default}:migrating:*"))
    done = snapshot(server.url)
    assert migration.migrate(client).state == "current"
    assert snapshot(server.url) == done
