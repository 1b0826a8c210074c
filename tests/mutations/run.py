"""Mutation run over the modules that guard invariants (issue 17). Not part of the test suite.

Each line that protects an invariant should fail a test when it is changed. This run changes
them and counts what the tests catch:

- the Python of each module in ``[tool.invoice-sync.mutation.<module>]`` (pyproject.toml) with
  mutmut, one module at a time, each in its own copy under ``mutants/<module>/`` and with only its
  own tests (mutmut then runs, per mutant, just the tests that reach the mutated function);
- the Lua scripts, the WHMCS PHP and the decorated Python functions (Flask views, click
  commands, context managers, properties), which mutmut cannot change, with the hand-written list in
  ``tests/mutations/handwritten.toml``: one mutation at a time in a copy under
  ``mutants/handwritten/``, the named tests run, the file restored before the next.

    pip install -e '.[coordinator,test,mutation]'
    python tests/mutations/run.py                        # every module, then the hand-written list
    python tests/mutations/run.py --module auth          # one module (repeat --module for more)
    python tests/mutations/run.py --module handwritten   # only the hand-written list
    python tests/mutations/run.py --quick                # only the hand-written list (minutes)
    python tests/mutations/run.py --check                # only check the list still applies
    python tests/mutations/run.py --report               # print the last results, run nothing
    python tests/mutations/run.py --module auth --only 'coordinator.auth.tokens.x_authenticate*'
                                                         # only the mutants of one function
    python tests/mutations/run.py --module handwritten --only 'addon-*'
                                                         # only some hand-written mutations

Prints the kill rate per module (killed / total) with every survivor. Exits 2 when a hand-written
mutation no longer applies (its snippet is not in the file exactly once: the list must follow the
code), 1 when mutmut or a baseline test run fails, 0 otherwise; survivors do not fail the run,
they are triaged in tests/mutations/TRIAGE.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "mutants"
HANDWRITTEN = Path(__file__).with_name("handwritten.toml")
HANDWRITTEN_MODULE = "handwritten"
# What a module's copy holds: the code, its tests, and the files tests read (PHP, compose, ...).
COPIED = ["coordinator", "agent", "tests", "deploy", "docs", "pyproject.toml", "setup.py",
          "README.md"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "mutants")

# mutmut's exit-code verdicts (mutmut/stats.py, 3.8): killed and timeout count as caught.
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass
class Outcome:
    """The result of one module: mutants caught, and the names of those that were not."""

    module: str
    total: int = 0
    killed: int = 0
    not_run: int = 0
    survivors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = f"{100 * self.killed / self.total:5.1f}%" if self.total else "  n/a "
        line = f"{self.module:<12} {self.killed:>5} / {self.total:<5} killed  {rate}"
        return line + (f"  ({self.not_run} mutants not run)" if self.not_run else "")


def config() -> dict:
    """The per-module table of pyproject.toml: {module: {"mutate": [...], "tests": [...]}}."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["tool"]["invoice-sync"]["mutation"]


def expand(patterns: list[str], base: Path) -> list[str]:
    """Expand globs relative to ``base``; a pattern that matches nothing is an error."""
    found: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, root_dir=base))
        if not matches:
            raise SystemExit(f"mutation config: {pattern!r} matches no file")
        found += [m for m in matches if m not in found]
    return found


def stage(name: str) -> Path:
    """A fresh copy of the tree in mutants/<name>/ (never the worktree itself)."""
    target = WORK / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for item in COPIED:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, target / item, ignore=IGNORED)
        elif source.exists():
            shutil.copy2(source, target / item)
    return target


def toml_list(values: list[str]) -> str:
    return json.dumps(values)  # a JSON list of plain strings is a TOML array


def write_mutmut_config(
    copy: Path, mutate: list[str], tests: list[str], deselect: list[str]
) -> None:
    """Set [tool.mutmut]'s module and test lists in the copy's pyproject.toml."""
    path = copy / "pyproject.toml"
    text = path.read_text()
    base = tomllib.loads(text)["tool"]["mutmut"]["pytest_add_cli_args"]
    args = base + [arg for test in deselect for arg in ("--deselect", test)]
    for key, values in (("only_mutate", mutate), ("pytest_add_cli_args_test_selection", tests),
                        ("pytest_add_cli_args", args)):
        text, count = re.subn(rf"(?ms)^{key} = \[.*?\]$", f"{key} = {toml_list(values)}", text)
        if count != 1:
            raise SystemExit(f"pyproject.toml: [tool.mutmut] {key} not found")
    path.write_text(text)


