"""What `verify` and `verify-export` tell an auditor, checked whole (no Redis: pure logic).

docs/AUDITORS.md promises that `ok: false` comes with `first_bad` naming the `seq` of the first
event that does not verify, the allocation `id` it is about and why; that `verify` reports the
chain's events, its head and the period's entries; and that an export is checked offline
(order, hashes, the end record, the header, signed checkpoints). These tests build chains and
exports by hand from the documented hash rule and compare whole verdicts, so a verdict that
names the wrong event, drops the id or miscounts is caught, not only one that says "ok".
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from coordinator.cli import main
from coordinator.numbering import blocks, chain, checkpoints
from coordinator.numbering import export as export_file

# One of each event type, as the Lua scripts write them (docs/AUDITORS.md, "What is chained"),
# over two periods: the numbers of 2025 were voided/confirmed after 2026 had started.
EVENTS = [
    {"type": "issued", "id": "invoice:2025:7", "number": "7", "formatted": "2025-7",
     "system": "blue", "document": "invoice", "reference": "r-1", "date": "2025-12-31",
     "period": "2025", "at": "2026-01-01T00:00:00Z"},
    {"type": "issued", "id": "invoice:2026:1", "number": "1", "formatted": "2026-1",
     "system": "blue", "document": "invoice", "reference": "r-2", "date": "2026-01-02",
     "period": "2026", "at": "2026-01-02T00:00:00Z"},
    {"type": "confirmed", "id": "invoice:2025:7", "by": "blue", "invoicenum": "2025-7",
     "at": "2026-01-02T00:00:01Z"},
    {"type": "voided", "id": "invoice:2026:1", "by": "blue", "reason": "created by mistake",
     "at": "2026-01-02T00:00:02Z"},
    {"type": "settings_changed", "by": "admin:t1", "audit": "{}",
     "at": "2026-01-02T00:00:03Z"},
    {"type": "next_number_raised", "by": "admin:t1", "period": "2026", "counter": "1",
     "moved_to": "10", "at": "2026-01-02T00:00:04Z"},
    {"type": "reissued", "id": "invoice:2026:10", "number": "10", "formatted": "2026-10",
     "system": "blue", "document": "invoice", "reference": "r-2", "date": "2026-01-02",
     "period": "2026", "reissue_of": "invoice:2026:1", "reason": "voided by mistake",
     "by": "admin:t1", "at": "2026-01-02T00:00:05Z"},
    {"type": "recovered", "id": "acme/invoice:2026:11", "number": "11", "formatted": "2026-11",
     "period": "2026", "at": "2026-01-02T00:00:06Z"},
]


def sealed(events):
    """``(raws, hashes)`` of ``events`` numbered from 0 and chained by the documented rule."""
    raws, hashes, prev = [], [], chain.GENESIS
    for index, event in enumerate(events):
        event = {**event, "seq": index}
        raws.append(json.dumps(event))
        prev = chain.event_hash(event, prev)
        hashes.append(prev)
    return raws, hashes


def records(raws, hashes):
    return list(zip(range(len(raws)), raws, hashes, strict=True))


RAWS, HASHES = sealed(EVENTS)


def test_verify_counts_the_events_the_entries_of_a_period_and_the_numbers_taken():
    whole = chain.check(records(RAWS, HASHES))
    assert whole == {"ok": True, "events": 8, "entries": 8, "head": HASHES[-1], "issued": 4}
    # 2026: the issued, voided, raised, reissued and recovered events of 2026 (by their period,
    # or by the period in their allocation id); not the settings change, not 2025's number.
    assert chain.check(records(RAWS, HASHES), "2026")["entries"] == 5
    assert chain.check(records(RAWS, HASHES), "2025")["entries"] == 2
    assert chain.check(records(RAWS, HASHES), "2024")["entries"] == 0
    # Checkpoints ask for the verified hash at the positions they sign, and only those.
    wanted = {2: "", 7: ""}
    chain.check(records(RAWS, HASHES), None, wanted)
    assert wanted == {2: HASHES[2], 7: HASHES[7]}


def _tampered(index, raw=None, stored=None):
    raws, hashes = list(RAWS), list(HASHES)
    if raw is not None:
        raws[index] = raw
    if stored is not None:
        hashes[index] = stored
    return raws, hashes


def _moved(raw, seq):
    return json.dumps({**json.loads(raw), "seq": seq})


@pytest.mark.parametrize(("index", "raw", "stored", "first_bad"), [
    (3, "CHANGE", None,
     {"seq": 3, "id": "invoice:2026:1",
      "reason": "hash does not match (event changed, or an earlier one)"}),
    (4, "CHANGE", None,  # a settings change names no allocation
     {"seq": 4, "reason": "hash does not match (event changed, or an earlier one)"}),
    (3, "MOVE", None,
     {"seq": 3, "id": "invoice:2026:1",
      "reason": "event 4 found where event 3 belongs (removed or re-ordered)"}),
    (4, "MOVE", None,
     {"seq": 4, "reason": "event 5 found where event 4 belongs (removed or re-ordered)"}),
    (3, "MISSING", None, {"seq": 3, "reason": "event missing (its hash is in the chain)"}),
    (3, "[1, 2]", None, {"seq": 3, "reason": "event is not a JSON object"}),
    (3, "{not json", None, {"seq": 3, "reason": "event is not a JSON object"}),
    (3, None, "UNSEALED", {"seq": 3, "id": "invoice:2026:1", "reason": "event not sealed"}),
    (3, "BROKEN", None, {"seq": 3, "reason": "archived block damaged here"}),
])
def test_verify_names_the_first_bad_event_its_allocation_and_why(index, raw, stored,
                                                                   first_bad):
    raws, hashes = list(RAWS), list(HASHES)
    if raw == "CHANGE":
        raws[index] = raws[index].replace('"by": ', '"by": "x" , "was": ')
    elif raw == "MOVE":
        raws[index] = _moved(raws[index], index + 1)
    elif raw == "MISSING":
        raws[index] = None
    elif raw == "BROKEN":
        raws[index] = blocks.Broken("archived block damaged here")
    elif raw is not None:
        raws[index] = raw
    if stored == "UNSEALED":
        hashes[index] = None
    result = chain.check(records(raws, hashes), "2026")
    # Everything before the bad event verified: its count, its head, its entries of 2026.
    entries = {3: 1, 4: 2}[index]
    assert result == {"ok": False, "events": index, "entries": entries,
                      "head": HASHES[index - 1], "issued": 2, "first_bad": first_bad}


def test_an_event_chained_to_another_predecessor_does_not_verify():
    # Event 1 re-hashed from genesis (what a forger who rebuilt one hash would store).
    hashes = list(HASHES)
    hashes[1] = chain.event_hash(json.loads(RAWS[1]), chain.GENESIS)
    assert chain.check(records(RAWS, hashes))["first_bad"]["seq"] == 1


# --- the export, checked offline ----------------------------------------------------------

KEY = checkpoints.SigningKeys.from_setting(checkpoints.generate_key())
KID = next(iter(KEY.public()))


def export(events=EVENTS, *, signed_at=None):
    """An export's records as `export_records` writes them (header, events, checkpoints, end)."""
    raws, hashes = sealed(events)
    out = [{"kind": "header", "format": chain.FORMAT, "series": "default",
            "sequence": "invoice", "period": None, "genesis": chain.GENESIS,
            "public_keys": {kid: checkpoints.public_pem(k) for kid, k in KEY.public().items()}}]
    prev = chain.GENESIS
    for index, (raw, hashed) in enumerate(zip(raws, hashes, strict=True)):
        out.append({"kind": "event", "seq": index, "prev": prev, "hash": hashed,
                    "event": json.loads(raw)})
        prev = hashed
    for events_signed in signed_at or ():
        out.append({"kind": "checkpoint", "checkpoint": KEY.sign({
            "format": checkpoints.FORMAT, "series": "default", "sequence": "invoice",
            "events": events_signed, "head": hashes[events_signed - 1],
            "at": "2026-01-03T00:00:00Z"})})
    out.append({"kind": "end", "events": len(raws), "head": prev})
    return out


