"""The history checker itself: it must find each kind of violation it claims to find."""

from __future__ import annotations

import pytest

from tests.faults.history import History, check


def _ack(history, ref, number, status=201, period="2026", system="blue"):
    attempt = history.begin(system, "invoice", ref, "2026-11-21")
    body = {"id": f"invoice:{period}:{number}", "number": number, "sequence": "invoice",
            "period": period, "system": system, "document": "invoice", "reference": ref}
    return history.end(attempt, status, body)


def _fail(history, ref, status=None, system="blue"):
    attempt = history.begin(system, "invoice", ref, "2026-11-21")
    return history.end(attempt, status, error="ConnectionError" if status is None else None)


def _entry(ref, number, period="2026", system="blue", **extra):
    return {"number": number, "sequence": "invoice", "period": period, "system": system,
            "document": "invoice", "reference": ref, "status": "issued", **extra}


def test_clean_history_passes():
    h = History()
    _fail(h, "a")
    _ack(h, "a", 1)
    _ack(h, "a", 1, status=200)  # replay
    _ack(h, "b", 2)
    _fail(h, "c", 503)  # issued but the answer was lost; never retried
    verdict = check(h, [_entry("a", 1), _entry("b", 2), _entry("c", 3)], first_number={
        ("invoice", "2026"): 1})
    print(verdict.line("clean"))
    assert verdict.ok, verdict.line()
    assert verdict.counts["replays"] == 1
    assert verdict.unacknowledged_issued == ["invoice:2026:3=blue/invoice/c"]


@pytest.mark.parametrize("case, ledger, expected", [
    ("duplicate", [_entry("a", 1), _entry("b", 2)], "DUPLICATE"),
    ("lost", [_entry("b", 1)], "LEDGER DISAGREES"),
    ("gap", [_entry("a", 1), _entry("b", 3)], "GAP"),
    ("unexplained", [_entry("a", 1), _entry("b", 2), _entry("zz", 3)], "UNEXPLAINED"),
    ("void without reason", [_entry("a", 1), _entry("b", 2, status="void")], "VOID WITHOUT"),
    ("missing", [_entry("a", 1)], "LOST"),
])
def test_each_violation_is_found(case, ledger, expected):
    h = History()
    _ack(h, "a", 1)
    if case == "duplicate":
        _ack(h, "b", 1)  # a failover handed #1 out again
    elif case == "lost":
        _ack(h, "b", 2)
    else:
        _ack(h, "b", 2 if case != "gap" else 3)
    verdict = check(h, ledger)
    print(verdict.line(case))
    assert not verdict.ok
    assert any(v.startswith(expected) for v in verdict.violations), verdict.violations


def test_two_numbers_for_one_reference_is_found():
    h = History()
    _ack(h, "a", 1)
    _ack(h, "a", 2, status=200)
    verdict = check(h, [_entry("a", 1), _entry("x", 2)])
    assert any(v.startswith("TWO NUMBERS") for v in verdict.violations)


def test_voided_number_with_reason_explains_the_gap():
    h = History()
    _ack(h, "a", 1)
    _ack(h, "b", 2)
    _ack(h, "c", 3)
    ledger = [_entry("a", 1), _entry("b", 2, status="void", void_reason="deleted"),
              _entry("c", 3)]
    verdict = check(h, ledger)
    assert verdict.ok, verdict.line()
    assert verdict.counts["voided"] == 1


def test_histories_merge_through_json_lines(tmp_path):
    h = History()
    _ack(h, "a", 1)
    _fail(h, "b")
    h.dump(tmp_path / "h.jsonl")
    merged = History()
    merged.extend(History.load(tmp_path / "h.jsonl"))
    assert [a.ref for a in merged.attempts] == [a.ref for a in h.attempts]
    assert len(merged.acknowledged) == 1
