"""Central poll: the coordinator numbers what a system's hooks missed, on a real Valkey and a
fake WHMCS over HTTP, through the agent's own poller and the real numbering domain."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coordinator import keys
from coordinator.cli import main
from coordinator.forecaster import central_poll
from coordinator.numbering import iter_ledger
from coordinator.warnings import store as warnings

YEAR = str(dt.date.today().year)


@pytest.fixture
def blue(fake, register):
    register("blue", fake, central_poll=True)
    return fake.app


@pytest.fixture
def poll(redis_client, settings, tmp_path):
    config = {**settings, "CENTRAL_POLL_DIR": str(tmp_path / "journals")}
    return lambda name="blue", **kw: central_poll.run(redis_client, name, config, **kw)


def numbers(whmcs) -> dict[int, str]:
    return {int(r["id"]): r["invoicenum"] for r in whmcs.invoices_snapshot()}


def ledger(client, sequence: str = "invoice") -> list[dict]:
    return list(iter_ledger(client, sequence, YEAR))


def test_it_numbers_what_the_hooks_missed_and_a_second_run_changes_nothing(
    blue, poll, redis_client
) -> None:
    paid = [blue.add_invoice(status="Paid", subtotal="10.00") for _ in range(3)]
    unpaid = blue.add_invoice(status="Unpaid", subtotal="5.00")
    numbered = blue.add_invoice(status="Paid", subtotal="7.00", invoicenum="OLD-1")
    credit = blue.add_invoice(status="Paid", subtotal="-4.00")

    outcome = poll()
    assert outcome["state"] == "done" and outcome["numbered"] == 4
    after = numbers(blue)
    assert [after[i] for i in paid] == [f"INV-{YEAR}-00000{n}" for n in (1, 2, 3)]
    assert after[credit] == f"CN-{YEAR}-000001"
    assert after[unpaid] == "" and after[numbered] == "OLD-1"
    entries = ledger(redis_client) + ledger(redis_client, "credit_note")
    assert {e["status"] for e in entries} == {"confirmed"}
    assert {e["system"] for e in entries} == {"blue"}

    again = poll()
    assert again["state"] == "done" and again["numbered"] == 0
    assert numbers(blue) == after
    assert len(ledger(redis_client)) == 3


def test_the_poll_seals_the_chain_events_it_appends(blue, poll, redis_client) -> None:
    """What the central poll numbers is in the hash chain as soon as it ran, as after an
    HTTP allocation: no event waits for the next verify to be sealed."""
    blue.add_invoice(status="Paid", subtotal="10.00")
    blue.add_invoice(status="Paid", subtotal="-4.00")
    assert poll()["numbered"] == 2
    for sequence in ("invoice", "credit_note"):
        events = redis_client.llen(keys.seq_events(sequence))
        assert events >= 2  # issued and confirmed
        assert redis_client.llen(keys.seq_chain(sequence)) == events


def test_a_role_that_may_not_write_takes_no_number_and_says_why(
    blue, poll, redis_client, client, admin
) -> None:
    invoice = blue.add_invoice(status="Paid", subtotal="10.00")
    blue.allowed_actions = {"getinvoices", "getinvoice"}

    outcome = poll()
    assert outcome["state"] == "failed"
    assert 'API action "updateinvoice" is not allowed' in outcome["message"]
    assert ledger(redis_client) == []
    assert numbers(blue)[invoice] == ""
    shown = client.get("/v1/systems/blue", headers=admin).get_json()["central_poll_last"]
    assert shown["state"] == "failed" and "updateinvoice" in shown["message"]
    raised = [w for w in warnings.list_warnings(redis_client)
              if w["type"] == warnings.CENTRAL_POLL_FAILED]
    assert len(raised) == 1 and raised[0]["system"] == "blue"

    blue.allowed_actions = None  # the admin gives the role UpdateInvoice
    assert poll()["state"] == "done"
    assert numbers(blue)[invoice] == f"INV-{YEAR}-000001"


def test_number_on_created_follows_the_systems_setting(fake, register, poll) -> None:
    register("red", fake, central_poll=True, number_on="created")
    unpaid = fake.app.add_invoice(status="Unpaid", subtotal="5.00")
    draft = fake.app.add_invoice(status="Draft", subtotal="5.00")
    assert poll("red")["numbered"] == 1
    assert numbers(fake.app)[unpaid] == f"INV-{YEAR}-000001"
    assert numbers(fake.app)[draft] == ""


def test_one_poll_of_a_system_at_a_time(blue, poll, redis_client) -> None:
    from coordinator import keys
    from coordinator.exceptions import Conflict

    redis_client.set(keys.sys_central_poll_lock("blue"), "another-worker")
    with pytest.raises(Conflict):
        poll()
    assert redis_client.get(keys.sys_central_poll_lock("blue")) == "another-worker"


def test_the_scheduler_queues_each_opted_in_system_once_per_interval(
    fake, register, redis_client, work, settings, monkeypatch, tmp_path
) -> None:
    register("blue", fake, central_poll=True, central_poll_minutes=5)
    register("red", fake, central_poll=False)
    invoice = fake.app.add_invoice(status="Paid", subtotal="10.00")
    monkeypatch.setenv("INVOICE_SYNC_CENTRAL_POLL_DIR", str(tmp_path / "journals"))

    assert central_poll.due(redis_client) == ["blue"]
    assert central_poll.due(redis_client) == []  # not due again before 5 minutes
    work()
    assert numbers(fake.app)[invoice] == f"INV-{YEAR}-000001"
    assert central_poll.status(redis_client, "blue")["state"] == "done"
    assert central_poll.status(redis_client, "red") is None


def test_systems_api_takes_and_shows_the_central_poll_settings(client, admin, fake) -> None:
    body = {"name": "green", "url": fake.url, "api_identifier": "i", "api_secret": "s",
            "central_poll": True, "central_poll_minutes": 15}
    created = client.post("/v1/systems", json=body, headers=admin)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["central_poll"] is True
    assert created.get_json()["number_on"] == "paid"
    changed = client.patch("/v1/systems/green", headers=admin,
                           json={"number_on": "created", "central_poll_minutes": 60})
    assert changed.status_code == 200
    shown = client.get("/v1/systems/green", headers=admin).get_json()
    assert (shown["number_on"], shown["central_poll_minutes"]) == ("created", 60)
    assert shown["central_poll_last"] is None
    refused = client.patch("/v1/systems/green", headers=admin, json={"number_on": "sometimes"})
    assert refused.status_code == 422
    assert client.get("/v1/systems/green", headers=admin).get_json()["number_on"] == "created"


def test_cli_polls_now_and_exits_1_when_invoices_are_left(
    blue, settings, tmp_path, monkeypatch, redis_client
) -> None:
    monkeypatch.setenv("INVOICE_SYNC_CENTRAL_POLL_DIR", str(tmp_path / "journals"))
    blue.add_invoice(status="Paid", subtotal="10.00")
    runner = CliRunner()
    result = runner.invoke(main, ["central-poll", "blue", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 numbered" in result.output
    blue.allowed_actions = {"getinvoices"}
    blue.add_invoice(status="Paid", subtotal="10.00")
    result = runner.invoke(main, ["central-poll", "blue", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert 'API action "getinvoice" is not allowed' in result.output
    assert central_poll.status(redis_client, "blue")["state"] == "failed"


def test_a_worker_keeps_the_poll_journals_in_its_data_dir(
    fake, register, redis_client, settings, tmp_path, monkeypatch
) -> None:
    """`invoice-sync worker --data-dir D` (and `serve`'s worker) journal under D/central-poll,
    wherever the worker was started; before, they went to <cwd>/invoice-sync-data."""
    monkeypatch.delenv("INVOICE_SYNC_CENTRAL_POLL_DIR", raising=False)
    monkeypatch.delenv("INVOICE_SYNC_DATA_DIR", raising=False)
    register("blue", fake, central_poll=True)
    invoice = fake.app.add_invoice(status="Paid", subtotal="10.00")
    assert central_poll.due(redis_client) == ["blue"]
    cwd, data_dir = tmp_path / "cwd", tmp_path / "data"
    cwd.mkdir()
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-m", "coordinator", "worker", "--burst",
                    "--data-dir", str(data_dir)], cwd=cwd, check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(root)},
                   capture_output=True)
    assert numbers(fake.app)[invoice] == f"INV-{YEAR}-000001"
    assert (data_dir / "central-poll" / "blue.journal.sqlite3").is_file()
    assert not (cwd / "invoice-sync-data").exists()
