"""No two documents of one series ever print the same number (DESIGN invariant 2b).

Property tests: the overlap decision against brute force, and random sequences of admin
settings changes and allocations in two series (fakeredis with Lua: the same scripts as on
a server, fast enough for hypothesis), with the reproduction of issue 8 item 1 as an example.
"""

from __future__ import annotations

import itertools
import re
from datetime import date

import fakeredis
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coordinator import keys
from coordinator.exceptions import Conflict, CoordinatorError
from coordinator.numbering import allocate, iter_ledger, overlap, sequences
from coordinator.numbering.allocation import Hints
from coordinator.numbering.series import create_series, join, prepare_registration

# --- the decision itself ------------------------------------------------------------------

PIECES = ["{YEAR}", "{MONTH}", "{DAY}", "0", "1", "2", "-", "A"]


def _printed(fmt: str, padding: int, numbers, days) -> set[str]:
    out = set()
    for number, day in itertools.product(numbers, days):
        digits = str(number)
        if padding and len(digits) > padding:
            continue
        parts = {"{YEAR}": f"{day.year:04d}", "{MONTH}": f"{day.month:02d}",
                 "{DAY}": f"{day.day:02d}", "{NUMBER}": digits.zfill(padding)}
        out.add(re.sub(r"\{[A-Z]+\}", lambda m, p=parts: p[m.group(0)], fmt))
    return out


def _regex(fmt: str, padding: int) -> re.Pattern:
    parts = {"{YEAR}": r"[1-9]\d{3}", "{MONTH}": r"(0[1-9]|1[0-2])",
             "{DAY}": r"(0[1-9]|[12]\d|3[01])",
             "{NUMBER}": rf"(?!0{{{padding}}})\d{{{padding}}}" if padding else r"[1-9]\d{0,14}"}
    pattern = "".join(parts.get(tok, re.escape(tok))
                      for tok in re.findall(r"\{[A-Z]+\}|.", fmt))
    return re.compile(pattern + r"\Z")


formats = st.lists(st.sampled_from(PIECES), max_size=3).flatmap(
    lambda before: st.lists(st.sampled_from(PIECES), max_size=3).map(
        lambda after: "".join(before) + "{NUMBER}" + "".join(after)))


@settings(max_examples=400, deadline=None)
@given(formats, st.integers(0, 3), formats, st.integers(0, 3))
def test_shared_output_is_exact(fmt_a, pad_a, fmt_b, pad_b):
    found = overlap.shared_output((fmt_a, pad_a), (fmt_b, pad_b))
    if found is not None:
        # The witness really is printable by both.
        assert _regex(fmt_a, pad_a).match(found) and _regex(fmt_b, pad_b).match(found), found
    else:
        # Nothing in a brute-force sample of both outputs coincides.
        days = [date(2026, 1, 2), date(2026, 10, 21), date(2031, 12, 31), date(2000, 2, 10)]
        numbers = [*range(1, 130), 1000, 2026, 10021]
        assert not (_printed(fmt_a, pad_a, numbers, days) & _printed(fmt_b, pad_b, numbers, days))


@pytest.mark.parametrize("a, b", [
    (("INV-{YEAR}-{NUMBER}", 6), ("INV-{YEAR}-{NUMBER}", 6)),
    (("{YEAR}{NUMBER}", 6), ("{YEAR}0{NUMBER}", 5)),  # the string compare missed this one
    (("{NUMBER}", 0), ("{YEAR}{NUMBER}", 2)),
    (("{NUMBER}", 0), ("{NUMBER}", 1)),  # unpadded numbers from one digit
    (("{NUMBER}", 0), ("{NUMBER}", 15)),  # ... up to the cap's 15 digits
])
def test_known_overlaps(a, b):
    assert overlap.shared_output(a, b) is not None


@pytest.mark.parametrize("a, b", [
    (("INV-{YEAR}-{NUMBER}", 6), ("CN-{YEAR}-{NUMBER}", 6)),
    (("{YEAR}{NUMBER}", 6), ("{YEAR}{NUMBER}", 5)),
    (("{NUMBER}", 0), ("1{NUMBER}", 15)),  # 16 digits: no number is above the cap
    # a letter is never a digit of a tag (the property test's formats have no X)
    *[((f"{tag}-{{NUMBER}}", 2), (f"{text}-{{NUMBER}}", 2))
      for tag in ("{MONTH}", "{DAY}") for text in ("X1", "1X", "3X")],
    (("A{NUMBER}", 2), ("AX{NUMBER}", 1)),
])
def test_distinct_formats_pass(a, b):
    assert overlap.shared_output(a, b) is None


