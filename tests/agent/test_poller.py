"""The poller's guards, as an operator meets them: WHMCS answers that must not void a number,
a WHMCS role that cannot write, a WHMCS that drops invoicenum, a coordinator whose numbering
went backwards.

The coordinator is the stdlib fake of conftest.py (it can be made to forget, as a restored old
backup would); WHMCS is the fake WHMCS over HTTP; the agent runs as ``invoice-sync-agent poll``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent import Client, ExitCode, Journal, Poller, WhmcsClient
from agent._models import Allocation
from agent._poller import needs_number
from agent.whmcs import WhmcsInvoice
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs

from .conftest import TOKEN, FakeCoordinator
from .e2e_support import run_cli

TODAY = dt.date.today()
YEAR = TODAY.year
COMMAND_NOT_FOUND = json.dumps({"result": "error", "message": "Command Not Found"})


class Installation:
    """One WHMCS (fake, over HTTP), its agent's environment and journal."""

    def __init__(self, whmcs: FakeWhmcs, url: str, coordinator: FakeCoordinator, tmp: Path):
        self.whmcs = whmcs
        self.coordinator = coordinator
        self.journal_path = tmp / "journal.sqlite3"
        self.env = {
            "INVOICE_SYNC_AGENT_URL": coordinator.url,
            "INVOICE_SYNC_AGENT_TOKEN": TOKEN,
            "INVOICE_SYNC_AGENT_WHMCS_URL": url,
            "INVOICE_SYNC_AGENT_WHMCS_IDENTIFIER": whmcs.identifier,
            "INVOICE_SYNC_AGENT_WHMCS_SECRET": whmcs.secret,
            "INVOICE_SYNC_AGENT_JOURNAL": str(self.journal_path),
        }

    def paid(self, total: str = "100.00") -> int:
        return self.whmcs.add_invoice(status="Paid", subtotal=total, date=TODAY)

    def invoicenums(self) -> dict[int, str]:
        return {int(r["id"]): r["invoicenum"] for r in self.whmcs.invoices_snapshot()}

    def statuses(self) -> dict[str, str]:
        """Return ``{reference: status}`` of every number the coordinator issued."""
        return {a["reference"]: a["status"] for a in self.coordinator.allocations.values()}

    def take_number_and_crash(self, invoice_id: int) -> str:
        """Leave what a poller killed after taking a number leaves: a journal entry."""
        with Client(url=self.coordinator.url, token=TOKEN) as client:
            allocation = client.allocate("invoice", str(invoice_id), TODAY)
        with Journal(self.journal_path) as journal:
            journal.record_allocated(allocation)
        return allocation.formatted


@pytest.fixture
def blue(coordinator: FakeCoordinator, tmp_path: Path, agent_env) -> Iterator[Installation]:
    whmcs = FakeWhmcs("ident-blue", "secret-blue-0123456789")
    with serve_fake_whmcs(whmcs) as server:
        yield Installation(whmcs, server.url, coordinator, tmp_path)


def poll(monkeypatch, blue: Installation, *args: str) -> int:
    return run_cli(monkeypatch, blue.env, "poll", *args)


# -- issue 8.2: only GetInvoice's exact "Invoice ID Not Found" means deleted -------------------


def test_command_not_found_voids_nothing_and_the_run_fails(blue, monkeypatch, capsys) -> None:
    """A number taken, the run killed; now a module in front of api.php answers GetInvoice
    with "Command Not Found". The number must stay ours, unvoided, and the run must fail."""
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                            content_type="application/json", action="GetInvoice")

    code = poll(monkeypatch, blue)
    err = capsys.readouterr().err
    assert code not in (ExitCode.OK, ExitCode.INTERNAL)
    assert f"invoice {iid}: not done (whmcs)" in err and "Command Not Found" in err
    assert blue.statuses() == {str(iid): "issued"}  # not voided
    assert blue.coordinator.posts(f"/v1/allocations/invoice:{YEAR}:1/void") == []
    with Journal(blue.journal_path) as journal:
        assert journal.get("invoice", str(iid)).state == "allocated"

    blue.whmcs.clear_faults()
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[iid] == formatted  # the same number, now written
    assert blue.statuses() == {str(iid): "confirmed"}


def test_command_not_found_right_after_a_number_was_taken(blue, monkeypatch, capsys) -> None:
    iid = blue.paid()
    # The first GetInvoice is the access check; the second reads the invoice before writing.
    blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                            content_type="application/json", action="GetInvoice", nth=2)
    assert poll(monkeypatch, blue) == ExitCode.INCOMPLETE
    assert "Command Not Found" in capsys.readouterr().err
    assert blue.statuses() == {str(iid): "issued"}
    assert blue.invoicenums()[iid] == ""
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.statuses() == {str(iid): "confirmed"}
    assert blue.invoicenums()[iid] == f"INV-{YEAR}-000001"


def test_an_invoice_deleted_before_its_number_was_written_gets_it_voided(
    blue, monkeypatch, capsys
) -> None:
    iid = blue.paid()
    blue.take_number_and_crash(iid)
    blue.whmcs.delete_invoice(iid)  # GetInvoice: {"status": "error", "message": "Invoice ID…"}
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.statuses() == {str(iid): "void"}
    (void,) = blue.coordinator.posts(f"/v1/allocations/invoice:{YEAR}:1/void")
    assert "deleted" in void["reason"]


