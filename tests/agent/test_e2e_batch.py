"""The agent's batch allocation against the real coordinator: client method and CLI."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent import Client, CoordinatorRefused
from agent._cli import main

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


@pytest.fixture
def blue(live_coordinator):
    return live_coordinator.register("blue")


def test_allocate_batch_in_order_and_replayed_with_the_same_numbers(live_coordinator,
                                                                     blue) -> None:
    items = [("invoice", "1", TODAY), ("credit_note", "2", TODAY), ("invoice", "3", TODAY)]
    with Client(url=live_coordinator.url, token=blue.token) as client:
        first = client.allocate_batch(items)
        again = client.allocate_batch(items)
        single = client.allocate("invoice", "4", TODAY)
    assert [(a.document, a.reference, a.replay) for a in first] == [
        ("invoice", "1", False), ("credit_note", "2", False), ("invoice", "3", False)]
    assert again == first and all(a.replay for a in again)
    assert single.number == first[2].number + 1


def test_allocate_batch_refused_item_takes_nothing(live_coordinator, blue) -> None:
    with Client(url=live_coordinator.url, token=blue.token) as client:
        client.allocate("invoice", "old", dt.date(2025, 6, 1))
        with pytest.raises(CoordinatorRefused) as refused:
            client.allocate_batch([("invoice", "new", dt.date(2026, 6, 1)),
                                   ("invoice", "old", dt.date(2026, 6, 1))])
        assert refused.value.code == 409
        assert "1" in refused.value.errors["json"]["items"]
        # "new" got no number: the next one is the one after "old" in 2026's fresh period
        assert client.allocate("invoice", "new", dt.date(2026, 6, 1)).number == 1


def test_next_with_several_references_prints_one_number_per_line(
        live_coordinator, blue, monkeypatch, capsys) -> None:
    monkeypatch.setenv("INVOICE_SYNC_AGENT_URL", live_coordinator.url)
    monkeypatch.setenv("INVOICE_SYNC_AGENT_TOKEN", blue.token)
    day = "2026-11-21"
    assert main(["next", "invoice", "--reference", "a", "--reference", "b", "--date", day]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] != lines[1]
    assert main(["next", "invoice", "--reference", "a", "--reference", "b", "--date", day,
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [a["formatted"] for a in printed] == lines
    assert [a["reference"] for a in printed] == ["a", "b"]
