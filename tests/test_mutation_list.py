"""The hand-written mutations (tests/mutations/handwritten.toml) still apply to the code.

The mutation run itself is slow and runs outside this suite (tests/mutations/run.py); this check
is cheap, and it fails as soon as a change to a Lua script or to the WHMCS PHP moves a guarded line,
so whoever changes the line also updates its mutation.
"""

from __future__ import annotations

from tests.mutations import run


def test_every_handwritten_mutation_applies_once() -> None:
    assert run.check_handwritten() == []


def test_mutation_ids_are_unique() -> None:
    ids = [entry["id"] for entry in run.load_handwritten()]
    assert len(ids) == len(set(ids))


def test_a_mutation_whose_snippet_is_gone_is_reported(tmp_path) -> None:
    entry = run.load_handwritten()[0]
    changed = tmp_path / entry["file"]
    changed.parent.mkdir(parents=True)
    changed.write_text("-- the guarded line was rewritten\n")
    problems = run.check_handwritten(tmp_path)
    assert (f"{entry['id']}: its original snippet occurs 0 times in {entry['file']} "
            "(must be once)") in problems