def mutmut_results(copy: Path, mutate: list[str]) -> Outcome:
    """Read mutmut's verdicts from the .meta files next to the mutated sources.

    Mutants that were not run (outside ``--only``) are left out of the rate and counted apart.
    """
    from mutmut.stats import status_by_exit_code

    outcome = Outcome(copy.name)
    for source in mutate:
        meta = copy / "mutants" / (source + ".meta")
        if not meta.exists():
            continue  # nothing to mutate in this file (constants only)
        verdicts = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in sorted(verdicts.items()):
            status = status_by_exit_code[code]
            if status == "skipped":
                continue
            if status == "not checked":
                outcome.not_run += 1
                continue
            outcome.total += 1
            if status in CAUGHT:
                outcome.killed += 1
            else:
                outcome.survivors.append(f"{mutant}  ({status})")
    return outcome


def run_mutmut(module: str, spec: dict, max_children: int, only: list[str]) -> Outcome:
    copy = stage(module)
    mutate = expand(spec["mutate"], ROOT)
    tests = expand(spec["tests"], ROOT)
    write_mutmut_config(copy, mutate, tests, spec.get("deselect", []))
    print(f"== {module}: mutmut over {', '.join(mutate)}\n   tests: {' '.join(tests)}",
          flush=True)
    log = WORK / f"{module}.log"
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, "-c", "from mutmut.__main__ import cli; cli()", "run",
             "--max-children", str(max_children), *only],
            cwd=copy, stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
        )
    outcome = mutmut_results(copy, mutate)
    if code != 0:
        outcome.errors.append(f"mutmut exited {code}: see {log.relative_to(ROOT)}")
    print(f"   {time.monotonic() - started:.0f}s", flush=True)
    (WORK / f"{module}.json").write_text(json.dumps(outcome.__dict__, indent=1))
    return outcome


def clean_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    return env


# --- hand-written mutations -------------------------------------------------------------------


def load_handwritten() -> list[dict]:
    entries = tomllib.loads(HANDWRITTEN.read_text())["mutation"]
    for entry in entries:
        missing = {"id", "file", "original", "replacement", "tests", "attacks"} - entry.keys()
        if missing:
            raise SystemExit(f"{HANDWRITTEN.name}: {entry.get('id', '?')} lacks {sorted(missing)}")
    return entries


def applicability(entry: dict, base: Path) -> str | None:
    """Why ``entry`` cannot be applied to the tree at ``base``; None when it can."""
    path = base / entry["file"]
    if not path.exists():
        return f"{entry['file']} does not exist"
    count = path.read_text().count(entry["original"])
    if count != 1:
        return f"its original snippet occurs {count} times in {entry['file']} (must be once)"
    if entry["original"] == entry["replacement"]:
        return "its replacement equals the original"
    return None


def check_handwritten(base: Path = ROOT) -> list[str]:
    """Every hand-written mutation that no longer applies, as 'id: why'."""
    problems = []
    for entry in load_handwritten():
        why = applicability(entry, base)
        if why:
            problems.append(f"{entry['id']}: {why}")
    for test in sorted({t for e in load_handwritten() for t in e["tests"]}):
        if not (base / test.split("::")[0]).exists():
            problems.append(f"test {test} does not exist")
    return problems