def test_a_sound_export_verifies_with_the_keys_given_or_the_files_own():
    records_ = export(signed_at=[3, 8])
    given = chain.check_export(records_, KEY.public())
    assert given == {"ok": True, "events": 8, "head": HASHES[-1], "checkpoints": 2,
                     "signed_by": [KID], "keys_from_file": False}
    assert chain.check_export(records_) == {**given, "keys_from_file": True}
    # Without checkpoints, nobody signed it.
    assert chain.check_export(export(), KEY.public())["signed_by"] == []


def test_an_export_checkpoint_is_checked_against_the_keys_given():
    other = checkpoints.SigningKeys.from_setting(checkpoints.generate_key()).public()
    result = chain.check_export(export(signed_at=[3]), other)
    assert result["ok"] is False and result["signed_by"] == [KID]
    assert result["first_bad"] == {"checkpoint": 0, "reason": (
        f"signed by key {KID!r}, which is not among the public keys verified against")}
    # A checkpoint whose signed head is not the file's hash at that position.
    changed = export(signed_at=[3])
    checkpoint = next(r for r in changed if r["kind"] == "checkpoint")
    unsigned = {k: v for k, v in checkpoint["checkpoint"].items() if k != "signature"}
    checkpoint["checkpoint"] = KEY.sign({**unsigned, "head": HASHES[3]})
    assert chain.check_export(changed, KEY.public())["first_bad"] == {"checkpoint": 0, "reason": (
        "the chain's hash of event 2 is not the signed head (events rewritten since)")}


