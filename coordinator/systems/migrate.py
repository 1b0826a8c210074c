"""Move the registry of the previous release under the hash tag ``{auth}``.

The previous release kept each system's record in the system's own slot
(``{sys:<name>}:system``) and the names in an untagged set (``systems``), so registering,
rotating a token and deleting touched three slots, which a Redis Cluster refuses. This release
keeps them next to the token store (``{auth}:system:<name>``, ``{auth}:systems``); the agent
tokens themselves (``{auth}:tokens``) do not move.

Per system, under the system's lock (``coordinator.systems.lock``, which registering and
deleting hold too, so a system deleted meanwhile cannot be copied back), each step atomic on
its own slot and safe to repeat after a crash:

1. copy the old record to the new key unless that exists (MULTI/EXEC in ``{auth}``, the name
   added to ``{auth}:systems`` in the same transaction);
2. delete the old record (``{sys:<name>}``);
3. remove the name from the old set.

A crash between steps leaves the new record complete and the old one still there; the next run
finds the new record and only finishes the clean-up. Every field is kept as it was (the record
is a flat hash of strings), so the API secret's ciphertext, the agent token's digest and the
series stay, and every agent token keeps working. Stop coordinators of the previous release
before upgrading: one of them would keep writing the old keys.

Runs when ``invoice-sync serve`` starts and, in any other process, before its first use of the
registry (:func:`ensure_migrated`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from coordinator import keys
from coordinator.ops.redis_client import OncePerClient
from coordinator.systems.lock import LOCK_SECONDS, system_lock

log = logging.getLogger(__name__)

def needs_migration(client: redis.Redis) -> bool:
    """Whether records of the previous release wait to be moved (one EXISTS)."""
    return bool(client.exists(keys.LEGACY_SYSTEMS))


def migrate_legacy(client: redis.Redis) -> int:
    """Move every system of the previous release; return how many records were copied."""
    if not needs_migration(client):
        return 0
    moved = sum(_move(client, name) for name in sorted(client.smembers(keys.LEGACY_SYSTEMS)))
    if moved:
        log.info("systems registry: moved %d system record(s) under %s", moved, keys.AUTH_TAG)
    return moved


ensure_migrated = OncePerClient(migrate_legacy)
"""Return the client, migrated once per process and client before the registry's first read."""


def _move(client: redis.Redis, name: str) -> int:
    old, new = keys.legacy_system(name), keys.system(name)
    with system_lock(client, name, wait=LOCK_SECONDS):
        record = client.hgetall(old)
        copied = 0
        if record:

            def body(pipe: Any) -> int:
                if pipe.exists(new):
                    return 0  # copied by an earlier run (or another process) already
                pipe.multi()
                pipe.hset(new, mapping=record)
                pipe.sadd(keys.SYSTEMS, name)
                return 1

            copied = client.transaction(body, new, value_from_callable=True)
            client.delete(old)
        client.srem(keys.LEGACY_SYSTEMS, name)
    return copied
