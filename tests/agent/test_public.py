"""The agent's public surface, and that it stays thin (no coordinator, Flask or Redis)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import agent
import agent._exceptions


def test_all_is_sorted_and_complete() -> None:
    assert agent.__all__ == sorted(agent.__all__)
    public = {
        name
        for name, value in vars(agent).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith("agent.")
    }
    assert public == set(agent.__all__)
    # Re-exported from private modules, or from agent.whmcs: the one public submodule, the
    # WHMCS API client the coordinator's forecaster uses too.
    for name in agent.__all__:
        module = getattr(agent, name).__module__
        assert module.startswith("agent._") or module == "agent.whmcs", name


def test_hierarchy_docstring_names_every_exception() -> None:
    doc = agent._exceptions.__doc__ or ""
    for name, value in vars(agent._exceptions).items():
        if inspect.isclass(value) and issubclass(value, Exception):
            assert name in doc, f"{name} missing from the hierarchy docstring"
            assert issubclass(value, agent.AgentError)


def test_importing_agent_and_its_cli_loads_no_coordinator_flask_or_redis() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import agent, agent._cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        agent._cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    try:\n"
        "        agent._cli.main(['serve', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "             ('coordinator', 'flask', 'redis', 'rq', 'click', 'marshmallow'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_python_dash_m_agent_prints_help_with_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    for code in agent.ExitCode:
        assert f"  {int(code)}  " in result.stdout
