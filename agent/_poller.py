"""The poller: give every invoice of this WHMCS that needs a legal number the coordinator's one.

The WHMCS hook numbers invoices as they are issued; the poller catches what the hook missed
(sidecar down, coordinator down, PHP error) and finishes what a crash left half done. Run it
from cron or as a loop (``invoice-sync-agent poll [--loop]``)::

    with Poller(Client(config), whmcs, Journal(config.journal), number_on="paid") as poller:
        report = poller.run()

Which invoices need a number (an invoice that already has an ``invoicenum`` is never touched):

==========================  ===========================  ====================================
invoice                     ``number_on = "paid"``       ``number_on = "created"``
==========================  ===========================  ====================================
Draft                       no (not issued)              no (not issued)
Paid, Refunded              yes (it was paid once)       yes
Unpaid, Payment Pending,    no (a proforma, not a tax    yes (issued when created)
Collections                 document yet)
Cancelled                   no (a cancelled proforma)    yes (it was issued; cancelling an
                                                         issued invoice does not unissue it)
negative total (a credit    yes, unless Draft: a credit  yes, unless Draft
note, document              note is issued when it is
``credit_note``)            created, it is never "paid"
==========================  ===========================  ====================================

The date sent with the allocation is the invoice's ``date`` as WHMCS holds it: the date printed
on the document, and the one the PHP hook sends too (so hook and poller always ask for the same
period, never a 409). In proforma mode WHMCS can move that date to the payment date; either way
the number's period follows the document.

Every step is journaled before the next one starts, so a run killed at any point is finished
by the next: ``allocated`` (number taken, not yet in WHMCS) → ``written`` (in WHMCS, verified
by reading it back) → ``confirmed`` (the coordinator knows). An allocated number whose invoice
meanwhile got another number, or was deleted, is voided with that reason. The coordinator
answers the same reference with the same number, so no invoice can get a second one.

WHMCS's API has no compare-and-set: the invoice is re-read right before the write, leaving an
admin typing a number by hand into that very invoice in that very second as the only race.

What a poll reads (it pays for what is new, not for the installation's history):

* the first run, and ``run(full=True)`` (``poll --full``): every invoice, by id; it then
  remembers the highest id in the journal (per WHMCS URL and ``number_on``);
* every other run: invoices created since (``orderby=id`` descending down to that id: one call
  when there are none); the unnumbered invoices of the statuses an older invoice can move
  into and then need a number (``paid`` mode: Paid and Refunded), with
  ``orderby=invoicenumber`` where an empty number sorts first (one call each when there are
  none); and the invoices the journal watches: invoices left unnumbered by a failure and draft
  credit notes (one GetInvoice each), and in ``created`` mode every draft (one call to count
  the drafts; only when the count changed are they listed and those gone read). An idle poll
  costs three calls in ``paid`` mode and two in ``created`` mode, whatever the size of the
  installation, plus one per watched invoice of the first kind; numbering k invoices costs
  O(k) more.

Not seen by the cheap runs: an invoice whose total turns negative by an edit while unpaid, or
whose number someone erased while it is not in a rechecked status. ``poll --full`` finds those.

Before the first number of a run the poller checks that WHMCS lets it read and write one
invoice (GetInvoice and UpdateInvoice of invoice 0, which cannot exist: nothing is written);
a role lacking either, or a module answering ``Command Not Found``, stops the run before any
number is taken. Only GetInvoice's exact answer for a missing invoice counts as "deleted".
A new number at or below one the journal received before (numbering from lost or old data)
stops the run before it is written anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from agent._client import Client
from agent._exceptions import (
    AgentError,
    CoordinatorError,
    CoordinatorRefused,
    JournalError,
    NumberWentBackwards,
    PollerBusy,
    WhmcsApiError,
    WhmcsError,
    WhmcsInvoiceNotFoundError,
)
from agent._journal import Journal, JournalEntry
from agent._models import Allocation
from agent.whmcs import WhmcsClient, WhmcsInvoice

log = logging.getLogger("agent.poller")

DEFAULT_PAGE_SIZE = 100
"""Invoices per GetInvoices page."""

PAID_STATUSES = ("Paid", "Refunded")
"""Statuses of invoices that were paid once: numbered in ``paid`` mode."""

RECHECKED_STATUSES = {"paid": PAID_STATUSES, "created": ()}
"""Per ``number_on``, the statuses whose unnumbered invoices every poll asks WHMCS for
(``orderby=invoicenumber``: one call when there are none). An invoice moves into these
statuses (paid later, refunded) without getting a new id. In ``created`` mode only a draft
becomes a candidate later, and drafts are watched."""

NOT_ISSUED = frozenset({"Draft"})
"""Statuses of invoices that were never issued: never numbered."""

_PER_INVOICE_REFUSALS = frozenset({404, 409, 422})
"""Coordinator refusals about one document; 401/403 (the token) stop the whole run."""


def document_of(invoice: WhmcsInvoice) -> str:
    """Return ``credit_note`` for a negative total (how modules add credit notes), else invoice."""
    return "credit_note" if invoice.total < 0 else "invoice"


def may_need_number_later(invoice: WhmcsInvoice, number_on: str) -> bool:
    """Return whether an unnumbered draft becomes a candidate when it is published.

    In ``paid`` mode a published draft is numbered when it is paid, which the ``Paid`` query
    finds; only a draft credit note (numbered when issued) must be watched.
    """
    if invoice.invoicenum.strip() or invoice.status not in NOT_ISSUED:
        return False
    return number_on == "created" or invoice.total < 0


def needs_number(invoice: WhmcsInvoice, number_on: str) -> bool:
    """Return whether ``invoice`` should have a legal number now and has none (see the table)."""
    if invoice.invoicenum.strip() or invoice.status in NOT_ISSUED:
        return False
    if number_on == "created" or invoice.total < 0:
        return True
    return invoice.status in PAID_STATUSES


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one invoice in a run.

    Attributes:
        reference: The WHMCS invoice id.
        action: ``numbered`` (written and confirmed now), ``confirmed`` (it already held our
            number; confirmed now), ``voided`` (our number was not used; ``message`` says why)
            or ``failed`` (left for the next run or an operator; ``message`` says why).
        document: ``invoice`` or ``credit_note`` (``None`` when unknown).
        formatted: The number involved, if any.
        message: Why (voided, failed).
        kind: For failures, the cause: ``coordinator``, ``refused``, ``whmcs``, ``journal`` or
            ``conflict`` (needs an operator: the ledger and WHMCS disagree).
    """

    reference: str
    action: str
    document: str | None = None
    formatted: str | None = None
    message: str = ""
    kind: str | None = None


