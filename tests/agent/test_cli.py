"""invoice-sync-agent: output and the documented exit codes."""

from __future__ import annotations

import datetime as dt
import functools
import json
import socket
from pathlib import Path

import pytest

import agent._cli
from agent import Client, ExitCode
from agent._cli import main

from .conftest import FAST, TOKEN, FakeCoordinator, Sleeps

pytestmark = pytest.mark.usefixtures("agent_env")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    """Let the CLI's clients record their waits instead of sleeping."""
    monkeypatch.setattr(agent._cli, "Client", functools.partial(Client, retry=FAST, sleep=sleeps))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, coordinator: FakeCoordinator) -> FakeCoordinator:
    monkeypatch.setenv("INVOICE_SYNC_AGENT_URL", coordinator.url)
    monkeypatch.setenv("INVOICE_SYNC_AGENT_TOKEN", TOKEN)
    return coordinator


def test_next_prints_the_formatted_number(env: FakeCoordinator, capsys) -> None:
    assert main(["next", "invoice", "--reference", "10234", "--date", "2026-11-21"]) == 0
    assert capsys.readouterr().out == "INV-2026-000001\n"
    # the same reference again: the same number, still exit 0
    assert main(["next", "invoice", "--reference", "10234", "--date", "2026-11-21"]) == 0
    assert capsys.readouterr().out == "INV-2026-000001\n"


