"""Syncs of a WHMCS whose invoice list changes, or that pages wrongly, while a sync reads it
(mutation run, issue 17). The fake WHMCS over loopback HTTP, ``sync.run`` on the real Valkey."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import redis

from agent import WhmcsClient
from coordinator import keys
from coordinator.forecaster import lock, store, sync
from tests.coordinator.forecaster.conftest import IDENT, SECRET

pytestmark = pytest.mark.integration


class Meddled:
    """The system's WHMCS client; ``before(n)`` acts in WHMCS just before its n-th page request,
    and ``limitstart`` may be ignored as by a module or proxy rewriting requests."""

    def __init__(self, fake, before=lambda n: None, *, ignore_limitstart=False, grow=False):
        self.client = WhmcsClient(fake.url, IDENT, SECRET)
        self.before, self.ignore_limitstart, self.grow = before, ignore_limitstart, grow
        self.requests, self._lock = 0, threading.Lock()
        self.asked: list[tuple[int, int, dict]] = []  # (limitstart, limitnum, the rest)

    @property
    def calls(self) -> int:
        return self.client.calls

    def get_invoices(self, limitstart=0, limitnum=25, **kwargs):
        with self._lock:  # a full sync prefetches from other threads
            self.requests += 1
            assert self.requests <= 500, "the sync never stopped paging"
            self.asked.append((limitstart, limitnum, kwargs))
            self.before(self.requests)
            sent = limitnum + self.requests if self.grow else limitnum  # more rows than asked
        return self.client.get_invoices(0 if self.ignore_limitstart else limitstart, sent,
                                        **kwargs)


@pytest.mark.parametrize(("mode", "deleted", "before"), [
    ("full", 3, 4), ("missing", 3, 4),
    ("full", 24, 2),  # all but the last row read: that row is the first of the list now
])
def test_invoices_deleted_in_whmcs_while_a_sync_pages_make_it_miss_no_other(
    redis_client, fake, mode, deleted, before, monkeypatch
):
    ids = fake.app.seed(300, seed=11)
    # Invoices the sync has already read are deleted in WHMCS: every row after them moves up
    # that many places, past one page boundary at least. That takes one step back, which is
    # exactly what is tolerated here.
    monkeypatch.setattr(sync, "MAX_STEP_BACKS", 1)
    read_first = ids[:deleted] if mode == "full" else ids[-deleted:]
    source = Meddled(fake, lambda n: n == before and [fake.app.delete_invoice(i)
                                                      for i in read_first])
    sync.run(redis_client, "blue", mode, source, 25)
    stored = set(store.iter_stored_ids(redis_client, "blue"))
    still_in_whmcs = {i["id"] for i in fake.app.invoices_snapshot()}
    assert still_in_whmcs <= stored, sorted(still_in_whmcs - stored)
    assert stored - still_in_whmcs <= set(read_first)  # read before they went: the next full
    assert sync.high_water(redis_client, "blue") == max(ids)


def test_a_list_that_keeps_changing_fails_the_sync_instead_of_paging_for_ever(redis_client,
                                                                               fake):
    ids = fake.app.seed(400, seed=12)
    deleted = iter(ids)

    def delete_three(n):  # more rows go before each request than a page (2) steps back
        for _ in range(3):
            fake.app.delete_invoice(next(deleted))

    source = Meddled(fake, delete_three)
    with pytest.raises(sync.SyncError) as failed:
        sync.run(redis_client, "blue", "full", source, 2)
    assert failed.value.code == "whmcs_list_unstable"
    assert str(failed.value) == failed.value.message == (
        "WHMCS's invoice list kept changing while it was paged (invoices deleted during the "
        "sync); run the sync again.")
    assert sync.high_water(redis_client, "blue") == 0


def test_a_whmcs_that_ignores_limitstart_fails_a_full_sync_saying_so(redis_client, fake):
    fake.app.seed(60, seed=13)
    with pytest.raises(sync.SyncError) as failed:
        sync.run(redis_client, "blue", "full", Meddled(fake, ignore_limitstart=True), 25)
    assert failed.value.code == "whmcs_bad_response"
    assert failed.value.message == (
        "WHMCS answered GetInvoices limitstart=24 with rows it had already sent: it ignores "
        "limitstart, so paging cannot finish. Check for a module or proxy rewriting API "
        "requests.")
    assert sync.high_water(redis_client, "blue") == 0


def test_a_whmcs_that_ignores_limitstart_fails_a_missing_sync_too(redis_client, fake,
                                                                   monkeypatch):
    # Newest first, a page of rows already sent can also mean invoices were created meanwhile:
    # a missing sync gives up only after MAX_STALE_PAGES such pages (a few here).
    monkeypatch.setattr(sync, "MAX_STALE_PAGES", 3)
    fake.app.seed(60, seed=20)
    with pytest.raises(sync.SyncError) as failed:
        sync.run(redis_client, "blue", "missing", Meddled(fake, ignore_limitstart=True), 25)
    assert failed.value.code == "whmcs_bad_response"
    assert failed.value.message.startswith("WHMCS answered GetInvoices limitstart=96 with rows")
    assert sync.high_water(redis_client, "blue") == 0


def test_a_sync_that_lost_its_lock_stores_nothing_and_does_not_complete(redis_client, fake):
    fake.app.seed(30, seed=14)
    state = keys.sys_sync_state("blue")
    # The lock is another sync's before A's first write: A stores nothing.
    assert lock.acquire_queued(redis_client, "blue", "sync-b")
    with pytest.raises(lock.LockLost) as lost:
        sync.run(redis_client, "blue", "full", Meddled(fake), 25, owner="sync-a")
    assert str(lost.value) == "the sync lock of 'blue' is no longer held by sync sync-a"
    assert store.count(redis_client, "blue") == 0
    # The same for a missing sync, whose page reaching the stored invoices is written at once.
    sync.run(redis_client, "blue", "full", Meddled(fake), 25)
    fake.app.add_invoice(subtotal="5.00", status="Unpaid")
    with pytest.raises(lock.LockLost):
        sync.run(redis_client, "blue", "missing", Meddled(fake), 25, owner="sync-a")
    assert store.count(redis_client, "blue") == 30
    redis_client.delete(state)
    # A holds it while writing and loses it just before completing: what it wrote stays (the
    # next sync finds it unchanged), but the run is not recorded as complete.
    redis_client.delete(keys.sys_sync_lock("blue"))
    assert lock.acquire_queued(redis_client, "blue", "sync-a")

    def taken_over(progress):
        redis_client.delete(keys.sys_sync_lock("blue"))
        assert lock.acquire_queued(redis_client, "blue", "sync-b")

    with pytest.raises(lock.LockLost) as lost:
        sync.run(redis_client, "blue", "full", Meddled(fake), 25, owner="sync-a",
                 on_page=taken_over)
    assert str(lost.value) == "the sync lock of 'blue' is no longer held by sync-a"
    assert store.count(redis_client, "blue") == 31
    assert redis_client.hgetall(state) == {}
    # Lost before removing an invoice deleted in WHMCS: it stays (the next full sync removes it).
    gone = fake.app.invoices_snapshot()[0]["id"]
    fake.app.delete_invoice(gone)
    redis_client.delete(keys.sys_sync_lock("blue"))
    assert lock.acquire_queued(redis_client, "blue", "sync-a")
    with pytest.raises(lock.LockLost) as lost:
        sync.run(redis_client, "blue", "full", Meddled(fake), 25, owner="sync-a",
                 on_page=taken_over)
    assert str(lost.value) == "the sync lock of 'blue' is no longer held by sync sync-a"
    assert store.get(redis_client, "blue", gone) is not None


def test_a_takeover_in_the_instant_a_sync_completes_is_caught(redis_client, fake, monkeypatch):
    fake.app.seed(30, seed=15)
    assert lock.acquire_queued(redis_client, "blue", "sync-a")
    real_multi = redis.client.Pipeline.multi

    def multi(pipe):  # A has checked that it holds the lock; its MULTI/EXEC is still to come
        redis_client.set(keys.sys_sync_lock("blue"), "sync-b")
        real_multi(pipe)

    monkeypatch.setattr(redis.client.Pipeline, "multi", multi)
    with pytest.raises(lock.LockLost) as lost:
        sync.run(redis_client, "blue", "full", Meddled(fake), 25, owner="sync-a")
    assert str(lost.value) == "the sync lock of 'blue' changed while completing"
    assert redis_client.hgetall(keys.sys_sync_state("blue")) == {}


def test_a_completed_sync_records_its_mark_and_when_it_finished_in_utc(redis_client, fake):
    # The overview page and the last-success metric read these times back (state_metrics.py).
    ids = fake.app.seed(30, seed=16)
    state = keys.sys_sync_state("blue")
    sync.run(redis_client, "blue", "full", Meddled(fake), 25,
             clock=lambda: dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC))
    assert redis_client.hgetall(state) == {"high_water": str(max(ids)),
                                           "last_full_at": "2026-03-04T05:06:07Z"}
    sync.run(redis_client, "blue", "missing", Meddled(fake), 25,
             clock=lambda: dt.datetime(2026, 3, 5, 23, 59, 58, tzinfo=dt.UTC))
    assert redis_client.hgetall(state) == {"high_water": str(max(ids)),
                                           "last_full_at": "2026-03-04T05:06:07Z",
                                           "last_missing_at": "2026-03-05T23:59:58Z"}


def test_a_sync_pages_whmcs_in_id_order_whatever_its_default(redis_client, fake):
    # Paging relies on id order (WHMCS.md): it is asked for, never left to WHMCS's default.
    fake.app.seed(60, seed=17)
    for mode, order in (("full", "asc"), ("missing", "desc")):
        source = Meddled(fake)
        sync.run(redis_client, "blue", mode, source, 25)
        assert [kw for _, _, kw in source.asked] == [{"orderby": "id", "order": order}] * len(
            source.asked)
    # A full sync's progress expects every invoice, stored already or not.
    assert sync.run(redis_client, "blue", "full", Meddled(fake), 25).total_hint == 60
    # A step of 1 (the least a system may set) pages two rows at a time: the least that moves
    # on past the one row of overlap.
    for _ in range(3):
        fake.app.add_invoice(subtotal="1.00", status="Paid")
    source = Meddled(fake)
    progress = sync.run(redis_client, "blue", "missing", source, 1)
    # Its progress expects the invoices not yet stored: WHMCS's total less the 60 stored.
    assert (progress.pages, progress.invoices, progress.total_hint) == (3, 3, 3)
    assert {limitnum for _, limitnum, _ in source.asked} == {2}
    # ... and asks for nothing past the page that reaches the invoices already stored.
    assert [start for start, _, _ in source.asked] == [0, 1, 2]
    assert store.count(redis_client, "blue") == 63


@pytest.mark.parametrize("change", ["a page of new invoices", "the last row read replaced"])
def test_invoices_created_in_whmcs_while_a_missing_sync_pages_do_not_stop_it(
    redis_client, fake, change, monkeypatch
):
    # Newest first: invoices created meanwhile push the rows down, onto rows already read. A
    # page of them makes one page of rows already sent, which is exactly what is tolerated.
    monkeypatch.setattr(sync, "MAX_STALE_PAGES", 1)
    ids = fake.app.seed(120, seed=18)
    last_read = sorted(ids, reverse=True)[48]  # the last row of the second page (25 + 24 rows)

    def meanwhile(n):
        if n != 3:
            return
        if change == "the last row read replaced":
            fake.app.delete_invoice(last_read)
        for _ in range(30 if change == "a page of new invoices" else 1):
            fake.app.add_invoice(subtotal="5.00", status="Unpaid")

    sync.run(redis_client, "blue", "missing", Meddled(fake, meanwhile), 25)
    stored = set(store.iter_stored_ids(redis_client, "blue"))
    assert set(ids) - {last_read} <= stored
    sync.run(redis_client, "blue", "missing", Meddled(fake), 25)  # the next one gets the rest
    assert stored <= set(store.iter_stored_ids(redis_client, "blue"))
    assert {i["id"] for i in fake.app.invoices_snapshot()} <= set(
        store.iter_stored_ids(redis_client, "blue"))


def test_an_invoice_deleted_and_one_created_as_a_full_sync_ends_are_both_seen(redis_client,
                                                                               fake):
    # The request for the end (the last row alone, at 59) finds, after one invoice went and
    # one came, a single row it has not read: a step back, not a crash.
    ids = fake.app.seed(60, seed=19)

    def meanwhile(n):
        if source.asked[-1][0] == 59 and not created:
            fake.app.delete_invoice(ids[0])
            created.append(fake.app.add_invoice(subtotal="5.00", status="Unpaid"))

    created: list[int] = []

    source = Meddled(fake, meanwhile)
    sync.run(redis_client, "blue", "full", source, 25)
    assert created and {i["id"] for i in fake.app.invoices_snapshot()} <= set(
        store.iter_stored_ids(redis_client, "blue"))


def test_pages_longer_than_asked_and_growing_are_all_stored(redis_client, fake):
    # A WHMCS (or a proxy) that sends more rows than asked, more each time: the guesses of
    # where the next page starts are wrong every time, and are dropped.
    fake.app.seed(200, seed=21)
    sync.run(redis_client, "blue", "full", Meddled(fake, grow=True), 10)
    assert sorted(store.iter_stored_ids(redis_client, "blue")) == [
        i["id"] for i in fake.app.invoices_snapshot()]


def test_a_sync_of_a_whmcs_without_invoices_leaves_no_mark(redis_client, fake):
    # Else the first invoice created later (id 1) would count as stored already.
    sync.run(redis_client, "blue", "full", Meddled(fake), 25)
    assert sync.high_water(redis_client, "blue") == 0
    first = fake.app.add_invoice(subtotal="5.00", status="Unpaid")
    sync.run(redis_client, "blue", "missing", Meddled(fake), 25)
    assert list(store.iter_stored_ids(redis_client, "blue")) == [first]
    assert sync.run(redis_client, "blue", "missing", Meddled(fake), 25).total_hint == 0


def test_an_unknown_mode_is_refused_before_anything_runs(redis_client, fake):
    source = Meddled(fake)
    with pytest.raises(ValueError) as refused:
        sync.run(redis_client, "blue", "partial", source, 25)
    assert str(refused.value) == "unknown sync mode 'partial'"
    assert source.requests == 0
