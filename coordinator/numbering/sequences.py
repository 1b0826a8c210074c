"""The two sequences of a series, their settings, periods and the admin's changes to them.

Defaults (chosen to match common EU practice and WHMCS's own tags):

=============  =====================  =======  ======  =========  =========
sequence       format                 padding  reset   increment  dedicated
=============  =====================  =======  ======  =========  =========
invoice        ``INV-{YEAR}-{NUMBER}``  6        yearly  1          –
credit_note    ``CN-{YEAR}-{NUMBER}``   6        yearly  1          true
=============  =====================  =======  ======  =========  =========

With ``dedicated`` off, credit notes draw numbers from ``invoice`` (its format, its counter).
The period of a number is chosen by the document's date: ``all`` (reset never), ``2026``
(yearly) or ``2026-11`` (monthly). Every function takes the ``series`` (default: ``default``,
which ``/v1/sequences/…`` serves); settings that could print one number twice in a series are
refused with 409 (see ``overlap.py``).
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
from coordinator.numbering import overlap, scripts

INVOICE = "invoice"
CREDIT_NOTE = "credit_note"
SEQUENCES = (INVOICE, CREDIT_NOTE)
DEFAULT_SERIES = keys.DEFAULT_SERIES
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
    """Refuse formats with unknown tags, broken braces, or not exactly one ``{NUMBER}`` (422),
    then formats whose ``reset`` would print one number in two periods (409).

    ``{NUMBER}`` is always needed; a yearly reset needs ``{YEAR}`` and a monthly one
    ``{YEAR}`` and ``{MONTH}``, else two periods would print the same formatted number.

    Raises:
        InvalidInput: what is wrong with the format, under the ``format`` field.
        Conflict: the tags the reset needs are missing.
    """
    problems = []
    unknown = sorted(set(_TAG.findall(fmt)) - set(TAGS))
    if unknown:
        problems.append(f"Unknown tag(s) {', '.join(unknown)}; allowed: {', '.join(TAGS)}.")
    if fmt.count("{") != fmt.count("}") or len(_TAG.findall(fmt)) != fmt.count("{"):
        problems.append(f"Unbalanced braces: write each tag as {{NAME}}; allowed: "
                        f"{', '.join(TAGS)}.")
    if fmt.count("{NUMBER}") != 1:
        problems.append("Must contain {NUMBER} exactly once.")
    if problems:
        raise InvalidInput("Invalid format", {"json": {"format": problems}})
    overlap.check_periods(fmt, reset)


def check_name(name: str) -> None:
    """Raise ``NotFound`` unless ``name`` is a sequence."""
    if name not in SEQUENCES:
        raise NotFound(f"No sequence {name!r}; sequences: {', '.join(SEQUENCES)}")


def ensure_sequences(client: redis.Redis, series: str = DEFAULT_SERIES) -> None:
    """Make the sequences of ``series`` usable: write missing default settings (HSETNX,
    race-free); for ``default``, first move data of the release before series into it.

    Raises:
        NotFound: a series other than ``default`` that does not exist.
    """
    if series == DEFAULT_SERIES:
        from coordinator.numbering.migrate import ensure_layout

        ensure_layout(client)
        return
    if not client.exists(keys.series_record(series)):
        raise NotFound(f"No series {series!r}")
    write_default_settings(client, series)


def write_default_settings(client: redis.Redis, series: str) -> None:
    """Write the default settings of both sequences of ``series`` where none exist."""
    pipe = client.pipeline(transaction=False)
    for name, fields in DEFAULTS.items():
        for field, value in fields.items():
            pipe.hsetnx(keys.seq_settings(name, series), field, value)
    pipe.execute()


def _typed(name: str, raw: dict[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "increment": int(raw["increment"]), "format": raw["format"],
        "padding": int(raw["padding"]), "reset": raw["reset"],
    }
    if name == CREDIT_NOTE:
        settings["dedicated"] = raw["dedicated"] == "1"
    return settings


def _read_both(client: redis.Redis, series: str) -> dict[str, dict[str, str]]:
    """Return the raw settings of both sequences, read together (default written if none)."""
    for attempt in (1, 2):
        with client.pipeline(transaction=True) as pipe:
            for name in SEQUENCES:
                pipe.hgetall(keys.seq_settings(name, series))
            raws = dict(zip(SEQUENCES, pipe.execute(), strict=True))
        if all(raws.values()) or attempt == 2:
            break
        ensure_sequences(client, series)
    if not all(raws.values()):
        raise ServiceUnavailable(f"Series {series} is not initialised; retry")
    return raws


def read_settings(
    client: redis.Redis, name: str, series: str = DEFAULT_SERIES
) -> dict[str, Any]:
    """Return the settings of ``name`` as typed values (defaults written on first use)."""
    check_name(name)
    raw = client.hgetall(keys.seq_settings(name, series))
    if not raw:
        ensure_sequences(client, series)
        raw = client.hgetall(keys.seq_settings(name, series))
    return _typed(name, raw)


def describe(
    client: redis.Redis, name: str, today: date | None = None, *, series: str = DEFAULT_SERIES,
) -> dict[str, Any]:
    """Return one sequence: settings, ``next_number`` of today's period, and every period."""
    settings = read_settings(client, name, series)
    today = today or utcnow().date()
    current = period_of(today, settings["reset"])
    periods = sorted(client.smembers(keys.seq_periods(name, series)) | {current})
    pipe = client.pipeline(transaction=False)
    for period in periods:
        pipe.get(keys.seq_counter(name, period, series))
        pipe.zrange(keys.seq_ledger_order(name, period, series), -1, -1)
        pipe.zcard(keys.seq_ledger_order(name, period, series))
        pipe.hget(keys.seq_settled(name, period, series), "count")  # numbering/settled.py
    replies = pipe.execute()
    rows = []
    for i, period in enumerate(periods):
        counter, last, count, moved = replies[4 * i: 4 * i + 4]
        count += int(moved or 0)
        rows.append({
            "period": period,
            "last_number": int(last[0]) if last else None,
            "next_number": int(counter or 0) + settings["increment"],
            "issued": count,
        })
    current_row = next(row for row in rows if row["period"] == current)
    return {"name": name, **settings, "period": current,
            "next_number": current_row["next_number"], "periods": rows}