@dataclasses.dataclass
class PollReport:
    """The result of one :meth:`Poller.run`.

    Attributes:
        outcomes: One per invoice acted on, in order.
        seen: Invoices read from WHMCS.
        allocations: Allocation requests sent (a replay counts: it asks for the same number).
        whmcs_calls: WHMCS API calls this run made.
        full: Whether every invoice was read (first run, ``full=True``), not only what is new.
        aborted: The failure that stopped the run early (coordinator or WHMCS down, token
            refused, numbers going backwards), else ``None``.
    """

    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    seen: int = 0
    allocations: int = 0
    whmcs_calls: int = 0
    full: bool = False
    aborted: Outcome | None = None

    def of(self, action: str) -> list[Outcome]:
        """Return the outcomes with this action."""
        return [o for o in self.outcomes if o.action == action]

    @property
    def ok(self) -> bool:
        """Return True when every invoice that needed a number has one, confirmed."""
        return self.aborted is None and not self.of("failed")


class _Abort(Exception):
    """Stop the run: the coordinator or WHMCS is down, or the token is refused."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class Poller:
    """Number the invoices of one WHMCS installation through the coordinator; fail closed.

    Args:
        client: The coordinator client (its retries resend identical requests).
        whmcs: The installation's WHMCS API client (GetInvoices, GetInvoice, UpdateInvoice).
        journal: The local journal shared with the sidecar.
        number_on: ``paid`` or ``created`` (see the module docstring).
        page_size: Invoices per GetInvoices page.
        should_stop: Checked between invoices; True ends the run early and cleanly
            (a loop's SIGTERM).
    """

    def __init__(
        self,
        client: Client,
        whmcs: WhmcsClient,
        journal: Journal,
        *,
        number_on: str = "paid",
        page_size: int = DEFAULT_PAGE_SIZE,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        if number_on not in ("paid", "created"):
            raise ValueError(f"number_on must be paid or created, not {number_on!r}")
        self.client = client
        self.whmcs = whmcs
        self.journal = journal
        self.number_on = number_on
        self.page_size = page_size
        self.should_stop = should_stop

    def run(self, *, full: bool = False) -> PollReport:
        """Finish what the journal left pending, then number every invoice that needs it.

        Reads only what may have changed since the last completed run (see "What a poll
        reads" in the module docstring); the first run, or ``full=True``, reads every invoice.
        """
        report = PollReport()
        self._tried: set[str] = set()
        self._access_checked = False
        self._watched = self.journal.watched()
        calls = self.whmcs.calls
        try:
            for entry in self.journal.pending():
                if self.should_stop():
                    return report
                self._tried.add(entry.reference)
                self._guard(report, entry.reference, entry.document,
                            lambda e=entry: self._finish(e, report))
            scan = f"scan {self.whmcs.url} number_on={self.number_on}"
            mark = None if full else self.journal.scan_mark(scan)
            report.full = mark is None
            top = self._read_all(report) if mark is None else self._read_new(report, mark)
            if top is not None:
                self.journal.set_scan_mark(scan, top)
        except _Abort as abort:
            report.aborted = abort.outcome
        except WhmcsError as exc:  # listing the invoices failed
            report.aborted = Outcome("-", "failed", message=exc.message, kind="whmcs")
        finally:
            report.whmcs_calls = self.whmcs.calls - calls
        return report

    # -- what to read ----------------------------------------------------------------------

    def _read_all(self, report: PollReport) -> int | None:
        """Look at every invoice (by id); return the highest id, or None if stopped."""
        top = 0
        for invoice in self.whmcs.iter_invoices(self.page_size):
            if self.should_stop():
                return None
            top = max(top, invoice.id)
            self._examine(report, invoice)
        return top

    def _read_new(self, report: PollReport, mark: int) -> int | None:
        """Look at what may need a number since the run that set ``mark``; None if stopped.

        The listings come first, so no number is taken before GetInvoices has answered;
        what they add to the watch list was just read and waits for the next run.
        """
        earlier = dict(self._watched)
        top = mark
        for invoice in self.whmcs.iter_invoices_above(mark, self.page_size):
            if self.should_stop():
                return None
            top = max(top, invoice.id)
            self._examine(report, invoice)
        for status in RECHECKED_STATUSES[self.number_on]:
            for invoice in self.whmcs.iter_unnumbered(status, self.page_size):
                if self.should_stop():
                    return None
                self._examine(report, invoice)
        watched = [r for r, why in earlier.items() if why != "draft"]
        if self.number_on == "paid":  # only draft credit notes are watched: a few at most
            watched += [r for r, why in earlier.items() if why == "draft"]
        else:
            watched += self._drafts_gone()
        for reference in watched:
            if self.should_stop():
                return None
            if reference in self._watched:  # not settled by the listings meanwhile
                self._recheck(report, reference)
        return top

    def _drafts_gone(self) -> list[str]:
        """Return the watched drafts that are drafts no more (``created`` mode; after new ids).

        One call while nothing changed: the number of drafts WHMCS reports equals the number
        watched (new drafts were just added by reading the new ids). Only when they differ
        are the drafts listed. A wrong ``totalresults`` from WHMCS costs that listing; it
        ends no loop (WHMCS.md).
        """
        drafts = {r for r, why in self._watched.items() if why == "draft"}
        if self.whmcs.get_invoices(0, 1, status="Draft").totalresults == len(drafts):
            return []
        still: set[str] = set()
        for invoice in self.whmcs.iter_invoices(self.page_size, status="Draft"):
            still.add(str(invoice.id))
            if may_need_number_later(invoice, self.number_on):
                self._watch(str(invoice.id), "draft")  # one the id scan could not see
        return sorted(drafts - still, key=int)

    def _recheck(self, report: PollReport, reference: str) -> None:
        """Look at a watched invoice again (a draft, or one left unnumbered)."""
        if reference in self._tried:
            return  # handled in this run already
        if not reference.isdigit():
            self._unwatch(reference)
            return
        found: list[WhmcsInvoice | None] = []
        if not self._guard(report, reference, None, lambda: found.append(self._read(reference))):
            return  # WHMCS answered an error: keep watching
        invoice = found[0]
        if invoice is None:
            self._unwatch(reference)  # deleted
            return
        self._examine(report, invoice)

    def _examine(self, report: PollReport, invoice: WhmcsInvoice) -> None:
        """Number the invoice if it needs it; remember it if it may need it later."""
        report.seen += 1
        reference = str(invoice.id)
        if reference in self._tried:
            return
        if needs_number(invoice, self.number_on):
            self._tried.add(reference)
            if self._guard(report, reference, document_of(invoice),
                           lambda: self._number(invoice, report)):
                self._unwatch(reference)
            else:
                self._watch(reference, "unnumbered")  # not retried by a query: look again
        elif may_need_number_later(invoice, self.number_on):
            self._watch(reference, "draft")
        else:
            self._unwatch(reference)

    def _watch(self, reference: str, reason: str) -> None:
        if self._watched.get(reference) != reason:
            self.journal.watch(reference, reason)
            self._watched[reference] = reason

    def _unwatch(self, reference: str) -> None:
        if self._watched.pop(reference, None) is not None:
            self.journal.unwatch(reference)

    # -- one invoice -----------------------------------------------------------------------

    def _guard(
        self, report: PollReport, reference: str, document: str | None, step: Callable[[], None]
    ) -> bool:
        """Run one invoice's step; a failure of that invoice is recorded, a systemic one aborts.

        Returns:
            True when the step went through, False when the invoice failed.
        """
        try:
            step()
            return True
        except NumberWentBackwards as exc:
            raise _Abort(
                Outcome(reference, "failed", document, exc.formatted, exc.message, "backwards")
            ) from None
        except CoordinatorRefused as exc:
            outcome = Outcome(reference, "failed", document, message=exc.message, kind="refused")
            if exc.code not in _PER_INVOICE_REFUSALS:
                raise _Abort(outcome) from None
            report.outcomes.append(outcome)
        except CoordinatorError as exc:
            raise _Abort(
                Outcome(reference, "failed", document, message=exc.message, kind="coordinator")
            ) from None
        except WhmcsApiError as exc:
            # About this invoice, or about the installation? The next allocation checks
            # access again first, so a WHMCS that broke meanwhile takes no further number.
            self._access_checked = False
            report.outcomes.append(
                Outcome(reference, "failed", document, message=exc.message, kind="whmcs")
            )
        except WhmcsError as exc:
            raise _Abort(
                Outcome(reference, "failed", document, message=exc.message, kind="whmcs")
            ) from None
        except JournalError as exc:
            report.outcomes.append(
                Outcome(reference, "failed", document, message=str(exc), kind="journal")
            )
        except _Conflict as exc:
            report.outcomes.append(
                Outcome(reference, "failed", document, exc.formatted, str(exc), "conflict")
            )
        return False

    def _ensure_access(self) -> None:
        """Before the first number of a run: check this WHMCS lets us write it (writes nothing).

        A role without GetInvoice or UpdateInvoice, or a module answering ``Command Not Found``,
        would leave every number taken unwritten: stop before taking any.
        """
        if self._access_checked:
            return
        try:
            self.whmcs.check_access(("GetInvoice", "UpdateInvoice"))
        except WhmcsError as exc:
            raise _Abort(
                Outcome("-", "failed", message=f"{exc.message} No number was taken.",
                        kind="whmcs")
            ) from None
        self._access_checked = True

    def _allocate(self, document: str, reference: str, date: dt.date | None) -> Allocation:
        """Take one document's number.

        The seam for ``POST /v1/allocation-batches``: a batch would take the numbers of the
        candidates of one page here in one request, then each is finished as below.
        """
        return self.client.allocate(document, reference, date)

    def _number(self, invoice: WhmcsInvoice, report: PollReport) -> None:
        document = document_of(invoice)
        reference = str(invoice.id)
        self._ensure_access()
        before = self.journal.mark()
        report.allocations += 1
        allocation = self._allocate(document, reference, invoice.date)
        if allocation.status == "void":
            # One reference, one number, for ever: the coordinator will not issue another.
            reason = allocation.raw.get("void_reason") or "no reason recorded"
            known = self.journal.get(document, reference)
            if known is not None and known.allocation_id == allocation.id:
                if known.state in ("allocated", "written"):
                    self.journal.mark_voided(allocation.id, str(reason))
            raise _Conflict(
                f"invoice {reference} has no number, but its number {allocation.formatted} "
                f"was voided ({reason}); the coordinator gives a document one number only. "
                "An admin must decide: reissue it (POST /v1/allocations/"
                f"{allocation.id}/reissue with a reason; the next poll writes the new "
                "number), write the number by hand if it was issued, or leave the invoice "
                "unnumbered",
                allocation.formatted,
            )
        entry = self.journal.record_allocated(allocation, before=before)
        log.info("invoice %s: took %s (%s)", reference, allocation.formatted, allocation.id)
        self._finish(entry, report)

    def _finish(self, entry: JournalEntry, report: PollReport) -> None:
        """Bring a journal entry (allocated or written) to confirmed, or void it with a reason."""
        if entry.state == "written":
            self._confirm(entry, report, "confirmed")
            return
        if not entry.reference.isdigit():
            raise JournalError(
                f"journal entry {entry.allocation_id} has reference {entry.reference!r}, which "
                "is not a WHMCS invoice id; finish it by hand (invoice-sync-agent confirm/void)"
            )
        invoice = self._read(entry.reference)
        if invoice is None:
            self._void(entry, report, f"WHMCS invoice {entry.reference} was deleted before "
                                      f"{entry.formatted} was written into it")
            return
        current = invoice.invoicenum.strip()
        if current == entry.formatted:
            self.journal.mark_written(entry.allocation_id, entry.formatted)
            self._confirm(entry, report, "confirmed")
            return
        if current:
            self._void(entry, report, f"WHMCS invoice {entry.reference} was numbered "
                                      f"{current!r} by someone else before {entry.formatted} "
                                      "was written; it was never used")
            return
        self.whmcs.update_invoice(int(entry.reference), invoicenum=entry.formatted)
        # Read it back: WHMCS accepts invoicenum without documenting it, and a version or
        # module that drops it must not leave a confirmed number that is on no invoice.
        after = self._read(entry.reference)
        stored = None if after is None else after.invoicenum.strip()
        if stored == "":
            # Accepted and dropped: this WHMCS (version or module) does not store invoicenum
            # through the API, so every further number would be lost the same way.
            raise _Abort(Outcome(
                entry.reference, "failed", entry.document, entry.formatted,
                f"WHMCS accepted UpdateInvoice invoicenum={entry.formatted} for invoice "
                f"{entry.reference} but does not show it: this WHMCS (its version or a module) "
                "drops invoicenum. Not confirmed, no further number taken; the number stays "
                "in the journal and is written by the first run after WHMCS is fixed",
                "whmcs",
            ))
        if stored != entry.formatted:
            raise WhmcsApiError(
                f"WHMCS accepted UpdateInvoice invoicenum={entry.formatted} for invoice "
                f"{entry.reference} but now shows {stored!r}; not confirmed, retried next run",
                action="UpdateInvoice",
            )
        self.journal.mark_written(entry.allocation_id, entry.formatted)
        log.info("invoice %s: wrote %s", entry.reference, entry.formatted)
        self._confirm(entry, report, "numbered")

    def _read(self, reference: str) -> WhmcsInvoice | None:
        """Return the invoice, or None when WHMCS says exactly that it does not exist."""
        try:
            return self.whmcs.get_invoice(int(reference))
        except WhmcsInvoiceNotFoundError:
            # Only GetInvoice's own "Invoice ID Not Found" means deleted; any other error (a
            # "Command Not Found" from a module or proxy) raises: nothing may be voided on it.
            return None

    def _confirm(self, entry: JournalEntry, report: PollReport, action: str) -> None:
        try:
            self.client.confirm(entry.allocation_id, entry.formatted)
        except CoordinatorRefused as exc:
            if exc.code == 409:
                raise _Conflict(
                    f"{entry.formatted} is in WHMCS invoice {entry.reference}, but the "
                    f"coordinator refuses to confirm it: {exc.message}. An admin must "
                    "reconcile the ledger and WHMCS",
                    entry.formatted,
                ) from None
            raise
        self.journal.mark_confirmed(entry.allocation_id, entry.formatted)
        report.outcomes.append(
            Outcome(entry.reference, action, entry.document, entry.formatted)
        )

    def _void(self, entry: JournalEntry, report: PollReport, reason: str) -> None:
        try:
            self.client.void(entry.allocation_id, reason)
        except CoordinatorRefused as exc:
            if exc.code == 403:  # confirmed: only an admin may void it
                raise _Conflict(
                    f"{entry.formatted} is confirmed in the ledger, yet {reason}. An admin "
                    "must reconcile the ledger and WHMCS",
                    entry.formatted,
                ) from None
            raise
        self.journal.mark_voided(entry.allocation_id, reason)
        log.warning("invoice %s: voided %s: %s", entry.reference, entry.formatted, reason)
        report.outcomes.append(
            Outcome(entry.reference, "voided", entry.document, entry.formatted, reason)
        )


class _Conflict(AgentError):
    """The ledger and WHMCS disagree about one invoice; an operator must decide."""

    def __init__(self, message: str, formatted: str | None = None) -> None:
        super().__init__(message)
        self.formatted = formatted


@contextmanager
def poll_lock(journal_path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Hold the installation's poll lock (``<journal>.lock``) or raise :class:`PollerBusy`.

    An advisory ``flock``: the kernel drops it when the holder dies, even by SIGKILL, so a
    crashed poller never blocks the next one.
    """
    path = Path(f"{os.fspath(journal_path)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = open(path, "a+")  # noqa: SIM115 - closed below, after the lock is released
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise PollerBusy(
                    f"another poller of this installation holds {path}; not starting a second"
                ) from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()