# -- issue 8.3: a role that cannot write takes no number ---------------------------------------


@pytest.mark.parametrize("missing", ["GetInvoice", "UpdateInvoice"])
def test_a_role_lacking_an_action_takes_no_number(blue, monkeypatch, capsys, missing) -> None:
    for _ in range(3):
        blue.paid()
    before = blue.whmcs.invoices_snapshot()
    blue.whmcs.allowed_actions = {"getinvoices", "getinvoice", "updateinvoice"} - {
        missing.lower()}

    assert poll(monkeypatch, blue) == ExitCode.WHMCS
    err = capsys.readouterr().err
    assert f'API action "{missing.lower()}" is not allowed' in err
    assert "No number was taken" in err
    assert blue.coordinator.posts("/v1/allocations") == []
    assert blue.whmcs.invoices_snapshot() == before  # the checks wrote nothing

    blue.whmcs.allowed_actions = None  # the admin fixes the role
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert sorted(blue.invoicenums().values()) == [f"INV-{YEAR}-00000{n}" for n in (1, 2, 3)]


def test_update_invoice_unknown_to_whmcs_takes_no_number(blue, monkeypatch, capsys) -> None:
    blue.paid()
    blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                            content_type="application/json", action="UpdateInvoice")
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.WHMCS
    assert report["aborted"]["message"] == (
        f"WHMCS at {blue.env['INVOICE_SYNC_AGENT_WHMCS_URL']} answered UpdateInvoice for invoice "
        "0 (a probe that changes nothing) with 'Command Not Found' instead of \"Invoice ID Not "
        "Found\": the action cannot be used through this URL. Check for a module or proxy in "
        "front of api.php, and the WHMCS version. No number was taken.")
    assert blue.coordinator.posts("/v1/allocations") == []


def test_the_access_check_costs_two_calls_and_only_when_numbering(blue, monkeypatch) -> None:
    blue.paid()
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.whmcs.calls["UpdateInvoice"] == 2  # the check (invoice 0), then the write
    calls = dict(blue.whmcs.calls)
    assert poll(monkeypatch, blue) == ExitCode.OK  # nothing to number: no check
    assert blue.whmcs.calls["UpdateInvoice"] == calls["UpdateInvoice"]
    assert blue.whmcs.calls["GetInvoice"] == calls["GetInvoice"]


# -- issue 17.1: a WHMCS that accepts invoicenum and drops it --------------------------------


def test_whmcs_dropping_invoicenum_gets_no_confirmed_number(blue, monkeypatch, capsys) -> None:
    first, second = blue.paid(), blue.paid()
    blue.whmcs.dropped_update_fields = {"invoicenum"}  # a version or module that ignores it

    assert poll(monkeypatch, blue) == ExitCode.WHMCS
    err = capsys.readouterr().err
    assert "drops invoicenum" in err
    assert blue.invoicenums() == {first: "", second: ""}
    # Nothing confirmed; and no second number taken for a WHMCS that loses them.
    assert blue.statuses() == {str(first): "issued"}
    assert blue.coordinator.posts(f"/v1/allocations/invoice:{YEAR}:1/confirm") == []

    blue.whmcs.dropped_update_fields = set()  # WHMCS fixed
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums() == {first: f"INV-{YEAR}-000001", second: f"INV-{YEAR}-000002"}
    assert blue.statuses() == {str(first): "confirmed", str(second): "confirmed"}


# -- issue 16: a coordinator whose numbering went backwards ----------------------------------


def forget_since(coordinator: FakeCoordinator, number: int) -> None:
    """Make the coordinator forget every number after ``number``: an old backup restored."""
    with coordinator.lock:
        for allocation_id, allocation in list(coordinator.allocations.items()):
            if allocation["number"] > number:
                del coordinator.allocations[allocation_id]
                del coordinator.by_reference[(allocation["document"], allocation["reference"])]
        for key in coordinator.counters:
            coordinator.counters[key] = min(coordinator.counters[key], number)


