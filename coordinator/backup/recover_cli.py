"""``invoice-sync recover``: number again above everything in use (see docs/RECOVERY.md)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click

from coordinator.ops.datadir import data_dir_option, use_key_file


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def _journals(values: tuple[str, ...]) -> list[tuple[str, Path]]:
    pairs = []
    for value in values:
        system, sep, path = value.partition("=")
        if not sep or not system or not path:
            raise click.BadParameter(f"{value!r} is not SYSTEM=PATH", param_hint="--journal")
        if not Path(path).is_file():
            raise click.BadParameter(f"{path} is not a file", param_hint="--journal")
        pairs.append((system, Path(path)))
    return pairs


def _print_plan(described: dict[str, Any]) -> None:
    for period in described["periods"]:
        where = f"{period['series']} {period['sequence']} {period['period']}"
        if period["raise"]:
            move = (f"counter {period['counter']} -> {period['new_counter']} "
                    f"(next number {period['next_number']})")
        else:
            move = f"counter stays {period['counter']} (next number {period['next_number']})"
        line = f"{where}: {move}; {period['in_use']} number(s) in use"
        if period["recover"]:
            line += (f", {period['recover']} not in the ledger "
                     f"({period['first'][0]}..{period['last'][0]}) to record as recovered, from "
                     + ", ".join(f"{s} ({n})" for s, n in sorted(period["sources"].items())))
        if period["unknown_skipped"]:
            line += (f"; {period['unknown_skipped']} number(s) below the new counter that no "
                     "source showed are recorded as skipped (the gap report lists them)")
        click.echo(line)
    if described["initialise_series"]:
        click.echo("numbering resumes in series: " + ", ".join(described["initialise_series"]))
    if described["unread"]:
        click.echo(f"{described['unread']} number(s) no format of their series prints were "
                   "left alone, e.g. " + "; ".join(described["unread_examples"]))


@click.command()
@data_dir_option
@click.option("--reason", required=True, envvar="INVOICE_SYNC_RECOVER_REASON",
              help="Why (kept with every recovered entry, chain event and audit record).")
@click.option("--journal", "journals", multiple=True, metavar="SYSTEM=PATH",
              envvar="INVOICE_SYNC_RECOVER_JOURNALS",
              help="An agent's journal file (its --journal, SQLite) of SYSTEM; repeatable.")
@click.option("--system", "systems", multiple=True, envvar="INVOICE_SYNC_RECOVER_SYSTEMS",
              help="Read only these systems' WHMCS (default: every registered system).")
@click.option("--no-whmcs", is_flag=True, envvar="INVOICE_SYNC_RECOVER_NO_WHMCS",
              help="Read no WHMCS: the journals (and --system-less stores) only.")
@click.option("--dry-run", is_flag=True, envvar="INVOICE_SYNC_RECOVER_DRY_RUN",
              help="Show what would be done; change no numbering (each WHMCS is still synced).")
@click.option("--json", "as_json", is_flag=True, envvar="INVOICE_SYNC_RECOVER_JSON",
              help="Print the plan and the result as JSON.")
def recover(data_dir: Path, reason: str, journals: tuple[str, ...], systems: tuple[str, ...],
            no_whmcs: bool, dry_run: bool, as_json: bool) -> None:
    """Raise every counter past the numbers in use in WHMCS and agents' journals.

    For a store that lost its data, or was restored from a backup older than what WHMCS shows:
    reads every registered system's WHMCS (a full sync, with its stored credentials) and the
    journals given, records each number the ledger lacks as 'recovered' (with the reason),
    raises the counters (never lowers one), then lets the store number again.
    """
    from coordinator.backup import evidence
    from coordinator.backup.cli import _store
    from coordinator.config import load_settings
    from coordinator.exceptions import CoordinatorError
    from coordinator.numbering import recover as recovery
    from coordinator.systems import registry

    journal_files = _journals(journals)
    use_key_file(data_dir)
    try:
        with _store(data_dir, may_start=True, decode=True) as client:
            settings = dict(load_settings())
            registered = {s["name"]: s.get("series") or "default"
                          for s in registry.list_systems(client)}
            unknown = sorted(set(systems) - set(registered))
            if unknown:
                raise click.BadParameter(f"not registered: {', '.join(unknown)}",
                                         param_hint="--system")
            chosen = [] if no_whmcs else sorted(systems or registered)
            if not no_whmcs and (skipped := sorted(set(registered) - set(chosen))):
                click.echo(f"not read (not in --system): {', '.join(skipped)}; numbers only "
                           "their WHMCS printed are not protected", err=True)
            found: list[recovery.Evidence] = []
            for system in chosen:
                click.echo(f"reading the WHMCS of {system} (full sync)...", err=True)
                found += evidence.from_whmcs(client, system, settings)
            for system, path in journal_files:
                found += evidence.from_journal(path, system)
            plan = recovery.plan(client, found, registered)
            described = plan.describe()
            if dry_run:
                if as_json:
                    click.echo(json.dumps({"dry_run": True, "plan": described}, indent=2))
                else:
                    click.echo(f"dry run: {len(found)} number(s) in use read; nothing changed")
                    _print_plan(described)
                return
            guard = getattr(client, "durability_guard", None)
            durability = guard.current(client) if guard is not None else None
            done = recovery.apply(client, plan, actor=_operator(), reason=reason,
                                  durability=durability)
    except CoordinatorError as error:
        raise click.ClickException(error.message) from None
    if as_json:
        click.echo(json.dumps({"dry_run": False, "plan": described, "done": done}, indent=2))
        return
    click.echo(f"{len(found)} number(s) in use read")
    _print_plan(described)
    recovered = sum(item["recovered"] for item in done)
    click.echo(f"recovered: {recovered} ledger entr{'y' if recovered == 1 else 'ies'}; "
               "counters raised where needed; numbering resumes (see the audit of each "
               "sequence and `invoice-sync ledger verify`)")


def register(main: click.Group) -> None:
    """Add ``recover`` to the ``invoice-sync`` command."""
    main.add_command(recover)
