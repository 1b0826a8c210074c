"""Compaction of the ledger on a real Valkey: old sealed events move into archived blocks and
the chain reads back the same (verify, export, checkpoints, new events after it); a changed
byte, a missing or misplaced block is found and named; a run stopped between blocks, a stale
or changed list, and a second run lose nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.client import NEVER_DECODE

from coordinator import keys
from coordinator.cli import main
from coordinator.clock import iso
from coordinator.exceptions import Conflict, CoordinatorError, NotDurable, NotFound
from coordinator.numbering import (
    allocation,
    blocks,
    chain,
    checkpoints,
    compaction,
    export,
    ledger,
    recover,
    scripts,
    sequences,
    settled,
)
from coordinator.numbering import series as series_mod
from coordinator.numbering.allocation import Hints
from coordinator.numbering.scripts import Durability
from tests.support import initialise_numbering, release_data_dir, upgraded_copy

pytestmark = pytest.mark.integration

EVENTS, CHAIN = keys.seq_events("invoice"), keys.seq_chain("invoice")
DAY = dt.date(2026, 11, 21)


def take(client, count, start=0, void_every=4):
    """``count`` numbers for system blue, each confirmed (every ``void_every``-th voided)."""
    hints = Hints()
    for i in range(start, start + count):
        entry, _ = allocation.allocate(client, "blue", "invoice", f"r-{i}", DAY, None, hints)
        action, detail = (("void", "deleted") if i % void_every == void_every - 1
                          else ("confirm", entry["formatted"]))
        allocation.transition(client, entry["id"], action, detail, actor_kind="agent",
                              actor_system="blue", actor="agent:blue")
    chain.seal(client, "invoice")


def read_back(client):
    return list(chain.chained(client, "invoice")), list(chain.export_records(client, "invoice"))


def block_data(client, start):
    return client.execute_command("GET", keys.seq_block("invoice", start),
                                  **{NEVER_DECODE: True})


def test_compaction_keeps_the_chain_and_new_events_continue_it(redis_client):
    signing = checkpoints.SigningKeys.from_setting(checkpoints.generate_key())
    take(redis_client, 8)
    checkpoints.make(redis_client, signing, "invoice")
    before = read_back(redis_client)
    assert compaction.compact(redis_client, "invoice", block=5, keep=3) == 10
    # Whole blocks only, the newest `keep` sealed events untouched, places kept as "".
    assert redis_client.hgetall(keys.seq_archived("invoice")) == {
        "events": "10", "head": before[0][9][2]}
    assert redis_client.lrange(EVENTS, 0, 9) == [""] * 10 == redis_client.lrange(CHAIN, 0, 9)
    assert redis_client.lrange(EVENTS, 10, -1) == [raw for _, raw, _ in before[0][10:]]
    assert read_back(redis_client) == before
    assert compaction.compact(redis_client, "invoice", block=5, keep=3) == 0  # again: nothing
    # New numbers append after it; their events keep global indexes; everything verifies.
    take(redis_client, 3, start=8)
    assert json.loads(redis_client.lindex(EVENTS, -1))["seq"] == 21
    assert compaction.compact(redis_client, "invoice", block=5, keep=1) == 10
    result = chain.verify(redis_client, "invoice", signing=signing)
    assert result["ok"] is True and result["events"] == 22 and result["checkpoints"] == 1
    assert [raw for _, raw, _ in chain.chained(redis_client, "invoice")][:16] == [
        raw for _, raw, _ in before[0]]
    # The head is never archived: the sealer continues from it.
    assert redis_client.lindex(CHAIN, -1) == result["head"]


def tamper_hash(client, start):
    data = bytearray(block_data(client, start))
    data[16 + blocks.PREFIX * 2] ^= 1  # the first byte of the third event's hash
    client.set(keys.seq_block("invoice", start), bytes(data))


def tamper_last(client, start):
    data = bytearray(block_data(client, start))
    data[16 + blocks.PREFIX * 5 + 31] ^= 1  # the last byte of the block's last whole hash
    client.set(keys.seq_block("invoice", start), bytes(data))


def tamper_text(client, start):
    data = bytes(block_data(client, start))
    body = 16 + blocks.PREFIX * 5 + 32
    text = blocks.zlib.decompress(data[body:]).replace(b'"r-3"', b'"r-9"')
    client.set(keys.seq_block("invoice", start), data[:body] + blocks.zlib.compress(text))


def tamper_compressed(client, start):
    data = bytearray(block_data(client, start))
    data[len(data) // 2 + 40] ^= 0x55
    client.set(keys.seq_block("invoice", start), bytes(data))


def remove_block(client, start):
    client.delete(keys.seq_block("invoice", start))


def misplace_block(client, start):
    client.set(keys.seq_block("invoice", start), block_data(client, start - 5))


@pytest.mark.parametrize(("tamper", "seq", "reason"), [
    (tamper_hash, 7, "hash does not match"), (tamper_text, 6, "hash does not match"),
    (tamper_last, 9, "hash does not match"),
    (tamper_compressed, None, "archived block from event 5 is damaged"),
    (remove_block, 5, "archived block from event 5 is missing"),
    (misplace_block, 5, "archived block from event 5 is damaged or misplaced")])
def test_a_changed_byte_or_a_missing_block_is_found_and_named(redis_client, tamper, seq,
                                                              reason):
    take(redis_client, 8)
    exported = list(chain.export_records(redis_client, "invoice"))
    assert compaction.compact(redis_client, "invoice", block=5, keep=3) == 10
    tamper(redis_client, 5)
    result = chain.verify(redis_client, "invoice")
    bad = result["first_bad"]
    assert result["ok"] is False and reason in bad["reason"], bad
    if seq is not None:
        assert bad["seq"] == seq
    else:  # damage inside the compressed stream: an event of that block is named
        assert 5 <= bad["seq"] < 10
    # An export taken before still verifies offline; one taken now names the same event.
    assert chain.check_export(exported)["ok"] is True
    now = chain.check_export(chain.export_records(redis_client, "invoice"))
    assert now["ok"] is False and now["first_bad"]["seq"] == bad["seq"]
    # Compaction never archives past a block it cannot read back into a sound chain.
    assert compaction.compact(redis_client, "invoice", block=5, keep=3) == 0


ARCHIVED = ['{"seq":5}', '{"seq":6}', '{"seq":7}']
DIGESTS = [hashlib.sha256(raw.encode()).hexdigest() for raw in ARCHIVED]
SOUND = blocks.pack(5, ARCHIVED, DIGESTS)  # 16 header, 3 x 4 prefix, 32 hash, then zlib
PREFIXES = [digest[:8] for digest in DIGESTS]
# A stored (level 0) stream of 505 bytes: 516 bytes, its checksum alone in the last chunk.
_PADDED = ('{"seq":5}\n{"seq":6}\n{"seq":7,"p":"' + "x" * 468 + '"}\n').encode()
_STORED = blocks.zlib.compress(_PADDED, 0)
# Events whose block is read back in several chunks (~900 compressed bytes).
LONG = [raw[:-1] + ',"pad":"' + "".join(hashlib.sha256(f"{raw}{n}".encode()).hexdigest()
                                        for n in range(8)) + '"}' for raw in ARCHIVED]


def _damaged(why):
    return blocks.Broken(f"archived block from event 5 is damaged{why}")


@pytest.mark.parametrize(("data", "records", "last"), [
    (SOUND, list(zip(ARCHIVED, PREFIXES, strict=True)), DIGESTS[2]),
    (SOUND[:15], [(_damaged(" (too short)"), None)], ""),
    (SOUND[:16], [(_damaged(" (no events after its hashes)"), None)], ""),
    (SOUND[:60], [(_damaged(" (no events after its hashes)"), None)], ""),
    (blocks.pack(0, ARCHIVED, DIGESTS), [(_damaged(
        " or misplaced (its header says b'ISL1', 3 events from event 0)"), None)], ""),
    (b"ISL1" + (5).to_bytes(8, "big") + bytes(4) + SOUND[16:], [(_damaged(
        " or misplaced (its header says b'ISL1', 0 events from event 5)"), None)], ""),
    (SOUND[:12] + (1).to_bytes(4, "big") + SOUND[16:20] + bytes.fromhex(DIGESTS[0])
     + SOUND[60:], [(_damaged(": it holds 3 events, its header says 1"), PREFIXES[0])],
     DIGESTS[0]),
    (None, [(blocks.Broken("archived block from event 5 is missing"), None)], ""),
    (blocks.pack(5, LONG, DIGESTS), list(zip(LONG, PREFIXES, strict=True)), DIGESTS[2]),
    (SOUND + b"x", [*zip(ARCHIVED[:2], PREFIXES, strict=False),
                    (_damaged(" after its last event"), PREFIXES[2])], DIGESTS[2]),
    (SOUND[:60] + _STORED[:-1] + bytes([_STORED[-1] ^ 1]),
     [*zip(ARCHIVED[:2], PREFIXES, strict=False),
      (_damaged(" after its last event"), PREFIXES[2])], DIGESTS[2]),
    (SOUND[:60] + blocks.zlib.compress(b'{"seq":5}\n{"seq":6}\n{"seq":7}\n\xff\n'),
     [*zip(ARCHIVED[:2], PREFIXES, strict=False),
      (_damaged(" after its last event"), PREFIXES[2])], DIGESTS[2]),
    (SOUND[:-3], [*zip(ARCHIVED[:2], PREFIXES, strict=False),
                  (_damaged(" after its last event"), PREFIXES[2])], DIGESTS[2]),
    (SOUND[:60] + blocks.zlib.compress(b'{"seq":5}\n\xff\n{"seq":7}\n'),
     [(ARCHIVED[0], PREFIXES[0]), (_damaged(": event 6 cannot be read back"), PREFIXES[1])],
     DIGESTS[2]),
], ids=["sound", "short", "header", "hashes", "misplaced", "empty", "more", "missing", "long",
        "trailing", "checksum", "utf8-after", "cut", "utf8"])
def test_a_damaged_block_reads_back_up_to_the_damage_and_names_why(data, records, last):
    """What verify names (``first_bad.reason``) for each kind of damage to a block's bytes."""
    assert blocks.unpack(5, data) == blocks.Block(records, last)


