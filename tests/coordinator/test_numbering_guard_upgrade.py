"""Upgrade from the release before the numbering guard (0523a88): its data dir, made by that
release's own code on a real Valkey, gets the ``initialised`` marker at the first ``serve``
(or the first allocation) without renumbering — every series continues where it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import keys
from coordinator.app import create_app
from coordinator.numbering import guard
from tests.support import release_data_dir, snapshot, upgraded_copy

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = "0523a88"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> tuple[Path, dict]:
    """A stopped Valkey data dir filled by the previous release's code, and what it did."""
    return release_data_dir(PREVIOUS_RELEASE, HERE / "guard_release.py", tmp_path_factory)


@pytest.fixture
def upgraded(release_dir, tmp_path):
    source, done = release_dir
    with upgraded_copy(source, tmp_path) as (server, client):
        # The premise: that release wrote no guard at all.
        assert not list(client.scan_iter(match="*:guard"))
        yield server, client, done


def _take(http, token: str, reference: str) -> dict:
    answer = http.post("/v1/allocations", headers={"Authorization": f"Bearer {token}"},
                       json={"document": "invoice", "reference": reference,
                             "date": "2026-03-05"})
    assert answer.status_code in (200, 201), answer.get_json()
    return answer.get_json()


def test_serve_adopts_the_previous_release_s_numbering_without_renumbering(upgraded, capsys):
    from coordinator.cli import _check_numbering

    server, client, done = upgraded
    before = snapshot(client)
    _check_numbering(client, new_store=False)  # what serve does at start on this data dir
    assert capsys.readouterr().err == ""  # no series is refused
    after = snapshot(client)
    added = set(after) - set(before)
    assert added == {keys.seq_guard(seq, name).encode() for name in ("default", "eu", "us")
                     for seq in ("invoice", "credit_note")}
    assert {k: v for k, v in after.items() if k not in added} == before  # nothing else moved
    for name in ("default", "eu", "us"):
        assert guard.is_initialised(client, name)

    http = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
    tokens = done["tokens"]
    assert _take(http, tokens["blue"], "a2")["number"] == 2  # a replay keeps its number
    assert _take(http, tokens["blue"], "new")["number"] == 4
    assert _take(http, tokens["green"], "new")["number"] == 100
    assert _take(http, tokens["white"], "new")["number"] == 1


def test_the_first_allocation_adopts_it_too_when_serve_did_not_run(upgraded):
    server, client, done = upgraded
    http = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
    tokens = done["tokens"]
    assert _take(http, tokens["green"], "new")["number"] == 100
    assert _take(http, tokens["blue"], "new")["number"] == 4
    reason = client.hget(keys.seq_guard("invoice", "eu"), guard.INITIALISED)
    assert reason.endswith("numbering of the previous release (issued or set)")
