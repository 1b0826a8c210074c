"""``invoice-sync recover`` on real Valkey against the fake WHMCS over loopback HTTP: a store
restored from an older backup (or a lost one) numbers again above every number in use."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agent import Journal
from agent._models import Allocation
from coordinator import keys
from coordinator.cli import main
from coordinator.exceptions import (
    Conflict,
    NotDurable,
    NumberingBehind,
    NumberingNotInitialised,
)
from coordinator.numbering import (
    allocation,
    chain,
    gaps,
    guard,
    iter_ledger,
    sequences,
    series,
)
from coordinator.numbering import recover as recovery
from coordinator.numbering.ledger import periods
from coordinator.numbering.recover import Evidence
from coordinator.ops.confirmation import Durability
from coordinator.ops.embedded import ValkeyServer
from tests.coordinator.forecaster import conftest as forecaster_fixtures
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

# The fake WHMCS over loopback HTTP and a system registered at it, as the forecaster tests
# have them (their conftest is not visible from here).
fake, register = forecaster_fixtures.fake, forecaster_fixtures.register
settings, secret_key = forecaster_fixtures.settings, forecaster_fixtures.secret_key

DAY = date(2026, 5, 5)


def _issue_into_whmcs(client, fake, count, start_reference):
    """Number ``count`` new WHMCS invoices as an agent does: allocate, write invoicenum."""
    taken = []
    for offset in range(count):
        invoice_id = fake.app.add_invoice(subtotal="10.00", date=DAY)
        assert invoice_id == start_reference + offset
        entry, new = allocation.allocate(client, "blue", "invoice", str(invoice_id), DAY)
        assert new
        fake.app.set_invoicenum(invoice_id, entry["formatted"])
        taken.append(entry)
    return taken


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_recover_after_restoring_an_older_backup_continues_above_every_number_in_use(
        valkey, redis_client, settings, register, fake, tmp_path, monkeypatch):
    register("blue", fake, step=7, auto_sync=False)
    _issue_into_whmcs(redis_client, fake, 5, 1)  # INV-2026-000001..5
    backup = tmp_path / "old.json"
    monkeypatch.setenv("INVOICE_SYNC_BACKUP_PASSPHRASE", "pass phrase")
    result = _invoke("backup", "--output", str(backup), "--with-secret-keys")
    assert result.exit_code == 0, result.output
    after_backup = _issue_into_whmcs(redis_client, fake, 4, 6)  # 6..9 printed in WHMCS
    # The agent also received 10 and had not yet written it when the store was lost.
    journal_path = tmp_path / "blue-journal.sqlite"
    tenth, _ = allocation.allocate(redis_client, "blue", "invoice", "pending-10", DAY)
    with Journal(journal_path) as journal:
        for entry in [*after_backup, tenth]:
            journal.receive(Allocation.from_json(entry), before=journal.mark())
    assert tenth["number"] == 10

    # The store is lost; the admin restores the old backup into a fresh data dir.
    data_dir = tmp_path / "fresh"
    for name in ("INVOICE_SYNC_REDIS_URL", "INVOICE_SYNC_SECRET_KEYS"):
        monkeypatch.delenv(name)
    result = _invoke("restore", "--data-dir", str(data_dir), "--with-secret-keys", str(backup))
    assert result.exit_code == 0, result.output
    with ValkeyServer(data_dir / "valkey", unixsocket=True) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        with pytest.raises(NumberingNotInitialised, match="waits after a restore"):
            allocation.allocate(client, "blue", "invoice", "new", DAY)
        assert client.get(keys.seq_counter("invoice", "2026")) == "5"
        before = {key: client.dump(key) for key in client.scan_iter(match="{ser:*")}

        # The dry run says what it will do and changes no numbering.
        result = _invoke("recover", "--data-dir", str(data_dir), "--reason", "disk lost",
                         "--journal", f"blue={journal_path}", "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        plan = json.loads(result.output[result.output.index("{"):])
        assert plan["dry_run"] is True
        assert plan["plan"]["periods"] == [{
            "series": "default", "sequence": "invoice", "period": "2026", "counter": 5,
            "new_counter": 10, "next_number": 11, "raise": True, "in_use": 10,
            "already_in_ledger": 5, "recover": 5,
            "sources": {"whmcs:blue": 4, "journal:blue": 1}, "unknown_skipped": 0,
            "first": [6], "last": [10]}]
        assert plan["plan"]["initialise_series"] == ["default"]
        assert {key: client.dump(key) for key in client.scan_iter(match="{ser:*")} == before

        result = _invoke("recover", "--data-dir", str(data_dir), "--reason", "disk lost",
                         "--journal", f"blue={journal_path}")
        assert result.exit_code == 0, result.output
        assert "default invoice 2026: counter 5 -> 10 (next number 11)" in result.output
        assert "recovered: 5 ledger entries" in result.output

        ledger = {e["number"]: e for e in iter_ledger(client, "invoice", "2026")}
        assert sorted(ledger) == list(range(1, 11))
        for number in range(6, 11):
            entry = ledger[number]
            assert entry["status"] == "recovered" and entry["recovery_reason"] == "disk lost"
            assert entry["formatted"] == f"INV-2026-{number:06d}"
        # WHMCS invoice 7 still answers its number (the reference index was rebuilt).
        replay, new = allocation.allocate(client, "blue", "invoice", "7", DAY)
        assert (replay["number"], new) == (7, False)
        entry, new = allocation.allocate(client, "blue", "invoice", "after-recovery", DAY)
        assert new and entry["number"] == 11
        verified = chain.verify(client, "invoice")
        assert verified["ok"] and verified["unchained_numbers"] == 0, verified
        audit = sequences.audit(client, "invoice")[-1]
        assert audit["reason"] == "disk lost" and audit["recovered"] == 5
        assert (audit["before"], audit["after"]) == ({"next_number": "6"}, {"next_number": "11"})

        # Run again: nothing new in use, so nothing changes and no counter goes down.
        result = _invoke("recover", "--data-dir", str(data_dir), "--reason", "again",
                         "--journal", f"blue={journal_path}")
        assert result.exit_code == 0, result.output
        assert "recovered: 0 ledger entries" in result.output
        assert client.get(keys.seq_counter("invoice", "2026")) == "11"
        client.close()


def test_recover_never_lowers_a_counter_and_refuses_an_unreadable_whmcs(
        redis_client, settings, register, fake, tmp_path):
    register("blue", fake, step=7, auto_sync=False)
    _issue_into_whmcs(redis_client, fake, 2, 1)
    sequences.update(redis_client, "invoice", {"next_number": 50}, actor="admin")
    events = redis_client.llen(keys.seq_events("invoice"))
    result = _invoke("recover", "--reason", "check")
    assert result.exit_code == 0, result.output
    assert "default invoice 2026: counter stays 49 (next number 50)" in result.output
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == "49"
    # Nothing was missing: no recovered entry, only the audit record of the check.
    assert redis_client.llen(keys.seq_events("invoice")) == events

    fake.app.inject_fault("status", status=500, action="GetInvoices")
    redis_client.hdel(keys.seq_guard("invoice"), "initialised")
    result = _invoke("recover", "--reason", "check")
    assert result.exit_code == 1
    assert "the WHMCS of blue could not be read" in result.output
    assert "nothing was recovered" in result.output
    assert not redis_client.hexists(keys.seq_guard("invoice"), "initialised")


def test_a_lost_store_recovered_from_whmcs_alone_numbers_above_it(
        redis_client, settings, register, fake):
    register("blue", fake, step=7, auto_sync=False)
    _issue_into_whmcs(redis_client, fake, 3, 1)
    fake.app.add_invoice(subtotal="1.00", date=DAY, invoicenum="legacy-77")  # not our format
    registered = redis_client.hgetall(keys.system("blue"))
    redis_client.flushall()  # the data is lost; the admin registers the system again
    redis_client.hset(keys.system("blue"), mapping=registered)
    redis_client.sadd(keys.SYSTEMS, "blue")
    with pytest.raises(NumberingNotInitialised, match="not initialised"):
        allocation.allocate(redis_client, "blue", "invoice", "new", DAY)
    result = _invoke("recover", "--reason", "store lost")
    assert result.exit_code == 0, result.output
    assert "1 number(s) no format of their series prints were left alone" in result.output
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "new", DAY)
    assert new and entry["number"] == 4
    sources = {e["recovered_from"] for e in iter_ledger(redis_client, "invoice", "2026")
               if e["status"] == "recovered"}
    assert sources == {"whmcs:blue"}


def test_a_sync_that_sees_numbers_beyond_the_ledger_stops_numbering_until_recovered(
        valkey, redis_client, settings, register, fake, tmp_path):
    from coordinator.forecaster import jobs
    from coordinator.warnings import store as warnings

    register("blue", fake, step=7, auto_sync=False)
    _issue_into_whmcs(redis_client, fake, 5, 1)
    backup = tmp_path / "old.json"
    assert _invoke("backup", "--output", str(backup)).exit_code == 0
    _issue_into_whmcs(redis_client, fake, 4, 6)  # 6..9 printed in WHMCS after the backup
    redis_client.flushall()
    assert _invoke("restore", str(backup)).exit_code == 0
    # An admin lets the restored store number without recover (an explicit set)...
    sequences.update(redis_client, "invoice", {"increment": 1}, actor="admin")
    # ...and the next sync of blue sees WHMCS ahead of the ledger.
    record = jobs.request_sync(redis_client, "blue", "full", trigger="test")
    assert jobs.execute(redis_client, record["id"], settings)["state"] == "done"
    with pytest.raises(NumberingBehind, match="^numbering of invoice in period 2026 is refused: "
                                              "the WHMCS of blue already shows "
                                              "INV-2026-000009 \\(number 9\\)"):
        allocation.allocate(redis_client, "blue", "invoice", "new", DAY)
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == "5"
    found = [w for w in warnings.list_warnings(redis_client) if w["type"] == "numbering_behind"]
    assert len(found) == 1 and "INV-2026-000009" in found[0]["message"]
    assert _invoke("recover", "--reason", "sync saw 9").exit_code == 0
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "new", DAY)
    assert new and entry["number"] == 10


@hypothesis_settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 40), numbers=st.lists(st.integers(1, 60), max_size=10),
       from_whmcs=st.booleans())
def test_property_recover_ends_exactly_above_everything_in_use_and_never_lowers(
        redis_client, start, numbers, from_whmcs):
    redis_client.flushall()
    initialise_numbering(redis_client)
    if start:
        sequences.update(redis_client, "invoice", {"next_number": start + 1}, actor="t",
                         period="2026")
    evidence = [
        Evidence("blue", f"INV-2026-{n:06d}", "whmcs:blue", reference=str(n)) if from_whmcs
        else Evidence("blue", f"INV-2026-{n:06d}", "journal:blue", reference=f"r{n}",
                      document="invoice", series="default", sequence="invoice",
                      period="2026", number=n)
        for n in numbers]
    recovery.apply(redis_client, recovery.plan(redis_client, evidence, {}), actor="t",
                   reason="property")
    counter = int(redis_client.get(keys.seq_counter("invoice", "2026")) or 0)
    assert counter == max([start, *numbers])
    in_ledger = {e["number"] for e in iter_ledger(redis_client, "invoice", "2026")}
    assert set(numbers) <= in_ledger
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "next", DAY)
    assert new and entry["number"] == counter + 1
    assert chain.verify(redis_client, "invoice")["ok"]
    # Every number up to the counter is in the ledger or a listed gap: none is hidden, by the
    # indexed gap report and by the full walk alike.
    for full in (False, True):
        covered = set(in_ledger)
        for gap in gaps(redis_client, "invoice", "2026", grace_seconds=10**9, full=full):
            if gap["kind"] == "skipped":
                covered |= set(range(gap["after"] + 1, gap["next"]))
            elif gap["kind"] == "missing":
                covered |= ({gap["number"]} if "number" in gap
                            else set(range(gap["after"] + 1, gap["before"])))
        assert covered >= set(range(1, counter + 1)), (full, covered)


def test_the_plan_and_the_result_say_exactly_what_recover_does(redis_client, monkeypatch):
    evidence = [Evidence("blue", f"INV-2026-{n:06d}", "whmcs:blue", reference=str(n))
                for n in (3, 6)]
    evidence.append(Evidence("red", "INV-2026-000007", "whmcs:red"))  # no reference known
    evidence += [Evidence("blue", f"legacy-{n}", "whmcs:blue") for n in range(1, 7)]
    plan = recovery.plan(redis_client, evidence, {})
    # As `recover --dry-run --json` prints it: numbers 1, 2, 4 and 5 no source showed.
    assert json.dumps(plan.describe()) == json.dumps({
        "periods": [{"series": "default", "sequence": "invoice", "period": "2026", "counter": 0,
                     "new_counter": 7, "next_number": 8, "raise": True, "in_use": 3,
                     "already_in_ledger": 0, "recover": 3,
                     "sources": {"whmcs:blue": 2, "whmcs:red": 1},
                     "unknown_skipped": 4, "first": [3], "last": [7]}],
        "initialise_series": [], "unread": 6,
        "unread_examples": [f"legacy-{n} (blue, whmcs:blue)" for n in range(1, 6)]})
    # Meanwhile number 3 is issued here (an admin let the store number): apply keeps it.
    sequences.update(redis_client, "invoice", {"next_number": 3}, actor="admin", period="2026")
    assert allocation.allocate(redis_client, "blue", "invoice", "new", DAY)[0]["number"] == 3
    monkeypatch.setattr(recovery, "ENTRIES_PER_STEP", 1)  # one atomic step per number
    # As `recover --json` prints what it did (the counters as the server answers them).
    assert recovery.apply(redis_client, plan, actor="t", reason="check") == [
        {"series": "default", "sequence": "invoice", "period": "2026", "counter": "3",
         "new_counter": "7", "recovered": 2, "skipped": [{"number": "3", "why": "in_ledger"}]}]
    recovered = {e["number"]: e for e in iter_ledger(redis_client, "invoice", "2026")}
    assert [(recovered[n]["id"], recovered[n]["system"], recovered[n]["document"],
             recovered[n]["reference"]) for n in (6, 7)] == [
        ("invoice:2026:6", "blue", "invoice", "6"), ("invoice:2026:7", "red", "invoice", "")]
    assert allocation.allocate(redis_client, "blue", "invoice", "6", DAY)[0]["number"] == 6


def test_a_lost_store_with_two_series_recovers_each_in_its_own(redis_client):
    redis_client.flushall()  # lost; eu's numbers are in green's WHMCS and journal, default's none
    series.create_series(redis_client, "eu", "EU entity")  # the admin registers it again
    evidence = [Evidence("green", "INV-2026-000004", "whmcs:green", reference="4"),
                Evidence("teal", "INV-2026-000005", "journal:teal", reference="r5",
                         document="invoice", series="eu", sequence="invoice", period="2026",
                         number=5)]
    done = recovery.apply(redis_client, recovery.plan(redis_client, evidence, {"green": "eu"}),
                          actor="t", reason="lost")
    assert [(d["series"], d["new_counter"], d["recovered"]) for d in done] == [("eu", "5", 2)]
    # Recovered numbers count as issued by eu: it serves no system yet, but deleting it (and
    # its counter, so a series made again would print 4 and 5 again) is refused.
    with pytest.raises(Conflict, match="^Series 'eu' issued 2 number"):
        series.delete_series(redis_client, "eu", [])
    ledger = {e["number"]: e for e in iter_ledger(redis_client, "invoice", "2026", series="eu")}
    assert {n: (e["id"], e["system"]) for n, e in ledger.items()} == {
        4: ("eu/invoice:2026:4", "green"), 5: ("eu/invoice:2026:5", "teal")}
    verified = chain.verify(redis_client, "invoice", series="eu")
    assert verified["ok"] and verified["unchained_numbers"] == 0, verified
    assert "2026" in periods(redis_client, "invoice", series="eu")
    # 1-3 no source showed: listed as skipped in eu's gap report, not as missing.
    assert [(g["kind"], g.get("after")) for g in gaps(
        redis_client, "invoice", "2026", grace_seconds=10**9, series="eu")] == [("skipped", 0)]
    for system, reference, number in (("green", "4", 4), ("teal", "r5", 5)):
        series.leave(redis_client, "default", system)
        series.join(redis_client, "eu", system)
        redis_client.hset(keys.system(system), mapping={"name": system, "series": "eu"})
        replay, new = allocation.allocate(redis_client, system, "invoice", reference, DAY)
        assert (replay["number"], new) == (number, False)  # its reference answers it
    assert sequences.audit(redis_client, "invoice", series="eu")[-1]["recovered"] == 2
    # Both series number again: eu above what is in use, default (nothing in use) from 1.
    for name in ("default", "eu"):
        assert guard.is_initialised(redis_client, name)
    assert allocation.allocate(redis_client, "blue", "invoice", "1", DAY)[0]["number"] == 1


def test_numbers_not_fully_known_are_read_with_their_series_formats_as_their_document(
        redis_client):
    # green numbers in series eu, which prints its own invoice format; its WHMCS is ahead.
    series.create_series(redis_client, "eu", "EU entity")
    sequences.update(redis_client, "invoice", {"format": "EU-{YEAR}-{NUMBER}"}, actor="admin",
                     series="eu")
    series.leave(redis_client, "default", "green")
    series.join(redis_client, "eu", "green")
    redis_client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})
    for reference in ("1", "2"):
        allocation.allocate(redis_client, "green", "invoice", reference, DAY)
    journal = {"source": "journal:green", "document": "invoice", "series": "eu",
               "period": "2026"}
    evidence = [
        Evidence("green", f"EU-2026-00000{n}", "whmcs:green", reference=str(n)) for n in (2, 4)]
    evidence += [
        Evidence("green", "CN-2026-000002", "whmcs:green", reference="9"),  # a credit note
        # Journal rows that name no sequence this coordinator numbers, or no number: read by
        # the number they print, as a WHMCS number is.
        Evidence("green", "EU-2026-000003", reference="r3", sequence="bogus", number=3,
                 **journal),
        Evidence("green", "EU-2026-000005", reference="r5", sequence="invoice", **journal),
        # teal numbered in eu before the loss (its membership there was lost with the store)
        Evidence("teal", "EU-2026-000006", "journal:teal", reference="t6", document="invoice",
                 series="eu", sequence="invoice", period="2026", number=6)]
    plan = recovery.plan(redis_client, evidence, {"green": "eu"})
    assert plan.unread == []
    # eu's own counter and ledger (default's know nothing of eu's numbers).
    assert [(p.series, p.sequence, p.period, p.counter, sorted(p.numbers), p.in_ledger)
            for p in plan.periods] == [("eu", "credit_note", "2026", 0, [2], set()),
                                       ("eu", "invoice", "2026", 2, [2, 3, 4, 5, 6], {2})]
    recovery.apply(redis_client, plan, actor="t", reason="lost")
    # The number the credit-note format printed is a credit note (docs/RECOVERY.md), and its
    # WHMCS id answers it when the agent asks for that credit note's number.
    ledger = iter_ledger(redis_client, "credit_note", "2026", series="eu")
    assert [(e["number"], e["document"], e["reference"]) for e in ledger] == [
        (2, "credit_note", "9")]
    replay, new = allocation.allocate(redis_client, "green", "credit_note", "9", DAY)
    assert (replay["id"], new) == ("eu/credit_note:2026:2", False)
    # eu does not number teal now: its recovered number, voided, is not reissued in eu.
    allocation.transition(redis_client, "eu/invoice:2026:6", "void", "sent twice",
                          actor_kind="admin", actor_system=None, actor="admin")
    with pytest.raises(Conflict) as refused:
        allocation.reissue(redis_client, "eu/invoice:2026:6", "mistake", actor="admin")
    assert refused.value.message == (
        "System 'teal' is no longer numbered by series 'eu'; its documents get numbers in its "
        "current series")


def test_recover_in_a_series_counting_by_two_keeps_its_gap_report_and_audit_in_twos(
        redis_client):
    redis_client.flushall()  # lost; eu numbers 2, 4, 6... and green's WHMCS shows 4 and 6
    series.create_series(redis_client, "eu", "EU entity")
    sequences.update(redis_client, "invoice", {"increment": 2}, actor="admin", series="eu")
    evidence = [Evidence("green", f"INV-2026-{n:06d}", "whmcs:green", reference=str(n))
                for n in (4, 6)]
    recovery.apply(redis_client, recovery.plan(redis_client, evidence, {"green": "eu"}),
                   actor="t", reason="lost")
    # 2 no source showed is a skip; 4 and 6 follow each other: nothing is missing, by the
    # indexed report and by the full walk (which reads each entry's previous number).
    for full in (False, True):
        assert [(g["kind"], g.get("after")) for g in gaps(
            redis_client, "invoice", "2026", grace_seconds=10**9, full=full, series="eu")] == [
            ("skipped", 0)], full
    audit = sequences.audit(redis_client, "invoice", series="eu")[-1]
    assert (audit["before"], audit["after"]) == ({"next_number": "2"}, {"next_number": "8"})
    series.leave(redis_client, "default", "green")
    series.join(redis_client, "eu", "green")
    redis_client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})
    assert allocation.allocate(redis_client, "green", "invoice", "new", DAY)[0]["number"] == 8


def test_a_recovered_number_is_never_printed_again_by_a_later_format(redis_client):
    # The lost store's invoices printed CN-2026-… (credit notes shared their sequence).
    sequences.set_dedicated(redis_client, False, actor="admin")
    sequences.update(redis_client, "invoice", {"format": "CN-{YEAR}-{NUMBER}"}, actor="admin")
    evidence = [Evidence("blue", "CN-2026-000001", "whmcs:blue", reference="1")]
    recovery.apply(redis_client, recovery.plan(redis_client, evidence, {}), actor="t",
                   reason="lost")
    # Later invoices print INV-…, and credit notes get their own sequence printing CN-…: its
    # first number would print the recovered invoice's CN-2026-000001 again (invariant 2b).
    sequences.update(redis_client, "invoice", {"format": "INV-{YEAR}-{NUMBER}"}, actor="admin")
    sequences.set_dedicated(redis_client, True, actor="admin")
    with pytest.raises(Conflict) as refused:
        allocation.allocate(redis_client, "blue", "credit_note", "c1", DAY)
    assert refused.value.message == (
        "The next credit_note number would print as 'CN-2026-000001', which series 'default' "
        "already issued (invoice:2026:1); no number was taken. Raise next_number or change the "
        "format so the series prints a new string")



def test_a_store_lost_with_its_settings_recovered_from_a_journal_alone_counts_in_ones(
        redis_client):
    redis_client.flushall()  # settings lost too; only blue's journal knows number 3
    plan = recovery.plan(redis_client, [Evidence(
        "blue", "INV-2026-000003", "journal:blue", reference="r3", document="invoice",
        series="default", sequence="invoice", period="2026", number=3)], {})
    # The dry run counts as recover.lua writes (no increment stored: 1), and so do the
    # skip it records and the gap report: 1 and 2 no source showed, then 3.
    described = plan.describe()["periods"][0]
    assert (described["next_number"], described["unknown_skipped"]) == (4, 2)
    recovery.apply(redis_client, plan, actor="t", reason="lost")
    assert [(g["kind"], g.get("after"), g.get("next")) for g in gaps(
        redis_client, "invoice", "2026", grace_seconds=10**9)] == [("skipped", 0, 3)]


def test_a_recover_stopped_by_durability_leaves_the_lost_store_refusing_until_rerun(
        redis_client):
    redis_client.flushall()  # lost; blue's WHMCS shows 2025's number 3 and 2026's number 4
    plan = recovery.plan(redis_client, [
        Evidence("blue", f"INV-{year}-{n:06d}", "whmcs:blue", reference=str(n))
        for year, n in ((2025, 3), (2026, 4))], {})
    # What `Guard.current` answers while a replica is connected; it then stops acknowledging
    # (the session server has none): 2025's step is written but not confirmed, and recover
    # stops before 2026's.
    lost_replica = Durability(replicas=1, timeout_ms=50)
    with pytest.raises(NotDurable, match="^Not confirmed durable within 50 ms "):
        recovery.apply(redis_client, plan, actor="t", reason="lost", durability=lost_replica)
    # The store now has history, yet it is no previous release's data to adopt: 2026 would
    # hand out 1..4 again.
    with pytest.raises(NumberingNotInitialised, match="^numbering of series default waits for "
                                                      "`invoice-sync recover`, which stopped"):
        allocation.allocate(redis_client, "blue", "invoice", "new", DAY)
    assert guard.adopt_all(redis_client) == ["default"]  # what serve does at start
    # Run again, confirmed: it keeps what the first run wrote and numbering resumes above it.
    assert [(d["period"], d["new_counter"], d["recovered"]) for d in recovery.apply(
        redis_client, plan, actor="t", reason="lost")] == [("2025", "3", 0), ("2026", "4", 1)]
    assert allocation.allocate(redis_client, "blue", "invoice", "new", DAY)[0]["number"] == 5


def test_a_recover_stopped_in_one_series_keeps_that_series_waiting_and_says_who_ran_it(
        redis_client):
    redis_client.flushall()  # lost; default was set again by an admin, eu waits for recover
    guard.mark_initialised(redis_client, "set by an admin", "default")
    series.create_series(redis_client, "eu", "EU entity")
    plan = recovery.plan(redis_client, [
        Evidence("green", f"INV-{year}-{n:06d}", "whmcs:green", reference=str(n))
        for year, n in ((2025, 3), (2026, 4))], {"green": "eu"})
    with pytest.raises(NotDurable):
        recovery.apply(redis_client, plan, actor="ops", reason="disk lost",
                       durability=Durability(replicas=1, timeout_ms=50))
    # eu's own guard carries the mark (default's does not), so eu is not adopted for its
    # history, and its refusal says which recover stopped and what to do.
    assert guard.recovering(redis_client, "default") is None
    assert guard.adopt(redis_client, "eu") is False
    assert re.fullmatch(
        r"numbering of series eu waits for `invoice-sync recover`, which stopped before it "
        r"finished \(\d{4}-\d\d-\d\dT\S+ by ops: disk lost\): run it again \(it keeps what it "
        r"wrote and raises the counters it did not reach\); see docs/RECOVERY\.md",
        guard.not_initialised_message(redis_client, "eu"))
