"""The two sequences, their settings, periods and the admin's changes to them.

Defaults (chosen to match common EU practice and WHMCS's own tags):

=============  =====================  =======  ======  =========  =========
sequence       format                 padding  reset   increment  dedicated
=============  =====================  =======  ======  =========  =========
invoice        ``INV-{YEAR}-{NUMBER}``  6        yearly  1          –
credit_note    ``CN-{YEAR}-{NUMBER}``   6        yearly  1          true
=============  =====================  =======  ======  =========  =========

With ``dedicated`` off, credit notes draw numbers from ``invoice`` (its format, its counter).
The period of a number is chosen by the document's date: ``all`` (reset never), ``2026``
(yearly) or ``2026-11`` (monthly).
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import redis

from coordinator import keys
from coordinator.clock import iso, utcnow
from coordinator.exceptions import Conflict, InvalidInput, NotFound, ServiceUnavailable
from coordinator.numbering import scripts

INVOICE = "invoice"
CREDIT_NOTE = "credit_note"
SEQUENCES = (INVOICE, CREDIT_NOTE)
DOCUMENTS = (INVOICE, CREDIT_NOTE)
RESETS = ("never", "yearly", "monthly")
TAGS = ("{YEAR}", "{MONTH}", "{DAY}", "{NUMBER}")

MAX_NUMBER = 10**15 - 1
"""Largest number ever issued: 15 digits, below 2^53, so Lua's doubles hold every number
exactly. Reaching it is a clear "sequence exhausted" error, never a wrap."""

MAX_PADDING = 15
"""Padding wide enough for :data:`MAX_NUMBER`."""

MAX_INCREMENT = 1_000_000
"""Largest increment; anything bigger would exhaust a sequence in a handful of invoices."""

ROUTE_FIELD = {INVOICE: "credit_notes", CREDIT_NOTE: "dedicated"}
"""The settings field saying whether a sequence currently numbers credit notes."""

DEFAULTS: dict[str, dict[str, str]] = {
    INVOICE: {"increment": "1", "format": "INV-{YEAR}-{NUMBER}", "padding": "6",
              "reset": "yearly", "credit_notes": "0"},
    CREDIT_NOTE: {"increment": "1", "format": "CN-{YEAR}-{NUMBER}", "padding": "6",
                  "reset": "yearly", "dedicated": "1"},
}

_TAG = re.compile(r"\{[^{}]*\}")


def periods_of(day: date) -> tuple[str, str, str]:
    """Return the period of ``day`` for reset never, yearly and monthly."""
    return "all", f"{day.year:04d}", f"{day.year:04d}-{day.month:02d}"


def period_of(day: date, reset: str) -> str:
    """Return the period ``day`` falls in under ``reset``."""
    return periods_of(day)[RESETS.index(reset)]


def check_format(fmt: str, reset: str) -> None:
    """Refuse formats with unknown tags or without the tags their reset needs.

    ``{NUMBER}`` is always needed; a yearly reset needs ``{YEAR}`` and a monthly one
    ``{YEAR}`` and ``{MONTH}``, else two periods would print the same formatted number.

    Raises:
        InvalidInput: what is wrong, under the ``format`` field.
    """
    problems = []
    unknown = sorted(set(_TAG.findall(fmt)) - set(TAGS))
    if unknown or fmt.count("{") != fmt.count("}") or len(_TAG.findall(fmt)) != fmt.count("{"):
        problems.append(f"Unknown or broken tag(s) {unknown or ''}; allowed: {', '.join(TAGS)}.")
    if fmt.count("{NUMBER}") != 1:
        problems.append("Must contain {NUMBER} exactly once.")
    needed = {"never": (), "yearly": ("{YEAR}",), "monthly": ("{YEAR}", "{MONTH}")}[reset]
    missing = [tag for tag in needed if tag not in fmt]
    if missing:
        problems.append(f"A {reset} reset needs {' and '.join(missing)} in the format.")
    if problems:
        raise InvalidInput("Invalid format", {"json": {"format": problems}})


def check_name(name: str) -> None:
    """Raise ``NotFound`` unless ``name`` is a sequence."""
    if name not in SEQUENCES:
        raise NotFound(f"No sequence {name!r}; sequences: {', '.join(SEQUENCES)}")


def ensure_sequences(client: redis.Redis) -> None:
    """Write the default settings of both sequences where none exist (HSETNX, race-free)."""
    pipe = client.pipeline(transaction=False)
    for name, fields in DEFAULTS.items():
        for field, value in fields.items():
            pipe.hsetnx(keys.seq_settings(name), field, value)
    pipe.execute()


def read_settings(client: redis.Redis, name: str) -> dict[str, Any]:
    """Return the settings of ``name`` as typed values (defaults written on first use)."""
    check_name(name)
    raw = client.hgetall(keys.seq_settings(name))
    if not raw:
        ensure_sequences(client)
        raw = client.hgetall(keys.seq_settings(name))
    settings: dict[str, Any] = {
        "increment": int(raw["increment"]), "format": raw["format"],
        "padding": int(raw["padding"]), "reset": raw["reset"],
    }
    if name == CREDIT_NOTE:
        settings["dedicated"] = raw["dedicated"] == "1"
    return settings


def credit_note_home(client: redis.Redis) -> str:
    """Return the sequence that numbers credit notes now (``credit_note`` or ``invoice``)."""
    return CREDIT_NOTE if read_settings(client, CREDIT_NOTE)["dedicated"] else INVOICE


def describe(client: redis.Redis, name: str, today: date | None = None) -> dict[str, Any]:
    """Return one sequence: settings, ``next_number`` of today's period, and every period."""
    settings = read_settings(client, name)
    today = today or utcnow().date()
    current = period_of(today, settings["reset"])
    periods = sorted(client.smembers(keys.seq_periods(name)) | {current})
    pipe = client.pipeline(transaction=False)
    for period in periods:
        pipe.get(keys.seq_counter(name, period))
        pipe.zrange(keys.seq_ledger_order(name, period), -1, -1)
        pipe.zcard(keys.seq_ledger_order(name, period))
    replies = pipe.execute()
    rows = []
    for i, period in enumerate(periods):
        counter, last, count = replies[3 * i: 3 * i + 3]
        rows.append({
            "period": period,
            "last_number": int(last[0]) if last else None,
            "next_number": int(counter or 0) + settings["increment"],
            "issued": count,
        })
    current_row = next(row for row in rows if row["period"] == current)
    return {"name": name, **settings, "period": current,
            "next_number": current_row["next_number"], "periods": rows}


