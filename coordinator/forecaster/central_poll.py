"""Central poll: the coordinator numbers what a system's hooks missed, with no agent process.

Opt-in per system (``"central_poll": true``, every ``central_poll_minutes``): the scheduler
queues one job per due system on the sync queue, and a worker runs the agent's own
:class:`agent.Poller` against that system's WHMCS — with the system's stored credentials, whose
API role then needs GetInvoice and UpdateInvoice besides GetInvoices — and against the numbering
domain in-process instead of over HTTP (:class:`LocalNumbering`). Same rules, same checks as the
agent's poller: it checks the role may write before it takes a first number, writes a number only
into an unnumbered invoice, reads it back, and confirms or voids it.

The poller's journal (what it took and wrote, what to finish after a crash) is an SQLite file
per system under ``CENTRAL_POLL_DIR`` on the worker's machine. The coordinator's ledger stays
the truth: a run on another machine re-asks the same references and gets the same numbers.

Each run's outcome is kept in ``{sys:<name>}:central-poll`` (shown with the system and by
``doctor``); a run that leaves invoices unnumbered raises a ``central_poll_failed`` warning.
The first run, a run after a failure, a failing run and one run a day also probe which of the
actions the poll needs the API role refuses (:mod:`poll_access`, WHMCS's exact answers only);
a role that lacks one stops the run before any number is taken.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from agent import (
    Allocation,
    CoordinatorRefused,
    CoordinatorUnavailable,
    Journal,
    Poller,
    PollReport,
)
from coordinator import keys
from coordinator.clock import Clock, iso, utcnow
from coordinator.exceptions import (
    Conflict,
    CoordinatorError,
    InternalFault,
    NotFound,
    ServiceUnavailable,
)
from coordinator.forecaster import lock, poll_access
from coordinator.numbering import allocation, chain
from coordinator.ops.confirmation import Durability, Guard
from coordinator.warnings import store as warnings

log = logging.getLogger(__name__)

LOCK_SECONDS = 3600
"""Longest a central poll may hold its system (a poll stops between invoices when asked)."""

_STATUS = {Conflict: 409, NotFound: 404, InternalFault: 500}


def _agent_error(error: CoordinatorError) -> Exception:
    """Map a numbering domain error onto the agent error its HTTP answer would have caused."""
    if isinstance(error, ServiceUnavailable):
        return CoordinatorUnavailable(error.message, code=503, errors=error.errors)
    code = next((c for cls, c in _STATUS.items() if isinstance(error, cls)), 422)
    return CoordinatorRefused(error.message, code=code, errors=error.errors)


class LocalNumbering:
    """The coordinator client a :class:`agent.Poller` needs, served by the numbering domain.

    Acts as the agent of ``system`` would (same scope, same idempotence, same durability
    wait), without a token and without HTTP::

        poller = Poller(LocalNumbering(client, "blue", durability), whmcs, journal)
    """

    def __init__(self, client: redis.Redis, system: str, durability: Durability,
                 clock: Clock = utcnow) -> None:
        self.client = client
        self.system = system
        self.durability = durability
        self.clock = clock

    @staticmethod
    def _out(entry: Mapping[str, Any], replay: bool | None = None) -> Allocation:
        return dataclasses.replace(Allocation.from_json(dict(entry)), replay=replay)

    def allocate(self, document: str, reference: str | int,
                 date: dt.date | str | None = None) -> Allocation:
        """Take (or get again) the number of one document of this system."""
        if isinstance(date, str):
            date = dt.date.fromisoformat(date)
        try:
            entry, new = allocation.allocate(
                self.client, self.system, document, str(reference),
                date or self.clock().date(), self.durability)
        except CoordinatorError as error:
            raise _agent_error(error) from None
        self._seal([entry])
        return self._out(entry, replay=not new)

    def allocate_batch(
        self, items: Sequence[tuple[str, str | int, dt.date | str | None]]
    ) -> list[Allocation]:
        """Take the numbers of several documents of this system at once: all, or none."""
        today = self.clock().date()
        batch = [allocation.Item(document, str(reference),
                                 dt.date.fromisoformat(day) if isinstance(day, str)
                                 else day or today)
                 for document, reference, day in items]
        try:
            taken = allocation.allocate_batch(self.client, self.system, batch, self.durability)
        except CoordinatorError as error:
            raise _agent_error(error) from None
        self._seal([entry for entry, _ in taken])
        return [self._out(entry, replay=not new) for entry, new in taken]

    def _transition(self, allocation_id: str, action: str, value: str) -> Allocation:
        try:
            entry, _ = allocation.transition(
                self.client, allocation_id, action, value, actor_kind="agent",
                actor_system=self.system, actor=f"central-poll:{self.system}",
                durability=self.durability)
        except CoordinatorError as error:
            raise _agent_error(error) from None
        self._seal([entry])
        return self._out(entry)

    def _seal(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Seal the chain events these entries appended, as the HTTP API does after its answer.

        Sealing is idempotent and verify/export seal first, so a failure only leaves the events
        unsealed a little longer: it is logged, never raised (the number is already durable).
        """
        for series, sequence in sorted({(e["series"], e["sequence"]) for e in entries}):
            try:
                chain.seal(self.client, sequence, series=series)
            except redis.RedisError:
                log.warning("sealing %s/%s failed; sealed at the next verify", series, sequence,
                            exc_info=True)

    def confirm(self, allocation_id: str, invoicenum: str) -> Allocation:
        """Record that the number is written in WHMCS."""
        return self._transition(allocation_id, "confirm", invoicenum)

    def void(self, allocation_id: str, reason: str) -> Allocation:
        """Give the number up, with the reason the auditor reads."""
        return self._transition(allocation_id, "void", reason)