def pytest_once(copy: Path, tests: list[str], log: Path) -> int:
    """Run ``tests`` in the copy (its code first on the path, also for subprocesses)."""
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(copy), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with log.open("w") as out:
        return subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             "--timeout=120", *tests],
            cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def run_handwritten(only: list[str]) -> Outcome:
    """Apply each hand-written mutation (those whose id matches a glob of ``only``, if given)."""
    outcome = Outcome(HANDWRITTEN_MODULE)
    problems = check_handwritten()
    if problems:
        outcome.errors += [f"unapplicable: {p}" for p in problems]
        return outcome
    copy = stage(HANDWRITTEN_MODULE)
    entries = [e for e in load_handwritten()
               if not only or any(fnmatch.fnmatchcase(e["id"], glob) for glob in only)]
    outcome.not_run = len(load_handwritten()) - len(entries)
    print(f"== {HANDWRITTEN_MODULE}: {len(entries)} mutations", flush=True)
    logs = WORK / f"{HANDWRITTEN_MODULE}-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    baseline: dict[tuple[str, ...], int] = {}
    for entry in entries:
        tests = tuple(entry["tests"])
        if tests not in baseline:
            log = logs / f"baseline-{len(baseline)}.log"
            baseline[tests] = pytest_once(copy, list(tests), log)
            if baseline[tests] != 0:
                failed = (f"baseline failed (exit {baseline[tests]}, {log.relative_to(ROOT)}): "
                          f"{' '.join(tests)}")
                outcome.errors.append(failed)
        if baseline[tests] != 0:
            continue
        path = copy / entry["file"]
        original = path.read_text()
        started = time.monotonic()
        try:
            path.write_text(original.replace(entry["original"], entry["replacement"], 1))
            code = pytest_once(copy, list(tests), logs / f"{entry['id']}.log")
            if code < 0:  # killed by a signal from outside (a shared machine): once more
                code = pytest_once(copy, list(tests), logs / f"{entry['id']}.log")
        finally:
            path.write_text(original)
        verdict = {0: "survived", 1: "killed"}.get(code, f"error (pytest exit {code})")
        print(f"   {entry['id']:<32} {verdict:<10} {time.monotonic() - started:4.0f}s", flush=True)
        if code == 1:
            outcome.total += 1
            outcome.killed += 1
        elif code == 0:
            outcome.total += 1
            outcome.survivors.append(f"{entry['id']}  ({entry['file']}: {entry['attacks']})")
        else:
            outcome.errors.append(f"{entry['id']}: pytest exit {code}")
    (WORK / f"{HANDWRITTEN_MODULE}.json").write_text(json.dumps(outcome.__dict__, indent=1))
    return outcome


# --- report -----------------------------------------------------------------------------------


def report(outcomes: list[Outcome]) -> None:
    print("\nkill rate per module")
    for outcome in outcomes:
        print("  " + outcome.line())
        for survivor in outcome.survivors:
            print(f"      survived: {survivor}")
        for error in outcome.errors:
            print(f"      ERROR: {error}")


def saved(module: str) -> Outcome | None:
    path = WORK / f"{module}.json"
    return Outcome(**json.loads(path.read_text())) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    modules = config()
    choices = [*modules, HANDWRITTEN_MODULE]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=choices,
                        help="run only this module (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="only the hand-written mutations")
    parser.add_argument("--check", action="store_true",
                        help="only check that every hand-written mutation still applies")
    parser.add_argument("--report", action="store_true", help="print the last results only")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="run only the mutants whose name matches (mutmut's names, e.g. "
                             "'coordinator.auth.tokens.x_authenticate*', or hand-written ids, "
                             "e.g. 'addon-*'); the others are reported as not run")
    parser.add_argument("--max-children", type=int, default=2,
                        help="mutmut workers (default 2: the machine is shared)")
    args = parser.parse_args(argv)

    if args.check:
        problems = check_handwritten()
        for problem in problems:
            print(f"unapplicable: {problem}")
        print(f"{len(load_handwritten())} hand-written mutations, {len(problems)} unapplicable")
        return 2 if problems else 0

    selected = [HANDWRITTEN_MODULE] if args.quick else (args.module or choices)
    if args.report:
        report([o for o in map(saved, selected) if o])
        return 0
    WORK.mkdir(exist_ok=True)
    outcomes = []
    for module in selected:
        if module == HANDWRITTEN_MODULE:
            outcomes.append(run_handwritten(args.only))
        else:
            outcomes.append(run_mutmut(module, modules[module], args.max_children, args.only))
    report(outcomes)
    if any(e.startswith("unapplicable") for o in outcomes for e in o.errors):
        return 2
    return 1 if any(o.errors for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