def test_a_run_stopped_between_blocks_or_raced_loses_nothing(redis_client, monkeypatch):
    take(redis_client, 8)
    before = read_back(redis_client)
    real = scripts.COMPACT
    calls = []

    class Stop(Exception):
        pass

    def stop_after_one(client, keys_, args):
        calls.append(args[0])
        if len(calls) == 2:
            raise Stop  # the process dies between two blocks
        return real(client, keys_, args)

    monkeypatch.setattr(scripts, "COMPACT", stop_after_one)
    with pytest.raises(Stop):
        compaction.compact(redis_client, "invoice", block=4, keep=3)
    assert redis_client.hget(keys.seq_archived("invoice"), "events") == "4"
    assert read_back(redis_client) == before

    def change_meanwhile(client, keys_, args):
        # Another process archives this block, then the lists move on under the first.
        event = json.loads(client.lindex(EVENTS, args[0] + 1))
        client.lset(EVENTS, args[0] + 1, json.dumps({**event, "at": "changed"}))
        return real(client, keys_, args)

    monkeypatch.setattr(scripts, "COMPACT", change_meanwhile)
    assert compaction.compact(redis_client, "invoice", block=4, keep=3) == 0
    assert redis_client.hget(keys.seq_archived("invoice"), "events") == "4"
    assert not redis_client.exists(keys.seq_block("invoice", 4))
    monkeypatch.setattr(scripts, "COMPACT", real)
    # A stale start (another run archived first) writes nothing.
    assert real(redis_client, [EVENTS, CHAIN, keys.seq_archived("invoice"),
                               keys.seq_block("invoice", 0)],
                [0, 4, "x", b"x", "x"]) == ["stale", 4]
    verdict = chain.verify(redis_client, "invoice")
    assert verdict["ok"] is False and verdict["first_bad"]["seq"] == 5
    assert compaction.compact(redis_client, "invoice", block=4, keep=3) == 0