_OUTPUT_FIELDS = ("format", "padding", "reset")
"""Settings that change which strings a sequence prints (checked for overlaps)."""

_CHECK_ATTEMPTS = 10
"""Overlap checks repeated when another admin changed the settings meanwhile."""


def _expected(raws: dict[str, dict[str, str]], own: str) -> str:
    """The settings fields the overlap check relied on, for the script to compare (CAS)."""
    other = CREDIT_NOTE if own == INVOICE else INVOICE
    index = {own: 1, other: 8}
    checks = [[index[name], field, raws[name].get(field, "")]
              for name in SEQUENCES for field in _OUTPUT_FIELDS]
    checks.append([index[CREDIT_NOTE], "dedicated", raws[CREDIT_NOTE].get("dedicated", "")])
    return json.dumps(checks)


def _check_outputs(raws: dict[str, dict[str, str]], name: str, changes: dict) -> None:
    """Refuse (409) changes after which the series could print one number twice."""
    after = {seq: _typed(seq, raws[seq]) for seq in SEQUENCES}
    after[name].update({k: v for k, v in changes.items() if k in _OUTPUT_FIELDS})
    check_format(after[name]["format"], after[name]["reset"])
    overlap.check_sequences(after[INVOICE], after[CREDIT_NOTE])


def update(
    client: redis.Redis, name: str, changes: dict[str, Any], *, actor: str,
    period: str | None = None, series: str = DEFAULT_SERIES,
) -> dict[str, Any]:
    """Apply an admin's ``changes`` (see :func:`_update`); the series' numbering is then
    initialised.

    Setting a sequence is the explicit act an empty (or restored) store waits for before it
    numbers (``numbering/guard.py``), also with the values it already has.
    """
    described = _update(client, name, changes, actor=actor, period=period, series=series)
    from coordinator.numbering import guard  # guard reads settings through this module

    guard.mark_initialised(client, f"sequence {name} set by {actor}", series)
    return described


def _update(
    client: redis.Redis,
    name: str,
    changes: dict[str, Any],
    *,
    actor: str,
    period: str | None = None,
    series: str = DEFAULT_SERIES,
) -> dict[str, Any]:
    """Apply an admin's ``changes`` to sequence ``name`` atomically, with an audit record.

    Args:
        changes: Any of ``next_number``, ``increment``, ``format``, ``padding``, ``reset``,
            ``dedicated`` (credit_note only, and alone, see :func:`set_dedicated`).
        actor: Who asks (written into the audit record).
        period: The period ``next_number`` applies to; default: today's period (UTC).
        series: The series of the sequence.

    Raises:
        InvalidInput: a bad format or period, or ``dedicated`` where it does not belong (422).
        Conflict: next_number moving backwards, reset changed after numbers were issued,
            a next number that would not fit the padding, dedicated refused, or settings
            under which the series could print one number twice (409).
    """
    check_name(name)
    changes = dict(changes)
    if "dedicated" in changes:
        if name != CREDIT_NOTE:
            raise InvalidInput("Validation failed",
                               {"json": {"dedicated": ["Only the credit_note sequence has it."]}})
        if len(changes) > 1 or period is not None:
            raise InvalidInput("Validation failed", {"json": {"dedicated": [
                "Change dedicated on its own, in a request without other fields."]}})
        set_dedicated(client, changes["dedicated"], actor=actor, series=series)
        return describe(client, name, series=series)
    if not changes:
        return describe(client, name, series=series)

    other = CREDIT_NOTE if name == INVOICE else INVOICE
    next_number = changes.pop("next_number", None)
    settings_changes = {k: str(v) for k, v in changes.items()}
    for _ in range(_CHECK_ATTEMPTS):
        raws = _read_both(client, series)
        reset = changes.get("reset", raws[name]["reset"])
        if any(field in changes for field in _OUTPUT_FIELDS):
            _check_outputs(raws, name, changes)
        chosen = period if period is not None else period_of(utcnow().date(), reset)
        reply, _ = scripts.run(
            client, scripts.SETTINGS,
            [keys.seq_settings(name, series), keys.seq_stats(name, series),
             keys.seq_counter(name, chosen, series), keys.seq_skips(name, chosen, series),
             keys.seq_audit(name, series), keys.seq_periods(name, series),
             keys.seq_ledger_order(name, chosen, series), keys.seq_settings(other, series),
             keys.seq_events(name, series)],
            [json.dumps(settings_changes), chosen,
             "" if next_number is None else str(next_number), actor, iso(utcnow()),
             MAX_NUMBER, _expected(raws, name)],
        )
        if reply[0] != "error" or reply[1] != "changed":
            break
    else:
        raise Conflict("The settings were changed concurrently too often; retry")
    if reply[0] == "error":
        _settings_error(reply, name, chosen, series)
    return describe(client, name, series=series)


