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
    # The CLI names a series without the API's schema: the domain's own refusals, whole.
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
    assert first.output.splitlines()[-1].startswith("moved 1 key(s) with 0 ledger entries")
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == "41"
    assert redis_client.hget(keys.seq_settings("invoice"), "format") == "A-{YEAR}-{NUMBER}"
    again = run("migrate").output.splitlines()[-1]
    assert again == "numbering data is already in the series layout"