def test_events_lost_from_the_list_are_not_archived(redis_client):
    take(redis_client, 4, void_every=9)  # 8 sealed events
    redis_client.ltrim(EVENTS, 0, 1)  # the events after the second are lost; their hashes stay
    assert compaction.compact(redis_client, "invoice", block=2, keep=1) == 2
    assert chain.verify(redis_client, "invoice")["first_bad"] == {
        "seq": 2, "reason": "event missing (its hash is in the chain)"}


def test_two_compactions_at_once_archive_each_block_once(redis_client, monkeypatch):
    """Another run archives the block this one packed: this one's write is stale, it reads
    again and goes on from there (it counts only what it archived itself)."""
    take(redis_client, 8)  # 16 sealed events
    before = read_back(redis_client)
    real, calls = scripts.COMPACT, []

    def another_run_first(client, keys_, args):
        calls.append(args[0])
        if len(calls) == 1:
            assert real(client, keys_, args)[0] == "ok"
        return real(client, keys_, args)

    monkeypatch.setattr(scripts, "COMPACT", another_run_first)
    assert compaction.compact(redis_client, "invoice", block=4, keep=3) == 8
    assert calls == [0, 4, 8]
    assert redis_client.hget(keys.seq_archived("invoice"), "events") == "12"
    assert read_back(redis_client) == before