def _settings_error(reply: list, name: str, period: str, series: str) -> None:
    code = reply[1]
    if code == "reset":
        raise Conflict("reset cannot change once numbers were issued in this sequence: "
                       "the new periods would restart and repeat formatted numbers")
    if code == "period":
        raise InvalidInput("Validation failed", {"json": {"period": [
            f"Not a period of a {reply[2]} reset ('all', 'YYYY' or 'YYYY-MM')."]}})
    if code == "backwards":
        next_now, counter, last = int(reply[2]), int(reply[3]), reply[4]
        if not last:
            taken = "no number is issued yet"
        else:
            taken = f"numbers up to {last} are issued"
        if counter > int(last or 0):
            # An admin raised next_number before: those numbers were skipped, not issued.
            first = int(last or 0) + 1
            skipped = f"{first} was" if first == counter else f"{first}–{counter} were"
            taken += f"; {skipped} skipped (see the audit)"
        raise Conflict(f"next_number can only move forward: in period {period} the next "
                       f"number is {next_now} ({taken})")
    if code == "exhausted":
        raise Conflict(f"sequence exhausted: the next number {reply[2]} would not fit "
                       f"the padding or the cap {MAX_NUMBER}")
    raise ServiceUnavailable(f"Sequence {name} of series {series} is not initialised; retry")


def set_dedicated(
    client: redis.Redis, dedicated: bool, *, actor: str, series: str = DEFAULT_SERIES,
) -> None:
    """Switch credit notes to their own sequence (True) or to the invoice sequence (False).

    One atomic step in the series' slot: refused (409) once the sequence that numbers credit
    notes now numbered any (their reference index lives there and a replay must keep finding
    it), and, when switching on, if the two formats could print the same number.
    """
    record = json.dumps({"at": iso(utcnow()), "by": actor, "period": None,
                         "before": {"dedicated": not dedicated},
                         "after": {"dedicated": dedicated}})
    for _ in range(_CHECK_ATTEMPTS):
        raws = _read_both(client, series)
        if dedicated:
            both = {seq: _typed(seq, raws[seq]) for seq in SEQUENCES}
            overlap.check_sequences(both[INVOICE], {**both[CREDIT_NOTE], "dedicated": True})
        checks = json.dumps([[index, field, raws[seq].get(field, "")]
                             for index, seq in ((1, INVOICE), (3, CREDIT_NOTE))
                             for field in ("format", "padding")])
        reply, _ = scripts.run(
            client, scripts.ROUTE,
            [keys.seq_settings(INVOICE, series), keys.seq_stats(INVOICE, series),
             keys.seq_settings(CREDIT_NOTE, series), keys.seq_stats(CREDIT_NOTE, series),
             keys.seq_audit(INVOICE, series), keys.seq_audit(CREDIT_NOTE, series)],
            ["1" if dedicated else "0", record, checks],
        )
        if reply[0] == "ok":
            return
        if reply[1] == "in_use":
            source = INVOICE if dedicated else CREDIT_NOTE
            raise Conflict(
                f"dedicated cannot change: {reply[2]} credit note(s) were numbered in the "
                f"{source} sequence, and replays of them must keep their numbers")
        # "changed" or "uninitialized": the next _read_both reads again (writing missing
        # settings, or answering 404 for a series deleted meanwhile).
    raise Conflict("The settings were changed concurrently too often; retry")


def audit(
    client: redis.Redis, name: str, limit: int = 100, *, series: str = DEFAULT_SERIES,
) -> list[dict[str, Any]]:
    """Return the latest ``limit`` audit records of ``name``, oldest first."""
    check_name(name)
    return [json.loads(raw)
            for raw in client.lrange(keys.seq_audit(name, series), -limit, -1)]