def test_a_number_that_went_backwards_is_not_written(blue, monkeypatch, capsys) -> None:
    first = [blue.paid() for _ in range(3)]
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert sorted(blue.invoicenums().values())[-1] == f"INV-{YEAR}-000003"
    forget_since(blue.coordinator, 1)  # the coordinator now thinks only number 1 was issued
    later = blue.paid()
    updates = blue.whmcs.calls["UpdateInvoice"]
    capsys.readouterr()

    assert poll(monkeypatch, blue) == ExitCode.BACKWARDS
    err = capsys.readouterr().err
    assert f"INV-{YEAR}-000002" in err and f"INV-{YEAR}-000003" in err  # both numbers named
    assert blue.invoicenums()[later] == ""
    # Only the access check (invoice 0) reached UpdateInvoice: the number was written nowhere.
    assert blue.whmcs.calls["UpdateInvoice"] == updates + 1
    with Journal(blue.journal_path) as journal:
        assert journal.get("invoice", str(later)) is None
        assert journal.pending() == []
    # The numbers printed before are untouched, and the refusal holds on the next run.
    assert [blue.invoicenums()[i] for i in first] == [f"INV-{YEAR}-00000{n}" for n in (1, 2, 3)]
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.BACKWARDS
    assert report["aborted"] == {
        "reference": str(later), "action": "failed", "document": "invoice",
        "formatted": f"INV-{YEAR}-000002",
        "message": f"the coordinator gave invoice {later} number INV-{YEAR}-000002 (2), but this "
                   f"installation already received INV-{YEAR}-000003 (3) for invoice {first[2]} "
                   f"in invoice {YEAR}: the coordinator's numbering went backwards (data lost or "
                   "an old backup restored?). Not written anywhere. An admin must raise "
                   f"next_number of invoice above 3, void invoice:{YEAR}:2 with the reason and "
                   "reissue it",
        "kind": "backwards"}

    # Answered as a replay now (the coordinator kept it for that invoice): still refused.
    assert blue.coordinator.allocations[f"invoice:{YEAR}:2"]["reference"] == str(later)

    # The admin raises the counter past the highest number in use and reissues: numbering
    # goes on above every number this installation received.
    with blue.coordinator.lock:
        blue.coordinator.counters[("invoice", str(YEAR))] = 3
        del blue.coordinator.by_reference[("invoice", str(later))]
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[later] == f"INV-{YEAR}-000004"


def test_the_same_document_answered_its_same_number_is_fine(blue, monkeypatch) -> None:
    iid = blue.paid()
    blue.take_number_and_crash(iid)  # number 1, in the journal, not written yet
    for _ in range(2):
        blue.paid()
    with Client(url=blue.coordinator.url, token=TOKEN) as client:
        client.allocate("invoice", "elsewhere", TODAY)  # 2, taken by another agent
    assert poll(monkeypatch, blue) == ExitCode.OK
    nums = blue.invoicenums()
    assert nums[iid] == f"INV-{YEAR}-000001"  # a replay below what was received since: fine
    assert sorted(nums.values()) == [f"INV-{YEAR}-00000{n}" for n in (1, 3, 4)]


def test_whmcs_storing_another_number_than_sent_gets_no_confirmed_number(
    blue, monkeypatch, capsys
) -> None:
    """A module rewrites invoicenum on save (or someone wrote one that very moment): the
    number on the invoice is not ours, so ours is not confirmed; the next run voids it."""
    iid = blue.paid()
    update = blue.whmcs._update_invoice

    def rewriting_module(params):
        answer = update(params)
        if params.get("invoicenum"):
            blue.whmcs._invoices[iid]["invoicenum"] = "MOD-" + params["invoicenum"]
        return answer

    monkeypatch.setattr(blue.whmcs, "_update_invoice", rewriting_module)
    assert poll(monkeypatch, blue) == ExitCode.INCOMPLETE
    assert f"invoice {iid}: not done (whmcs)" in capsys.readouterr().err
    assert blue.statuses() == {str(iid): "issued"}  # not confirmed
    assert blue.coordinator.posts(f"/v1/allocations/invoice:{YEAR}:1/confirm") == []

    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.statuses() == {str(iid): "void"}  # never used: the invoice carries another
    assert blue.invoicenums()[iid] == f"MOD-INV-{YEAR}-000001"


def test_a_role_without_getinvoices_takes_no_number_for_watched_invoices(
    blue, monkeypatch, capsys
) -> None:
    stuck = blue.paid()
    with Client(url=blue.coordinator.url, token=TOKEN) as client:  # its number, another year
        client.allocate("invoice", str(stuck), dt.date(YEAR - 1, 12, 31))
    assert poll(monkeypatch, blue) == ExitCode.INCOMPLETE  # 409: left unnumbered, watched
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(stuck): "unnumbered"}
    capsys.readouterr()
    asked = len(blue.coordinator.posts("/v1/allocations"))
    blue.whmcs.allowed_actions = {"getinvoice", "updateinvoice"}

    assert poll(monkeypatch, blue) == ExitCode.WHMCS
    assert 'API action "getinvoices" is not allowed' in capsys.readouterr().err
    assert len(blue.coordinator.posts("/v1/allocations")) == asked  # nothing asked for


# -- what a run reports, whole: operators act on these lines ----------------------------------


def poll_json(monkeypatch, blue: Installation, capsys) -> tuple[int, dict]:
    code = poll(monkeypatch, blue, "--json")
    return code, json.loads(capsys.readouterr().out)


def test_a_number_voided_for_a_deleted_invoice_is_reported_and_journaled_with_why(
    blue, monkeypatch, capsys, caplog
) -> None:
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.whmcs.delete_invoice(iid)
    reason = f"WHMCS invoice {iid} was deleted before {formatted} was written into it"

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.OK
    assert report["outcomes"] == [{"reference": str(iid), "action": "voided",
                                   "document": "invoice", "formatted": formatted,
                                   "message": reason, "kind": None}]
    (void,) = blue.coordinator.posts(f"/v1/allocations/invoice:{YEAR}:1/void")
    assert void["reason"] == reason
    with Journal(blue.journal_path) as journal:
        entry = journal.get("invoice", str(iid))
    assert (entry.state, entry.void_reason) == ("voided", reason)
    # The agent's log (syslog, journald) says it too, for whoever reads it rather than the run.
    assert f"invoice {iid}: voided {formatted}: {reason}" in caplog.messages


