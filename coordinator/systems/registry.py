"""The systems registry: WHMCS installations, their encrypted API credentials, agent tokens.

Domain logic only (no Flask): functions take a Redis client and plain values. Layout
(see ``coordinator.keys``), all under the token store's hash tag ``{auth}``, one Cluster slot:

- ``{auth}:system:<name>`` — hash, one system. ``api_secret_enc`` / ``access_key_enc`` hold
  MultiFernet ciphertext; ``agent_token_digest`` the SHA-256 of the current agent token.
- ``{auth}:systems`` — set of names.
- ``{auth}:tokens`` — hash, token digest → ``{"kind": "agent", "system": name, ...}``.

Every change to those three keys happens in one MULTI/EXEC guarded by WATCH on the system's
hash, so a token is never left valid for a system that no longer has it, and two admins
racing on one name cannot both win. The previous release kept the record under
``{sys:<name>}`` and the names in ``systems``; ``coordinator.systems.migrate`` moves them
before this module first reads the registry.

Each system belongs to one series (``series``, default ``default``): the series numbers its
documents. Registering, moving and deleting also tell the series (``numbering.series.join`` /
``leave``, under a short per-system lock); moving a system that has numbers is refused.

Deleting a system removes its record and revokes its token at once, then purges every key
under its hash tag ``{sys:<name>}`` — the invoices, aggregates and sync history the
forecaster stored for it — so a later system registered under the same name (perhaps another
WHMCS) never inherits them. The purge is in another slot than the record, so it runs batch by
batch under the system's lock, which a registration of the name holds while it writes: a
batch is deleted only while no system of that name is registered. The numbering ledger is
*not* touched: numbers already issued to the system stay there with its name (invariant 3),
and reconciliation keeps showing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from cryptography.fernet import MultiFernet

from coordinator import auth, keys
from coordinator.clock import Clock, iso, utcnow
from coordinator.exceptions import Conflict, InvalidInput, NotFound, SecretUnreadable
from coordinator.numbering import series as numbering_series
from coordinator.systems import secrets
from coordinator.systems.lock import system_lock
from coordinator.systems.migrate import ensure_migrated
from coordinator.systems.urls import UrlPolicy, check_fetch_url, validate_system_url

__all__ = [
    "NAME_PATTERN", "Credentials", "check_fetch_url", "create_system", "delete_system",
    "get_credentials", "get_system", "list_systems", "rotate_agent_token", "rotate_secrets",
    "update_system", "valid_name",
]

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""A system name: a slug, so it is safe in keys, URLs and file names (matched in full)."""

_RETRIES = 20
"""WATCH retries before giving up; only reached when one system is hammered concurrently."""

# Plain fields stored as given (strings in Redis) and shown as they are.
_PLAIN = ("description", "url", "api_identifier", "exchange_rate", "number_on")