def test_a_key_id_is_what_auditors_md_says_an_auditor_computes_from_the_pem():
    # "first 16 hex digits of SHA-256 of the 32-byte raw public key"
    pem = checkpoints.public_pem(next(iter(KEY.public().values())))
    raw = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert KID == hashlib.sha256(raw).hexdigest()[:16]


def test_a_signed_checkpoint_of_no_events_signs_nothing():
    # Signed with the trusted key, yet naming no event (0, or not a number): not a head.
    for events in (0, "3"):
        changed = export(signed_at=[3])
        checkpoint = next(r for r in changed if r["kind"] == "checkpoint")
        unsigned = {k: v for k, v in checkpoint["checkpoint"].items() if k != "signature"}
        checkpoint["checkpoint"] = KEY.sign({**unsigned, "events": events})
        assert chain.check_export(changed, KEY.public())["first_bad"] == {
            "checkpoint": 0, "reason": "checkpoint names no events"}


def _fail(first_bad, events):
    return {"ok": False, "events": events, "first_bad": first_bad}


def _edit(records_, edit):
    records_ = [dict(r) for r in records_]
    edit(records_)
    return records_


def _event_at(records_, seq):
    return next(r for r in records_ if r["kind"] == "event" and r["seq"] == seq)


HASH_BAD = "hash does not match (event changed, or an earlier one)"
END_BAD = ("end record missing or does not match (events removed at the end, or the file "
           "was cut)")


@pytest.mark.parametrize(("edit", "verdict"), [
    (lambda r: _event_at(r, 3)["event"].update(reason="paid after all"),
     _fail({"seq": 3, "id": "invoice:2026:1", "reason": HASH_BAD}, 3)),
    (lambda r: _event_at(r, 4)["event"].update(by="admin:t2"),
     _fail({"seq": 4, "reason": HASH_BAD}, 4)),
    # The record's prev is not the hash before it (the hash itself still recomputes).
    (lambda r: _event_at(r, 3).update(prev=HASHES[1]),
     _fail({"seq": 3, "id": "invoice:2026:1", "reason": HASH_BAD}, 3)),
    (lambda r: _event_at(r, 3).update(hash=HASHES[4]),
     _fail({"seq": 3, "id": "invoice:2026:1", "reason": HASH_BAD}, 3)),
    (lambda r: r.remove(_event_at(r, 2)),
     _fail({"seq": 2, "id": "invoice:2026:1", "reason":
            "event 3 found where event 2 belongs (removed or re-ordered)"}, 2)),
    (lambda r: r.remove(_event_at(r, 3)),
     _fail({"seq": 3, "reason": "event 4 found where event 3 belongs (removed or re-ordered)"},
           3)),
    # Only the record's own seq changed: the event inside is where it belongs.
    (lambda r: _event_at(r, 3).update(seq=9),
     _fail({"seq": 3, "id": "invoice:2026:1",
            "reason": "the record of event 3 says seq 9 (the file was edited)"}, 3)),
    (lambda r: _event_at(r, 2).update(event=None),
     _fail({"seq": 2, "reason": "event missing or not an object"}, 2)),
    (lambda r: r.insert(len(r), dict(_event_at(r, 7), seq=8)),
     _fail({"seq": 8, "reason": "event after the end record"}, 8)),
    (lambda r: r.pop(0), _fail({"reason": "no header of invoice-sync-ledger/1"}, 8)),
    (lambda r: r[0].update(format="invoice-sync-ledger/0"),
     _fail({"reason": "no header of invoice-sync-ledger/1"}, 8)),
    (lambda r: r.pop(), _fail({"seq": 8, "reason": END_BAD}, 8)),
    (lambda r: r[-1].update(events=7), _fail({"seq": 8, "reason": END_BAD}, 8)),
    (lambda r: r[-1].update(head=HASHES[6]), _fail({"seq": 8, "reason": END_BAD}, 8)),
    # The file cut after event 6 with the end record kept.
    (lambda r: [r.remove(_event_at(r, 7))], _fail({"seq": 7, "reason": END_BAD}, 7)),
    (lambda r: r[0].update(public_keys={"x": "not a key"}),
     _fail({"reason": "the header's public_keys are not Ed25519 public keys"}, 8)),
])
def test_verify_export_names_what_is_wrong_with_the_file(edit, verdict):
    assert chain.check_export(_edit(export(), edit)) == verdict


