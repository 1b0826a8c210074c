"""Every Redis key the coordinator uses, built in one place.

Keys of one series share the hash tag ``{ser:<name>}``, the forecaster data of one system
shares ``{sys:<name>}``, and the registry and the token store share ``{auth}``, so each Lua
script and each MULTI/EXEC touches a single hash slot and the layout also holds on Redis
Cluster (``tests/coordinator/test_cluster_slots.py`` checks every script for any names).
"""

from __future__ import annotations

# --- auth -------------------------------------------------------------------------------
# Every key of the token store, of its request accounting and of the systems registry (whose
# records name each system's agent token) shares the hash tag {auth}: the lookup-and-count
# script, the create/revoke transactions and register/rotate/delete each touch one hash slot.

AUTH_TAG = "{auth}"
"""The hash tag every auth key starts with (one Cluster slot)."""

TOKENS = f"{AUTH_TAG}:tokens"
"""Hash: sha256(token) -> JSON ``{"kind": "admin"|"auditor"|"agent", "system": name|None,
"label", "created_at", "created_by"}`` (records of the previous release hold only ``kind`` and
``label`` or ``system``)."""

LEGACY_TOKENS = "auth:tokens"
"""Where the previous release kept :data:`TOKENS`, without a hash tag; moved at start."""

TOKEN_AUDIT = f"{AUTH_TAG}:audit"
"""List: JSON records of token creations and revocations (who, when, token id), oldest first."""

TOKENS_REVOKED = f"{AUTH_TAG}:revoked"
"""Set: digests of revoked admin and auditor tokens, so a restart of ``serve`` never brings
back the token of ``<data-dir>/admin-token`` once it was revoked."""

# --- numbering ----------------------------------------------------------------------------
# Every key of one series (its two sequences, ledgers, reference indexes, formatted-number
# index, members and audit) starts with the hash tag ``{ser:<series>}``: one Lua script sees
# the whole series in one slot, and many series spread over a Redis Cluster. The functions
# below default to the ``default`` series, which is what ``/v1/sequences/…`` serves.

DEFAULT_SERIES = "default"
"""The series that always exists; systems belong to it unless registered elsewhere."""

SERIES = "series"
"""Set: names of the series created with ``POST /v1/series`` (``default`` is implicit)."""


def series_tag(series: str) -> str:
    """The hash tag ``{ser:<series>}`` every key of the series starts with."""
    return f"{{ser:{series}}}"


def series_record(series: str) -> str:
    """Hash: one series (name, description, created_at, updated_at)."""
    return f"{series_tag(series)}:series"


def series_members(series: str) -> str:
    """Hash: system -> ``open`` | ``closed``: whether allocation serves the system here.

    Authoritative for allocation (checked inside the script, in the series' slot); the
    system's record names its series for routing. In ``default`` a missing field means open
    (systems registered before series existed); elsewhere it means closed.
    """
    return f"{series_tag(series)}:members"


def series_formatted(series: str) -> str:
    """Hash: formatted number -> ledger id, for every number ever issued in the series.

    Allocation refuses a formatted number already in it (one HSETNX), so no two documents of
    one series carry the same string, whatever the settings history.
    """
    return f"{series_tag(series)}:formatted"


def series_staging(series: str, token: str) -> str:
    """Prefix of the keys one migration run copies into before committing them (same slot)."""
    return f"{series_tag(series)}:migrating:{token}:"


def seq_prefix(seq: str, series: str = DEFAULT_SERIES) -> str:
    """The common start of every key of sequence ``seq`` in ``series``."""
    return f"{series_tag(series)}:{seq}:"


