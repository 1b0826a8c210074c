"""Tools CI installs: skip locally when missing, fail when INVOICE_SYNC_REQUIRE_TOOLS is set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import REQUIRE_TOOLS, require_tool

ABSENT = "invoice-sync-no-such-tool"


def test_missing_tool_skips_without_the_variable(monkeypatch):
    monkeypatch.delenv(REQUIRE_TOOLS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="NOT tested"):
        require_tool(ABSENT)


@pytest.mark.parametrize("value", ["1", "true"])
def test_missing_tool_fails_when_ci_requires_tools(monkeypatch, value):
    monkeypatch.setenv(REQUIRE_TOOLS, value)
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        require_tool(ABSENT)


def test_present_tool_is_found(monkeypatch):
    monkeypatch.setenv(REQUIRE_TOOLS, "1")
    assert require_tool("sh").endswith("/sh")


ROOT = Path(__file__).resolve().parents[1]


def test_ci_installs_the_tools_requires_them_and_runs_the_readme_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "export INVOICE_SYNC_REQUIRE_TOOLS=1" in script
    for package in ("php-cli", "php-curl", "nginx", "systemd"):
        assert re.search(rf"missing\+=\([^)]*\b{package}\b", script), package
    assert "apt-get install -y" in script and "|| echo" not in script  # not best effort
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"# 2\. [^\n]*\n([^\n]+)\n", readme).group(1)
    assert script.rstrip("\n").splitlines()[-1] == command


def test_no_test_skips_for_a_missing_tool_on_its_own():
    """A tool check goes through require_tool, so CI (INVOICE_SYNC_REQUIRE_TOOLS) fails on it."""
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("*.py")
        if re.search(r"skipif\(\s*(not\s+)?shutil\.which|\bPHP is None", path.read_text())
    ]
    assert offenders == []
