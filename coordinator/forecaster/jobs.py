"""RQ glue: request a sync (lock, record, enqueue) and run it on a worker.

The job carries only the sync id. The worker reads the system, decrypts its credentials with its
own ``INVOICE_SYNC_SECRET_KEYS``, checks the URL (SSRF guard) right before fetching, runs
``sync.run`` and writes the outcome into the sync record — and a warning when it failed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from rq import Queue, get_current_job
from urllib3.util.retry import Retry

from agent import WhmcsClient, WhmcsError
from coordinator import keys
from coordinator.config import load_settings
from coordinator.exceptions import Conflict, CoordinatorError, InvalidInput, NotFound
from coordinator.forecaster import defaults, lock, money, records, stats, sync
from coordinator.forecaster.connections import queue_connection, with_decoding
from coordinator.warnings import store as warnings

log = logging.getLogger(__name__)

Resolver = Callable[[redis.Redis, str, Mapping[str, Any]], tuple[Any, int]]


def queue(client: redis.Redis) -> Queue:
    """Return the sync queue on ``client``'s server."""
    return Queue(defaults.QUEUE_NAME, connection=queue_connection(client))


def request_sync(
    client: redis.Redis, system: str, mode: str, *, trigger: str = "api",
    sync_id: str | None = None, confirm: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Queue a sync of ``system`` and return its record (state ``queued``).

    The record and the RQ job are written in one transaction: a sync is either queued and
    visible, or (on a Redis error) not there at all and its lock given back.

    Args:
        confirm: ``(key, seconds)``: set that key's expiry in the same transaction (the daily
            scheduler confirms its claim of the day only if the sync really was queued).

    Raises:
        InvalidInput: unknown mode. NotFound: no such system.
        Conflict: a sync of this system is queued or running.
        redis.RedisError: nothing was queued.
    """
    from coordinator.systems import registry

    if mode not in records.MODES:
        choices = ", ".join(records.MODES)
        raise InvalidInput("Validation failed", {"json": {"mode": [f"One of: {choices}."]}})
    registry.get_system(client, system)  # NotFound
    sync_id = sync_id or records.new_id()
    if not lock.acquire_queued(client, system, sync_id):
        running = lock.holder(client, system)
        raise Conflict(f"A sync of {system!r} is already queued or running (sync {running})")
    sync_queue = queue(client)
    if getattr(client, "queue_client", None) is not None:
        return _request_on_separate_queue(client, sync_queue, system, mode, sync_id, trigger,
                                          confirm)
    try:
        with sync_queue.connection.pipeline(transaction=True) as pipe:
            pipe.multi()  # RQ adds its writes to an explicit MULTI rather than starting one
            records.create(pipe, system, mode, sync_id, trigger=trigger)
            sync_queue.enqueue_call(
                run_sync_job, args=(sync_id,), job_id=f"sync-{sync_id}",
                timeout=defaults.SYNC_JOB_TIMEOUT, result_ttl=86400, failure_ttl=7 * 86400,
                pipeline=pipe,
            )
            if confirm is not None:
                pipe.expire(*confirm)
            pipe.execute()
    except redis.RedisError:
        # Nothing was written; free the system at once (else the lock lapses on its own).
        with contextlib.suppress(redis.RedisError):
            lock.release(client, system, sync_id)
        raise
    return records.get(client, sync_id)


def _request_on_separate_queue(
    client: redis.Redis, sync_queue: Queue, system: str, mode: str, sync_id: str, trigger: str,
    confirm: tuple[str, int] | None,
) -> dict[str, Any]:
    """:func:`request_sync` when the jobs live on another Redis (INVOICE_SYNC_QUEUE_REDIS_URL,
    e.g. beside a Cluster): no transaction spans two servers, so the record is written to the
    data Redis first and taken back if the job cannot be queued."""
    try:
        with client.pipeline(transaction=False) as pipe:
            records.create(pipe, system, mode, sync_id, trigger=trigger)
            pipe.execute()
        sync_queue.enqueue_call(
            run_sync_job, args=(sync_id,), job_id=f"sync-{sync_id}",
            timeout=defaults.SYNC_JOB_TIMEOUT, result_ttl=86400, failure_ttl=7 * 86400,
        )
    except redis.RedisError:
        with contextlib.suppress(redis.RedisError):
            client.delete(keys.sync(sync_id))
            client.lrem(keys.sys_syncs(system), 0, sync_id)
            lock.release(client, system, sync_id)
        raise
    if confirm is not None:
        client.expire(*confirm)
    return records.get(client, sync_id)


def default_resolver(
    client: redis.Redis, system: str, config: Mapping[str, Any]
) -> tuple[WhmcsClient, int]:
    """Return a WHMCS client for ``system`` (credentials decrypted, URL checked) and its step."""
    from coordinator.systems import registry, secrets
    from coordinator.systems.fetch import guarded_session
    from coordinator.systems.urls import check_fetch_url

    step = int(registry.get_system(client, system)["step"])
    url, identifier, secret, access_key = registry.get_credentials(
        client, system, secrets.fernet_from_config(config)
    )
    check_fetch_url(url, config)
    # The guarded session re-checks the peer address on connect (DNS rebinding); give its
    # adapters the same transport retries WhmcsClient mounts on sessions it builds itself.
    session = guarded_session(config)
    for adapter in session.adapters.values():
        adapter.max_retries = Retry(
            total=3, other=0, redirect=0, backoff_factor=0.5, status_forcelist=(429, 503),
            allowed_methods=frozenset({"POST"}), respect_retry_after_header=True,
            raise_on_status=False, raise_on_redirect=False,
        )
    return WhmcsClient(url, identifier, secret, access_key, session=session), step


def _fail(client: redis.Redis, record: dict, message: str, code: str) -> None:
    records.update(client, record["id"], state=records.FAILED, error=message, error_code=code,
                   finished_at=records.iso(records.utcnow()))
    warnings.raise_warning(
        client, warnings.SYNC_FAILED, f"Sync of {record['system']} failed: {message}",
        system=record["system"], code=code,
    )


def execute(
    client: redis.Redis, sync_id: str, config: Mapping[str, Any],
    *, resolve: Resolver = default_resolver,
) -> dict[str, Any]:
    """Run the sync ``sync_id`` here and now; return its final record."""
    raw = client.hgetall(keys.sync(sync_id))
    if not raw:
        raise NotFound(f"No sync {sync_id!r}")
    record = {"id": sync_id, "system": raw["system"], "mode": raw["mode"]}
    system = record["system"]
    try:
        held = lock.HeldLock(client, system, sync_id).__enter__()
    except lock.LockLost as error:
        _fail(client, record, str(error), "sync_running")
        return records.get(client, sync_id)
    started = time.monotonic()
    try:
        records.update(client, sync_id, state=records.RUNNING,
                       started_at=records.iso(records.utcnow()))
        source = None
        try:
            source, step = resolve(client, system, config)

            def on_page(progress: sync.Progress) -> None:
                records.update(
                    client, sync_id, pages=progress.pages, invoices=progress.invoices,
                    total_hint=progress.total_hint, inserted=progress.result.inserted,
                    updated=progress.result.updated, api_calls=getattr(source, "calls", 0),
                )

            outcome = sync.run(client, system, record["mode"], source, step,
                               on_page=on_page, check=held.check, owner=sync_id)
        except WhmcsError as error:
            _fail(client, record, error.message, error.code)
        except (sync.SyncError, CoordinatorError) as error:
            _fail(client, record, error.message, getattr(error, "code", "sync_error"))
        except money.AmountPrecisionError as error:
            _fail(client, record, f"WHMCS sent an amount that cannot be stored exactly: {error}",
                  "amount_precision")
        except lock.LockLost as error:
            _fail(client, record, f"{error}; the sync stopped writing", "lock_lost")
        except Exception:
            log.exception("sync %s of %s crashed", sync_id, system)
            _fail(client, record, "Internal error while syncing; see the worker's log",
                  "internal")
            raise
        else:
            records.update(
                client, sync_id, state=records.DONE, finished_at=records.iso(records.utcnow()),
                pages=outcome.pages, invoices=outcome.invoices, inserted=outcome.result.inserted,
                updated=outcome.result.updated, deleted=outcome.result.deleted,
                api_calls=getattr(source, "calls", 0),
            )
            _after_success(client, system)
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()
    finally:
        # The final state is written before the lock goes (records.get relies on that order).
        held.release()
        try:
            stats.record_sync(client, sync_id, system, time.monotonic() - started)
        except redis.RedisError:  # metrics only: never hide how the sync itself ended
            log.warning("sync %s of %s not counted in the metrics", sync_id, system)
    return records.get(client, sync_id)


def _after_success(client: redis.Redis, system: str) -> None:
    from coordinator.forecaster import reconcile, store

    found = store.currencies(client, system)
    if len(found) > 1:
        listing = ", ".join(f"{cur} ({n})" for cur, n in sorted(found.items()))
        warnings.raise_warning(
            client, warnings.MIXED_CURRENCIES,
            f"{system} has invoices in more than one currency: {listing}. Its one exchange rate "
            "is applied to all of them in reports; give each currency its own system.",
            system=system, code="mixed_currencies",
        )
    _guard_numbering(client, system)
    # The numbers seen changed: bring the kept findings up to date by what changed and raise
    # their warnings, so the report's GET needs to write nothing. The sync itself is done and
    # recorded: a failure here is logged, not the sync's failure.
    try:
        reconcile.check(client)
    except Exception:
        log.exception("reconciliation after the sync of %s failed", system)


def _guard_numbering(client: redis.Redis, system: str) -> None:
    """Stop numbering a period in which this WHMCS shows a number above the counter."""
    from coordinator.forecaster import store
    from coordinator.numbering import guard
    from coordinator.numbering.series import series_of_system

    try:
        series = series_of_system(client, system) or keys.DEFAULT_SERIES
        ahead = guard.check_synced_numbers(
            client, system, (number for number, _n in store.iter_numbers(client, system)),
            series)
    except Exception:
        log.exception("the numbering guard after the sync of %s failed", system)
        return
    for found in ahead:
        warnings.raise_warning(
            client, warnings.NUMBERING_BEHIND,
            f"{system} shows invoice number {found['formatted']} (series {found['series']}, "
            f"{found['sequence']} {found['period']} number {found['number']}), above the last "
            f"number issued ({found['counter']}): numbering of {found['sequence']} in "
            f"{found['period']} is refused until `invoice-sync recover` or an admin raises "
            "next_number past it (docs/RECOVERY.md)",
            system=system, detail=f"{found['series']}:{found['sequence']}:{found['period']}",
            code="numbering_behind")


class SyncJobFailed(Exception):
    """Raised by the RQ job of a sync that ended ``failed``, so RQ records and logs a failed job
    (not "Job OK") and keeps it in its failed-job registry. The sync record says why."""


def run_sync_job(sync_id: str) -> str:
    """RQ entry point: run the sync with this worker's settings; return its final state.

    Raises:
        SyncJobFailed: the sync failed (its record and warning were written first).
    """
    job = get_current_job()
    settings = load_settings()
    record = execute(_data_client(job.connection, settings), sync_id, settings)
    if record["state"] == records.FAILED:
        raise SyncJobFailed(
            f"sync {sync_id} of {record['system']} failed ({record['error_code']}): "
            f"{record['error']}"
        )
    return record["state"]


_DATA_CLIENTS: dict[str, redis.Redis] = {}


def _data_client(queue: redis.Redis, settings: Mapping[str, Any]) -> redis.Redis:
    """The data Redis of a job: the queue's own server, unless the queue lives apart
    (INVOICE_SYNC_QUEUE_REDIS_URL, e.g. next to a Cluster): then the configured one."""
    if not settings.get("QUEUE_REDIS_URL"):
        return with_decoding(queue, True)
    from coordinator.ops.redis_client import make_redis

    key = str(settings.get("REDIS_CLUSTER") or settings.get("SENTINELS")
              or settings.get("REDIS_URL"))
    if key not in _DATA_CLIENTS:
        _DATA_CLIENTS[key] = make_redis(settings)
    return _DATA_CLIENTS[key]