# --- any admin history, any allocations: no duplicate within a series ---------------------

FORMATS = ["INV-{YEAR}-{NUMBER}", "CN-{YEAR}-{NUMBER}", "{YEAR}{NUMBER}", "{YEAR}0{NUMBER}",
           "{NUMBER}", "1{NUMBER}", "{YEAR}{MONTH}{NUMBER}", "{NUMBER}{YEAR}",
           "INV-{YEAR}-1{NUMBER}", "{MONTH}{YEAR}{NUMBER}"]
SERIES = ("default", "acme")

patch = st.fixed_dictionaries({}, optional={
    "format": st.sampled_from(FORMATS), "padding": st.integers(0, 3),
    "reset": st.sampled_from(sequences.RESETS), "next_number": st.integers(1, 40),
    "increment": st.integers(1, 3)}).filter(bool)
operations = st.lists(st.one_of(
    st.tuples(st.just("patch"), st.sampled_from(SERIES), st.sampled_from(sequences.SEQUENCES),
              patch),
    st.tuples(st.just("dedicated"), st.sampled_from(SERIES), st.booleans()),
    st.tuples(st.just("allocate"), st.sampled_from(("blue", "orange")),
              st.sampled_from(sequences.DOCUMENTS), st.integers(0, 15),
              st.sampled_from([date(2025, 12, 31), date(2026, 1, 5), date(2026, 11, 21)])),
), max_size=30)