def test_a_confirmed_number_of_a_deleted_invoice_is_left_to_an_admin(
    blue, monkeypatch, capsys
) -> None:
    """The ledger says the number is printed (confirmed), WHMCS says the invoice is gone: the
    agent may not void a confirmed number (403); an admin must reconcile, nothing is voided."""
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.coordinator.allocations[f"invoice:{YEAR}:1"]["status"] = "confirmed"
    blue.whmcs.delete_invoice(iid)

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    assert report["outcomes"] == [{
        "reference": str(iid), "action": "failed", "document": "invoice", "formatted": formatted,
        "message": f"{formatted} is confirmed in the ledger, yet WHMCS invoice {iid} was "
                   f"deleted before {formatted} was written into it. An admin must reconcile "
                   "the ledger and WHMCS",
        "kind": "conflict"}]
    assert blue.statuses() == {str(iid): "confirmed"}
    with Journal(blue.journal_path) as journal:
        assert journal.get("invoice", str(iid)).state == "allocated"


def test_a_written_number_voided_in_the_ledger_meanwhile_is_left_to_an_admin(
    blue, monkeypatch, capsys
) -> None:
    """WHMCS shows our number, but an admin voided it in the ledger before we confirmed: the
    coordinator refuses the confirmation (409); the run says the two disagree."""
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.whmcs.set_invoicenum(iid, formatted)
    blue.coordinator.allocations[f"invoice:{YEAR}:1"]["status"] = "void"

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    assert report["outcomes"] == [{
        "reference": str(iid), "action": "failed", "document": "invoice", "formatted": formatted,
        "message": f"{formatted} is in WHMCS invoice {iid}, but the coordinator refuses to "
                   "confirm it: Allocation is void (HTTP 409). An admin must reconcile the ledger "
                   "and WHMCS",
        "kind": "conflict"}]
    with Journal(blue.journal_path) as journal:
        assert journal.get("invoice", str(iid)).state == "written"


