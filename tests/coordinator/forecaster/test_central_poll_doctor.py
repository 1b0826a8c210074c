"""What the central poll knows about itself, and what ``invoice-sync doctor`` says of it: the
API role's missing actions read from WHMCS's exact answers, failures, a poll nobody runs. On a
real Valkey and the project's fake WHMCS over HTTP."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from agent import WhmcsClient
from coordinator.cli import main
from coordinator.forecaster import central_poll, poll_access
from coordinator.ops import doctor

from .conftest import IDENT, SECRET


@pytest.fixture
def blue(fake, register):
    register("blue", fake, central_poll=True, central_poll_minutes=5)
    return fake.app


@pytest.fixture
def poll(redis_client, settings, tmp_path):
    config = {**settings, "CENTRAL_POLL_DIR": str(tmp_path / "journals")}
    return lambda name="blue", **kw: central_poll.run(redis_client, name, config, **kw)


@pytest.fixture
def whmcs(fake):
    client = WhmcsClient(fake.url, IDENT, SECRET)
    yield client
    client.close()


def run_doctor(valkey, secret_key):
    return CliRunner().invoke(main, ["doctor"], env={
        "INVOICE_SYNC_REDIS_URL": valkey.url, "INVOICE_SYNC_SECRET_KEYS": secret_key,
        "INVOICE_SYNC_ADMIN_TOKEN": "isa_doctor-test"})


def forbidden(message: str) -> dict:
    """An HTTP 403 JSON answer with ``message`` (fake_whmcs's raw-answer fault)."""
    return {"kind": "status", "status": 403, "content_type": "application/json",
            "body": json.dumps({"result": "error", "message": message})}


# -- the probe: WHMCS's exact answer, never a look-alike ----------------------------------------


def test_the_probe_names_each_action_the_role_refuses(fake, whmcs) -> None:
    fake.app.allowed_actions = {"getinvoices"}
    assert poll_access.probe(whmcs) == poll_access.Access(("GetInvoice", "UpdateInvoice"))
    fake.app.allowed_actions = {"getinvoices", "getinvoice", "updateinvoice"}
    assert poll_access.probe(whmcs) == poll_access.Access(())
    fake.app.allowed_actions = set()
    assert poll_access.probe(whmcs).missing == poll_access.NEEDED


@pytest.mark.parametrize("message", [
    'Invalid Permissions: API action "updateinvoice" is not allowed for IP 203.0.113.7',
    'Invalid Permissions: API action "getinvoice" is not allowed',  # names another action
    'invalid permissions: api action "updateinvoice" is not allowed',
    "Invalid Permissions",
])
def test_an_answer_that_only_looks_like_a_missing_permission_is_not_one(
    fake, whmcs, message
) -> None:
    fake.app.inject_fault(action="UpdateInvoice", **forbidden(message))
    access = poll_access.probe(whmcs)
    assert access.missing == ()
    assert access.problem is not None and message in access.problem


def test_other_refusals_stop_the_probe_and_say_what_they_are(fake, whmcs) -> None:
    fake.app.allowed_ips = {"203.0.113.99"}
    access = poll_access.probe(whmcs)
    assert access.missing == ()
    assert "refused API calls from IP 127.0.0.1" in access.problem


# -- the poll records it ------------------------------------------------------------------------


def test_a_poll_records_the_missing_actions_and_takes_no_number(
    blue, poll, redis_client
) -> None:
    blue.add_invoice(status="Paid", subtotal="10.00")
    blue.allowed_actions = {"getinvoices"}
    first = poll()
    assert first["state"] == "failed" and first["numbered"] == 0
    assert first["missing_actions"] == ["GetInvoice", "UpdateInvoice"]
    assert 'WHMCS answered: Invalid Permissions: API action "getinvoice" is not allowed' in (
        first["message"])
    assert "No number was taken" in first["message"]
    assert [u for u in blue.invoices_snapshot() if u["invoicenum"]] == []
    assert poll()["failures"] == 2

    blue.allowed_actions = None
    fixed = poll()
    assert fixed["state"] == "done" and fixed["numbered"] == 1
    assert fixed["missing_actions"] == [] and fixed["failures"] == 0
    assert fixed["last_ok_at"] == fixed["at"]


def test_a_role_changed_after_a_good_run_is_named_by_the_failing_run(blue, poll) -> None:
    assert poll()["state"] == "done"  # the first run probed: nothing missing
    blue.allowed_actions = {"getinvoices", "getinvoice"}
    blue.add_invoice(status="Paid", subtotal="10.00")
    failed = poll()  # not due for a probe; the poller fails, then the probe says why
    assert failed["state"] == "failed"
    assert failed["missing_actions"] == ["UpdateInvoice"]


def test_a_good_run_probes_the_role_again_only_after_a_day(blue, poll) -> None:
    now = dt.datetime.now(dt.UTC)
    first = poll(clock=lambda: now)
    assert first["access_checked_at"] == first["at"]
    later = now + dt.timedelta(hours=1)
    assert poll(clock=lambda: later)["access_checked_at"] == first["access_checked_at"]
    next_day = now + dt.timedelta(seconds=poll_access.RECHECK_SECONDS)
    again = poll(clock=lambda: next_day)
    assert again["access_checked_at"] == again["at"] != first["at"]


# -- doctor -------------------------------------------------------------------------------------


def test_doctor_fails_naming_the_missing_actions_and_passes_once_they_are_given(
    blue, poll, valkey, secret_key
) -> None:
    blue.allowed_actions = {"getinvoices"}
    poll()
    result = run_doctor(valkey, secret_key)
    assert result.exit_code == 1, result.output
    line = next(line for line in result.output.splitlines() if "central poll blue" in line)
    assert line.startswith("✗ central poll blue: the API role of the system's WHMCS "
                           "credentials lacks GetInvoice, UpdateInvoice")
    assert "fix: give that API role GetInvoice, UpdateInvoice" in result.output
    assert "1 problem(s) found" in result.output

    blue.allowed_actions = None
    poll()
    result = run_doctor(valkey, secret_key)
    assert result.exit_code == 0, result.output
    assert "✓ central poll blue: last run " in result.output


def test_doctor_fails_on_a_poll_that_fails_for_another_reason(
    blue, poll, valkey, secret_key
) -> None:
    blue.secret = "changed-in-whmcs"  # the stored credentials no longer work
    poll()
    poll()
    result = run_doctor(valkey, secret_key)
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if "central poll blue" in line)
    assert "failed (2 in a row, last success never)" in line
    assert "Invalid or missing credentials" in line