def journal_path(config: Mapping[str, Any], system: str) -> Path:
    """Return where this machine keeps the poll journal of ``system``."""
    base = config.get("CENTRAL_POLL_DIR") or Path(config.get("DATA_DIR") or ".") / "central-poll"
    return Path(base) / f"{system}.journal.sqlite3"


def _summary(report: PollReport) -> tuple[bool, str]:
    """Return (ok, one line an admin can act on) for a poll report."""
    if report.aborted is not None:
        return False, f"stopped: {report.aborted.message}"
    failed = report.of("failed")
    if failed:
        named = "; ".join(f"invoice {o.reference}: {o.message}" for o in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        return False, f"{len(failed)} invoice(s) left unnumbered: {named}{more}"
    return True, (f"{len(report.of('numbered'))} numbered, {len(report.of('confirmed'))} "
                  f"confirmed, {len(report.of('voided'))} voided")


def status(client: redis.Redis, system: str) -> dict[str, Any] | None:
    """Return the last central poll of ``system`` (``None`` before the first).

    Besides the last run: ``failures`` (runs failed in a row), ``last_ok_at`` (the last run
    that went well, ``None`` if none did), ``missing_actions`` (the API actions the poll needs
    that WHMCS refused at ``access_checked_at``, the last probe of the role; ``access_problem``
    when another failure, e.g. wrong credentials, cut that probe short).
    """
    raw = client.hgetall(keys.sys_central_poll(system))
    if not raw:
        return None
    return {"state": raw.get("state"), "at": raw.get("at"), "message": raw.get("message", ""),
            "numbered": int(raw.get("numbered", 0)), "failed": int(raw.get("failed", 0)),
            "whmcs_calls": int(raw.get("whmcs_calls", 0)),
            "failures": int(raw.get("failures", 0)), "last_ok_at": raw.get("last_ok_at") or None,
            "missing_actions": [a for a in raw.get("missing_actions", "").split(",") if a],
            "access_problem": raw.get("access_problem") or None,
            "access_checked_at": raw.get("access_checked_at") or None}


def _probe_due(last: Mapping[str, str], now: dt.datetime) -> bool:
    """Whether this run probes the role first: the first run, after a failure, or once a day."""
    checked = last.get("access_checked_at")
    if not checked or last.get("state") != "done":
        return True
    age = now - dt.datetime.fromisoformat(checked.replace("Z", "+00:00"))
    return age.total_seconds() >= poll_access.RECHECK_SECONDS


def run(
    client: redis.Redis, system: str, config: Mapping[str, Any], *, resolve: Any = None,
    full: bool = False, clock: Clock = utcnow,
) -> dict[str, Any]:
    """Poll ``system``'s WHMCS now and number what needs it; record and return the outcome.

    Raises:
        Conflict: a central poll of ``system`` is already running.
        NotFound: no such system.
    """
    from coordinator.forecaster.jobs import default_resolver
    from coordinator.systems import registry

    settings = registry.get_system(client, system)  # NotFound
    owner = secrets.token_hex(8)
    lock_key = keys.sys_central_poll_lock(system)
    if not client.set(lock_key, owner, nx=True, ex=LOCK_SECONDS):
        raise Conflict(f"A central poll of {system} is already running")
    whmcs = None
    try:
        path = journal_path(config, system)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        last = client.hgetall(keys.sys_central_poll(system))
        access: poll_access.Access | None = None
        calls = numbered = failed = 0
        try:
            # The same durability verdict as /readyz and the HTTP allocations: on a server that
            # cannot keep what it acknowledges, no number is taken (NotDurable, below).
            numbering = LocalNumbering(client, system, Guard(config).current(client), clock)
            whmcs, _step = (resolve or default_resolver)(client, system, config)
            first_call = whmcs.calls
            if _probe_due(last, clock()):
                access = poll_access.probe(whmcs)
            if access is not None and access.missing:
                ok, message = False, f"stopped: {access.describe()}. No number was taken."
            else:
                with Journal(path) as journal:
                    report = Poller(numbering, whmcs, journal,
                                    number_on=settings.get("number_on", "paid")).run(full=full)
                ok, message = _summary(report)
                numbered, failed = len(report.of("numbered")), len(report.of("failed"))
                if not ok and access is None:
                    access = poll_access.probe(whmcs)  # did the role change? say so exactly
            calls = whmcs.calls - first_call
        except CoordinatorError as error:  # credentials, URL, or a Redis that is not durable
            ok, message, numbered, failed, calls = False, f"stopped: {error.message}", 0, 0, 0
        now = iso(clock())
        outcome = {"state": "done" if ok else "failed", "at": now,
                   "message": message, "numbered": numbered, "failed": failed,
                   "whmcs_calls": calls,
                   "failures": 0 if ok else int(last.get("failures", 0)) + 1}
        if ok:
            outcome["last_ok_at"] = now
        if access is not None:
            outcome["missing_actions"] = ",".join(access.missing)
            outcome["access_problem"] = access.problem or ""  # the probe could not finish
            outcome["access_checked_at"] = now
        client.hset(keys.sys_central_poll(system), mapping=outcome)
        if not ok:
            warnings.raise_warning(client, warnings.CENTRAL_POLL_FAILED,
                                   f"Central poll of {system}: {message}", system=system,
                                   code="central_poll")
        log.info("central poll of %s: %s", system, message)
        return status(client, system)
    finally:
        if whmcs is not None and hasattr(whmcs, "close"):
            whmcs.close()
        lock.release_owned(client, lock_key, owner)


def run_central_poll_job(system: str) -> str:
    """RQ entry point: poll ``system`` with this worker's settings; return the final state."""
    from rq import get_current_job

    from coordinator.config import load_settings
    from coordinator.forecaster.connections import with_decoding

    client = with_decoding(get_current_job().connection, True)
    outcome = run(client, system, load_settings())
    if outcome["state"] != "done":
        raise CentralPollFailed(f"central poll of {system}: {outcome['message']}")
    return outcome["state"]


class CentralPollFailed(Exception):
    """Raised by a central poll's RQ job that left invoices unnumbered (RQ logs a failed job)."""


def due(client: redis.Redis) -> list[str]:
    """Queue the central poll of each opted-in system whose interval has passed; return them.

    Each system's turn is claimed with ``SET NX EX <interval>``, so any number of schedulers
    queue it once per interval; a claim whose job could not be queued is given back.
    """
    from coordinator.forecaster.jobs import queue
    from coordinator.systems import registry

    queued = []
    for system in registry.list_systems(client):
        if not system.get("central_poll"):
            continue
        name = system["name"]
        claim = keys.sys_central_poll_due(name)
        if not client.set(claim, "queued", nx=True, ex=int(system["central_poll_minutes"]) * 60):
            continue
        try:
            queue(client).enqueue(run_central_poll_job, name, job_timeout=LOCK_SECONDS,
                                  description=f"central poll of {name}")
            queued.append(name)
        except redis.RedisError:
            client.delete(claim)
            raise
    return queued
