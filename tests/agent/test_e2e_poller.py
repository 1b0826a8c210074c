"""The poller against the real coordinator over HTTP and fake WHMCS installations.

What the operator relies on: exactly the invoices that need a number get one, written into
WHMCS and confirmed; a second run changes nothing; three installations polling at once share
one strictly increasing sequence; the coordinator down means no number and a clear exit code.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest

from agent import Client, ExitCode, Journal, Poller, RetryPolicy, WhmcsClient
from agent._poller import poll_lock

from .e2e_support import run_cli

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


def seed_statuses(whmcs) -> dict[str, int]:
    """One invoice of every kind the poller must tell apart; return {label: invoice id}."""
    eur = whmcs.add_client("EUR")
    made = {}
    for status in ("Draft", "Unpaid", "Paid", "Refunded", "Cancelled", "Collections",
                   "Payment Pending"):
        made[status] = whmcs.add_invoice(userid=eur, status=status, subtotal="100.00",
                                         tax="21.00", date=TODAY)
    made["numbered"] = whmcs.add_invoice(userid=eur, status="Paid", subtotal="5.00",
                                         invoicenum="OLD-0007", date=TODAY)
    made["credit note"] = whmcs.add_invoice(userid=eur, status="Paid", subtotal="-50.00",
                                            date=TODAY)
    made["draft credit note"] = whmcs.add_invoice(userid=eur, status="Draft",
                                                  subtotal="-9.00", date=TODAY)
    return made


@pytest.mark.parametrize(
    ("number_on", "numbered"),
    [
        ("paid", {"Paid", "Refunded", "credit note"}),
        ("created", {"Unpaid", "Paid", "Refunded", "Cancelled", "Collections",
                     "Payment Pending", "credit note"}),
    ],
)
def test_poll_numbers_exactly_the_invoices_that_need_it_then_changes_nothing(
    live_coordinator, tmp_path, monkeypatch, capsys, number_on, numbered
) -> None:
    blue = live_coordinator.register("blue")
    made = seed_statuses(blue.whmcs)
    env = blue.agent_env(tmp_path / "journal.sqlite3", number_on)

    assert run_cli(monkeypatch, env, "poll", "--page-size", "2") == ExitCode.OK
    out = capsys.readouterr().out
    assert f"poll: {len(numbered)} numbered, 0 confirmed, 0 voided, 0 failed" in out

    nums = blue.invoicenums()
    got = {label for label, iid in made.items() if nums[iid] and label != "numbered"}
    assert got == numbered
    assert nums[made["numbered"]] == "OLD-0007"  # never renumbered

    invoices = live_coordinator.ledger("invoice")
    credit_notes = live_coordinator.ledger("credit_note")
    assert [e["reference"] for e in credit_notes] == [str(made["credit note"])]
    assert credit_notes[0]["formatted"].startswith(f"CN-{TODAY.year}-")
    assert len(invoices) == len(numbered) - 1
    for entry in invoices + credit_notes:
        assert entry["system"] == "blue"
        assert entry["status"] == "confirmed"
        assert nums[int(entry["reference"])] == entry["formatted"]
    assert [e["number"] for e in invoices] == list(range(1, len(invoices) + 1))

    # Second run: nothing needs a number, so nothing is asked for or written.
    updates = blue.whmcs.calls["UpdateInvoice"]
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    assert "poll: 0 numbered, 0 confirmed, 0 voided, 0 failed" in capsys.readouterr().out
    assert blue.whmcs.calls["UpdateInvoice"] == updates
    assert live_coordinator.ledger("invoice") == invoices
    assert blue.invoicenums() == nums
    with Journal(tmp_path / "journal.sqlite3") as journal:
        assert journal.pending() == []


def test_three_installations_polling_at_once_share_one_sequence(
    live_coordinator, tmp_path
) -> None:
    per_system = 20
    systems = {}
    for name, currency, rate in (("blue", "EUR", "1.0000"), ("red", "USD", "0.9200"),
                                 ("orange", "GBP", "1.1700")):
        system = live_coordinator.register(name, currency=currency, exchange_rate=rate)
        client_id = system.whmcs.add_client(currency)
        for i in range(per_system):
            system.whmcs.add_invoice(userid=client_id, status="Paid", subtotal=f"{10 + i}.00",
                                     date=TODAY)
        systems[name] = system

    barrier = threading.Barrier(len(systems))
    reports = {}

    def poll(name: str) -> None:
        system = systems[name]
        config = system.agent_config(tmp_path / f"{name}.sqlite3")
        with (
            Client(config) as client,
            WhmcsClient(system.whmcs_url, system.identifier, system.secret) as whmcs,
            Journal(config.journal) as journal,
        ):
            barrier.wait()
            # Small pages: the three pollers interleave allocations page by page.
            reports[name] = Poller(client, whmcs, journal, page_size=3).run()

    threads = [threading.Thread(target=poll, args=(n,)) for n in systems]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r.ok for r in reports.values()), reports

    ledger = live_coordinator.ledger("invoice")
    numbers = [e["number"] for e in ledger]
    assert numbers == list(range(1, 3 * per_system + 1))  # strictly increasing, no gap
    assert len({e["formatted"] for e in ledger}) == len(ledger)  # no duplicates
    assert {e["status"] for e in ledger} == {"confirmed"}
    # The systems really interleaved: not simply blue's block, then red's, then orange's.
    owners = [e["system"] for e in ledger]
    assert owners != sorted(owners, key=list(systems).index)
    for name, system in systems.items():
        mine = {int(e["reference"]): e["formatted"] for e in ledger if e["system"] == name}
        assert system.invoicenums() == mine  # each WHMCS holds exactly its numbers
        assert len(mine) == per_system


def test_coordinator_down_means_no_number_and_exit_3(
    live_coordinator, tmp_path, monkeypatch, capsys
) -> None:
    blue = live_coordinator.register("blue")
    iid = blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    env = blue.agent_env(tmp_path / "journal.sqlite3")
    live_coordinator.stop()
    # The CLI retries with backoff (RetryPolicy's defaults); record the waits instead of
    # sleeping them, and check it did retry before giving up.
    waits: list[float] = []
    monkeypatch.setitem(Client.__init__.__kwdefaults__, "sleep", waits.append)

    assert run_cli(monkeypatch, env, "next", "invoice", "--reference", str(iid)) == (
        ExitCode.UNAVAILABLE
    )
    captured = capsys.readouterr()
    assert captured.out == ""  # no number printed, none guessed
    assert "coordinator" in captured.err and "no answer" in captured.err
    attempts = RetryPolicy().attempts
    assert f"after {attempts} attempt(s)" in captured.err
    assert len(waits) == attempts - 1 and all(wait > 0 for wait in waits)

    assert run_cli(monkeypatch, env, "poll", "--json") == ExitCode.UNAVAILABLE
    captured = capsys.readouterr()
    assert f"poll stopped at invoice {iid}" in captured.err
    assert "no answer from" in captured.err
    aborted = json.loads(captured.out)["aborted"]
    assert {k: v for k, v in aborted.items() if k != "message"} == {
        "reference": str(iid), "action": "failed", "document": "invoice", "formatted": None,
        "kind": "coordinator"}
    assert aborted["message"] in captured.err
    assert blue.invoicenums() == {iid: ""}
    assert blue.whmcs.calls["UpdateInvoice"] == 1  # the access check of invoice 0 only
    with Journal(tmp_path / "journal.sqlite3") as journal:
        assert journal.get("invoice", str(iid)) is None


def test_whmcs_down_stops_the_poll_with_exit_7(live_coordinator, tmp_path, monkeypatch,
                                               capsys) -> None:
    blue = live_coordinator.register("blue")
    blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    blue.whmcs.inject_fault("html")  # a firewall in front of api.php
    assert run_cli(monkeypatch, blue.agent_env(tmp_path / "j.sqlite3"), "poll") == ExitCode.WHMCS
    assert "firewall" in capsys.readouterr().err.lower()
    assert live_coordinator.ledger("invoice") == []


def test_a_failed_invoice_does_not_stop_the_others_and_exits_8(
    live_coordinator, tmp_path, monkeypatch, capsys
) -> None:
    blue = live_coordinator.register("blue")
    # Number 1 taken on 2025-12-31 for invoice "1": WHMCS now dates it in another year,
    # so the coordinator refuses (409) rather than give the document a second number.
    first = blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    second = blue.whmcs.add_invoice(status="Paid", subtotal="20.00", date=TODAY)
    with Client(url=live_coordinator.url, token=blue.token) as client:
        client.allocate("invoice", str(first), dt.date(TODAY.year - 1, 12, 31))

    assert run_cli(monkeypatch, blue.agent_env(tmp_path / "j.sqlite3"), "poll") == (
        ExitCode.INCOMPLETE
    )
    captured = capsys.readouterr()
    assert f"invoice {first}: not done (refused)" in captured.err
    nums = blue.invoicenums()
    assert nums[first] == ""
    assert nums[second] == f"INV-{TODAY.year}-000001"


def test_a_second_poller_of_the_same_installation_exits_busy(
    live_coordinator, tmp_path, monkeypatch, capsys
) -> None:
    blue = live_coordinator.register("blue")
    blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    journal = tmp_path / "journal.sqlite3"
    with poll_lock(journal):
        assert run_cli(monkeypatch, blue.agent_env(journal), "poll") == ExitCode.BUSY
    assert "another poller" in capsys.readouterr().err
    assert blue.whmcs.calls["GetInvoices"] == 0
    assert run_cli(monkeypatch, blue.agent_env(journal), "poll") == ExitCode.OK


def test_killed_between_write_and_confirm_the_next_run_confirms(
    live_coordinator, tmp_path, monkeypatch, capsys
) -> None:
    blue = live_coordinator.register("blue")
    iid = blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    env = blue.agent_env(tmp_path / "journal.sqlite3")
    real_confirm = Client.confirm

    def confirm_lost(self, allocation_id, invoicenum):
        from agent import CoordinatorUnreachable

        raise CoordinatorUnreachable("connection lost (test)")

    monkeypatch.setattr(Client, "confirm", confirm_lost)
    assert run_cli(monkeypatch, env, "poll") == ExitCode.UNAVAILABLE
    with Journal(tmp_path / "journal.sqlite3") as journal:
        (entry,) = journal.pending()
    assert entry.state == "written"
    assert blue.invoicenums()[iid] == entry.formatted
    assert live_coordinator.ledger()[0]["status"] == "issued"

    monkeypatch.setattr(Client, "confirm", real_confirm)
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    assert "confirmed  invoice" in capsys.readouterr().out
    (only,) = live_coordinator.ledger()
    assert (only["status"], only["formatted"]) == ("confirmed", entry.formatted)


def test_money_is_not_needed_to_decide_but_the_sign_is(live_coordinator, tmp_path) -> None:
    """A zero-total invoice is an invoice; only a negative total makes a credit note."""
    blue = live_coordinator.register("blue")
    zero = blue.whmcs.add_invoice(status="Paid", subtotal="0.00", date=TODAY)
    config = blue.agent_config(tmp_path / "j.sqlite3")
    with (
        Client(config) as client,
        WhmcsClient(blue.whmcs_url, blue.identifier, blue.secret) as whmcs,
        Journal(config.journal) as journal,
    ):
        report = Poller(client, whmcs, journal).run()
    assert report.ok and report.outcomes[0].document == "invoice"
    assert Decimal(blue.whmcs.invoices_snapshot()[0]["total"]) == 0
    assert blue.invoicenums()[zero].startswith("INV-")


def test_poll_loop_numbers_new_invoices_and_stops_cleanly_on_sigterm(
    live_coordinator, tmp_path
) -> None:
    import signal
    import time

    from .e2e_support import spawn_cli

    blue = live_coordinator.register("blue")
    first = blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    process = spawn_cli(blue.agent_env(tmp_path / "j.sqlite3"), "poll", "--loop",
                        "--interval", "0.2")
    try:
        deadline = time.monotonic() + 30
        while not blue.invoicenums()[first]:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        second = blue.whmcs.add_invoice(status="Unpaid", subtotal="20.00", date=TODAY)
        blue.whmcs.set_status(second, "Paid")  # paid later: the next round numbers it
        while not blue.invoicenums()[second]:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == ExitCode.OK, err
    assert [e["reference"] for e in live_coordinator.ledger()] == [str(first), str(second)]