def test_each_outcome_names_the_number_it_is_about(blue, monkeypatch, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent.poller")  # what `poll --verbose` shows
    numbered = blue.paid()
    written = blue.paid()  # crashed after writing its number into WHMCS, before the journal
    formatted = blue.take_number_and_crash(written)
    blue.whmcs.set_invoicenum(written, formatted)

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.OK
    assert sorted(report["outcomes"], key=lambda o: o["action"]) == [
        {"reference": str(written), "action": "confirmed", "document": "invoice",
         "formatted": formatted, "message": "", "kind": None},
        {"reference": str(numbered), "action": "numbered", "document": "invoice",
         "formatted": f"INV-{YEAR}-000002", "message": "", "kind": None},
    ]
    with Journal(blue.journal_path) as journal:
        assert journal.get("invoice", str(written)).state == "confirmed"
    assert blue.statuses() == {str(written): "confirmed", str(numbered): "confirmed"}
    assert f"invoice {numbered}: took INV-{YEAR}-000002 (invoice:{YEAR}:2)" in caplog.messages
    assert f"invoice {numbered}: wrote INV-{YEAR}-000002" in caplog.messages


def test_a_written_number_is_confirmed_even_if_the_invoice_is_gone_now(
    blue, monkeypatch, capsys
) -> None:
    """Once written into an invoice, a number may have been sent to the customer: it is
    confirmed, never voided, whatever WHMCS shows afterwards."""
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    with Journal(blue.journal_path) as journal:
        journal.mark_written(f"invoice:{YEAR}:1", formatted)
    blue.whmcs.delete_invoice(iid)

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.OK
    assert [(o["action"], o["formatted"]) for o in report["outcomes"]] == [
        ("confirmed", formatted)]
    assert blue.statuses() == {str(iid): "confirmed"}


def test_a_journal_entry_for_no_whmcs_invoice_is_left_for_a_person(
    blue, monkeypatch, capsys
) -> None:
    # `invoice-sync-agent next --reference X` takes a number for something that is not a WHMCS
    # invoice id; the poller cannot know where it went and says how to finish it.
    with Client(url=blue.coordinator.url, token=TOKEN) as client:
        allocation = client.allocate("invoice", "manual-1", TODAY)
    with Journal(blue.journal_path) as journal:
        journal.record_allocated(allocation)

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    assert report["outcomes"] == [{
        "reference": "manual-1", "action": "failed", "document": "invoice", "formatted": None,
        "message": f"journal entry {allocation.id} has reference 'manual-1', which is not a "
                   "WHMCS invoice id; finish it by hand (invoice-sync-agent confirm/void)",
        "kind": "journal"}]
    assert blue.statuses() == {"manual-1": "issued"}


def test_whmcs_dropping_invoicenum_stops_the_run_saying_all_of_it(
    blue, monkeypatch, capsys
) -> None:
    first = blue.paid()
    blue.paid()
    blue.whmcs.dropped_update_fields = {"invoicenum"}
    formatted = f"INV-{YEAR}-000001"

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.WHMCS
    assert report["aborted"] == {
        "reference": str(first), "action": "failed", "document": "invoice",
        "formatted": formatted,
        "message": f"WHMCS accepted UpdateInvoice invoicenum={formatted} for invoice {first} "
                   "but does not show it: this WHMCS (its version or a module) drops "
                   "invoicenum. Not confirmed, no further number taken; the number stays in "
                   "the journal and is written by the first run after WHMCS is fixed",
        "kind": "whmcs"}


def test_an_invoice_numbered_by_someone_else_first_gets_ours_voided_with_why(
    blue, monkeypatch, capsys
) -> None:
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.whmcs.set_invoicenum(iid, "ADMIN-7")  # an admin typed one meanwhile

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.OK
    reason = (f"WHMCS invoice {iid} was numbered 'ADMIN-7' by someone else before {formatted} "
              "was written; it was never used")
    assert report["outcomes"] == [{"reference": str(iid), "action": "voided",
                                   "document": "invoice", "formatted": formatted,
                                   "message": reason, "kind": None}]
    assert blue.invoicenums()[iid] == "ADMIN-7"
    assert blue.statuses() == {str(iid): "void"}


def test_an_invoice_gone_right_after_the_write_is_not_confirmed(blue, monkeypatch, capsys):
    iid = blue.paid()
    # GetInvoice: 1 the access check, 2 the read before writing, 3 the read-back.
    blue.whmcs.inject_fault(
        "status", status=200, content_type="application/json", action="GetInvoice", nth=3,
        body=json.dumps({"status": "error", "message": "Invoice ID Not Found"}))

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    [outcome] = report["outcomes"]
    assert (outcome["action"], outcome["kind"]) == ("failed", "whmcs")
    assert outcome["message"] == (
        f"WHMCS accepted UpdateInvoice invoicenum=INV-{YEAR}-000001 for invoice {iid} but now "
        "shows None; not confirmed, retried next run")
    assert blue.statuses() == {str(iid): "issued"}


def test_a_written_number_the_coordinator_did_not_confirm_is_journaled_as_in_whmcs(
    blue, monkeypatch, capsys
) -> None:
    """The journal is what the next run (and an operator) goes by: a number in WHMCS but not
    confirmed is recorded as written, with the invoicenum WHMCS holds."""
    iid = blue.paid()
    blue.coordinator.on_allocate = lambda answer: blue.coordinator.fail_next.append(409)
    assert poll(monkeypatch, blue) == ExitCode.INCOMPLETE
    with Journal(blue.journal_path) as journal:
        entry = journal.get("invoice", str(iid))
    assert (entry.state, entry.invoicenum) == ("written", f"INV-{YEAR}-000001")
    assert blue.invoicenums()[iid] == f"INV-{YEAR}-000001"


@pytest.mark.parametrize(("status", "total", "numbered"), [
    ("Unpaid", "0.00", False),   # a free invoice waits for its payment like any other
    ("Unpaid", "0.50", False),
    ("Unpaid", "-0.50", True),   # a credit note is numbered when issued
    ("Paid", "0.00", True),
])
def test_paid_mode_numbers_credit_notes_at_once_and_invoices_when_paid(status, total, numbered):
    invoice = WhmcsInvoice(
        id=1, invoicenum="", date=TODAY, duedate=TODAY, datepaid=None, status=status,
        subtotal=Decimal(total), credit=Decimal(0), tax=Decimal(0), tax2=Decimal(0),
        total=Decimal(total), currencycode="EUR", updated_at=None)
    assert needs_number(invoice, "paid") is numbered


def test_our_number_found_on_the_invoice_but_not_confirmed_is_journaled_as_in_whmcs(
    blue, monkeypatch, capsys
) -> None:
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.whmcs.set_invoicenum(iid, formatted)  # written before the crash, not journaled
    blue.coordinator.fail_next.append(409)  # the confirmation is refused this time
    assert poll(monkeypatch, blue) == ExitCode.INCOMPLETE
    with Journal(blue.journal_path) as journal:
        entry = journal.get("invoice", str(iid))
    assert (entry.state, entry.invoicenum) == ("written", formatted)


# -- watched invoices and what a run counts (mutation triage, fifth session) ------------------


def test_a_watched_invoice_whmcs_cannot_read_is_reported_by_id_and_still_watched(
    blue, monkeypatch, capsys
) -> None:
    """A draft credit note is watched (it gets its number when published); the run that
    re-reads it meets a module answering GetInvoice with "Command Not Found": that invoice is
    reported failed, by its id, and stays watched; the next run reads it again."""
    draft = blue.whmcs.add_invoice(status="Draft", subtotal="-20.00", date=TODAY)
    assert poll(monkeypatch, blue) == ExitCode.OK
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(draft): "draft"}
    blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                            content_type="application/json", action="GetInvoice")
    capsys.readouterr()

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    [outcome] = report["outcomes"]
    assert {k: outcome[k] for k in ("reference", "action", "document", "formatted", "kind")} == {
        "reference": str(draft), "action": "failed", "document": None, "formatted": None,
        "kind": "whmcs"}
    assert outcome["message"] == (
        f"WHMCS at {blue.env['INVOICE_SYNC_AGENT_WHMCS_URL']} could not run GetInvoice: "
        "Command Not Found.")
    assert report["aborted"] is None
    assert report["ok"] is False  # not stopped, but an invoice was left without its number
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(draft): "draft"}

    blue.whmcs.clear_faults()
    blue.whmcs.set_status(draft, "Unpaid")  # published meanwhile: numbered at once
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.OK
    assert [(o["reference"], o["action"]) for o in report["outcomes"]] == [
        (str(draft), "numbered")]
    assert report["ok"] is True
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {}


