"""The agent's batch allocation against the real coordinator: client method and CLI."""

from __future__ import annotations

import datetime as dt
import json
import logging

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


class _Counting(Client):
    """A real client that counts batch and single allocation requests."""

    batches: list[int]
    singles: list[str]

    def allocate_batch(self, items):
        self.batches.append(len(items))
        return super().allocate_batch(items)

    def allocate(self, document, reference, date=None):
        self.singles.append(str(reference))
        return super().allocate(document, reference, date)


def _poll(blue, tmp_path, page_size, number_on="paid"):
    from agent import Journal, Poller, WhmcsClient

    config = blue.agent_config(tmp_path / "j.sqlite3")
    with (
        _Counting(config) as client,
        WhmcsClient(blue.whmcs_url, blue.identifier, blue.secret) as whmcs,
        Journal(config.journal) as journal,
    ):
        client.batches, client.singles = [], []
        report = Poller(client, whmcs, journal, page_size=page_size, number_on=number_on).run()
    return report, client


def test_poller_takes_a_page_of_numbers_in_one_batch(live_coordinator, tmp_path) -> None:
    blue = live_coordinator.register("blue")
    eur = blue.whmcs.add_client("EUR")
    made = [blue.whmcs.add_invoice(userid=eur, status="Paid", subtotal="10.00", date=TODAY)
            for _ in range(5)]
    report, client = _poll(blue, tmp_path, page_size=3)
    assert report.ok
    assert client.batches == [3, 2] and client.singles == []
    nums = blue.invoicenums()
    assert all(nums[i] for i in made) and len({nums[i] for i in made}) == 5
    assert [e["status"] for e in live_coordinator.ledger("invoice")] == ["confirmed"] * 5


def test_poller_falls_back_to_single_allocations_when_a_batch_is_refused(
        live_coordinator, tmp_path, caplog) -> None:
    blue = live_coordinator.register("blue")
    eur = blue.whmcs.add_client("EUR")
    last_year = TODAY.replace(year=TODAY.year - 1, month=6, day=1)
    bad = blue.whmcs.add_invoice(userid=eur, status="Paid", subtotal="10.00", date=TODAY)
    good = blue.whmcs.add_invoice(userid=eur, status="Paid", subtotal="10.00", date=TODAY)
    # The coordinator already numbered `bad` in another period: its batch item is refused.
    with Client(url=live_coordinator.url, token=blue.token) as client:
        client.allocate("invoice", str(bad), last_year)
    caplog.set_level(logging.INFO, logger="agent")
    report, client = _poll(blue, tmp_path, page_size=10)
    assert client.batches == [2] and sorted(client.singles) == sorted([str(bad), str(good)])
    # The log says why the batch was not taken: the coordinator's refusal of the bad item.
    said = [r.getMessage() for r in caplog.records if r.name == "agent.poller"]
    assert [m for m in said if m.startswith("batch of 2 numbers not taken (Item 0 cannot be")
            and m.endswith(" (HTTP 409)); taking them one by one")] != []
    failed = [o.reference for o in report.outcomes if o.action == "failed"]
    assert failed == [str(bad)]
    nums = blue.invoicenums()
    assert nums[good] and not nums[bad]


def test_created_mode_takes_the_numbers_of_unpaid_invoices_in_one_batch(
        live_coordinator, tmp_path) -> None:
    """`number_on = "created"`: an invoice needs its number once issued, paid or not, so the
    page's batch holds the unpaid ones too."""
    blue = live_coordinator.register("blue")
    eur = blue.whmcs.add_client("EUR")
    made = [blue.whmcs.add_invoice(userid=eur, status="Unpaid", subtotal="10.00", date=TODAY)
            for _ in range(2)]
    report, client = _poll(blue, tmp_path, page_size=10, number_on="created")
    assert report.ok
    assert client.batches == [2] and client.singles == []
    assert all(blue.invoicenums()[i] for i in made)


def test_numbers_of_a_batch_below_one_received_before_are_not_written(
        live_coordinator, tmp_path) -> None:
    """The backwards check holds for a page's batch as for a single number: this installation
    received a higher number before (the coordinator restored from an old backup since), so
    the run stops before writing any of the batch's numbers."""
    from agent import Journal
    from agent._models import Allocation

    blue = live_coordinator.register("blue")
    eur = blue.whmcs.add_client("EUR")
    made = [blue.whmcs.add_invoice(userid=eur, status="Paid", subtotal="10.00", date=TODAY)
            for _ in range(2)]
    with Client(url=live_coordinator.url, token=blue.token) as client:
        taken = client.allocate("invoice", "elsewhere", TODAY)
    lost = Allocation.from_json({**taken.raw, "number": 1000, "reference": "lost",
                                 "formatted": f"{taken.formatted}-lost"})
    with Journal(blue.agent_config(tmp_path / "j.sqlite3").journal) as journal:
        journal.receive(lost, before=journal.mark())
    report, client = _poll(blue, tmp_path, page_size=10)
    assert client.batches == [2]
    assert report.aborted is not None and report.aborted.kind == "backwards"
    assert [blue.invoicenums()[i] for i in made] == ["", ""]