def test_an_export_without_a_header_fails_even_with_the_keys_given():
    assert chain.check_export(export()[1:], KEY.public()) == _fail(
        {"reason": "no header of invoice-sync-ledger/1"}, 8)


def test_text_outside_ascii_is_hashed_as_its_utf8_bytes_as_documented():
    """docs/AUDITORS.md's rule encodes with ensure_ascii=False: a void reason in German hashes
    its UTF-8 bytes, not \\u escapes, or an auditor's recomputation would not match."""
    event = {"type": "voided", "id": "invoice:2026:1", "reason": "Rückbuchung", "seq": 0}
    assert b'"reason":"R\xc3\xbcckbuchung"' in chain.canonical({**event, "prev": chain.GENESIS})
    documented = json.dumps({**event, "prev": chain.GENESIS}, sort_keys=True,
                            separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert chain.event_hash(event, chain.GENESIS) == hashlib.sha256(documented).hexdigest()


def test_an_export_file_holds_each_record_as_documented_and_reads_back_whole():
    """The file an auditor keeps (docs/AUDITORS.md, step 3), in both formats: JSON lines, or
    CSV ``kind,seq,prev,hash,data`` where only events fill seq/prev/hash and ``data`` holds the
    rest. Text outside ASCII is written as itself (a spreadsheet shows the void reason as the
    user typed it), an event not sealed has no hash, and reading the file gives every record."""
    found = export(signed_at=[3])
    unsealed = dict(found[-2], hash=None)  # an event whose seal was lost
    entry = {"id": "invoice:2026:1", "number": "1", "reference": "r-2", "status": "void",
             "void_reason": "Rückbuchung"}
    extra = [unsealed, {"kind": "entry", "entry": entry},
             {"kind": "gap", "period": "2026", "gap": {"kind": "void", "number": 1,
                                                       "reason": "Rückbuchung"}},
             {"kind": "audit", "audit": {"by": "admin:t1", "at": "2026-01-02T00:00:03Z"}}]
    found = found[:-2] + extra + found[-1:]
    as_jsonl = "".join(export_file.jsonl(found))
    as_csv = "".join(export_file.csv_rows(found))
    for text in (as_jsonl, as_csv):
        assert "Rückbuchung" in text and "\\u00fc" not in text
        assert list(export_file.read(text)) == found
    lines = as_jsonl.split("\n")  # one record a line, each line ended
    assert lines[-1] == "" and [json.loads(line) for line in lines[:-1]] == found
    rows = list(csv.reader(io.StringIO(as_csv)))
    assert rows[0] == ["kind", "seq", "prev", "hash", "data"]
    for row, record in zip(rows[1:], found, strict=True):
        if record["kind"] == "event":
            assert row[:4] == ["event", str(record["seq"]), record["prev"], record["hash"] or ""]
            assert json.loads(row[4]) == record["event"]
        else:
            assert row[:4] == [record["kind"], "", "", ""]
            assert json.loads(row[4]) == {k: v for k, v in record.items() if k != "kind"}


NOT_AN_EXPORT = "neither JSON lines nor a CSV export (header row missing)"


@pytest.mark.parametrize(("text", "reason"), [
    ("", NOT_AN_EXPORT),
    ("kind;seq;prev;hash;data\n", NOT_AN_EXPORT),
    # Valid JSON on every line, yet a line that is not a record: named, not a crash.
    ('{"kind": "header"}\n[1, 2]\n', "line 2 is not a record (a JSON object)"),
    ('{"kind": "header"}\n\n"end"\n', "line 3 is not a record (a JSON object)"),
], ids=["empty", "other-csv", "jsonl-list", "jsonl-string"])
def test_a_file_that_is_not_an_export_is_reported_unreadable(text, reason, tmp_path):
    verdict = {"ok": False, "events": 0, "first_bad": {"reason": f"unreadable: {reason}"}}
    assert export_file.verify_text(text) == verdict
    # `verify-export` prints that verdict and exits 1 ("broken"), without a traceback.
    path = tmp_path / "ledger.jsonl"
    path.write_text(text, encoding="utf-8")
    ran = CliRunner().invoke(main, ["ledger", "verify-export", str(path)])
    assert ran.exit_code == 1 and isinstance(ran.exception, SystemExit)
    assert json.loads(ran.output) == verdict