def test_a_watch_entry_that_is_no_whmcs_invoice_id_is_dropped_unread(blue, monkeypatch) -> None:
    """A journal carried over from elsewhere (or edited by hand) may watch a reference that is
    no invoice id: the run drops it without asking WHMCS, instead of crashing on it."""
    blue.paid()
    assert poll(monkeypatch, blue) == ExitCode.OK  # sets the scan mark: the next run is cheap
    with Journal(blue.journal_path) as journal:
        journal.watch("manual-1", "unnumbered")
    reads = blue.whmcs.calls["GetInvoice"]
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.whmcs.calls["GetInvoice"] == reads
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {}


def test_an_invoice_dated_last_year_gets_a_number_of_last_year(blue, monkeypatch) -> None:
    """The period follows the document's date as WHMCS holds it, not the day of the poll."""
    iid = blue.whmcs.add_invoice(status="Paid", subtotal="100.00", date=dt.date(YEAR - 1, 12, 31))
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[iid] == f"INV-{YEAR - 1}-000001"
    assert [p["date"] for p in blue.coordinator.posts("/v1/allocations")] == [f"{YEAR - 1}-12-31"]


def test_an_invoice_whose_number_was_voided_gets_none_and_an_admin_is_told_how(
    blue, monkeypatch, capsys
) -> None:
    """One document, one number: the coordinator answers the voided one again, and the
    poller writes neither it nor another, and says what an admin can do."""
    iid = blue.paid()
    with Client(url=blue.coordinator.url, token=TOKEN) as client:
        taken = client.allocate("invoice", str(iid), TODAY)
        client.void(taken.id, "typed into the wrong invoice")

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    assert report["outcomes"] == [{
        "reference": str(iid), "action": "failed", "document": "invoice",
        "formatted": taken.formatted,
        "message": f"invoice {iid} has no number, but its number {taken.formatted} was voided "
                   "(typed into the wrong invoice); the coordinator gives a document one number "
                   "only. An admin must decide: reissue it (POST /v1/allocations/"
                   f"{taken.id}/reissue with a reason; the next poll writes the new number), "
                   "write the number by hand if it was issued, or leave the invoice unnumbered",
        "kind": "conflict"}]
    assert blue.invoicenums()[iid] == ""
    assert blue.statuses() == {str(iid): "void"}
    with Journal(blue.journal_path) as journal:
        assert journal.get("invoice", str(iid)) is None
        assert journal.watched() == {str(iid): "unnumbered"}


def test_a_number_journaled_by_the_hook_during_a_run_and_found_voided_is_journaled_voided(
    blue, monkeypatch
) -> None:
    """The sidecar (the WHMCS hook) shares the journal: it may record a number while a run is
    under way, after the run read the pending entries. When the coordinator then answers that
    number as voided, the journal must say so too; left pending, the next run would write a
    voided number into the invoice."""
    allocated, written = blue.paid(), blue.paid()
    with Client(url=blue.coordinator.url, token=TOKEN) as client:
        taken = {iid: client.allocate("invoice", str(iid), TODAY) for iid in (allocated, written)}
        for allocation in taken.values():
            client.void(allocation.id, "voided by an admin")

    def hook_journals_it(answer: dict) -> None:
        iid = int(answer["reference"])
        with Journal(blue.journal_path) as journal:
            entry = journal.record_allocated(Allocation.from_json({**answer, "status": "issued"}))
            if iid == written:
                journal.mark_written(entry.allocation_id, entry.formatted)

    blue.coordinator.on_allocate = hook_journals_it
    assert poll(monkeypatch, blue) == ExitCode.INCOMPLETE
    with Journal(blue.journal_path) as journal:
        assert journal.pending() == []
        for iid in (allocated, written):
            entry = journal.get("invoice", str(iid))
            assert (entry.state, entry.void_reason) == ("voided", "voided by an admin")
    assert blue.invoicenums() == {allocated: "", written: ""}


def test_created_mode_watches_a_draft_the_journal_lost_once_the_drafts_are_listed(
    blue, monkeypatch
) -> None:
    """Created mode: a draft the journal does not watch (its watch lost, say the journal was
    restored from a backup) is found when the drafts are listed (their count changed), and
    numbered once it is published, without a full poll."""
    env = {**blue.env, "INVOICE_SYNC_AGENT_NUMBER_ON": "created"}
    lost = blue.whmcs.add_invoice(status="Draft", subtotal="30.00", date=TODAY)
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(lost): "draft"}
        journal.unwatch(str(lost))
    new = blue.whmcs.add_invoice(status="Draft", subtotal="40.00", date=TODAY)
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(lost): "draft", str(new): "draft"}

    blue.whmcs.set_status(lost, "Unpaid")  # published: issued, so numbered in created mode
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    assert blue.invoicenums()[lost] == f"INV-{YEAR}-000001"