REGRESSION = [  # issue 8 item 1, as reproduced on the release before series
    ("dedicated", "default", False),
    ("patch", "default", "credit_note", {"format": "INV-{YEAR}-{NUMBER}"}),
    ("dedicated", "default", True),
    ("allocate", "blue", "invoice", 1, date(2026, 11, 21)),
    ("allocate", "blue", "credit_note", 1, date(2026, 11, 21)),
]
HISTORY = [  # invoices print a string first, then dedicated credit notes get that format
    ("dedicated", "default", False),
    ("patch", "default", "invoice", {"format": "CN-{YEAR}-{NUMBER}"}),
    ("allocate", "blue", "invoice", 1, date(2026, 11, 21)),
    ("patch", "default", "invoice", {"format": "INV-{YEAR}-{NUMBER}"}),
    ("dedicated", "default", True),
    ("allocate", "blue", "credit_note", 2, date(2026, 11, 21)),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(REGRESSION)
@example(HISTORY)
@given(operations)
def test_no_settings_history_prints_a_number_twice_in_a_series(ops):
    client = fakeredis.FakeRedis(decode_responses=True)
    create_series(client, "acme")
    # orange is registered in acme, as the registry does it.
    prepare_registration(client, "acme", "orange")
    client.hset(keys.system("orange"), mapping={"name": "orange", "series": "acme"})
    join(client, "acme", "orange")
    hints = Hints()
    issued = 0
    refused_duplicates = 0
    for op in ops:
        try:
            if op[0] == "patch":
                sequences.update(client, op[2], op[3], actor="test", series=op[1])
            elif op[0] == "dedicated":
                sequences.set_dedicated(client, op[2], actor="test", series=op[1])
            else:
                _, system, document, reference, day = op
                entry, new = allocate(client, system, document, str(reference), day, hints=hints)
                issued += new
                assert entry["series"] == ("acme" if system == "orange" else "default")
        except Conflict as error:
            refused_duplicates += "already issued" in error.message
        except CoordinatorError:
            pass
    total = 0
    for series in SERIES:
        printed = [entry["formatted"] for sequence in sequences.SEQUENCES
                   for entry in iter_ledger(client, sequence, series=series)]
        assert len(printed) == len(set(printed)), printed
        total += len(printed)
    assert total == issued
    if ops is HISTORY:
        assert refused_duplicates == 1  # the index refused what the settings check allowed


# --- two admins at once: each change is checked against the settings it is written over ------


def _racing(monkeypatch, other_admin) -> None:
    """Run ``other_admin`` once, right after the first overlap check passes and before the
    checked change is written: the moment another admin's request can land in between."""
    checked = overlap.check_sequences
    pending = [other_admin]

    def check_then_race(invoice, credit_note):
        checked(invoice, credit_note)
        if pending:
            pending.pop()()

    monkeypatch.setattr(overlap, "check_sequences", check_then_race)


def _printable_by_both(client) -> bool:
    invoice, credit_note = (sequences.read_settings(client, name) for name in sequences.SEQUENCES)
    return credit_note["dedicated"] and overlap.shared_output(
        (invoice["format"], invoice["padding"]),
        (credit_note["format"], credit_note["padding"])) is not None


SHARED = [("credit_note", {"dedicated": False})]  # credit notes drawn from invoice


@pytest.mark.parametrize("before, first, meanwhile", [
    # each change is fine on the settings it was checked against, not after the other one
    ([], ("credit_note", {"format": "X-{YEAR}-{NUMBER}"}),
     ("invoice", {"format": "X-{YEAR}-{NUMBER}"})),
    ([], ("invoice", {"padding": 5}),
     ("credit_note", {"format": "INV-{YEAR}-{NUMBER}", "padding": 5})),
    (SHARED, ("invoice", {"format": "CN-{YEAR}-{NUMBER}"}), ("credit_note", {"dedicated": True})),
    (SHARED, ("credit_note", {"dedicated": True}),
     ("credit_note", {"format": "INV-{YEAR}-{NUMBER}"})),
    (SHARED, ("credit_note", {"dedicated": True}), ("invoice", {"format": "CN-{YEAR}-{NUMBER}"})),
    ([*SHARED, ("invoice", {"format": "{YEAR}{NUMBER}"}),
      ("credit_note", {"format": "{YEAR}{NUMBER}", "padding": 5})],
     ("credit_note", {"dedicated": True}), ("credit_note", {"padding": 6})),
])
def test_two_admins_changing_settings_at_once_never_make_the_sequences_meet(
        monkeypatch, before, first, meanwhile):
    client = fakeredis.FakeRedis(decode_responses=True)
    for change in before:
        sequences.update(client, *change, actor="admin:setup")
    _racing(monkeypatch, lambda: sequences.update(client, *meanwhile, actor="admin:b"))
    with pytest.raises(Conflict, match="could both print"):
        sequences.update(client, *first, actor="admin:a")
    assert not _printable_by_both(client)
    assert [r["by"] for r in sequences.audit(client, first[0])
            if r["by"] == "admin:a"] == []  # nothing of it written
    assert sequences.audit(client, meanwhile[0])[-1]["by"] == "admin:b"


@pytest.mark.parametrize("first, shared", [
    (("credit_note", {"dedicated": True}), True),
    (("credit_note", {"format": "X-{YEAR}-{NUMBER}"}), False),
])
def test_an_admin_overtaken_at_every_try_is_told_to_retry_and_nothing_is_written(
        monkeypatch, first, shared):
    client = fakeredis.FakeRedis(decode_responses=True)
    sequences.ensure_sequences(client)
    if shared:
        sequences.set_dedicated(client, False, actor="admin:setup")
    before = {name: client.hgetall(keys.seq_settings(name)) for name in sequences.SEQUENCES}
    checked = overlap.check_sequences
    racing = []

    def overtaken(invoice, credit_note):  # another admin changes invoices' padding each time
        checked(invoice, credit_note)
        if not racing:
            racing.append(True)
            padding = 5 if sequences.read_settings(client, "invoice")["padding"] == 6 else 6
            sequences.update(client, "invoice", {"padding": padding}, actor="admin:b")
            racing.pop()

    monkeypatch.setattr(overlap, "check_sequences", overtaken)
    with pytest.raises(Conflict) as refused:
        sequences.update(client, *first, actor="admin:a")
    assert refused.value.message == "The settings were changed concurrently too often; retry"
    assert client.hgetall(keys.seq_settings("credit_note")) == before["credit_note"]
    assert all(r["by"] != "admin:a" for r in sequences.audit(client, "credit_note"))
