"""Compaction of the ledger on a real Valkey: old sealed events move into archived blocks and
the chain reads back the same (verify, export, checkpoints, new events after it); a changed
byte, a missing or misplaced block is found and named; a run stopped between blocks, a stale
or changed list, and a second run lose nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from redis.client import NEVER_DECODE

from coordinator import keys
from coordinator.cli import main
from coordinator.numbering import (
    allocation,
    blocks,
    chain,
    checkpoints,
    compaction,
    scripts,
)
from coordinator.numbering.allocation import Hints

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
    data[16 + 32 * 2] ^= 1  # the first byte of the third event's hash
    client.set(keys.seq_block("invoice", start), bytes(data))


def tamper_text(client, start):
    data = bytes(block_data(client, start))
    body = 16 + 32 * 5
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


def test_the_cli_and_the_scheduler_compact_every_chain(redis_client, valkey, monkeypatch):
    take(redis_client, 6)
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_LEDGER_ARCHIVE_BLOCK", "4")
    result = CliRunner().invoke(main, ["ledger", "compact", "--keep", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"series": "default", "sequence": "invoice",
                                         "archived_now": 8}
    take(redis_client, 3, start=6)
    assert compaction.due(redis_client, {"LEDGER_ARCHIVE_BLOCK": 4,
                                         "LEDGER_ARCHIVE_KEEP": 1}) == ["default/invoice"]
    assert redis_client.hget(keys.seq_archived("invoice"), "events") == "16"
    assert compaction.due(redis_client, {"LEDGER_ARCHIVE_BLOCK": 0}) == []
    assert chain.verify(redis_client, "invoice")["ok"] is True