def test_created_mode_numbers_drafts_published_together_in_the_order_of_their_ids(
    blue, monkeypatch
) -> None:
    """Drafts 9 and 10, published between two polls, are numbered as they were created: 9
    first (ids compared as numbers, not as the strings "10" < "9")."""
    env = {**blue.env, "INVOICE_SYNC_AGENT_NUMBER_ON": "created"}
    blue.whmcs.set_next_id(9)
    nine, ten = (blue.whmcs.add_invoice(status="Draft", subtotal="5.00", date=TODAY)
                 for _ in range(2))
    assert (nine, ten) == (9, 10)
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    for iid in (ten, nine):
        blue.whmcs.set_status(iid, "Unpaid")
    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    assert blue.invoicenums() == {9: f"INV-{YEAR}-000001", 10: f"INV-{YEAR}-000002"}


@pytest.mark.parametrize("number_on", ["paid", "created"])
def test_an_invoice_a_failure_left_unnumbered_is_numbered_by_the_next_cheap_poll(
    blue, monkeypatch, number_on
) -> None:
    """No listing of a cheap poll finds it again (an unpaid credit note in paid mode, any
    unpaid invoice in created mode): the watch does, and the next poll numbers it."""
    env = {**blue.env, "INVOICE_SYNC_AGENT_NUMBER_ON": number_on}
    credit_note = blue.whmcs.add_invoice(status="Unpaid", subtotal="-40.00", date=TODAY)
    blue.coordinator.fail_next.append(409)  # this one allocation refused
    assert run_cli(monkeypatch, env, "poll") == ExitCode.INCOMPLETE
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(credit_note): "unnumbered"}

    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    assert blue.invoicenums()[credit_note] == f"CN-{YEAR}-000001"
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {}


def test_get_invoice_unknown_to_whmcs_stops_the_run_saying_which_action(
    blue, monkeypatch, capsys
) -> None:
    """The access check probes GetInvoice and UpdateInvoice by their names as WHMCS documents
    them; a module answering "Command Not Found" stops the run, naming the action."""
    blue.paid()
    blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                            content_type="application/json", action="GetInvoice")
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.WHMCS
    assert report["aborted"] == {
        "reference": "-", "action": "failed", "document": None, "formatted": None,
        "message": f"WHMCS at {blue.env['INVOICE_SYNC_AGENT_WHMCS_URL']} answered GetInvoice for "
                   "invoice 0 (a probe that changes nothing) with 'Command Not Found' instead of "
                   '"Invoice ID Not Found": the action cannot be used through this URL. Check '
                   "for a module or proxy in front of api.php, and the WHMCS version. No number "
                   "was taken.",
        "kind": "whmcs"}
    assert blue.coordinator.posts("/v1/allocations") == []


def test_an_invoice_that_fails_is_tried_once_per_run_however_many_listings_find_it(
    blue, monkeypatch, capsys
) -> None:
    """A new paid invoice is found by the new ids and again by the unnumbered-paid listing:
    its failure is reported once and its number asked for once; the next run retries it."""
    blue.paid()
    assert poll(monkeypatch, blue) == ExitCode.OK  # the scan mark: the next runs are cheap
    iid = blue.paid()
    blue.coordinator.fail_next.append(409)
    asked = len(blue.coordinator.posts("/v1/allocations"))
    capsys.readouterr()

    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    assert report["outcomes"] == [{
        "reference": str(iid), "action": "failed", "document": "invoice", "formatted": None,
        "message": "injected failure (HTTP 409)", "kind": "refused"}]
    assert len(blue.coordinator.posts("/v1/allocations")) == asked + 1
    assert blue.invoicenums()[iid] == ""
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[iid] == f"INV-{YEAR}-000002"


def test_a_watched_draft_credit_note_numbered_by_hand_is_watched_no_more(blue, monkeypatch):
    """Paid mode watches a draft credit note; once an admin numbers it by hand it needs
    nothing from the poller, and later polls stop reading it."""
    draft = blue.whmcs.add_invoice(status="Draft", subtotal="-20.00", date=TODAY)
    assert poll(monkeypatch, blue) == ExitCode.OK
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {str(draft): "draft"}
    blue.whmcs.set_invoicenum(draft, "CN-BY-HAND-1")
    assert poll(monkeypatch, blue) == ExitCode.OK
    with Journal(blue.journal_path) as journal:
        assert journal.watched() == {}
    assert blue.invoicenums()[draft] == "CN-BY-HAND-1"


def test_run_without_arguments_reads_everything_once_then_only_what_is_new(blue) -> None:
    """The library call of the module docstring, ``poller.run()``: a full read the first
    time, the cheap one after (``full=True`` is what ``poll --full`` passes)."""
    blue.paid()
    with (
        Client(url=blue.coordinator.url, token=TOKEN) as client,
        WhmcsClient(blue.env["INVOICE_SYNC_AGENT_WHMCS_URL"], blue.whmcs.identifier,
                    blue.whmcs.secret) as whmcs,
        Journal(blue.journal_path) as journal,
    ):
        poller = Poller(client, whmcs, journal)
        fulls = []
        for run in (poller.run, poller.run, lambda: poller.run(full=True)):
            before = whmcs.calls
            report = run()
            # `whmcs_calls` counts this run's calls, not those the client made before it
            assert report.whmcs_calls == whmcs.calls - before > 0
            fulls.append(report.full)
        assert fulls == [True, False, True]


