"""Constants of the forecaster (not settings: changing them changes behaviour for every system)."""

QUEUE_NAME = "invoice-sync"
"""RQ queue of the sync jobs; ``invoice-sync worker`` and the worker ``serve`` runs listen on it."""

SYNC_JOB_TIMEOUT = 6 * 3600
"""Seconds RQ lets one sync job run (a full sync of a very large WHMCS with small pages is slow)."""

LOCK_QUEUED_MS = 3600 * 1000
"""How long a queued sync holds its system's lock before a worker claims it. If no worker takes
the job in that time the lock lapses and the job reads as failed (no worker running)."""

LOCK_RUNNING_MS = 60 * 1000
"""Lock lifetime while running; renewed every third of it. A crashed worker frees the system
after at most this long."""

RECENT_SYNCS = 50
"""Sync records listed per system (older ones drop off the list, and expire)."""

SYNC_RECORD_TTL = 90 * 86400
"""Seconds a sync record is kept after it was created."""

UPSERT_BATCH = 500
"""Invoices per Lua upsert call: bounds how long one script blocks Redis (well under 10 ms)."""

DAILY_CLAIM_TTL = 3 * 86400
"""Seconds a (system, day) claim of the daily scheduler is kept once its sync is queued: longer
than any clock skew."""

DAILY_CLAIM_PENDING = 300
"""Seconds a (system, day) claim holds before its sync is confirmed queued. A scheduler that
fails in between (a Redis error, a crash) leaves the day to a later tick after this long
instead of dropping it."""

RECON_CHUNK = 2000
"""Changed numbers or ledger events the reconciliation state applies per transaction (and
stored numbers or ledger entries per transaction while it is being built)."""

RECON_LOCK_SECONDS = 600
"""Lifetime of the lock of the one process updating the reconciliation state; renewed after
every chunk, so a crashed updater frees it after at most this long."""

RECON_WAIT_SECONDS = 120
"""How long a worker that completed a sync waits for another process's update of the
reconciliation state to finish before bringing it up to date itself."""