def seq_settings(seq: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: the settings of sequence ``seq`` (increment, format, padding, reset, dedicated)."""
    return f"{seq_prefix(seq, series)}settings"


def seq_counter(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """String: the last number taken in ``period`` (``all``, ``2026`` or ``2026-11``).

    Allocation INCRBYs it by the increment; an admin raising ``next_number`` moves it forward
    (recorded in :func:`seq_skips`). The next number of the period is ``counter + increment``.
    """
    return f"{seq_prefix(seq, series)}counter:{period}"


def seq_ledger(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: number -> JSON ledger entry, for every number issued in ``period``."""
    return f"{seq_prefix(seq, series)}ledger:{period}"


def seq_ledger_order(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Sorted set: the numbers of :func:`seq_ledger` scored by themselves (exact below 2^53)."""
    return f"{seq_prefix(seq, series)}ledger-order:{period}"


def seq_settled(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: ``count`` (entries of ``period`` that live only in settled blocks, not in
    :func:`seq_ledger` / :func:`seq_ledger_order`) and ``upto`` (the highest number
    compaction has looked at), see numbering/settled.py."""
    return f"{seq_prefix(seq, series)}settled:{period}"


def seq_settled_blocks(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Sorted set: ``<first>:<last>`` of each settled block of ``period``, scored by first."""
    return f"{seq_prefix(seq, series)}settled-blocks:{period}"


def seq_settled_block(seq: str, period: str, first: int, series: str = DEFAULT_SERIES) -> str:
    """String (binary): the zlib-compressed ledger entries (JSON lines, number order) of
    settled numbers of ``period`` from ``first`` on (numbering/settled.py)."""
    return f"{seq_prefix(seq, series)}settled-block:{period}:{first}"


def seq_ledger_order_rebuild(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Sorted set, for an instant: :func:`seq_ledger_order` copied at its size by settle.lua
    (ZREM never shrinks a sorted set's hash table), then renamed over it."""
    return f"{seq_prefix(seq, series)}ledger-order-rebuild:{period}"


def seq_refs(seq: str, document: str, system: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: WHMCS reference -> ledger id, for ``document``s of ``system`` numbered in ``seq``."""
    return f"{seq_prefix(seq, series)}refs:{document}:{system}"


def seq_periods(seq: str, series: str = DEFAULT_SERIES) -> str:
    """Set: every period of ``seq`` that has a counter (so listings need no SCAN)."""
    return f"{seq_prefix(seq, series)}periods"


def seq_stats(seq: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: ``issued``, ``credit_notes`` (numbered here, guards the dedicated toggle),
    ``replays`` (bumped by each replay so WAITAOF has a write of this connection to wait for)."""
    return f"{seq_prefix(seq, series)}stats"


def seq_skips(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: counter value -> counter value an admin moved it to (explains a gap)."""
    return f"{seq_prefix(seq, series)}skips:{period}"


def seq_guard(seq: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: the guard against numbering from a store behind reality (``numbering/guard.py``).

    ``initialised`` (when and why the series' numbering was set explicitly; a restore removes
    it and records ``restored``: the backup it came from) and ``seen:<period>`` (the highest
    number a sync or a recovery saw in a WHMCS: ``<number>|<formatted>|<system>``).
    ``allocate.lua`` reads it before taking a new number."""
    return f"{seq_prefix(seq, series)}guard"


def seq_voids(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Sorted set: the voided numbers of ``period`` scored by themselves, added by the void
    itself (transition.lua), so the gap report reads the voids, not the whole period."""
    return f"{seq_prefix(seq, series)}voids:{period}"


def seq_gap_index(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """String: set once :func:`seq_voids` of ``period`` holds the voids made before it existed
    (one walk of the period, on the first gap report after an upgrade)."""
    return f"{seq_prefix(seq, series)}gap-index:{period}"


def seq_unconfirmed(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """Sorted set: numbers of ``period`` seen still ``issued``, scored by issue time (unix s).

    Kept by ``ops.unconfirmed`` for the metrics; settled numbers leave it when re-checked."""
    return f"{seq_prefix(seq, series)}unconfirmed:{period}"


def seq_unconfirmed_scan(seq: str, period: str, series: str = DEFAULT_SERIES) -> str:
    """String: the highest number of ``period`` whose status ``ops.unconfirmed`` has looked at."""
    return f"{seq_prefix(seq, series)}unconfirmed-scan:{period}"


def seq_audit(seq: str, series: str = DEFAULT_SERIES) -> str:
    """List: JSON audit records of settings changes (who, when, before, after), oldest first."""
    return f"{seq_prefix(seq, series)}audit"


def seq_events(seq: str, series: str = DEFAULT_SERIES) -> str:
    """List: the ledger's events (issued, confirmed, voided, settings changed, next number
    raised), JSON, append-only, each carrying its index as ``seq`` (see numbering/chain.py)."""
    return f"{seq_prefix(seq, series)}events"


def seq_chain(seq: str, series: str = DEFAULT_SERIES) -> str:
    """List: the SHA-256 (hex) of each sealed event of :func:`seq_events`, same index."""
    return f"{seq_prefix(seq, series)}chain"


def seq_archived(seq: str, series: str = DEFAULT_SERIES) -> str:
    """Hash: ``events`` (how many events of :func:`seq_events`, from index 0, live in archived
    blocks, :func:`seq_block`, instead of the lists; their places there hold empty strings, so
    every index stays what it was) and ``head`` (the hash of the last archived event), see
    numbering/compaction.py. Absent: nothing archived."""
    return f"{seq_prefix(seq, series)}archived"


def seq_block(seq: str, start: int, series: str = DEFAULT_SERIES) -> str:
    """String (binary): one archived block of sealed events from index ``start``: their
    hashes' first bytes, the last one's whole hash and the events, zlib-compressed
    (numbering/blocks.py)."""
    return f"{seq_prefix(seq, series)}block:{start}"


def seq_checkpoints(seq: str, series: str = DEFAULT_SERIES) -> str:
    """List: JSON signed checkpoints of :func:`seq_chain` (events, head, at, key_id, signature),
    oldest first (see numbering/checkpoints.py)."""
    return f"{seq_prefix(seq, series)}checkpoints"


def seq_checkpoint_claim(seq: str, series: str = DEFAULT_SERIES) -> str:
    """String: set (NX, expiring after LEDGER_CHECKPOINT_SECONDS) by the scheduler that signs
    the chain's periodic checkpoint, so several schedulers sign it once per interval."""
    return f"{seq_prefix(seq, series)}checkpoint-claim"


UNCONFIRMED_CHECK = "numbering:unconfirmed-check"
"""String: set (NX, expiring after UNCONFIRMED_CHECK_SECONDS) by the scheduler that looks for
numbers unconfirmed past the grace time in every series, so several schedulers look once."""


def legacy_seq_prefix(seq: str) -> str:
    """Start of the keys of sequence ``seq`` before series existed (release 6d52368 and older).

    ``{seq:<name>}:…``, one slot per sequence. ``numbering.migrate`` moves them into the
    ``default`` series and leaves ``{seq:<name>}:settings`` as a fence that old code cannot use.
    """
    return f"{{seq:{seq}}}:"


# --- systems ------------------------------------------------------------------------------
# The registry lives with the token store under {auth}: registering, rotating and deleting a
# system change its record, the set of names and the token hash in one MULTI/EXEC, which a
# Cluster runs only on one slot. What the forecaster stores per system stays under {sys:<name>}.

SYSTEMS = f"{AUTH_TAG}:systems"
"""Set: names of the registered systems."""


def system(name: str) -> str:
    """Hash: one registered system (the API secret only as MultiFernet ciphertext)."""
    return f"{AUTH_TAG}:system:{name}"


LEGACY_SYSTEMS = "systems"
"""Where the previous release kept :data:`SYSTEMS` (no hash tag); moved by
``coordinator.systems.migrate``."""


def legacy_system(name: str) -> str:
    """Where the previous release kept :func:`system` (in the system's own slot)."""
    return f"{{sys:{name}}}:system"


def system_tag(name: str) -> str:
    """The hash tag ``{sys:<name>}`` every per-system key starts with (one Cluster slot)."""
    return f"{{sys:{name}}}"


def system_series_lock(name: str) -> str:
    """String: held (SET NX PX) while the system is registered, joins, moves between or leaves
    series, is deleted, has its data purged or its record migrated, so two such changes to
    one system cannot interleave (``coordinator.systems.lock``)."""
    return f"{system_tag(name)}:series-lock"


def system_data_pattern(name: str) -> str:
    """SCAN pattern of every per-system key of ``name``: its forecaster data (and its lock).

    Deleting a system purges everything under this pattern, so per-system data (invoices,
    aggregates, sync history) must live under ``system_tag(name)``. Names are slugs
    (``[a-z0-9_-]``), so they hold no glob characters.
    """
    return f"{system_tag(name)}:*"


# --- operations ---------------------------------------------------------------------------


RATE_LIMIT_PREFIX = f"{AUTH_TAG}:rate:"
"""Prefix of the request accounting: counters, not data (kept out of the AOF, most expire)."""


def rate_limit(token_digest: str, window: int) -> str:
    """String: requests of one known token (by digest prefix) in one fixed time window."""
    return f"{RATE_LIMIT_PREFIX}{token_digest[:32]}:{window}"


def rate_auth_failures(window: int) -> str:
    """Hash: client address -> failed authentications in one window (a bounded field count).

    One key per window whatever the number of addresses or tokens tried: past a cap, further
    addresses share one field (see ``ops/ratelimit.lua``).
    """
    return f"{RATE_LIMIT_PREFIX}failed:{window}"


TOKENS_LAST_USED = f"{RATE_LIMIT_PREFIX}last-used"
"""Hash: sha256(token) -> unix start of the last rate window the token was used in."""

BACKUP_EXCLUDED_PREFIXES = (RATE_LIMIT_PREFIX, "rq:", "ui:session:", "recon:", "{recon:")
"""Keys ``invoice-sync backup`` leaves out: request accounting (counters bumped by every
request, not data), RQ's queues and worker registrations (a restored store must not run
yesterday's jobs; syncs are re-run on demand or by the daily schedule) and dashboard logins
(a restore must not bring back a session that was logged out or expired meanwhile) and the
reconciliation's kept findings (derived data: rebuilt from the restored numbers and ledger)."""


# --- forecaster ---------------------------------------------------------------------------
# One system's invoices, aggregates and sync state share {sys:<name>}: the upsert script and
# the sync lock each touch one hash slot.


def sys_invoices(name: str) -> str:
    """Hash: WHMCS invoice id -> compact record (dates, status, currency, minor units, number)."""
    return f"{{sys:{name}}}:invoices"


def sys_aggregates(name: str) -> str:
    """Hash: ``<YYYY-MM>|<status>|<currency>|<n|net|tax|gross>`` -> integer (minor units)."""
    return f"{{sys:{name}}}:aggregates"


def sys_receivables(name: str) -> str:
    """Hash: ``<due YYYY-MM-DD>|<currency>|<n|gross>`` -> integer, over Unpaid invoices."""
    return f"{{sys:{name}}}:receivables"


def sys_currencies(name: str) -> str:
    """Hash: currency code -> number of stored invoices in it (more than one field: mixed)."""
    return f"{{sys:{name}}}:currencies"


def sys_numbers(name: str) -> str:
    """Hash: invoicenum seen in that WHMCS -> how many of its invoices carry it."""
    return f"{{sys:{name}}}:numbers"


def sys_numbers_changed(name: str) -> str:
    """List: invoice numbers whose count in :func:`sys_numbers` changed, appended by
    ``upsert.lua`` in the same step; the reconciliation state consumes it from the head
    (``forecaster/reconcile_state.py``), so a sync's cost there is what it changed."""
    return f"{{sys:{name}}}:numbers:changed"


def sys_recon_tracked(name: str) -> str:
    """String: set when the reconciliation state took in this system's numbers. Purged with
    the system's data, so a system deleted and registered again between two updates makes
    the next update rebuild instead of keeping the old one's numbers."""
    return f"{{sys:{name}}}:recon:tracked"


def sys_sync_state(name: str) -> str:
    """Hash: ``high_water`` (all ids up to it are stored), last completed syncs per mode."""
    return f"{{sys:{name}}}:sync:state"


def sys_sync_lock(name: str) -> str:
    """String: id of the sync that owns the system (SET NX PX, renewed while it runs)."""
    return f"{{sys:{name}}}:sync:lock"


def sys_syncs(name: str) -> str:
    """List: ids of the system's recent syncs, newest first."""
    return f"{{sys:{name}}}:syncs"


def sys_daily_claim(name: str, day: str) -> str:
    """String: set once by the scheduler that enqueued ``day``'s automatic sync of the system."""
    return f"{{sys:{name}}}:daily:{day}"


def sys_central_poll(name: str) -> str:
    """Hash: the last central poll of the system (state, when, what it did, why it failed)."""
    return f"{{sys:{name}}}:central-poll"


def sys_central_poll_lock(name: str) -> str:
    """String: the worker polling the system now (SET NX PX; one central poll at a time)."""
    return f"{{sys:{name}}}:central-poll:lock"


def sys_central_poll_due(name: str) -> str:
    """String: set by the scheduler that queued the system's poll; expires when the next is due."""
    return f"{{sys:{name}}}:central-poll:due"


def sys_sync_stats(name: str) -> str:
    """Hash: cumulative sync outcomes of a system for metrics: ``done``, ``failed`` (runs),
    ``invoices`` (fetched), ``seconds`` (summed run time), ``last_seconds``."""
    return f"{{sys:{name}}}:sync:stats"


def sync(sync_id: str) -> str:
    """Hash: one sync job's record (system, mode, state, pages, invoices, times, error)."""
    return f"sync:{sync_id}"


# --- reconciliation -----------------------------------------------------------------------
# The reconciliation's findings, kept up to date by the worker and scheduler
# (forecaster/reconcile_state.py): derived data, rebuilt from the stored numbers and the ledger
# with ``invoice-sync reconcile --rebuild``. One hash tag per series, so each update of a
# series is one MULTI/EXEC in one slot.

RECON_STATE = "recon:state"
"""Hash: ``version``, ``built_at``, ``updated_at`` and the systems and series the state was
built for (JSON). Absent: the state was never built (a store of the previous release)."""

RECON_LOCK = "recon:lock"
"""String: held (redis-py Lock) by the one process updating the reconciliation state."""


def recon_tag(series: str) -> str:
    """The hash tag ``{recon:<series>}`` of one series' reconciliation state."""
    return f"{{recon:{series}}}"


def recon(series: str, part: str) -> str:
    """One part of a series' reconciliation state: ``seen`` (hash number -> JSON {system:
    invoices}), ``entries`` (hash ledger id -> JSON [status, system, formatted, order]),
    ``issued`` (hash formatted -> non-void entries), ``confirmed`` (hash formatted -> JSON
    [[order, id, system], ...]), ``duplicates``/``not_issued``/``not_seen`` (sorted sets, score
    0, in report order) and ``meta`` (hash: event cursors, ``numbers_issued``)."""
    return f"{recon_tag(series)}:{part}"


# --- warnings -----------------------------------------------------------------------------
# Redis Cluster: the index and every warning share the hash tag {warnings}, so raise.lua
# touches one slot. The previous release's names (below) are moved at first use.

WARNINGS = "{warnings}:index"
"""Sorted set: warning id -> last seen (unix seconds), for ``GET /v1/warnings?since=``."""


def warning(warning_id: str) -> str:
    """Hash: one deduplicated warning (type, system, message, first/last seen, count, acked)."""
    return f"{{warnings}}:warning:{warning_id}"


WARNINGS_OPEN_TYPES = "{warnings}:open-types"
"""Set: the types that have (or had) an open index (:func:`warnings_open`)."""


def warnings_open(kind: str) -> str:
    """Set: ids of the unacknowledged warnings of type ``kind``, kept by ``raise.lua`` and the
    acknowledgement, so the metrics gauge counts them (SCARD) instead of reading every one."""
    return f"{{warnings}}:open:{kind}"


WARNINGS_OPEN_INDEXED = "{warnings}:open-indexed"
"""String: set once the open sets hold the warnings raised before they existed (filled once
per store, on the first use of warnings after the upgrade)."""


LEGACY_WARNINGS = "warnings"
"""Where the previous release kept :data:`WARNINGS` (no hash tag); moved by
``coordinator.warnings.store.migrate_legacy``."""


def legacy_warning(warning_id: str) -> str:
    """Where the previous release kept :func:`warning`."""
    return f"warning:{warning_id}"


# --- dashboard ----------------------------------------------------------------------------

UI_SECRET = "ui:secret-key"
"""String: the random key signing dashboard session cookies (when UI_SECRET_KEY is unset)."""


def ui_session(session_digest: str) -> str:
    """Hash: one dashboard login (``token`` digest, ``kind``, ``created_at``), with a TTL.

    Named by the SHA-256 of the session id the cookie carries, so a Redis dump holds no
    usable session id; the record holds the token's digest, never the token.
    """
    return f"ui:session:{session_digest}"