def test_a_pending_number_whose_invoice_whmcs_fails_to_read_is_left_for_the_next_run(
    blue, monkeypatch, capsys
) -> None:
    """The first run reads every invoice, so it finds the invoice of a pending journal entry
    again: a step that failed is reported once and retried by the next run, not twice."""
    iid = blue.paid()
    formatted = blue.take_number_and_crash(iid)
    blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                            content_type="application/json", action="GetInvoice", nth=1)
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.INCOMPLETE
    assert [(o["reference"], o["action"]) for o in report["outcomes"]] == [(str(iid), "failed")]
    assert blue.invoicenums()[iid] == ""
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[iid] == formatted


def test_a_refused_token_stops_the_run_before_any_number(blue, monkeypatch, capsys) -> None:
    iid = blue.paid()
    blue.coordinator.fail_next.append(401)
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.REFUSED
    assert report["aborted"] == {
        "reference": str(iid), "action": "failed", "document": "invoice", "formatted": None,
        "message": "injected failure (HTTP 401)", "kind": "refused"}
    assert blue.invoicenums()[iid] == ""
    assert report["ok"] is False  # scripts read "ok": a stopped run is not a good one


def test_the_first_poll_of_an_empty_whmcs_misses_none_of_its_first_invoices(
    blue, monkeypatch
) -> None:
    assert poll(monkeypatch, blue) == ExitCode.OK  # no invoice yet
    # An unpaid credit note: in paid mode only the scan of new ids finds it (no listing does).
    first = blue.whmcs.add_invoice(status="Unpaid", subtotal="-10.00", date=TODAY)
    assert first == 1
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[first] == f"CN-{YEAR}-000001"


def test_a_poller_for_an_unknown_numbering_moment_is_refused_saying_which() -> None:
    with pytest.raises(ValueError) as refused:
        Poller(None, None, None, number_on="proforma")  # type: ignore[arg-type]
    assert str(refused.value) == "number_on must be paid or created, not 'proforma'"


def test_a_role_without_getinvoices_stops_the_first_run_as_a_whole(
    blue, monkeypatch, capsys
) -> None:
    blue.paid()
    blue.whmcs.allowed_actions = {"getinvoice", "updateinvoice"}
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.WHMCS
    assert report["aborted"] == {
        "reference": "-", "action": "failed", "document": None, "formatted": None,
        "message": f"WHMCS at {blue.env['INVOICE_SYNC_AGENT_WHMCS_URL']} does not allow API "
                   'action "GetInvoices" for these credentials (Invalid Permissions: API action '
                   '"getinvoices" is not allowed). Add GetInvoices to the credentials\' API role: '
                   "Configuration → System Settings → Manage API Credentials → API Roles.",
        "kind": "whmcs"}


def test_a_whmcs_that_breaks_after_one_invoice_failed_takes_no_further_number(
    blue, monkeypatch, capsys
) -> None:
    """WHMCS answers a read of the invoice being numbered with "Command Not Found" (a module
    put in front of api.php mid-run): that invoice fails, with its document named, and access
    is checked again before the next number, which is not taken now that the check fails."""
    first, second = blue.paid(), blue.paid()
    for nth in (2, 3):  # the first GetInvoice is the access check
        blue.whmcs.inject_fault("status", status=200, body=COMMAND_NOT_FOUND,
                                content_type="application/json", action="GetInvoice", nth=nth)
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.WHMCS
    (failed,) = report["outcomes"]
    assert {k: failed[k] for k in ("reference", "action", "document", "kind")} == {
        "reference": str(first), "action": "failed", "document": "invoice", "kind": "whmcs"}
    assert report["aborted"]["message"].endswith(" No number was taken.")
    assert blue.statuses() == {str(first): "issued"}  # none for the second invoice
    assert blue.invoicenums()[second] == ""


def test_whmcs_failing_right_after_a_number_was_taken_stops_the_run_at_that_invoice(
    blue, monkeypatch, capsys
) -> None:
    """Not an API answer but WHMCS itself failing (HTTP 500): the run stops, saying at which
    invoice and document; the number stays taken for the next run to write."""
    iid = blue.paid()
    blue.whmcs.inject_fault("status", status=500, action="GetInvoice", nth=2)
    code, report = poll_json(monkeypatch, blue, capsys)
    assert code == ExitCode.WHMCS
    aborted = report["aborted"]
    assert {k: aborted[k] for k in ("reference", "action", "document", "kind")} == {
        "reference": str(iid), "action": "failed", "document": "invoice", "kind": "whmcs"}
    assert aborted["message"].startswith(
        f"WHMCS at {blue.env['INVOICE_SYNC_AGENT_WHMCS_URL']} answered HTTP 500 with a non-JSON "
        "body, not API JSON: 'Internal Server Error'.")
    assert blue.statuses() == {str(iid): "issued"}
    assert poll(monkeypatch, blue) == ExitCode.OK
    assert blue.invoicenums()[iid] == f"INV-{YEAR}-000001"
