"""`invoice-sync --help` reads whole: descriptions never cut, the demo's duration stated once."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from coordinator.cli import main
from coordinator.demo import DEMO_DURATION

ROOT = Path(__file__).resolve().parents[2]


def _groups(group: click.Group, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _groups(command, (*path, name))


def _first_sentence(command: click.Command) -> str:
    text = " ".join((command.help or "").partition("\n\n")[0].split())
    return text[: text.index(". ") + 1] if ". " in text else text


@pytest.mark.parametrize("columns", ["80", "50"])
@pytest.mark.parametrize("path", [path for path, _ in _groups(main)], ids=" ".join)
def test_command_lists_show_whole_first_sentences(path, columns):
    group = main
    for name in path:
        group = group.commands[name]
    result = CliRunner().invoke(main, [*path, "--help"], env={"COLUMNS": columns},
                                terminal_width=int(columns))
    assert result.exit_code == 0, result.output
    listing = " ".join(result.output.partition("Commands:")[2].split())
    assert "..." not in listing
    for name, command in group.commands.items():
        sentence = _first_sentence(command)
        assert sentence.endswith("."), f"{name}: {sentence!r}"
        assert f"{name} {sentence}" in listing


def _contexts(command: click.Command, parent: click.Context | None = None, name: str = "x"):
    ctx = click.Context(command, info_name=name, parent=parent,
                        **({} if parent else main.context_settings))
    yield ctx
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            yield from _contexts(sub, ctx, sub_name)


def test_every_option_reads_an_environment_variable(monkeypatch):
    """STYLE.md: every option has its INVOICE_SYNC_* variable (explicit, or click's automatic)."""
    checked = 0
    for ctx in _contexts(main, name="invoice-sync"):
        for param in ctx.command.params:
            if not isinstance(param, click.Option) or param.name in {"help", "version"}:
                continue
            name = param.envvar or f"{ctx.auto_envvar_prefix}_{param.name.upper()}"
            assert name.startswith("INVOICE_SYNC_"), (ctx.command_path, param.opts)
            monkeypatch.setenv(name, "from-env")
            assert param.resolve_envvar_value(ctx) == "from-env", (ctx.command_path, name)
            monkeypatch.delenv(name)
            checked += 1
    assert checked >= 20


def test_automatic_variable_reaches_a_forecaster_option(monkeypatch):
    monkeypatch.setenv("INVOICE_SYNC_REPORT_BY", "nonsense")
    result = CliRunner().invoke(main, ["report", "revenue"])
    assert result.exit_code == 2 and "'nonsense' is not one of" in result.output


def test_version_is_not_taken_from_the_environment():
    result = CliRunner().invoke(main, ["secrets", "generate-key"],
                                env={"INVOICE_SYNC_VERSION": "1.2.3"})
    assert result.exit_code == 0 and "version" not in result.output


def test_demo_duration_is_the_same_in_help_and_readme():
    section = Path(ROOT / "README.md").read_text().partition("\n## Demo\n")[2]
    section = section.partition("\n## ")[0]
    assert re.findall(r"about (?:a|an|one|two|five|ten|\d+) \w+", section) == [DEMO_DURATION]
    help_text = CliRunner().invoke(main, ["demo", "--help"]).output
    assert DEMO_DURATION in " ".join(help_text.split())
    listing = CliRunner().invoke(main, ["--help"]).output
    assert DEMO_DURATION in " ".join(listing.split())