def test_the_cli_and_the_scheduler_compact_every_chain(redis_client, valkey, monkeypatch):
    take(redis_client, 6)
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_LEDGER_ARCHIVE_BLOCK", "4")
    result = CliRunner().invoke(main, ["ledger", "compact", "--keep", "5"])  # 7 of 12 fit
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"series": "default", "sequence": "invoice",
                                         "events": 4, "entries": 0}
    take(redis_client, 3, start=6)
    assert compaction.due(redis_client, {"LEDGER_ARCHIVE_BLOCK": 4,
                                         "LEDGER_ARCHIVE_KEEP": 1}) == ["default/invoice"]
    assert redis_client.hget(keys.seq_archived("invoice"), "events") == "16"
    assert compaction.due(redis_client, {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": 0}) == []  # never
    assert chain.verify(redis_client, "invoice")["ok"] is True


# --- settled entries (numbering/settled.py) ----------------------------------------------------

SETTLE_NOW = {"LEDGER_ARCHIVE_BLOCK": 2, "LEDGER_ARCHIVE_KEEP": 1,
              "LEDGER_SETTLE_AFTER_SECONDS": 0}
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAYS = (dt.date(2026, 11, 21), dt.date(2027, 1, 3))


def apply(client, op, ids):
    """Run one operation of a random history; refusals are part of the history."""
    kind, pick, flag = op
    try:
        if kind == "alloc":
            entry, _ = allocation.allocate(client, "blue", "invoice", f"r-{pick}",
                                           DAYS[flag // 3])
            ids.append(entry["id"])
        elif ids and kind in ("confirm", "void"):
            target = allocation.get(client, ids[pick % len(ids)])
            admin = flag % 2 == 1
            allocation.transition(client, target["id"], kind,
                                  target["formatted"] if kind == "confirm" else "mistake",
                                  actor_kind="admin" if admin else "agent",
                                  actor_system=None if admin else "blue", actor="x")
        elif ids and kind == "reissue":
            new, _ = allocation.reissue(client, ids[pick % len(ids)], "again", actor="admin")
            ids.append(new["id"])
        elif kind == "raise":
            period = DAYS[flag // 3].strftime("%Y")
            now = sequences.describe(client, "invoice", today=DAYS[flag // 3])["next_number"]
            sequences.update(client, "invoice", {"next_number": now + pick % 3},
                             actor="admin", period=period)
    except CoordinatorError:
        pass


def ledger_as_read(client, ids):
    """Everything a reader sees: entries, each by id, events, export, verify, gaps, counts."""
    chain.seal(client, "invoice")
    periods = ledger.periods(client, "invoice")
    return {
        "entries": list(ledger.iter_ledger(client, "invoice", page=3)),
        "by_id": [allocation.get(client, each) for each in ids],
        "events": list(chain.chained(client, "invoice")),
        "export": list(export.records(client, "invoice", None, 10**9)),
        "verify": chain.verify(client, "invoice"),
        "gaps": [ledger.gaps(client, "invoice", p, 0, LATER, full=full)
                 for p in periods for full in (False, True)],
        "describe": sequences.describe(client, "invoice", today=DAYS[0]),
    }


OPS = st.tuples(st.sampled_from(["alloc"] * 4 + ["confirm"] * 4 + ["void", "reissue", "raise"]),
                st.integers(0, 7), st.integers(0, 3))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(OPS, min_size=4, max_size=30), st.integers(1, 3))
def test_the_ledger_reads_back_the_same_after_compaction(redis_client, history, block):
    redis_client.flushall()
    initialise_numbering(redis_client)
    ids: list[str] = []
    for op in history:
        apply(redis_client, op, ids)
    before = ledger_as_read(redis_client, ids)
    moved = compaction.run(redis_client, "invoice", {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": block})
    event(f"entries settled: {min(moved['entries'], 4)}+, events archived: "
          f"{min(moved['events'], 8)}+")
    assert ledger_as_read(redis_client, ids) == before
    # Replays of every document answer what they answered before, from wherever it lives.
    for entry in before["entries"]:
        replay, new = allocation.allocate(redis_client, "blue", "invoice", entry["reference"],
                                          DAYS[0] if entry["period"] == "2026" else DAYS[1])
        assert not new and replay["number"] >= entry["number"]
    # And the same history continued on the compacted ledger still verifies and adds up.
    for op in history:
        apply(redis_client, op, ids)
    compaction.run(redis_client, "invoice", {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": block})
    after = ledger_as_read(redis_client, ids)
    assert after["verify"]["ok"] is True and after["verify"]["unchained_numbers"] == 0
    assert sum(row["issued"] for row in after["describe"]["periods"]) == len(after["entries"])
    assert not [gap for gap in after["gaps"][0::2] if gap and gap[0]["kind"] == "missing"]


def test_settled_numbers_answer_every_request_and_can_still_be_voided(redis_client):
    take(redis_client, 8)  # r-3 and r-7 voided, the rest confirmed
    moved = compaction.run(redis_client, "invoice", {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": 3})
    assert moved["entries"] == 6  # two blocks of three confirmed; r-7 (newest) stays
    assert sorted(redis_client.hkeys(keys.seq_ledger("invoice", "2026"))) == ["4", "8"]
    assert redis_client.hgetall(keys.seq_settled("invoice", "2026")) == {"count": "6",
                                                                          "upto": "7"}
    first = allocation.get(redis_client, "invoice:2026:1")
    assert first["status"] == "confirmed" and first["reference"] == "r-0"
    replay, new = allocation.allocate(redis_client, "blue", "invoice", "r-0", DAY)
    assert (replay, new) == (first, False)
    with pytest.raises(Conflict, match=r"^invoice:2026:1 is confirmed: only a void number can "
                                        r"be reissued \(void it first, with the reason\)$"):
        allocation.reissue(redis_client, "invoice:2026:1", "again", actor="admin")
    # Bringing a settled number back takes a second round trip, which waits for durability
    # as the first would (here a replica that is not there: not confirmed, so a 503).
    with pytest.raises(NotDurable):
        allocation.transition(redis_client, "invoice:2026:3", "confirm",
                              allocation.get(redis_client, "invoice:2026:3")["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue",
                              durability=Durability(replicas=1, timeout_ms=1))
    # An agent repeating its confirmation is answered; an agent may not void it; an admin may.
    assert allocation.transition(redis_client, "invoice:2026:2", "confirm",
                                 allocation.get(redis_client, "invoice:2026:2")["formatted"],
                                 actor_kind="agent", actor_system="blue",
                                 actor="agent:blue")[1] is False
    voided, changed = allocation.transition(redis_client, "invoice:2026:1", "void", "wrong",
                                            actor_kind="admin", actor_system=None,
                                            actor="admin")
    assert changed and voided["status"] == "void"
    assert redis_client.hget(keys.seq_settled("invoice", "2026"), "count") == "3"
    gaps = ledger.gaps(redis_client, "invoice", "2026", 3600)
    assert [g["number"] for g in gaps if g["kind"] == "void"] == [1, 4, 8]
    assert ledger.gaps(redis_client, "invoice", "2026", 3600, full=True) == gaps
    new, old = allocation.reissue(redis_client, "invoice:2026:1", "again", actor="admin")
    assert new["number"] == 9 and old["reissued_as"] == new["id"]
    assert chain.verify(redis_client, "invoice")["ok"] is True
    # Recovery counts a settled number as in the ledger (never issued twice): 6 is still in
    # its block (1-3 came back to the ledger hash with the changes above).
    assert not redis_client.hexists(keys.seq_ledger("invoice", "2026"), "6")
    sixth = allocation.get(redis_client, "invoice:2026:6")
    found = recover.Evidence("blue", sixth["formatted"], "journal:x", reference="r-5",
                             document="invoice", series="default", sequence="invoice",
                             period="2026", number=6)
    plan = recover.plan(redis_client, [found], {})
    assert plan.periods[0].in_ledger == {6}


def test_a_lost_settled_block_is_reported_not_hidden(redis_client):
    """A settled block gone from the store (lost data): its numbers are no allocation any more,
    and the gap report, the quick one too, walks the period and places them as missing."""
    take(redis_client, 8)  # 4 and 8 voided
    compaction.run(redis_client, "invoice", {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": 3})
    redis_client.delete(keys.seq_settled_block("invoice", "2026", 5))  # 5, 6 and 7
    with pytest.raises(NotFound, match=r"^No allocation 'invoice:2026:6'$"):
        allocation.get(redis_client, "invoice:2026:6")
    gaps = ledger.gaps(redis_client, "invoice", "2026", 3600)
    assert [(g["kind"], g.get("number"), g.get("before")) for g in gaps] == [
        ("void", 4, None), ("missing", None, 8), ("void", 8, None)]
    assert ledger.gaps(redis_client, "invoice", "2026", 3600, full=True) == gaps


def test_a_settled_number_of_another_series_answers_its_replay(redis_client):
    """The scheduler compacts series eu's own chain and entries (a block of one: all but the
    newest); a replay of a number compacted out of eu's ledger answers from eu's reference
    index and blocks (those of default know nothing of it)."""
    series_mod.create_series(redis_client, "eu")
    series_mod.join(redis_client, "eu", "blue")
    hints = Hints(series_of={"blue": "eu"})
    taken = []
    for i in range(4):
        entry, _ = allocation.allocate(redis_client, "blue", "invoice", f"r-{i}", DAY, None,
                                       hints)
        allocation.transition(redis_client, entry["id"], "confirm", entry["formatted"],
                              actor_kind="agent", actor_system="blue", actor="agent:blue")
        taken.append(allocation.get(redis_client, entry["id"]))
    chain.seal(redis_client, "invoice", series="eu")
    assert compaction.due(redis_client, {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": 1}) == [
        "eu/invoice"]
    assert redis_client.hget(keys.seq_archived("invoice", "eu"), "events") == "7"  # of 8
    assert redis_client.hgetall(keys.seq_settled("invoice", "2026", "eu")) == {"count": "3",
                                                                                "upto": "3"}
    assert not redis_client.hexists(keys.seq_ledger("invoice", "2026", "eu"), "1")  # settled
    assert chain.verify(redis_client, "invoice", series="eu")["ok"] is True
    replay, new = allocation.allocate(redis_client, "blue", "invoice", "r-0", DAY, None, hints)
    assert (replay, new) == (taken[0], False)
    # An admin voids it: its entry comes back into eu's ledger (none of default's keys).
    voided, changed = allocation.transition(redis_client, taken[0]["id"], "void", "wrong",
                                            actor_kind="admin", actor_system=None,
                                            actor="admin")
    assert changed and voided["status"] == "void"
    assert redis_client.hget(keys.seq_settled("invoice", "2026", "eu"), "count") == "2"
    assert [(e["number"], e["status"]) for e in ledger.list_ledger(
        redis_client, "invoice", "2026", series="eu")] == [
        (1, "void"), (2, "confirmed"), (3, "confirmed"), (4, "confirmed")]
    gaps = ledger.gaps(redis_client, "invoice", "2026", 3600, series="eu")
    assert [g["number"] for g in gaps] == [1]
    assert ledger.gaps(redis_client, "invoice", "2026", 3600, series="eu", full=True) == gaps
    assert redis_client.keys(keys.seq_prefix("invoice") + "*") == [keys.seq_guard("invoice")]


# --- upgrade -------------------------------------------------------------------------------

PREVIOUS_RELEASE = "8f1eb66"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> tuple[Path, dict]:
    """A stopped Valkey data dir whose ledger the release before compaction made."""
    return release_data_dir(PREVIOUS_RELEASE, HERE / "ledger_release.py", tmp_path_factory)


def test_a_ledger_of_the_previous_release_compacts_and_keeps_every_number(release_dir,
                                                                          tmp_path):
    source, done = release_dir
    with upgraded_copy(source, tmp_path) as (_server, client):
        ids = [a["json"]["id"] for a in done["answers"]
               if a["path"] == "/v1/allocations" and a["status"] == 201]
        assert len(ids) == 12 and not client.exists(keys.seq_archived("invoice"))
        before = ledger_as_read(client, ids)
        moved = compaction.run(client, "invoice", {**SETTLE_NOW, "LEDGER_ARCHIVE_BLOCK": 3})
        assert moved == {"events": 24, "entries": 9}  # the void and the last two stay
        assert ledger_as_read(client, ids) == before
        assert before["verify"]["ok"] is True and before["verify"]["events"] == 26
        # Numbering continues where that release left it; its replays answer from blocks.
        again, new = allocation.allocate(client, "blue", "invoice", "r-0", DAYS[0])
        assert (again, new) == (before["by_id"][0], False)
        assert allocation.allocate(client, "blue", "invoice", "r-new", DAYS[0])[0][
            "number"] == 24


def test_settling_leaves_the_order_set_the_size_of_what_stays(redis_client):
    # A sorted set keeps its largest hash table after ZREM; settle.lua rebuilds it.
    order, entries = keys.seq_ledger_order("invoice", "2026"), keys.seq_ledger("invoice", "2026")
    stamp = "2026-11-01T10:00:00Z"
    redis_client.zadd(order, {str(n): n for n in range(1, 3001)})
    redis_client.hset(entries, mapping={str(n): json.dumps(
        {"number": str(n), "status": "confirmed", "issued_at": stamp}) for n in range(1, 3001)})
    assert settled.settle(redis_client, "invoice", "2026", LATER, series="default",
                          block=1400, keep=150, after_seconds=0) == 2800
    redis_client.zadd("fresh", {str(n): n for n in range(2801, 3001)})
    assert redis_client.zrange(order, 0, -1) == redis_client.zrange("fresh", 0, -1)
    assert redis_client.memory_usage(order, samples=0) <= 1.2 * redis_client.memory_usage(
        "fresh", samples=0)


NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def write_entries(client, ages, lost=()):
    """Confirmed entries of invoice 2026 numbered as ``ages`` (seconds before NOW each was
    issued), written as allocate.lua writes them; the entries of ``lost`` only ordered."""
    order, entries = keys.seq_ledger_order("invoice", "2026"), keys.seq_ledger("invoice", "2026")
    for number, age in ages.items():
        client.zadd(order, {str(number): number})
        if number not in lost:
            client.hset(entries, str(number), json.dumps({
                "number": str(number), "status": "confirmed",
                "issued_at": iso(NOW - dt.timedelta(seconds=age))}))
    return entries


def test_a_number_settles_once_old_enough_and_a_lost_entry_stays_listed(redis_client):
    """A confirmed number issued at least LEDGER_SETTLE_AFTER_SECONDS ago settles; the first
    younger one ends the scan (later ones are younger still). An ordered number whose entry is
    lost is passed over and still listed as missing. A block of one moves one number."""
    entries = write_entries(redis_client, {1: 7200, 2: 5000, 3: 3600, 4: 3599, 5: 3700, 6: 0},
                            lost={2})
    assert settled.settle(redis_client, "invoice", "2026", NOW, series="default", block=1,
                          keep=1, after_seconds=3600) == 2
    assert sorted(redis_client.hkeys(entries), key=int) == ["4", "5", "6"]
    assert redis_client.zrange(keys.seq_settled_blocks("invoice", "2026"), 0, -1) == [
        "1:1", "3:3"]
    assert redis_client.hgetall(keys.seq_settled("invoice", "2026")) == {"count": "2",
                                                                          "upto": "3"}
    assert [(e["number"], e["status"]) for e in ledger.list_ledger(
        redis_client, "invoice", "2026")] == [(1, "confirmed"), (2, "missing"),
                                              (3, "confirmed"), (4, "confirmed"),
                                              (5, "confirmed"), (6, "confirmed")]


def test_a_settle_raced_by_a_void_or_by_another_run_moves_each_number_once(redis_client,
                                                                            monkeypatch):
    entries = write_entries(redis_client, dict.fromkeys(range(1, 8), 60))
    real, calls = scripts.SETTLE, []

    def void_meanwhile(client, keys_, args):
        calls.append(args[4])
        if len(calls) == 1:  # an admin voids 2 between the read and the script
            entry = json.loads(client.hget(entries, "2"))
            client.hset(entries, "2", json.dumps({**entry, "status": "void"}))
        return real(client, keys_, args)

    monkeypatch.setattr(scripts, "SETTLE", void_meanwhile)
    # Nothing written; the next tick looks again.
    assert settled.settle(redis_client, "invoice", "2026", NOW, series="default", block=2,
                          keep=1, after_seconds=0) == 0
    assert calls == [1]
    assert not redis_client.exists(keys.seq_settled("invoice", "2026"),
                                   keys.seq_settled_blocks("invoice", "2026"))

    def another_run_first(client, keys_, args):
        calls.append(args[4])
        if len(calls) == 2:  # another compaction settles this block first: ours is stale
            assert real(client, keys_, args)[0] == "ok"
        return real(client, keys_, args)

    monkeypatch.setattr(scripts, "SETTLE", another_run_first)
    assert settled.settle(redis_client, "invoice", "2026", NOW, series="default", block=2,
                          keep=1, after_seconds=0) == 2
    assert calls == [1, 1, 4]
    assert sorted(redis_client.hkeys(entries), key=int) == ["2", "6", "7"]
    assert redis_client.zrange(keys.seq_settled_blocks("invoice", "2026"), 0, -1) == [
        "1:3", "4:5"]
    assert redis_client.hgetall(keys.seq_settled("invoice", "2026")) == {"count": "4",
                                                                          "upto": "5"}


@pytest.mark.parametrize("script", ["SETTLE", "COMPACT"])
def test_kill_9_of_a_compaction_between_two_blocks_loses_nothing(redis_client, valkey,
                                                                  tmp_path, script):
    take(redis_client, 8)
    ids = [f"invoice:2026:{n}" for n in range(1, 9)]
    before = ledger_as_read(redis_client, ids)
    marker = tmp_path / "held"
    process = subprocess.Popen([sys.executable, str(HERE / "compact_and_hold.py"), valkey.url,
                                str(marker), script], cwd=HERE.parents[1],
                               env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline, "no block written"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    # One block moved, then the process died: the ledger reads back the same ...
    moved = (redis_client.hget(keys.seq_settled("invoice", "2026"), "count") if script ==
             "SETTLE" else redis_client.hget(keys.seq_archived("invoice"), "events"))
    assert moved == "3"
    assert ledger_as_read(redis_client, ids) == before
    # ... and the next run finishes the work.
    assert any(compaction.run(redis_client, "invoice", {**SETTLE_NOW,
                                                        "LEDGER_ARCHIVE_BLOCK": 3}).values())
    assert ledger_as_read(redis_client, ids) == before
