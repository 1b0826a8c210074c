"""Move numbering data of the release before series into the ``default`` series.

Before series, each sequence had its own hash tag (``{seq:invoice}:…``, ``{seq:credit_note}:…``).
A series keeps both sequences under one tag (``{ser:default}:invoice:…``), so that one script
can check the whole series. The move keeps every number, ledger entry, reference, skip,
counter and audit record byte for byte (``DUMP``/``RESTORE``), and numbering continues exactly
where it was. It also builds the series' index of formatted numbers from the ledgers.

Safe to run twice and from several processes at once, and on Redis Cluster (every step
touches one slot):

1. *Fence* each old sequence (``migrate_fence.lua``): its settings' ``reset`` becomes
   ``migrated``, which the old release's allocation script refuses, so a coordinator of the
   old release still running can no longer take a number from the old keys.
2. *Copy* every old key into staging keys of this run (``{ser:default}:migrating:<run>:…``).
3. *Commit* (``migrate_commit.lua``, in the new slot): unless another run committed already,
   rename the staged keys to their final names and write the settings — all at once.
4. *Clean up*: delete the old keys (the fenced settings stay, so the old release never
   starts afresh on them) and staged copies of runs that lost.

Stop coordinators of the old release before upgrading: the fence stops their allocations,
but a confirm or void one of them sends after step 2 would be written to the old keys only.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis

from coordinator import keys
from coordinator.numbering import scripts
from coordinator.numbering.sequences import DEFAULTS, SEQUENCES

log = logging.getLogger(__name__)

DEFAULT = keys.DEFAULT_SERIES
FENCE = "migrated"
"""The ``reset`` the old settings get: not a reset the old release knows, so it stops there."""

_ATTEMPTS = 5


@dataclass
class MigrationReport:
    """What one call did: ``state`` is ``current`` (nothing to do), ``migrated`` (this call
    committed) or ``joined`` (another process committed while this one copied)."""

    state: str
    keys: int = 0
    entries: int = 0
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    cleaned: int = 0

    def line(self) -> str:
        """Describe the outcome in one line for the CLI and the log."""
        text = {"current": "numbering data is already in the series layout",
                "migrated": f"moved {self.keys} key(s) with {self.entries} ledger entries "
                            "into the series 'default'",
                "joined": "another process moved the numbering data; nothing left to do"}
        out = text[self.state]
        if self.duplicates:
            out += (f"; {len(self.duplicates)} formatted number(s) were already issued twice "
                    "before the upgrade (see the warnings)")
        if self.cleaned:
            out += f"; removed {self.cleaned} key(s) of the old layout"
        return out


def _legacy(sequence: str, rest: str = "") -> str:
    return keys.legacy_seq_prefix(sequence) + rest


def ensure_layout(client: redis.Redis) -> MigrationReport:
    """Make ``default`` usable: migrate old data if there is some, else write the defaults.

    The cheap check first: once the ``default`` invoice settings exist, nothing is read.
    """
    if client.exists(keys.seq_settings(SEQUENCES[0], DEFAULT)):
        return MigrationReport("current")
    return migrate(client)


def needs_migration(client: redis.Redis) -> bool:
    """Whether data of the old layout waits to be moved (read-only: one round trip)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(keys.seq_settings(SEQUENCES[0], DEFAULT))
        for sequence in SEQUENCES:
            pipe.exists(_legacy(sequence, "settings"))
        current, *legacy = pipe.execute()
    return not current and any(legacy)


def migrate(client: redis.Redis) -> MigrationReport:
    """Run the migration (see the module docstring); return what it did."""
    marker = keys.seq_settings(SEQUENCES[0], DEFAULT)
    for _ in range(_ATTEMPTS):
        if client.exists(marker):
            return MigrationReport("current", cleaned=_clean_up(client))
        report = _copy_and_commit(client)
        if report is not None:
            report.cleaned = _clean_up(client)
            log.info("numbering migration: %s", report.line())
            return report
    raise RuntimeError("numbering migration: staged copies kept disappearing; run it again")


