"""A number voided by mistake, reissued by an admin, written by the real poller into the fake
WHMCS: the way out of a void, end to end over HTTP."""

from __future__ import annotations

import datetime as dt

import pytest

from agent import Client, ExitCode

from .e2e_support import run_cli

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


def test_a_voided_number_reissued_by_an_admin_is_written_by_the_next_poll(
    live_coordinator, tmp_path, monkeypatch, capsys
) -> None:
    blue = live_coordinator.register("blue")
    invoice = blue.whmcs.add_invoice(userid=blue.whmcs.add_client("EUR"), status="Paid",
                                     subtotal="100.00", date=TODAY)
    env = blue.agent_env(tmp_path / "journal.sqlite3")
    # The hook took a number and died before writing it; an admin then voided it by mistake.
    with Client(blue.agent_config(tmp_path / "hook.sqlite3")) as client:
        lost = client.allocate("invoice", str(invoice), TODAY)
    voided = live_coordinator.request("POST", f"/v1/allocations/{lost.id}/void",
                                      json={"reason": "thought unused"})
    assert voided.status_code == 200

    # The poller cannot number the invoice: one document, one number, and that one is void.
    assert run_cli(monkeypatch, env, "poll") == ExitCode.INCOMPLETE
    assert f"/v1/allocations/{lost.id}/reissue" in capsys.readouterr().err
    assert blue.invoicenums()[invoice] == ""

    reissued = live_coordinator.request("POST", f"/v1/allocations/{lost.id}/reissue",
                                        json={"reason": "voided by mistake, ticket 812"})
    assert reissued.status_code == 201, reissued.text
    new = reissued.json()

    assert run_cli(monkeypatch, env, "poll") == ExitCode.OK
    assert blue.invoicenums()[invoice] == new["formatted"] != lost.formatted
    ledger = {e["id"]: e for e in live_coordinator.ledger("invoice")}
    assert ledger[lost.id]["status"] == "void"
    assert ledger[lost.id]["reissued_as"] == new["id"]
    assert ledger[new["id"]]["status"] == "confirmed"
    assert ledger[new["id"]]["reissue_of"] == lost.id
    verify = live_coordinator.request(
        "GET", "/v1/series/default/sequences/invoice/ledger/verify").json()
    assert verify["ok"] is True
    assert verify["events"] == 4  # issued, voided, reissued, confirmed
