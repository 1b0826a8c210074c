"""``invoice-sync series create|list|show`` and ``invoice-sync migrate`` against a real Valkey."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from coordinator import keys
from coordinator.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def run(valkey, redis_client, monkeypatch):
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)

    def invoke(*args):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_series_commands(run, redis_client):
    created = run("series", "create", "acme-us", "--description", "ACME Inc. (US)")
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["description"] == "ACME Inc. (US)"
    # A refusal prints the message, then the field errors (JSON) when there are some. The CLI
    # names a series without the API's schema: these are the domain's own refusals.
    for args, output in (
            (("acme-us",), "Error: A series named 'acme-us' already exists\n"),
            (("default",), "Error: The series 'default' always exists\n"),
            (("ACME",),
             'Error: Validation failed {"json": {"name": ["Not a valid series name."]}}\n')):
        refused = run("series", "create", *args)
        assert (refused.exit_code, refused.output) == (1, output), args
    redis_client.hset(keys.system("orange"), mapping={"name": "orange", "url": "u",
                                                      "api_identifier": "i", "step": "1",
                                                      "exchange_rate": "1", "series": "acme-us",
                                                      "created_at": "t", "updated_at": "t"})
    redis_client.sadd(keys.SYSTEMS, "orange")
    listed = run("series", "list")
    assert listed.output.splitlines() == ["default\tThe default series\t-",
                                          "acme-us\tACME Inc. (US)\torange"]
    shown = json.loads(run("series", "show", "acme-us").output)
    assert shown["systems"] == ["orange"]
    assert [s["name"] for s in shown["sequences"]] == ["invoice", "credit_note"]
    for name, output in (("nope", "Error: No series 'nope'\n"),
                         ("No pe", "Error: No such series\n")):
        missing = run("series", "show", name)
        assert (missing.exit_code, missing.output) == (1, output), name


def test_migrate_command_is_idempotent(run, redis_client):
    redis_client.hset("{seq:invoice}:settings", mapping={
        "increment": "1", "format": "A-{YEAR}-{NUMBER}", "padding": "4", "reset": "yearly",
        "credit_notes": "0"})
    redis_client.set("{seq:invoice}:counter:2026", "41")
    first = run("migrate")
    # The last line: a JSON log line of the migration may come first when logging is set up.
    assert first.exit_code == 0
    assert first.output.splitlines()[-1] == ("moved 1 key(s) with 0 ledger entries into the "
                                             "series 'default'; removed 1 key(s) of the old "
                                             "layout")
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == "41"
    assert redis_client.hget(keys.seq_settings("invoice"), "format") == "A-{YEAR}-{NUMBER}"
    again = run("migrate").output.splitlines()[-1]
    assert again == "numbering data is already in the series layout"


def test_commands_say_what_is_wrong_before_touching_anything(run, monkeypatch, tmp_path):
    unknown = run("ledger", "verify", "--series", "nope")
    assert (unknown.exit_code, unknown.output) == (1, "Error: No series 'nope'\n")
    monkeypatch.setenv("INVOICE_SYNC_LEDGER_SIGNING_KEYS", "not-a-key")
    for command in ("verify", "checkpoint"):
        bad_key = run("ledger", command)
        assert (bad_key.exit_code, bad_key.output) == (
            1, "Error: INVOICE_SYNC_LEDGER_SIGNING_KEYS: key #1 is not an Ed25519 private key "
               "(32 url-safe base64-encoded bytes); make one with `invoice-sync ledger "
               "generate-key`\n"), command
    # No Redis configured and no `serve` in the data dir: where it looked, and what to do.
    monkeypatch.delenv("INVOICE_SYNC_REDIS_URL")
    for command in (["series", "list"], ["migrate"], ["ledger", "verify"]):
        alone = CliRunner().invoke(main, [*command, "--data-dir", str(tmp_path)])
        assert (alone.exit_code, alone.output) == (
            1, "Error: no Redis configured and no running `invoice-sync serve` at "
               f"{tmp_path.resolve()}/valkey/valkey.sock: start it (or pass its --data-dir), "
               "or set INVOICE_SYNC_REDIS_URL\n"), command
