"""The poller pays for what is new: WHMCS API calls per poll on an installation of 10,000.

An idle poll must cost at most three calls whatever the installation's size, and numbering k
invoices O(k) calls; and the cheap polls must still find every invoice the rules say needs a
number (paid later, refunded, credit notes, drafts published, created mode) — checked against
a full read of WHMCS afterwards. The fake WHMCS orders ties the way MySQL may (a new order on
every request), and counts every call it receives.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import Client, Journal, Poller, WhmcsClient
from agent._poller import needs_number
from agent.whmcs import WhmcsInvoice
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs

from .conftest import TOKEN, FakeCoordinator

pytestmark = pytest.mark.integration

SIZE = 10_000
TODAY = dt.date.today()


class Site:
    def __init__(self, whmcs: FakeWhmcs, url: str, coordinator: FakeCoordinator, tmp: Path):
        self.whmcs, self.url, self.coordinator, self.tmp = whmcs, url, coordinator, tmp

    def poll(self, number_on: str = "paid", *, full: bool = False):
        """Run one poll; return its report (``whmcs_calls`` counted by the agent's client)."""
        before = sum(self.whmcs.calls.values())
        with (
            Client(url=self.coordinator.url, token=TOKEN) as client,
            WhmcsClient(self.url, self.whmcs.identifier, self.whmcs.secret) as whmcs,
            Journal(self.tmp / f"{number_on}.sqlite3") as journal,
        ):
            report = Poller(client, whmcs, journal, number_on=number_on).run(full=full)
        # What WHMCS received equals what the agent counted: no call goes uncounted.
        assert sum(self.whmcs.calls.values()) - before == report.whmcs_calls
        assert report.ok, (report.aborted, report.of("failed"))
        return report

    def unnumbered_needing(self, number_on: str) -> list[int]:
        """Invoices the rules say need a number and that have none, read straight from WHMCS."""
        return [
            row["id"] for row in self.whmcs.invoices_snapshot()
            if needs_number(WhmcsInvoice.from_api(row), number_on)
        ]


@pytest.fixture
def site(coordinator: FakeCoordinator, tmp_path: Path) -> Iterator[Site]:
    whmcs = FakeWhmcs("ident-cost", "secret-cost-0123456789", shuffle_ties=True)
    # Every paid invoice of the seed numbered (by the hook, say): what is new is made below.
    whmcs.seed(SIZE, seed=13, unnumbered_paid_share=0.0)
    with serve_fake_whmcs(whmcs) as server:
        yield Site(whmcs, server.url, coordinator, tmp_path)


def unpaid(site: Site, count: int) -> list[int]:
    ids = [r["id"] for r in site.whmcs.invoices_snapshot() if r["status"] == "Unpaid"]
    assert len(ids) >= count
    return ids[:count]


def test_paid_mode_idle_costs_three_calls_and_finds_every_change(site: Site, capsys) -> None:
    first = site.poll()
    assert first.full and first.outcomes == [] and first.seen == SIZE
    assert site.unnumbered_needing("paid") == []

    idle = site.poll()
    assert not idle.full and idle.outcomes == []
    assert idle.whmcs_calls <= 3

    # k changes, each of a kind the rules number in paid mode.
    paid_later, refunded = unpaid(site, 2)
    site.whmcs.set_status(paid_later, "Paid")
    site.whmcs.set_status(refunded, "Refunded")
    credit_note = site.whmcs.add_invoice(status="Unpaid", subtotal="-40.00", date=TODAY)
    new_paid = site.whmcs.add_invoice(status="Paid", subtotal="15.00", date=TODAY)
    draft_credit = site.whmcs.add_invoice(status="Draft", subtotal="-5.00", date=TODAY)
    draft = site.whmcs.add_invoice(status="Draft", subtotal="9.00", date=TODAY)
    changed = site.poll()
    numbered = {int(o.reference) for o in changed.of("numbered")}
    assert numbered == {paid_later, refunded, credit_note, new_paid}
    k = len(numbered)
    assert changed.whmcs_calls <= 5 + 3 * k  # lists, the access check, read/write/read each

    site.whmcs.set_status(draft_credit, "Unpaid")  # the draft credit note is published
    site.whmcs.set_status(draft, "Unpaid")  # a draft invoice published: no number until paid
    published = site.poll()
    assert {int(o.reference) for o in published.of("numbered")} == {draft_credit}
    site.whmcs.set_status(draft, "Paid")
    assert {int(o.reference) for o in site.poll().of("numbered")} == {draft}

    idle_again = site.poll()
    assert idle_again.whmcs_calls <= 3 and idle_again.outcomes == []
    assert idle_again.seen == 0  # the invoices created since the first poll are not read again
    # A full read finds nothing the cheap polls missed.
    assert site.unnumbered_needing("paid") == []
    assert site.poll(full=True).outcomes == []
    with capsys.disabled():
        print(f"\n[poller cost] {SIZE} invoices, paid mode: first run {first.whmcs_calls} "
              f"calls, idle {idle.whmcs_calls}, {k} changes {changed.whmcs_calls}, "
              f"idle again {idle_again.whmcs_calls}")


def test_paid_mode_numbering_many_costs_o_of_k(site: Site, capsys) -> None:
    site.poll()
    k = 130  # more than a page of 100, all tying on an empty invoicenum
    for invoice_id in unpaid(site, k):
        site.whmcs.set_status(invoice_id, "Paid")
    report = site.poll()
    assert len(report.of("numbered")) == k
    assert report.allocations == k  # one per invoice numbered, batched or not
    per_invoice = 3  # GetInvoice before the write, UpdateInvoice, GetInvoice to read it back
    assert report.whmcs_calls <= per_invoice * k + 2 + 3 + k // 100 + 2
    assert site.unnumbered_needing("paid") == []
    with capsys.disabled():
        print(f"\n[poller cost] {SIZE} invoices, {k} paid later: {report.whmcs_calls} calls")


def test_created_mode_idle_and_drafts(site: Site, capsys) -> None:
    # Created mode: every issued invoice has had a number since it was created (the hook).
    for row in site.whmcs.invoices_snapshot():
        if row["status"] != "Draft" and not row["invoicenum"]:
            site.whmcs.set_invoicenum(row["id"], f"OLD-{row['id']}")
    drafts = [r["id"] for r in site.whmcs.invoices_snapshot() if r["status"] == "Draft"]
    assert len(drafts) > 100
    first = site.poll("created")
    assert first.full and first.outcomes == []

    idle = site.poll("created")
    assert idle.whmcs_calls <= 3 and idle.outcomes == []

    site.whmcs.set_status(drafts[0], "Unpaid")  # published
    site.whmcs.set_status(drafts[1], "Cancelled")  # cancelled straight from draft
    site.whmcs.delete_invoice(drafts[2])
    created = site.whmcs.add_invoice(status="Unpaid", subtotal="12.00", date=TODAY)
    report = site.poll("created")
    assert {int(o.reference) for o in report.of("numbered")} == {drafts[0], drafts[1], created}
    # The new ids, the count of drafts and (it changed) their listing; then only the three
    # drafts gone are read, not every watched one; the access check; 3 calls per number.
    draft_pages = len(drafts) // 100 + 2
    assert report.whmcs_calls <= 2 + draft_pages + 3 + 2 + 3 * 3
    assert site.unnumbered_needing("created") == []
    # A new draft costs an idle poll nothing more: read with the new ids, counted, not listed.
    site.whmcs.add_invoice(status="Draft", subtotal="7.00", date=TODAY)
    again = site.poll("created")
    assert again.whmcs_calls <= 3 and again.outcomes == []
    assert site.poll("created", full=True).outcomes == []
    with capsys.disabled():
        print(f"\n[poller cost] {SIZE} invoices, created mode, {len(drafts)} drafts watched: "
              f"idle {idle.whmcs_calls} calls, 3 changes {report.whmcs_calls}")