def update(
    client: redis.Redis, name: str, changes: dict[str, Any], *, actor: str,
    period: str | None = None, today: date | None = None,
) -> dict[str, Any]:
    """Apply an admin's ``changes`` (see :func:`_update`); the numbering is then initialised.

    Setting a sequence is the explicit act an empty store waits for before it numbers
    (``numbering/guard.py``), also with the values it already has.
    """
    described = _update(client, name, changes, actor=actor, period=period, today=today)
    from coordinator.numbering import guard  # guard reads settings through this module

    guard.mark_initialised(client, f"sequence {name} set by {actor}")
    return described


def _update(
    client: redis.Redis,
    name: str,
    changes: dict[str, Any],
    *,
    actor: str,
    period: str | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Apply an admin's ``changes`` to sequence ``name`` atomically, with an audit record.

    Args:
        changes: Any of ``next_number``, ``increment``, ``format``, ``padding``, ``reset``,
            ``dedicated`` (credit_note only, and alone: it moves credit notes between
            two Redis slots, see :func:`set_dedicated`).
        actor: Who asks (written into the audit record).
        period: The period ``next_number`` applies to; default: today's period (UTC).

    Raises:
        InvalidInput: a bad format or period, or ``dedicated`` where it does not belong (422).
        Conflict: next_number moving backwards, reset changed after numbers were issued,
            a next number that would not fit the padding, or dedicated refused (409).
    """
    current = read_settings(client, name)
    changes = dict(changes)
    if "dedicated" in changes:
        if name != CREDIT_NOTE:
            raise InvalidInput("Validation failed",
                               {"json": {"dedicated": ["Only the credit_note sequence has it."]}})
        if len(changes) > 1 or period is not None:
            raise InvalidInput("Validation failed", {"json": {"dedicated": [
                "Change dedicated on its own, in a request without other fields."]}})
        set_dedicated(client, changes["dedicated"], actor=actor)
        return describe(client, name, today)
    if not changes:
        return describe(client, name, today)

    reset = changes.get("reset", current["reset"])
    check_format(changes.get("format", current["format"]), reset)
    if "format" in changes:
        other = read_settings(client, CREDIT_NOTE if name == INVOICE else INVOICE)
        dedicated = (other if name == INVOICE else current)["dedicated"]
        if dedicated and changes["format"] == other["format"]:
            # Two sequences printing the same strings would issue the same invoice number twice.
            raise InvalidInput("Invalid format", {"json": {"format": [
                "Invoices and dedicated credit notes need different formats."]}})
    if period is None:
        period = period_of(today or utcnow().date(), reset)
    next_number = changes.pop("next_number", None)
    settings_changes = {k: str(v) for k, v in changes.items()}
    reply, _ = scripts.run(
        client, scripts.SETTINGS,
        [keys.seq_settings(name), keys.seq_stats(name), keys.seq_counter(name, period),
         keys.seq_skips(name, period), keys.seq_audit(name), keys.seq_periods(name)],
        [json.dumps(settings_changes), period, "" if next_number is None else str(next_number),
         actor, iso(utcnow()), MAX_NUMBER],
    )
    if reply[0] == "error":
        code = reply[1]
        if code == "reset":
            raise Conflict("reset cannot change once numbers were issued in this sequence: "
                           "the new periods would restart and repeat formatted numbers")
        if code == "period":
            raise InvalidInput("Validation failed", {"json": {"period": [
                f"Not a period of a {reply[2]} reset ('all', 'YYYY' or 'YYYY-MM')."]}})
        if code == "backwards":
            raise Conflict(
                f"next_number can only move forward: in period {period} the next number is "
                f"{reply[2]} (numbers up to {reply[3]} are taken)")
        if code == "exhausted":
            raise Conflict(f"sequence exhausted: the next number {reply[2]} would not fit "
                           f"the padding or the cap {MAX_NUMBER}")
        raise ServiceUnavailable(f"Sequence {name} is not initialised; retry")
    return describe(client, name, today)


def set_dedicated(client: redis.Redis, dedicated: bool, *, actor: str) -> None:
    """Switch credit notes to their own sequence (True) or to the invoice sequence (False).

    Two atomic halves: close the sequence that numbers credit notes now (refused with 409
    once it numbered any: their reference index lives there and a replay must keep finding
    it), then open the other. Re-running the same request repairs an interrupted switch.
    """
    source, target = (INVOICE, CREDIT_NOTE) if dedicated else (CREDIT_NOTE, INVOICE)
    record = json.dumps({"at": iso(utcnow()), "by": actor, "period": None,
                         "before": {"dedicated": not dedicated},
                         "after": {"dedicated": dedicated}})
    for name, value in ((source, "0"), (target, "1")):
        reply, _ = scripts.run(
            client, scripts.ROUTE,
            [keys.seq_settings(name), keys.seq_stats(name), keys.seq_audit(name)],
            [ROUTE_FIELD[name], value, record],
        )
        if reply[0] == "error":
            raise Conflict(
                f"dedicated cannot change: {reply[2]} credit note(s) were numbered in the "
                f"{name} sequence, and replays of them must keep their numbers")


def audit(client: redis.Redis, name: str, limit: int = 100) -> list[dict[str, Any]]:
    """Return the latest ``limit`` audit records of ``name``, oldest first."""
    check_name(name)
    return [json.loads(raw) for raw in client.lrange(keys.seq_audit(name), -limit, -1)]
