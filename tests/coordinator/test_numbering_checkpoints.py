"""Signed checkpoints on a real Valkey: the chain's head signed with Ed25519, checked by verify
and offline by verify-export; a consistent rewrite of the chain (every hash recomputed), a
changed checkpoint, a checkpoint signed by another key and events removed at the end are all
found."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest
from click.testing import CliRunner

from coordinator import keys
from coordinator.cli import main
from coordinator.numbering import chain, checkpoints, export
from coordinator.ops import datadir
from tests.coordinator import ledger_support
from tests.coordinator.systems_support import body

pytestmark = pytest.mark.integration

blue, auditor = ledger_support.blue, ledger_support.auditor

KEY = checkpoints.generate_key()
OTHER_KEY = checkpoints.generate_key()
OTHER_KID = next(iter(checkpoints.SigningKeys.from_setting(OTHER_KEY).public()))
EVENTS = keys.seq_events("invoice")
CHAIN = keys.seq_chain("invoice")
STORE = keys.seq_checkpoints("invoice")
BASE = "/v1/series/default/sequences/invoice/ledger"


@pytest.fixture
def app_config(app_config):
    return {**ledger_support.ledger_config(app_config), "LEDGER_SIGNING_KEYS": KEY}


def take(client, headers, reference, document="invoice", date="2026-11-21"):
    response = client.post("/v1/allocations", headers=headers, json={
        "document": document, "reference": reference, "date": date})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def sign(client, admin):
    response = client.post(f"{BASE}/checkpoints", headers=admin)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def verify(client, admin):
    response = client.get(f"{BASE}/verify", headers=admin)
    assert response.status_code == 200
    return response.get_json()


def rewrite_consistently(redis_client, index, change):
    """What someone with write access to Redis can do: change an event, recompute the chain."""
    events = [json.loads(raw) for raw in redis_client.lrange(EVENTS, 0, -1)]
    events[index] = change(events[index])
    prev, hashes = chain.GENESIS, []
    for event in events:
        prev = chain.event_hash(event, prev)
        hashes.append(prev)
    pipe = redis_client.pipeline()
    pipe.delete(EVENTS, CHAIN)
    pipe.rpush(EVENTS, *[json.dumps(e) for e in events])
    pipe.rpush(CHAIN, *hashes)
    pipe.execute()


def public_pem_file(tmp_path, key=KEY, name="ledger.pem"):
    public = checkpoints.SigningKeys.from_setting(key).public()
    path = tmp_path / name
    path.write_text(checkpoints.public_pem(next(iter(public.values()))))
    return path


def test_a_signed_checkpoint_holds_the_head_and_verifies(client, admin, blue, auditor,
                                                        redis_client):
    take(client, blue, "r-1")
    take(client, blue, "r-2")
    made = sign(client, admin)
    head = verify(client, admin)["head"]
    assert made == {**made, "format": "invoice-sync-checkpoint/1", "series": "default",
                    "sequence": "invoice", "events": 2, "head": head}
    # What the module's docstring says is signed, the signing time (UTC, API.md's form) too.
    assert set(made) == {"format", "series", "sequence", "events", "head", "at", "key_id",
                         "signature"}
    assert dt.datetime.strptime(made["at"], "%Y-%m-%dT%H:%M:%SZ")
    public = checkpoints.SigningKeys.from_setting(KEY).public()
    assert list(public) == [made["key_id"]]
    assert checkpoints.check_signature(made, public) is None
    # Asked again with no new event, an operator still gets a checkpoint (signed now).
    assert sign(client, admin)["events"] == 2
    take(client, blue, "r-3")
    result = verify(client, auditor)
    assert result["ok"] is True and result["checkpoints"] == 2 and result["events"] == 3
    assert client.post(f"{BASE}/checkpoints", headers=auditor).status_code == 403
    assert client.post(f"{BASE}/checkpoints", headers=blue).status_code == 403


def test_a_consistent_rewrite_passes_the_chain_but_not_the_checkpoint(
        client, admin, blue, redis_client, tmp_path):
    take(client, blue, "r-1")
    take(client, blue, "r-2")
    sign(client, admin)
    take(client, blue, "r-3")

    def other_reference(event):
        return {**event, "reference": "r-9"}

    rewrite_consistently(redis_client, 1, other_reference)
    # The chain alone is consistent again: only the signed head shows the rewrite.
    assert chain.check(chain.chained(redis_client, "invoice"))["ok"] is True
    result = verify(client, admin)
    assert result["ok"] is False
    assert result["first_bad"] == {"checkpoint": 0, "reason": (
        "the chain's hash of event 1 is not the signed head (events rewritten since)")}
    # Offline, with the public key the operator gave the auditor: found too.
    path = tmp_path / "after.jsonl"
    path.write_bytes(client.get(f"{BASE}/export", headers=admin).data)
    ran = CliRunner().invoke(main, ["ledger", "verify-export", str(path), "--public-key",
                                    str(public_pem_file(tmp_path))])
    assert ran.exit_code == 1, ran.output
    assert json.loads(ran.output)["first_bad"]["checkpoint"] == 0


def _forge(redis_client, change):
    raw = json.loads(redis_client.lindex(STORE, 0))
    redis_client.lset(STORE, 0, json.dumps(change(raw)))


CHANGED = "signature does not match (checkpoint changed, or not signed by that key)"


@pytest.mark.parametrize(("change", "reason"), [
    (lambda c: {**c, "events": c["events"] - 1}, CHANGED),
    (lambda c: {**c, "head": "0" * 64}, CHANGED),
    (lambda c: {**c, "signature": c["signature"][:-4] + "AAA="}, CHANGED),
    (lambda c: checkpoints.SigningKeys.from_setting(OTHER_KEY).sign(
        {k: v for k, v in c.items() if k not in ("key_id", "signature")}),
     f"signed by key {OTHER_KID!r}, which is not among the public keys verified against"),
    (lambda c: "not json", "checkpoint is not a JSON object"),
], ids=["events", "head", "signature", "other-key", "garbage"])
def test_a_tampered_checkpoint_is_found(client, admin, blue, redis_client, change, reason):
    take(client, blue, "r-1")
    take(client, blue, "r-2")
    sign(client, admin)
    if change(json.loads(redis_client.lindex(STORE, 0))) == "not json":
        redis_client.lset(STORE, 0, "not json")
        # The export shows an auditor the stored text as it is.
        assert checkpoints.stored(redis_client, "invoice") == ["not json"]
    else:
        _forge(redis_client, change)
    result = verify(client, admin)
    assert result == {**result, "ok": False, "first_bad": {"checkpoint": 0, "reason": reason}}


def test_events_removed_at_the_end_are_found_by_the_checkpoint(client, admin, blue,
                                                              redis_client):
    for reference in ("r-1", "r-2", "r-3"):
        take(client, blue, reference)
    sign(client, admin)
    redis_client.rpop(EVENTS)
    redis_client.rpop(CHAIN)
    result = verify(client, admin)
    assert result["ok"] is False
    assert result["first_bad"] == {"checkpoint": 0, "reason": (
        "checkpoint signed 3 events, the chain verifies 2 (events removed at the end, or the "
        "chain is broken before)")}


def test_offline_the_trusted_key_decides_not_the_one_in_the_file(client, admin, blue,
                                                                 redis_client, tmp_path):
    take(client, blue, "r-1")
    sign(client, admin)
    text = client.get(f"{BASE}/export", headers=admin).get_data(as_text=True)
    good = export.verify_text(text)
    assert good["ok"] is True and good["keys_from_file"] is True
    assert good["checkpoints"] == 1 and good["signed_by"] == [
        next(iter(checkpoints.SigningKeys.from_setting(KEY).public()))]
    # Someone re-signs with a key of their own and puts its public half in the header.
    forger = checkpoints.SigningKeys.from_setting(OTHER_KEY)
    records = list(export.read(text))
    for record in records:
        if record["kind"] == "header":
            record["public_keys"] = {kid: checkpoints.public_pem(k)
                                     for kid, k in forger.public().items()}
        if record["kind"] == "checkpoint":
            record["checkpoint"] = forger.sign({k: v for k, v in record["checkpoint"].items()
                                                if k not in ("key_id", "signature")})
    forged = "".join(export.jsonl(records))
    assert export.verify_text(forged)["ok"] is True  # consistent with its own header...
    trusted = checkpoints.SigningKeys.from_setting(KEY).public()
    result = export.verify_text(forged, trusted)  # ...but not with the key the auditor has
    assert result["ok"] is False and "not among the public keys" in result["first_bad"]["reason"]
    assert export.verify_text(text, trusted)["ok"] is True


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_checkpoint_public_key_and_verify_export(client, admin, blue, valkey, monkeypatch,
                                                     tmp_path, fmt):
    take(client, blue, "r-1")
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS", f"{OTHER_KEY},{KEY}")
    runner = CliRunner()
    made = runner.invoke(main, ["ledger", "checkpoint"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["events"] == 1
    printed = runner.invoke(main, ["ledger", "public-key"])
    assert printed.exit_code == 0
    assert printed.output.count("BEGIN PUBLIC KEY") == 2  # the signing key and the older one
    assert KEY not in printed.output and OTHER_KEY not in printed.output
    pem = tmp_path / "keys.pem"
    first = printed.output.split("# key_id ")[1]
    pem.write_text(first.split("\n", 1)[1])
    out = tmp_path / f"ledger.{fmt}"
    assert runner.invoke(main, ["ledger", "export", "--format", fmt, "--output",
                                str(out)]).exit_code == 0
    ok = runner.invoke(main, ["ledger", "verify-export", str(out), "--public-key", str(pem)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["keys_from_file"] is False
    # A key that signed nothing here: the checkpoint's signer is not trusted.
    stranger = public_pem_file(tmp_path, checkpoints.generate_key(), "stranger.pem")
    refused = runner.invoke(main, ["ledger", "verify-export", str(out), "--public-key",
                                   str(stranger)])
    assert refused.exit_code == 1
    not_a_key = tmp_path / "x.pem"
    not_a_key.write_text("hello")
    bad = runner.invoke(main, ["ledger", "verify-export", str(out), "--public-key",
                               str(not_a_key)])
    assert bad.exit_code == 2 and "is not an Ed25519 public key" in bad.output


def test_the_ledger_commands_act_on_the_series_and_period_given(
        client, admin, blue, redis_client, valkey, monkeypatch, tmp_path):
    """`ledger checkpoint|export|verify|compact --series S [--period P]` work on S's chain (3
    events here), not the default series' (1 event), and on P's entries only."""
    take(client, blue, "r-1")
    assert client.post("/v1/series", headers=admin, json={"name": "acme-us"}).status_code == 201
    made = client.post("/v1/systems", headers=admin, json=body(name="red", series="acme-us"))
    red = {"Authorization": f"Bearer {made.get_json()['agent_token']}"}
    take(client, red, "a-1", date="2025-06-02")
    take(client, red, "a-2")
    take(client, red, "a-3")
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS", KEY)
    runner = CliRunner()
    acme = ["--series", "acme-us"]
    signed = runner.invoke(main, ["ledger", "checkpoint", *acme])
    assert signed.exit_code == 0, signed.output
    assert (json.loads(signed.output)["series"], json.loads(signed.output)["events"]) == (
        "acme-us", 3)
    empty = runner.invoke(main, ["ledger", "checkpoint", *acme, "--sequence", "credit_note"])
    assert (empty.exit_code, empty.output) == (1, "Error: The credit_note ledger of series "
                                                  "'acme-us' has no events yet: nothing to sign\n")
    out = tmp_path / "acme.jsonl"
    assert runner.invoke(main, ["ledger", "export", *acme, "--period", "2026", "--output",
                                str(out)]).exit_code == 0
    found = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in found]
    assert (kinds.count("event"), kinds.count("checkpoint"), kinds.count("entry")) == (3, 1, 2)
    assert {r["entry"]["reference"] for r in found if r["kind"] == "entry"} == {"a-2", "a-3"}
    # Its header carries the signing key's public half: checked offline without --public-key.
    offline = runner.invoke(main, ["ledger", "verify-export", str(out)])
    assert offline.exit_code == 0, offline.output
    assert json.loads(offline.output)["keys_from_file"] is True
    csv_out = tmp_path / "acme.csv"
    assert runner.invoke(main, ["ledger", "export", *acme, "--format", "csv", "--output",
                                str(csv_out)]).exit_code == 0
    assert csv_out.read_text().splitlines()[0] == "kind,seq,prev,hash,data"
    checked = runner.invoke(main, ["ledger", "verify", *acme, "--period", "2026"])
    assert checked.exit_code == 0, checked.output
    result = json.loads(checked.output)
    assert (result["events"], result["entries"], result["checkpoints"]) == (3, 2, 1)
    # Compaction: the settings' LEDGER_ARCHIVE_KEEP (1000) keeps all 3 when only --block is
    # given; --keep 1 moves the 2 older ones, of S's chain.
    for options, moved in ((["--block", "1"], 0), (["--block", "1", "--keep", "1"], 2)):
        compacted = runner.invoke(main, ["ledger", "compact", *acme, *options])
        assert compacted.exit_code == 0, compacted.output
        assert json.loads(compacted.output)["events"] == moved, options
    assert redis_client.hget(keys.seq_archived("invoice", "acme-us"), "events") == "2"


def test_no_key_or_a_bad_key_is_a_clear_error(client, admin, blue, app_config):
    from coordinator.app import create_app

    take(client, blue, "r-1")
    unsigned = create_app({**app_config, "LEDGER_SIGNING_KEYS": None}).test_client()
    response = unsigned.post(f"{BASE}/checkpoints", headers=admin)
    assert response.status_code == 503
    assert "INVOICE_SYNC_LEDGER_SIGNING_KEYS" in response.get_json()["message"]
    # Without a key, the missing key is what the operator is told, even before any event.
    no_events = "/v1/series/default/sequences/credit_note/ledger/checkpoints"
    assert unsigned.post(no_events, headers=admin).status_code == 503
    broken = create_app({**app_config, "LEDGER_SIGNING_KEYS": "c2hvcnQ="}).test_client()
    response = broken.post(f"{BASE}/checkpoints", headers=admin)
    assert response.status_code == 503
    assert response.get_json()["message"] == (
        "INVOICE_SYNC_LEDGER_SIGNING_KEYS: key #1 is not an Ed25519 private key (32 url-safe "
        "base64-encoded bytes); make one with `invoice-sync ledger generate-key`")
    assert "c2hvcnQ=" not in response.get_data(as_text=True)
    empty = client.post(no_events, headers=admin)
    assert empty.status_code == 409
    assert empty.get_json()["message"] == (
        "The credit_note ledger of series 'default' has no events yet: nothing to sign")


def test_the_scheduler_signs_each_grown_chain_once_per_interval(client, admin, blue,
                                                               redis_client, app_config):
    config = {**app_config, "LEDGER_CHECKPOINT_SECONDS": 3600}
    claim = keys.seq_checkpoint_claim("invoice")
    assert checkpoints.due(redis_client, config) == []  # no events anywhere yet
    take(client, blue, "r-1")
    assert checkpoints.due(redis_client, config) == ["default/invoice"]
    assert 0 < redis_client.ttl(claim) <= 3600  # the claim ends with the interval
    redis_client.delete(claim)
    assert checkpoints.due(redis_client, config) == []  # the head did not move
    take(client, blue, "r-2")
    assert checkpoints.due(redis_client, config) == []  # claimed for this interval
    redis_client.delete(claim)
    assert checkpoints.due(redis_client, config) == ["default/invoice"]
    take(client, blue, "r-3")
    # Switched off, or no key: nothing, though the head moved and no claim is held.
    for off in ({**config, "LEDGER_CHECKPOINT_SECONDS": 0},
                {**config, "LEDGER_SIGNING_KEYS": None}):
        redis_client.delete(claim)
        assert checkpoints.due(redis_client, off) == []
    assert checkpoints.due(redis_client, {**config, "LEDGER_CHECKPOINT_SECONDS": 1}) == [
        "default/invoice"]  # the shortest interval signs too
    redis_client.delete(claim)
    assert checkpoints.due(redis_client, config) == []  # not moved since the third
    assert [c["events"] for c in checkpoints.stored(redis_client, "invoice")] == [1, 2, 3]
    result = verify(client, admin)
    assert result["ok"] is True and result["checkpoints"] == 3
    # Every series' chains are signed, each in its own series, with its own claim: also a
    # series whose only events are credit notes.
    assert client.post("/v1/series", headers=admin, json={"name": "acme-us"}).status_code == 201
    made = client.post("/v1/systems", headers=admin, json=body(name="red", series="acme-us"))
    red = {"Authorization": f"Bearer {made.get_json()['agent_token']}"}
    take(client, red, "cn-1", document="credit_note")
    take(client, blue, "r-4")
    redis_client.delete(claim)
    assert sorted(checkpoints.due(redis_client, config)) == ["acme-us/credit_note",
                                                             "default/invoice"]
    take(client, red, "u-1")
    take(client, blue, "r-5")
    redis_client.delete(claim)
    assert sorted(checkpoints.due(redis_client, config)) == ["acme-us/invoice",
                                                             "default/invoice"]
    assert [(c["series"], c["events"]) for c in checkpoints.stored(
        redis_client, "invoice", series="acme-us")] == [("acme-us", 1)]


def test_serve_keeps_its_signing_key_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS", raising=False)
    path, created = datadir.use_signing_key_file(tmp_path, create=True)
    assert created and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = os.environ["INVOICE_SYNC_LEDGER_SIGNING_KEYS"]
    assert checkpoints.SigningKeys.from_setting(key).private
    monkeypatch.delenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS")
    assert datadir.use_signing_key_file(tmp_path) == (path, False)
    assert os.environ["INVOICE_SYNC_LEDGER_SIGNING_KEYS"] == key
    # An explicit setting wins over the file.
    monkeypatch.setenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS", OTHER_KEY)
    assert datadir.use_signing_key_file(tmp_path, create=True) is None


def test_public_key_reads_serve_s_key_file_and_generate_key_prints_a_key(tmp_path, monkeypatch):
    """On `serve`'s embedded Redis (no Redis configured), `ledger public-key --data-dir D`
    prints the public half of D's key file, no Redis needed; without any key it says how to
    get one (exit 1). `ledger generate-key` prints a key the setting accepts."""
    for name in ("INVOICE_SYNC_LEDGER_SIGNING_KEYS", "INVOICE_SYNC_REDIS_URL"):
        monkeypatch.setenv(name, "x")  # recorded, so the commands' own settings are undone
        monkeypatch.delenv(name)
    runner = CliRunner()
    generated = runner.invoke(main, ["ledger", "generate-key"])
    assert generated.exit_code == 0
    key = generated.output.strip()
    assert checkpoints.SigningKeys.from_setting(key).private
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / checkpoints.KEY_FILE_NAME).write_text(key + "\n")
    printed = runner.invoke(main, ["ledger", "public-key", "--data-dir", str(tmp_path / "serve")])
    assert printed.exit_code == 0, printed.output
    (kid,) = checkpoints.SigningKeys.from_setting(key).public()
    assert printed.output.startswith(f"# key_id {kid}\n-----BEGIN PUBLIC KEY-----")
    monkeypatch.delenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS")
    none = runner.invoke(main, ["ledger", "public-key", "--data-dir", str(tmp_path / "empty")])
    assert (none.exit_code, none.output) == (
        1, "Error: no signing key: set INVOICE_SYNC_LEDGER_SIGNING_KEYS (or run `invoice-sync "
           "serve`, which makes one in its data dir)\n")
