"""A poller SIGKILLed between taking a number and writing it: the next run finishes the job.

The agent runs as its own process; the fake WHMCS holds its UpdateInvoice (a stuck PHP worker),
the test kills the agent there with SIGKILL, changes the world as an admin might, and runs the
agent again. Whatever happened meanwhile, the invoice ends with exactly one number from the
ledger (written and confirmed), or our number is voided with the reason — never a second one.
"""

from __future__ import annotations

import datetime as dt
import signal
import time

import pytest

from agent import ExitCode, Journal, WhmcsClient

from .e2e_support import spawn_cli

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TODAY = dt.date.today()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def kill_at_update_invoice(live_coordinator, tmp_path, kind: str = "hang", delay: float = 60):
    """Start a poller, SIGKILL it while WHMCS holds its UpdateInvoice; return the state."""
    blue = live_coordinator.register("blue")
    iid = blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    journal = tmp_path / "journal.sqlite3"
    env = blue.agent_env(journal)
    # The first UpdateInvoice is the access check (invoice 0, nothing written); hold the write.
    blue.whmcs.inject_fault(kind, delay=delay, action="UpdateInvoice", nth=2)
    process = spawn_cli(env, "poll")
    try:
        wait_for(lambda: blue.whmcs.calls["UpdateInvoice"] >= 2 or process.poll() is not None)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    (issued,) = live_coordinator.ledger()
    assert issued["status"] == "issued"  # taken, not yet written, not confirmed
    with Journal(journal) as j:
        (entry,) = j.pending()
    assert (entry.state, entry.formatted) == ("allocated", issued["formatted"])
    return blue, iid, env, issued


def admin_sets_number(system, iid: int, invoicenum: str) -> None:
    with WhmcsClient(system.whmcs_url, system.identifier, system.secret) as whmcs:
        whmcs.update_invoice(iid, invoicenum=invoicenum)


def run_again(env) -> tuple[int, str, str]:
    process = spawn_cli(env, "poll")
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def test_nothing_was_written_so_the_next_run_writes_and_confirms(live_coordinator, tmp_path):
    blue, iid, env, issued = kill_at_update_invoice(live_coordinator, tmp_path)
    assert blue.invoicenums()[iid] == ""

    code, out, err = run_again(env)
    assert code == ExitCode.OK, err
    assert f"numbered   invoice {iid}" in out
    assert blue.invoicenums()[iid] == issued["formatted"]
    (entry,) = live_coordinator.ledger()  # still one number: the same one, now confirmed
    assert (entry["number"], entry["status"]) == (issued["number"], "confirmed")


def test_the_write_landed_after_the_kill_so_the_next_run_only_confirms(
    live_coordinator, tmp_path
):
    # "delay": WHMCS finishes the UpdateInvoice although the agent died waiting for it.
    blue, iid, env, issued = kill_at_update_invoice(
        live_coordinator, tmp_path, kind="delay", delay=1.0
    )
    wait_for(lambda: blue.invoicenums()[iid] != "")
    assert blue.invoicenums()[iid] == issued["formatted"]

    code, out, err = run_again(env)
    assert code == ExitCode.OK, err
    assert f"confirmed  invoice {iid}" in out
    (entry,) = live_coordinator.ledger()
    assert (entry["number"], entry["status"]) == (issued["number"], "confirmed")


def test_someone_else_numbered_it_meanwhile_so_ours_is_voided_with_the_reason(
    live_coordinator, tmp_path
):
    blue, iid, env, issued = kill_at_update_invoice(live_coordinator, tmp_path)
    admin_sets_number(blue, iid, "MANUAL-0042")  # by hand, while the agent was dead

    code, out, err = run_again(env)
    assert code == ExitCode.OK, err
    assert f"voided     invoice {iid}" in out
    assert blue.invoicenums()[iid] == "MANUAL-0042"  # never overwritten
    (entry,) = live_coordinator.ledger()
    assert entry["status"] == "void"
    assert "MANUAL-0042" in entry["void_reason"] and "never used" in entry["void_reason"]
    gaps = live_coordinator.request("GET", "/v1/sequences/invoice/gaps").json()["gaps"]
    assert any(g.get("number") == issued["number"] for g in gaps)


def test_the_invoice_was_deleted_meanwhile_so_ours_is_voided(live_coordinator, tmp_path):
    blue, iid, env, issued = kill_at_update_invoice(live_coordinator, tmp_path)
    blue.whmcs.delete_invoice(iid)

    code, out, err = run_again(env)
    assert code == ExitCode.OK, err
    (entry,) = live_coordinator.ledger()
    assert entry["status"] == "void" and "deleted" in entry["void_reason"]


def test_a_voided_number_is_never_replaced_by_a_second_one(live_coordinator, tmp_path):
    """The admin removes the hand-typed number again: the invoice may not get a new number."""
    blue, iid, env, issued = kill_at_update_invoice(live_coordinator, tmp_path)
    admin_sets_number(blue, iid, "MANUAL-0042")
    assert run_again(env)[0] == ExitCode.OK
    admin_sets_number(blue, iid, "")

    code, out, err = run_again(env)
    assert code == ExitCode.INCOMPLETE
    assert f"invoice {iid}: not done (conflict)" in err and "voided" in err
    assert blue.invoicenums()[iid] == ""
    (entry,) = live_coordinator.ledger()  # still only the one, void, number
    assert entry["status"] == "void"