def test_doctor_fails_when_nobody_runs_the_poll(blue, poll, redis_client) -> None:
    last = poll()
    ran = dt.datetime.fromisoformat(last["at"].replace("Z", "+00:00"))
    (on_time,) = doctor.central_poll_checks(redis_client, ran + dt.timedelta(minutes=5))
    assert on_time.ok
    (late,) = doctor.central_poll_checks(redis_client, ran + dt.timedelta(hours=2))
    assert not late.ok and "120 min ago, but it is due every 5 min" in late.detail
    assert "--with-scheduler" in late.fix


def test_doctor_says_a_poll_has_not_run_yet_without_failing(blue, redis_client, fake,
                                                            register) -> None:
    register("red", fake, central_poll=False)
    (check,) = doctor.central_poll_checks(redis_client, dt.datetime.now(dt.UTC))
    assert check.name == "central poll blue" and check.ok and check.warning
    assert "no run yet" in check.detail


def test_the_systems_status_names_the_missing_actions(blue, poll, client, admin) -> None:
    blue.allowed_actions = {"getinvoices", "getinvoice"}
    poll()
    shown = client.get("/v1/systems/blue", headers=admin).get_json()["central_poll_last"]
    assert shown["missing_actions"] == ["UpdateInvoice"]
    assert shown["failures"] == 1 and shown["last_ok_at"] is None
    assert shown["access_checked_at"] == shown["at"] and shown["access_problem"] is None
