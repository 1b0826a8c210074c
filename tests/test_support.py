"""Tools CI installs: skip locally when missing, fail when INVOICE_SYNC_REQUIRE_TOOLS is set."""

from __future__ import annotations

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