def valid_name(name: Any) -> bool:
    """Whether ``name`` is an acceptable system name."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True)
class Credentials:
    """What the forecaster needs to call one WHMCS; the secrets stay out of ``repr``.

    Unpacks like the tuple it stands for::

        url, identifier, secret, access_key = get_credentials(client, "blue", fernet)
    """

    url: str
    identifier: str
    secret: str = field(repr=False)
    access_key: str | None = field(repr=False)

    def __iter__(self) -> Iterator[str | None]:
        return iter((self.url, self.identifier, self.secret, self.access_key))


def _public(record: Mapping[str, str]) -> dict[str, Any]:
    """Turn a stored record into what the API shows: never secrets, never the token digest."""
    return {
        "name": record["name"],
        "description": record.get("description", ""),
        "url": record["url"],
        "api_identifier": record["api_identifier"],
        "has_api_secret": bool(record.get("api_secret_enc")),
        "has_access_key": bool(record.get("access_key_enc")),
        "step": int(record["step"]),
        "auto_sync": record.get("auto_sync") == "1",
        "exchange_rate": record["exchange_rate"],
        "series": record.get("series") or numbering_series.DEFAULT,
        "central_poll": record.get("central_poll") == "1",
        "central_poll_minutes": int(record.get("central_poll_minutes") or 5),
        "number_on": record.get("number_on") or "paid",
        "agent_token_issued_at": record.get("agent_token_issued_at"),
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
    }


def _transaction(client: redis.Redis, key: str, body: Callable[[Any], Any]) -> Any:
    """Run ``body(pipe)`` under WATCH ``key``, retrying when someone else changed it.

    Returns what ``body`` returned.
    """
    for _ in range(_RETRIES):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                result = body(pipe)
                pipe.execute()
                return result
            except redis.WatchError:
                continue
    raise Conflict("The system was changed concurrently too often; retry")


def _require_record(pipe: Any, name: str) -> dict[str, str]:
    record = pipe.hgetall(keys.system(name)) if valid_name(name) else {}
    if not record:
        raise NotFound(f"No system named {name!r}" if valid_name(name) else "No such system")
    return record


def _require_series(client: redis.Redis, series: str) -> None:
    if not numbering_series.exists(client, series):
        raise InvalidInput("Validation failed",
                           {"json": {"series": [f"No series {series!r}."]}})


def _encode(fields: Mapping[str, Any], fernet: MultiFernet | None) -> tuple[dict, list]:
    """Split validated fields into hash values to set and hash fields to delete."""
    to_set: dict[str, str] = {}
    to_delete: list[str] = []
    for name in _PLAIN:
        if name in fields:
            to_set[name] = str(fields[name])
    if "step" in fields:
        to_set["step"] = str(int(fields["step"]))
    if "auto_sync" in fields:
        to_set["auto_sync"] = "1" if fields["auto_sync"] else "0"
    if "central_poll" in fields:
        to_set["central_poll"] = "1" if fields["central_poll"] else "0"
    if "central_poll_minutes" in fields:
        to_set["central_poll_minutes"] = str(int(fields["central_poll_minutes"]))
    if "series" in fields:
        to_set["series"] = fields["series"]
    for name in ("api_secret", "access_key"):
        if name not in fields:
            continue
        if fields[name] is None:
            to_delete.append(f"{name}_enc")
        else:
            if fernet is None:
                raise ValueError("a MultiFernet is needed to store secrets")
            to_set[f"{name}_enc"] = secrets.encrypt(fernet, fields[name])
    return to_set, to_delete


def create_system(
    client: redis.Redis, fernet: MultiFernet, fields: Mapping[str, Any], policy: UrlPolicy,
    *, now: Clock = utcnow,
) -> tuple[dict[str, Any], str]:
    """Register a system; return it (public view) and its new agent token (shown once).

    Args:
        fields: Validated values: name, url, api_identifier, api_secret, and optionally
            description, access_key, step (100), auto_sync (true), exchange_rate ("1"),
            central_poll (false), central_poll_minutes (5), number_on ("paid").
        policy: Which URLs are acceptable (https, SSRF guard).

    Raises:
        InvalidInput: a bad name or URL. Conflict: the name is taken.
    """
    name = fields["name"]
    if not valid_name(name):
        raise InvalidInput("Validation failed", {"json": {"name": ["Not a valid system name."]}})
    validate_system_url(fields["url"], policy)
    values = {"description": "", "step": 100, "auto_sync": True, "exchange_rate": "1",
              "access_key": None, "series": numbering_series.DEFAULT, "central_poll": False,
              "central_poll_minutes": 5, "number_on": "paid", **fields}
    _require_series(client, values["series"])
    to_set, _ = _encode(values, fernet)
    token = auth.new_token(auth.AGENT)
    stamp = iso(now())
    to_set.update(name=name, created_at=stamp, updated_at=stamp,
                  agent_token_digest=auth.digest(token), agent_token_issued_at=stamp)
    key = keys.system(name)

    def body(pipe: Any) -> None:
        if pipe.exists(key):
            raise Conflict(f"A system named {name!r} already exists")
        pipe.multi()
        pipe.hset(key, mapping=to_set)
        pipe.sadd(keys.SYSTEMS, name)
        pipe.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(name))

    ensure_migrated(client)
    with system_lock(client, name):
        if client.exists(key):
            raise Conflict(f"A system named {name!r} already exists")
        numbering_series.prepare_registration(client, values["series"], name)
        # Leftovers of an earlier system of that name whose purge was interrupted: gone before
        # the record exists (their slot is not the record's; the lock keeps the two in order).
        _unlink_data(client, name)
        _transaction(client, key, body)
        try:
            numbering_series.join(client, values["series"], name)
        except NotFound:
            # The series was deleted between the check and the join: undo the registration.
            _remove_record(client, name)
            _require_series(client, values["series"])
            raise
    return _public(to_set), token


def get_system(client: redis.Redis, name: str) -> dict[str, Any]:
    """Return one system (public view: no secrets).

    Raises:
        NotFound: no such system.
    """
    return _public(_require_record(ensure_migrated(client), name))


def list_systems(client: redis.Redis) -> list[dict[str, Any]]:
    """Return every system (public view), ordered by name."""
    names = sorted(ensure_migrated(client).smembers(keys.SYSTEMS))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.system(name))
        records = pipe.execute()
    return [_public(record) for record in records if record]


def update_system(
    client: redis.Redis, name: str, changes: Mapping[str, Any], policy: UrlPolicy,
    fernet: MultiFernet | None = None, *, now: Clock = utcnow,
) -> dict[str, Any]:
    """Change some fields of a system (not its name); return it.

    ``api_secret`` / ``access_key`` are re-encrypted (``access_key: None`` removes it) and
    need ``fernet``. An empty ``changes`` writes nothing.

    Raises:
        NotFound: no such system. InvalidInput: a bad URL or an unknown series.
        Conflict: ``series`` changes while the system has numbers in its series.
    """
    if "name" in changes:
        raise InvalidInput("Validation failed",
                           {"json": {"name": ["A system cannot be renamed."]}})
    if "api_secret" in changes and changes["api_secret"] is None:
        raise InvalidInput("Validation failed",
                           {"json": {"api_secret": ["Field may not be null."]}})
    if "url" in changes:
        validate_system_url(changes["url"], policy)
    ensure_migrated(client)
    if "series" in changes:
        _require_series(client, changes["series"])
        with system_lock(client, name):
            return _move(client, name, changes, fernet, now=now)
    return _update(client, name, changes, fernet, now=now)


def _move(
    client: redis.Redis, name: str, changes: Mapping[str, Any], fernet: MultiFernet | None,
    *, now: Clock,
) -> dict[str, Any]:
    """Apply ``changes`` including ``series``: leave the old series (refused while the
    system has numbers there), write the record, join the new one. Repeating the same
    request finishes a move that stopped half-way."""
    old = _public(_require_record(client, name))["series"]
    target = changes["series"]
    if old != target:
        numbering_series.leave(client, old, name)
    system = _update(client, name, changes, fernet, now=now, expect_series=old)
    numbering_series.join(client, target, name)
    return system


def _update(
    client: redis.Redis, name: str, changes: Mapping[str, Any], fernet: MultiFernet | None,
    *, now: Clock, expect_series: str | None = None,
) -> dict[str, Any]:
    to_set, to_delete = _encode(changes, fernet)
    key = keys.system(name)

    def body(pipe: Any) -> dict[str, Any]:
        record = _require_record(pipe, name)
        if expect_series is not None and (record.get("series") or numbering_series.DEFAULT
                                          ) != expect_series:
            raise Conflict(f"System {name!r} was moved to another series meanwhile; retry")
        if not to_set and not to_delete:
            return _public(record)
        update = {**to_set, "updated_at": iso(now())}
        pipe.multi()
        pipe.hset(key, mapping=update)
        if to_delete:
            pipe.hdel(key, *to_delete)
        record.update(update)
        for gone in to_delete:
            record.pop(gone, None)
        return _public(record)

    return _transaction(client, key, body)


def rotate_agent_token(
    client: redis.Redis, name: str, *, now: Clock = utcnow,
) -> tuple[dict[str, Any], str]:
    """Issue a new agent token for ``name``; the old one stops working in the same EXEC.

    Raises:
        NotFound: no such system.
    """
    token = auth.new_token(auth.AGENT)
    key = keys.system(name)
    ensure_migrated(client)

    def body(pipe: Any) -> dict[str, Any]:
        record = _require_record(pipe, name)
        old = record.get("agent_token_digest")
        update = {"agent_token_digest": auth.digest(token), "agent_token_issued_at": iso(now())}
        pipe.multi()
        if old:
            pipe.hdel(keys.TOKENS, old)
        pipe.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(name))
        pipe.hset(key, mapping=update)
        record.update(update)
        return _public(record)

    return _transaction(client, key, body), token


def delete_system(client: redis.Redis, name: str) -> int:
    """Delete a system: revoke its agent token, drop its record, purge its forecaster data.

    The ledger keeps every number issued to it. Returns how many data keys were purged
    besides the record.

    Raises:
        NotFound: no such system.
    """
    ensure_migrated(client)
    with system_lock(client, name):
        series = _public(_require_record(client, name))["series"]
        # First: once the record is gone nothing names the series, and a system of the same
        # name registered later elsewhere must not find this one still open.
        numbering_series.leave(client, series, name, keep_numbers=True)
        _remove_record(client, name)
    return purge_system_data(client, name)


def _remove_record(client: redis.Redis, name: str) -> None:
    """Revoke the agent token and delete the record (one transaction)."""
    key = keys.system(name)

    def body(pipe: Any) -> None:
        record = _require_record(pipe, name)
        pipe.multi()
        if record.get("agent_token_digest"):
            pipe.hdel(keys.TOKENS, record["agent_token_digest"])
        pipe.delete(key)
        pipe.srem(keys.SYSTEMS, name)

    _transaction(client, key, body)


def purge_system_data(client: redis.Redis, name: str) -> int:
    """Delete every key under ``{sys:<name>}`` of a system that no longer exists.

    Refuses (Conflict) while the system is registered. Safe to run again after a crash.
    """
    if not valid_name(name):
        raise NotFound("No such system")
    return _unlink_data(client, name, locked=False)


def _unlink_data(client: redis.Redis, name: str, *, locked: bool = True) -> int:
    """UNLINK every key under ``{sys:<name>}`` but the lock; count what went.

    ``locked``: the caller holds the system's lock (a registration). Otherwise each batch
    takes it and first checks that no system of the name is registered: a registration holds
    the lock from before its record exists, so a batch never deletes a new system's data.
    """
    purged = 0
    batch: list[str] = []
    for found in client.scan_iter(match=keys.system_data_pattern(name), count=1000):
        if found != keys.system_series_lock(name):
            batch.append(found)
        if len(batch) >= 500:
            purged += _unlink_batch(client, name, batch, locked)
            batch = []
    if batch:
        purged += _unlink_batch(client, name, batch, locked)
    return purged


def _unlink_batch(client: redis.Redis, name: str, batch: list[str], locked: bool) -> int:
    # Count what UNLINK removed: SCAN may return a key more than once (while the keyspace
    # shrinks under our own deletes), so the batch size would overcount.
    if locked:
        return client.unlink(*batch)
    with system_lock(client, name, wait=5):
        if client.exists(keys.system(name)):
            # Registered again meanwhile: what is there now belongs to the new system.
            raise Conflict(f"System {name!r} exists; its data is not purged")
        return client.unlink(*batch)


def get_credentials(client: redis.Redis, name: str, fernet: MultiFernet) -> Credentials:
    """Return the URL and decrypted API credentials of ``name`` (for the forecaster only).

    Check the URL with ``check_fetch_url`` right before each fetch.

    Raises:
        NotFound: no such system. SecretUnreadable: no configured key decrypts the secret.
    """
    record = _require_record(ensure_migrated(client), name)
    access = record.get("access_key_enc")
    return Credentials(
        url=record["url"],
        identifier=record["api_identifier"],
        secret=secrets.decrypt(fernet, record["api_secret_enc"]),
        access_key=secrets.decrypt(fernet, access) if access else None,
    )


def rotate_secrets(client: redis.Redis, fernet: MultiFernet) -> int:
    """Re-encrypt every stored secret with the first key; return how many were rewritten.

    Every secret is checked first: when any cannot be decrypted nothing is written, and the
    error names the systems (never a secret), so the missing key can be put back.

    Raises:
        SecretUnreadable: some secrets cannot be decrypted with the configured keys.
    """
    names = sorted(ensure_migrated(client).smembers(keys.SYSTEMS))
    unreadable = []
    for name in names:
        record = client.hgetall(keys.system(name))
        try:
            for field_name in ("api_secret_enc", "access_key_enc"):
                if record.get(field_name):
                    secrets.rotate(fernet, record[field_name])
        except SecretUnreadable:
            unreadable.append(name)
    if unreadable:
        raise SecretUnreadable(
            "No configured key decrypts the secrets of: " + ", ".join(unreadable)
            + ". Put the key that encrypted them back in INVOICE_SYNC_SECRET_KEYS; "
            "nothing was re-encrypted."
        )
    rotated = 0
    for name in names:
        key = keys.system(name)

        def body(pipe: Any, key: str = key) -> int:
            record = pipe.hgetall(key)
            update = {f: secrets.rotate(fernet, record[f])
                      for f in ("api_secret_enc", "access_key_enc") if record.get(f)}
            if not update:
                return 0
            pipe.multi()
            pipe.hset(key, mapping=update)
            return len(update)

        rotated += _transaction(client, key, body)
    return rotated
