"""Sync one system's invoices from its WHMCS into the store.

Two modes (``records.MODES``):

* **full** — every invoice, ``orderby=id`` ascending. Changed records (status, datepaid,
  invoicenum, amounts) are rewritten and the aggregates move by the difference; invoices stored
  but no longer in WHMCS (deleted there) are removed. A completed full sync sets the high-water
  mark to the highest id seen.
* **missing** — only invoices not yet stored, ``orderby=id`` descending, stopping at the first
  id at or below the **high-water mark** (every id up to it is stored). The mark advances only
  when a run completes, so a crashed run is simply redone; with nothing new a sync costs exactly
  one page request.

Paging follows WHMCS.md: advance ``limitstart`` by the rows actually received, stop on an empty
page, never trust ``totalresults``. On top of that each page re-reads the previous page's last
row (one row of overlap): if that row is not where it was, invoices were deleted in WHMCS while
we paged and rows shifted past us, so we step back a page instead of silently skipping them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import operator
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from coordinator import keys
from coordinator.clock import Clock, utcnow
from coordinator.forecaster import defaults, lock, store

MAX_STEP_BACKS = 50
"""Times one run steps back after rows shifted under it before giving up (WHMCS too busy)."""

WRITE_ROWS = defaults.UPSERT_BATCH
"""Rows gathered from consecutive pages before they are stored (one upsert.lua call). Fewer,
larger calls touch each aggregate cell once per batch instead of once per page; a run that
fails loses at most this many fetched rows, which the next run fetches again."""

MAX_STALE_PAGES = 1000
"""Consecutive pages with nothing new (descending order, many invoices created meanwhile)
before we conclude WHMCS ignores ``limitstart``."""


class SyncError(Exception):
    """A sync cannot complete for a reason the admin must see (``code`` is stable)."""

    code = "sync_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class InvoiceSource(Protocol):
    """The WHMCS side: ``agent.WhmcsClient`` (``get_invoices`` and a ``calls`` counter)."""

    calls: int

    def get_invoices(
        self, limitstart: int = 0, limitnum: int = 25, *, status: str | None = None,
        orderby: str = "id", order: str = "asc",
    ) -> Any: ...


@dataclass
class Progress:
    """What a run has done so far; passed to the ``on_page`` callback after every stored batch."""

    pages: int = 0
    invoices: int = 0
    total_hint: int | None = None
    result: store.UpsertResult = field(default_factory=store.UpsertResult)


@dataclass
class _Page:
    fresh: Sequence[Any]
    totalresults: int


def _pages(
    source: InvoiceSource, step: int, order: str, check: Callable[[], None],
    last: Callable[[Sequence[Any]], bool] = lambda rows: False, *, speculate: bool = False,
) -> Iterator[_Page]:
    """Yield each page's rows not yet yielded, in ``order`` of id, until WHMCS has no more.

    While a full page is being stored, the next one is already requested (WHMCS renders it
    meanwhile). Only after a full page that ``last`` does not call final: that request would
    be made anyway, so prefetching never adds an API call to a run that ends normally.

    With ``speculate`` the page after that one is requested too, as if the next page will be
    full, so WHMCS renders a page while we decode the one before instead of taking turns. The
    guess is used only if it starts where the next page really does; it is wrong once per run
    (after the last full page), so a run makes at most one more API call.
    """
    ascending = order == "asc"

    def after(a: int, b: int) -> bool:  # does id a come after id b in this order?
        return a > b if ascending else a < b

    def fetch(start: int) -> Any:
        return source.get_invoices(start, step, orderby="id", order=order)

    # One row of overlap needs two rows per page to make progress.
    step = max(int(step), 2)
    start, anchor, step_backs, stale, expected = 0, None, 0, 0, step
    ahead: list[tuple[int, Future]] = []  # requests in flight, in page order
    with ThreadPoolExecutor(2 if speculate else 1, thread_name_prefix="whmcs-prefetch") as fetcher:
        try:
            while True:
                check()
                while ahead and ahead[0][0] != start:
                    _drop(ahead.pop(0))
                page = ahead.pop(0)[1].result() if ahead else fetch(start)
                rows = page.invoices
                if not rows:
                    return
                if anchor is None:
                    fresh = list(rows)
                else:
                    if not any(r.id == anchor for r in rows) and after(rows[0].id, anchor):
                        # The row we read last moved up: rows after it may have shifted past us.
                        step_backs += 1
                        if step_backs > MAX_STEP_BACKS:
                            raise SyncError(
                                "WHMCS's invoice list kept changing while it was paged (invoices "
                                "deleted during the sync); run the sync again.",
                                "whmcs_list_unstable",
                            )
                        start = max(0, start - len(rows))
                        continue
                    fresh = [r for r in rows if after(r.id, anchor)]
                    if not fresh and len(rows) == 1:
                        return  # only the overlap row is left: the end
                    if not fresh:
                        stale += 1
                        if ascending or stale > MAX_STALE_PAGES:
                            raise SyncError(
                                f"WHMCS answered GetInvoices limitstart={start} with rows it had "
                                "already sent: it ignores limitstart, so paging cannot finish. "
                                "Check for a module or proxy rewriting API requests.",
                                "whmcs_bad_response",
                            )
                    else:
                        stale = 0
                if fresh:
                    anchor = fresh[-1].id
                next_start = start + len(rows) - 1
                if len(rows) >= expected and not last(rows):
                    wanted = [next_start, next_start + len(rows) - 1][: 2 if speculate else 1]
                    while ahead and ahead[0][0] != next_start:
                        _drop(ahead.pop(0))
                    for at in wanted[len(ahead):]:
                        ahead.append((at, fetcher.submit(fetch, at)))
                expected = len(rows)
                yield _Page(fresh, page.totalresults)
                start = next_start
        finally:
            for request in ahead:
                _drop(request)


class _SeenIds:
    """The invoice ids a full sync saw: 8 bytes per invoice, whatever the ids are.

    A full sync pages in ascending id order, so ids arrive sorted and are appended to a flat
    array; membership is a binary search. (A bitmap indexed by id cost a byte per 8 possible
    ids: 250 MB for one invoice numbered 2·10⁹.) Should WHMCS ever send them out of order, the
    array is sorted and deduplicated once, before the first lookup.
    """

    def __init__(self) -> None:
        self._ids = array("q")
        self._ordered = True

    def extend(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        if self._ordered and not (
            (not self._ids or self._ids[-1] < ids[0]) and all(map(operator.lt, ids, ids[1:]))
        ):
            self._ordered = False
        self._ids.extend(ids)

    def _settle(self) -> None:
        if not self._ordered:
            self._ids = array("q", sorted(set(self._ids)))
            self._ordered = True

    def count(self) -> int:
        """Return how many distinct ids were seen."""
        self._settle()
        return len(self._ids)

    def __contains__(self, invoice_id: int) -> bool:
        self._settle()
        at = bisect_left(self._ids, invoice_id)
        return at < len(self._ids) and self._ids[at] == invoice_id


def _drop(ahead: tuple[int, Future]) -> None:
    """Wait out a prefetch that is not needed (its errors do not matter)."""
    with contextlib.suppress(Exception):
        ahead[1].result()


def _store_page(
    client: redis.Redis, system: str, rows: Sequence[Any], owner: str | None
) -> store.UpsertResult:
    return store.write_records(client, system, {r.id: store.encode(r) for r in rows}, owner=owner)


def high_water(client: redis.Redis, system: str) -> int:
    """Return the id up to which every invoice of ``system`` is stored (0: none yet)."""
    return int(client.hget(keys.sys_sync_state(system), "high_water") or 0)


def _complete(
    client: redis.Redis, system: str, mode: str, mark: int, finished: dt.datetime,
    owner: str | None,
) -> None:
    state, lock_key = keys.sys_sync_state(system), keys.sys_sync_lock(system)
    with client.pipeline(transaction=True) as pipe:
        if owner is not None:
            # Fenced like every write: MULTI runs only if the lock did not change since WATCH.
            pipe.watch(lock_key)
            if pipe.get(lock_key) != owner:
                raise lock.LockLost(f"the sync lock of {system!r} is no longer held by {owner}")
            current = pipe.hget(state, "high_water")
            pipe.multi()
        else:
            current = client.hget(state, "high_water")
        if mark:
            pipe.hset(state, "high_water", max(mark, int(current or 0)))
        pipe.hset(state, f"last_{mode}_at", finished.strftime("%Y-%m-%dT%H:%M:%SZ"))
        try:
            pipe.execute()
        except redis.WatchError:
            raise lock.LockLost(f"the sync lock of {system!r} changed while completing") from None


def run(
    client: redis.Redis,
    system: str,
    mode: str,
    source: InvoiceSource,
    step: int,
    *,
    on_page: Callable[[Progress], None] = lambda progress: None,
    check: Callable[[], None] = lambda: None,
    clock: Clock = utcnow,
    owner: str | None = None,
) -> Progress:
    """Run one sync of ``system`` and return what it did.

    Args:
        source: The system's WHMCS client.
        step: Invoices per page (the system's ``step``).
        on_page: Called after every stored batch of pages (progress reporting).
        check: Called before every request; raises to abort (the lock was lost).
        owner: The sync's id, holder of the system's lock: every write and deletion is refused
            (``lock.LockLost``) once the lock is someone else's (see ``store.write_records``).

    Raises:
        agent.WhmcsError: WHMCS refused or failed (nothing after the last stored page changes).
        SyncError: paging cannot complete; money.AmountPrecisionError: an unstorable amount.
        lock.LockLost: ``owner`` lost the lock; nothing was written after that.
    """
    if mode not in ("full", "missing"):
        raise ValueError(f"unknown sync mode {mode!r}")
    progress = Progress()
    mark = high_water(client, system) if mode == "missing" else 0
    seen = _SeenIds()  # full: the ids seen, to find invoices deleted in WHMCS
    top = 0
    stored_before = store.count(client, system)
    # Storing overlaps fetching: one writer thread, at most one write in flight, so pages are
    # stored in order and a failed write stops the run. Pages are stored WRITE_ROWS at a time.
    with ThreadPoolExecutor(1, thread_name_prefix=f"sync-{system}") as writer:
        pending: Future | None = None
        batch: list[Any] = []

        def settle() -> None:
            nonlocal pending
            if pending is not None:
                result = pending.result()
                progress.result += result
                pending = None
                on_page(progress)

        try:
            order = "asc" if mode == "full" else "desc"
            reached_mark = (lambda rows: rows[-1].id <= mark) if mode == "missing" else None
            # Full syncs read every page anyway: one extra request at the end buys overlap.
            pages = _pages(source, step, order, check, reached_mark or (lambda rows: False),
                           speculate=mode == "full")
            for page in pages:
                rows = page.fresh
                if mode == "missing":
                    new = [r for r in rows if r.id > mark]
                    done = len(new) < len(rows)
                    rows = new
                else:
                    done = False
                    seen.extend(r.id for r in rows)
                if progress.total_hint is None:
                    total = page.totalresults
                    progress.total_hint = total if mode == "full" else max(0, total - stored_before)
                progress.pages += 1
                progress.invoices += len(rows)
                if rows:
                    top = max(top, max(r.id for r in rows))
                    batch += rows
                if len(batch) >= WRITE_ROWS or done:
                    # Encoding runs on the writer too, while this thread waits for WHMCS. A bad
                    # amount fails the whole batch before any of it is written.
                    settle()
                    pending = writer.submit(_store_page, client, system, batch, owner)
                    batch = []
                if done:
                    break
            if batch:
                settle()
                pending = writer.submit(_store_page, client, system, batch, owner)
            settle()
        finally:
            if pending is not None:
                pending.cancel()
                # A batch already being written still lands: count it, so the record of a
                # failed run says what it stored.
                with contextlib.suppress(Exception):
                    settle()
    if mode == "full":
        # Every id seen is stored now, so when the store holds no more ids than were seen,
        # none was deleted in WHMCS: skip reading every stored id back (a tenth of a run).
        gone = []
        if store.count(client, system) > seen.count():
            gone = [i for i in store.iter_stored_ids(client, system) if i not in seen]
        if gone:
            check()
            progress.result += store.delete(client, system, gone, owner=owner)
    _complete(client, system, mode, top, clock(), owner)
    return progress
