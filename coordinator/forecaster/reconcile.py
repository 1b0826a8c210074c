"""Reconciliation: the invoice numbers each WHMCS shows against the numbers the coordinator issued.

Three findings (DESIGN "The forecaster"):

* ``duplicates`` — a number carried by invoices of two systems (or twice in one);
* ``not_issued`` — a number seen in a WHMCS that the ledger does not have (numbered by hand,
  by WHMCS itself, or before the coordinator was adopted);
* ``not_seen`` — a number issued and confirmed to a system that has completed a sync, yet no
  WHMCS shows it (invoice deleted or renumbered after confirmation).

Each series (legal entity) is reconciled on its own: its systems' numbers against its ledger.
Two series may print the same string (different issuers), so that is no duplicate; the
top-level lists are every series' findings together, ``by_series`` has them per series.

:func:`reconcile` reads every stored number once (HSCAN of each system's ``numbers`` hash, not
the invoices) and the ledger once: cost grows with the numbers compared. The report and the
warnings read the same findings kept up to date by ``reconcile_state`` instead; this full
computation builds that state and is the oracle it is tested (and ``invoice-sync reconcile
--verify``-ed) against.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.forecaster import store
from coordinator.warnings import store as warnings

DEFAULT_SERIES = "default"
"""The series of systems and ledger entries that name none (as before series existed)."""

EXAMPLES = 20
"""Numbers quoted in one warning's message; the report lists them all."""


def ledger_entries(client: redis.Redis) -> Iterator[Mapping[str, Any]] | None:
    """Yield every ledger entry of both sequences of every series (each carries ``series``),
    or return None without a numbering ledger."""
    try:
        from coordinator import numbering
        from coordinator.numbering import migrate
    except ImportError:
        return None
    if migrate.needs_migration(client):  # a ledger of the release before series moves first
        migrate.migrate(client)

    def entries():
        for series in numbering.list_series(client):
            for sequence in ("invoice", "credit_note"):
                yield from numbering.iter_ledger(client, sequence, series=series["name"])

    return entries()


def synced_systems(client: redis.Redis, systems: Sequence[str]) -> list[str]:
    """Return the systems that have completed at least one sync."""
    out = []
    for name in systems:
        state = client.hgetall(keys.sys_sync_state(name))
        if state.get("last_full_at") or state.get("last_missing_at"):
            out.append(name)
    return out