def test_next_json_then_confirm_and_void(env: FakeCoordinator, capsys) -> None:
    assert main(["next", "credit_note", "--reference", "7", "--json"]) == ExitCode.OK
    allocation = json.loads(capsys.readouterr().out)
    assert allocation["document"] == "credit_note" and allocation["status"] == "issued"
    code = main(["confirm", allocation["id"], "--invoicenum", allocation["formatted"]])
    assert code == ExitCode.OK
    assert capsys.readouterr().out == "confirmed\n"
    assert main(["next", "invoice", "--reference", "8"]) == 0
    capsys.readouterr()
    assert main(["get", allocation["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "confirmed"


def test_usage_errors_exit_2(env: FakeCoordinator, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["next", "receipt", "--reference", "1"])
    assert info.value.code == ExitCode.USAGE
    with pytest.raises(SystemExit) as info:
        main(["next", "invoice"])
    assert info.value.code == ExitCode.USAGE
    assert main(["next", "invoice", "--reference", "1", "--date", "21/11/2026"]) == ExitCode.USAGE
    assert main(["void", "invoice:2026:1", "--reason", " "]) == ExitCode.USAGE
    assert env.requests == []


def test_unreachable_exits_3_and_prints_no_number(capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(
        [
            "--url",
            f"http://127.0.0.1:{port}",
            "--token",
            TOKEN,
            "next",
            "invoice",
            "--reference",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert code == ExitCode.UNAVAILABLE
    assert out == ""
    assert "no answer" in err and TOKEN not in err


def test_unavailable_exits_3(env: FakeCoordinator, capsys) -> None:
    env.fail_next = [503] * FAST.attempts
    assert main(["next", "invoice", "--reference", "1"]) == ExitCode.UNAVAILABLE
    assert capsys.readouterr().out == ""


def test_refused_exits_4(env: FakeCoordinator, capsys, monkeypatch) -> None:
    assert main(["next", "invoice", "--reference", "1", "--date", "2026-01-01"]) == 0
    assert main(["next", "invoice", "--reference", "1", "--date", "2027-01-01"]) == 4
    assert "409" in capsys.readouterr().err
    monkeypatch.setenv("INVOICE_SYNC_AGENT_TOKEN", "wrong-token")
    assert main(["next", "invoice", "--reference", "2"]) == ExitCode.REFUSED
    assert "wrong-token" not in capsys.readouterr().err


def test_config_errors_exit_5(tmp_path: Path, capsys) -> None:
    assert main(["next", "invoice", "--reference", "1"]) == ExitCode.CONFIG
    assert "INVOICE_SYNC_AGENT_URL" in capsys.readouterr().err
    bad = tmp_path / "agent.toml"
    bad.write_text('url = "https://n.example"\nnumber_on = "never"\n')
    assert main(["--config", str(bad), "status"]) == ExitCode.CONFIG


def test_options_beat_environment_and_file(env: FakeCoordinator, tmp_path: Path, capsys) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('url = "https://elsewhere.example"\ntoken = "file-token"\n')
    assert main(["--config", str(file), "next", "invoice", "--reference", "3"]) == 0  # env wins
    capsys.readouterr()
    code = main(
        ["--config", str(file), "--token", "arg-token", "next", "invoice", "--reference", "3"]
    )
    assert code == ExitCode.REFUSED  # the argument's token was used


def test_status(env: FakeCoordinator, capsys) -> None:
    assert main(["status"]) == ExitCode.OK
    assert "token        accepted" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    env.ready = False
    assert main(["status"]) == ExitCode.UNAVAILABLE


def test_status_with_bad_token_exits_4(env: FakeCoordinator, monkeypatch) -> None:
    monkeypatch.setenv("INVOICE_SYNC_AGENT_TOKEN", "nope")
    assert main(["status"]) == ExitCode.REFUSED


def test_serve_answers_health_and_stops_cleanly_on_sigterm(
    env: FakeCoordinator, tmp_path: Path
) -> None:
    import http.client
    import os
    import re
    import subprocess
    import sys

    environ = {**os.environ, "INVOICE_SYNC_AGENT_JOURNAL": str(tmp_path / "j.sqlite3")}
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve", "--listen", "127.0.0.1:0"],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        host, port = re.search(r"listening on (\S+):(\d+)", line).groups()
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        process.terminate()
        code = process.wait(timeout=30)
        process.stderr.close()
    assert code == ExitCode.OK
    assert (tmp_path / "j.sqlite3").exists()


def test_serve_refuses_a_public_address(env: FakeCoordinator, capsys) -> None:
    assert main(["serve", "--listen", "0.0.0.0:0", "--no-journal"]) == ExitCode.CONFIG
    assert "allow-remote" in capsys.readouterr().err


def test_version_prints_the_installed_version_and_exits_0(capsys) -> None:
    from importlib import metadata

    for argv in (["--version"], ["poll", "--version"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert capsys.readouterr().out == f"invoice-sync-agent {metadata.version('invoice-sync')}\n"


def test_options_are_taken_before_or_after_the_command(
    coordinator: FakeCoordinator, capsys
) -> None:
    """No environment: the coordinator's URL and token come from the command line only."""
    common = ["--url", coordinator.url, "--token", TOKEN]
    assert main(["next", "invoice", "--reference", "1", *common]) == ExitCode.OK
    assert capsys.readouterr().out == f"INV-{dt.date.today().year}-000001\n"
    assert main([*common, "next", "invoice", "--reference", "1"]) == ExitCode.OK
    assert capsys.readouterr().out.endswith("-000001\n")  # the same reference: the same number
    # After the command wins over before it, like a later option over an earlier one.
    bad = ["--url", "http://127.0.0.1:9", "--token", TOKEN]
    assert main([*bad, "next", "invoice", "--reference", "2", "--url", coordinator.url]) == 0
    assert capsys.readouterr().out.endswith("-000002\n")
    # -v is taken on both sides; an option the command does not know is still refused.
    assert main(["-v", "next", "invoice", "--reference", "2", "-v", *common]) == ExitCode.OK
    with pytest.raises(SystemExit) as info:
        main(["next", "invoice", "--reference", "3", "--no-such-option", *common])
    assert info.value.code == ExitCode.USAGE


def test_next_refuses_a_number_below_one_this_installations_journal_holds(
    env: FakeCoordinator, tmp_path: Path, monkeypatch, capsys
) -> None:
    journal = tmp_path / "journal.sqlite3"
    monkeypatch.setenv("INVOICE_SYNC_AGENT_JOURNAL", str(journal))
    for reference in ("1", "2"):
        assert main(["next", "invoice", "--reference", reference]) == ExitCode.OK
    year = dt.date.today().year
    assert capsys.readouterr().out == f"INV-{year}-000001\nINV-{year}-000002\n"
    # Without a journal file nothing is remembered, so nothing is checked. With one (the
    # sidecar's and the poller's): the coordinator, restored from an old backup, starts at 2.
    from agent import Journal

    Journal(journal).close()
    assert main(["next", "invoice", "--reference", "3"]) == ExitCode.OK
    capsys.readouterr()
    with env.lock:
        env.counters[("invoice", str(year))] = 2
    assert main(["next", "invoice", "--reference", "4"]) == ExitCode.BACKWARDS
    out, err = capsys.readouterr()
    assert out == ""  # nothing printed to write into an invoice
    assert f"INV-{year}-000003 (3)" in err and "already received" in err