def _copy_and_commit(client: redis.Redis) -> MigrationReport | None:
    settings = {}
    for sequence in SEQUENCES:
        fenced = scripts.run(client, scripts.MIGRATE_FENCE, [_legacy(sequence, "settings")],
                             [FENCE])[0]
        old = dict(zip(fenced[::2], fenced[1::2], strict=True))
        new = {**DEFAULTS[sequence], **old}
        new.pop("migrated_reset", None)
        new["reset"] = old.get("migrated_reset", DEFAULTS[sequence]["reset"])
        settings[sequence] = new

    run = secrets.token_hex(8)
    staging = keys.series_staging(DEFAULT, run)
    pairs: list[str] = []
    index_key = staging + "formatted"
    entries = 0
    duplicates: dict[str, list[str]] = {}
    for sequence in SEQUENCES:
        prefix = _legacy(sequence)
        # A set: SCAN may return a key twice, and a pair named twice fails the commit.
        for old_key in sorted(set(client.scan_iter(match=prefix + "*", count=1000))):
            rest = old_key[len(prefix):]
            if rest == "settings":
                continue
            payload = client.dump(old_key)
            if payload is None:
                continue  # deleted meanwhile by a run that committed: its commit has it
            target = f"{staging}{sequence}:{rest}"
            client.restore(target, 0, payload, replace=True)
            pairs += [target, keys.seq_prefix(sequence, DEFAULT) + rest]
            if rest.startswith("ledger:"):
                entries += _index(client, old_key, index_key, duplicates)
    if client.exists(index_key):
        pairs += [index_key, keys.series_formatted(DEFAULT)]
    outcome = scripts.run(
        client, scripts.MIGRATE_COMMIT,
        [keys.seq_settings(SEQUENCES[0], DEFAULT), keys.seq_settings(SEQUENCES[1], DEFAULT),
         *pairs],
        [json.dumps(settings[SEQUENCES[0]]), json.dumps(settings[SEQUENCES[1]])],
    )[0]
    if outcome == "incomplete":
        return None
    if outcome == "already":
        return MigrationReport("joined")
    if duplicates:
        _warn_duplicates(client, duplicates)
    return MigrationReport("migrated", keys=len(pairs) // 2, entries=entries,
                           duplicates=duplicates)


def _index(client: redis.Redis, ledger_key: str, index_key: str,
           duplicates: dict[str, list[str]]) -> int:
    """Add the formatted numbers of one old ledger hash to the staged index; count them."""
    count = 0
    for _, raw in client.hscan_iter(ledger_key, count=1000):
        entry = json.loads(raw)
        count += 1
        if not client.hsetnx(index_key, entry["formatted"], entry["id"]):
            holder = client.hget(index_key, entry["formatted"])
            if holder != entry["id"]:
                duplicates.setdefault(entry["formatted"], [holder]).append(entry["id"])
    return count


def _warn_duplicates(client: redis.Redis, duplicates: dict[str, list[str]]) -> None:
    from coordinator.warnings import store as warnings

    shown = ", ".join(f"{number} ({' and '.join(ids)})"
                      for number, ids in sorted(duplicates.items())[:20])
    warnings.raise_warning(
        client, warnings.DUPLICATE_NUMBER,
        f"{len(duplicates)} formatted number(s) were issued twice before the upgrade to "
        f"series: {shown}. New allocations can no longer repeat a number.",
        detail="migration", code=warnings.DUPLICATE_NUMBER)


def _clean_up(client: redis.Redis) -> int:
    """Delete the old layout's keys (but its fenced settings) and losing runs' staged keys.

    Only called once the ``default`` series is committed, so nothing deleted here is needed.
    """
    doomed: list[Any] = []
    for sequence in SEQUENCES:
        if client.hget(_legacy(sequence, "settings"), "reset") != FENCE:
            continue  # not fenced: not ours to delete (should not happen after a commit)
        doomed += [key for key in client.scan_iter(match=_legacy(sequence, "*"), count=1000)
                   if key != _legacy(sequence, "settings")]
    doomed += list(client.scan_iter(match=keys.series_tag(DEFAULT) + ":migrating:*",
                                    count=1000))
    removed = 0
    for key in doomed:
        removed += client.unlink(key)
    return removed