def reconcile(
    client: redis.Redis,
    systems: Sequence[str],
    ledger: Iterable[Mapping[str, Any]] | None,
    *,
    series_of: Mapping[str, str] | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """Compare numbers seen in WHMCS with the ledger (``None``: no ledger to compare with).

    Args:
        ledger: Entries with ``formatted``, ``system``, ``status``, ``sequence``, ``id`` and
            ``series`` (missing: ``default``).
        series_of: The series of each system (missing: ``default``).
        limit: Most items listed per finding (``counts`` has the full numbers).
    """
    series_of = series_of or {}
    groups: dict[str, list[str]] = {}
    for name in systems:
        groups.setdefault(series_of.get(name, DEFAULT_SERIES), []).append(name)
    entries: dict[str, list[Mapping[str, Any]]] = {}
    for entry in ledger or ():
        entries.setdefault(entry.get("series", DEFAULT_SERIES), []).append(entry)
    synced = set(synced_systems(client, systems))
    order = sorted(set(groups) | set(entries), key=lambda name: (name != DEFAULT_SERIES, name))
    by_series = {
        name: _reconcile_series(client, groups.get(name, []),
                                entries.get(name, []) if ledger is not None else None, synced)
        for name in order
    }
    counts = {key: sum(part["counts"][key] for part in by_series.values())
              for key in ("numbers_seen", "numbers_issued", "duplicates", "not_issued",
                          "not_seen")}
    return {
        "checked_at": iso(utcnow()),
        "systems": list(systems),
        "systems_synced": sorted(synced),
        "ledger_compared": ledger is not None,
        "counts": counts,
        **{finding: [item for part in by_series.values() for item in part[finding]][:limit]
           for finding in ("duplicates", "not_issued", "not_seen")},
        "by_series": {name: {**part, **{finding: part[finding][:limit] for finding in
                                        ("duplicates", "not_issued", "not_seen")}}
                      for name, part in by_series.items()},
    }


def full_report(client: redis.Redis, limit: int = 1000) -> dict[str, Any]:
    """Compute the report from every stored number and ledger entry of the registered systems
    and every series (the oracle of ``reconcile_state``; ``invoice-sync reconcile --verify``)."""
    from coordinator.systems import registry

    systems = registry.list_systems(client)
    return reconcile(client, [s["name"] for s in systems], ledger_entries(client),
                     series_of={s["name"]: s["series"] for s in systems}, limit=limit)


def _reconcile_series(
    client: redis.Redis, systems: Sequence[str], ledger: Iterable[Mapping[str, Any]] | None,
    synced: set[str],
) -> dict[str, Any]:
    """Reconcile the systems of one series against that series' ledger entries."""
    seen: dict[str, dict[str, int]] = {}
    for name in systems:
        for number, n in store.iter_numbers(client, name):
            seen.setdefault(number, {})[name] = n
    duplicates = [
        {"number": number,
         "systems": [{"system": s, "invoices": n} for s, n in sorted(where.items())]}
        for number, where in sorted(seen.items())
        if len(where) > 1 or sum(where.values()) > 1
    ]
    not_issued, not_seen, issued_count = [], [], 0
    if ledger is not None:
        issued: set[str] = set()
        for entry in ledger:
            formatted = entry.get("formatted")
            if not formatted or entry.get("status") == "void":
                continue
            issued.add(formatted)
            issued_count += 1
            if (entry.get("status") == "confirmed" and entry.get("system") in synced
                    and formatted not in seen):
                not_seen.append({"number": formatted, "system": entry.get("system"),
                                 "allocation": entry.get("id")})
        not_issued = [
            {"number": number, "systems": sorted(where)}
            for number, where in sorted(seen.items()) if number not in issued
        ]
    return {
        "systems": list(systems),
        "counts": {"numbers_seen": len(seen), "numbers_issued": issued_count,
                   "duplicates": len(duplicates), "not_issued": len(not_issued),
                   "not_seen": len(not_seen)},
        "duplicates": duplicates,
        "not_issued": not_issued,
        "not_seen": not_seen,
    }


def raise_warnings(client: redis.Redis, report: Mapping[str, Any]) -> list[str]:
    """Raise one warning per finding type and system, quoting the first numbers; return ids."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for item in report["duplicates"]:
        for where in item["systems"]:
            key = (warnings.DUPLICATE_NUMBER, where["system"])
            grouped.setdefault(key, []).append(item["number"])
    for item in report["not_issued"]:
        for system in item["systems"]:
            grouped.setdefault((warnings.UNKNOWN_NUMBER, system), []).append(item["number"])
    for item in report["not_seen"]:
        grouped.setdefault((warnings.MISSING_NUMBER, item["system"]), []).append(item["number"])
    text = {
        warnings.DUPLICATE_NUMBER: "invoice numbers also used by another invoice",
        warnings.UNKNOWN_NUMBER: "invoice numbers the coordinator never issued",
        warnings.MISSING_NUMBER: "issued and confirmed numbers no WHMCS shows",
    }
    ids = []
    for (kind, system), numbers in sorted(grouped.items()):
        shown = ", ".join(numbers[:EXAMPLES]) + (" …" if len(numbers) > EXAMPLES else "")
        ids.append(warnings.raise_warning(
            client, kind, f"{system}: {len(numbers)} {text[kind]}: {shown}",
            system=system, code=kind,
        ))
    return ids


def check(client: redis.Redis) -> list[str]:
    """Bring the kept findings up to date (``reconcile_state.refresh``) and raise their
    warnings; return ids.

    Run by the sync worker after each completed sync, so reading the report writes nothing.
    """
    from coordinator.forecaster import reconcile_state

    reconcile_state.refresh(client)
    report = reconcile_state.read(client)
    return [] if report is None else raise_warnings(client, report)
