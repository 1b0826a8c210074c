"""The one Lua loader (coordinator/lua.py) on a real server: EVALSHA, NOSCRIPT, pipelining."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis

from coordinator import lua
from coordinator.lua import LuaScript

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def script(tmp_path, monkeypatch):
    package = tmp_path / "luapkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "count.lua").write_text(
        "-- Add ARGV[1] to KEYS[1].\n--\n-- KEYS[1] counter   ARGV[1] step\n\n"
        "return redis.call('INCRBY', KEYS[1], ARGV[1])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return LuaScript.load("luapkg", "count")


def test_runs_and_reloads_after_the_server_forgot_it(script, redis_client):
    redis_client.script_flush()
    assert script(redis_client, keys=["c"], args=[2]) == 2  # NOSCRIPT: loaded, sent again
    assert redis_client.script_exists(script.sha) == [True]
    assert script(redis_client, keys=["c"], args=[3]) == 5
    redis_client.script_flush()
    assert script(redis_client, keys=["c"], args=[1]) == 6
    assert redis_client.get("c") == "6"  # never ran twice


def test_more_commands_ride_the_same_pipeline(script, redis_client):
    redis_client.script_flush()
    replies = lua.run(redis_client, script, ["c"], [4],
                      then=lambda pipe: (pipe.get("c"), pipe.execute_command("NOSUCHCOMMAND")))
    assert replies[:2] == [4, "4"]
    assert isinstance(replies[2], redis.ResponseError)  # a later error is the caller's to judge


def test_the_scripts_own_error_is_raised(script, redis_client):
    redis_client.set("c", "not a number")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        script(redis_client, keys=["c"], args=[1])


def test_compact_source_drops_comments_only(script):
    assert script.compact_source == "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_every_lua_file_is_loaded_through_the_one_loader():
    """Each .lua next to a module is loaded by coordinator.lua; no other loader is left."""
    loaded, others = set(), []
    for module in (ROOT / "coordinator").rglob("*.py"):
        text = module.read_text()
        if "register_script" in text or ("resources.files" in text and ".lua" in text):
            if module.name != "lua.py":
                others.append(str(module.relative_to(ROOT)))
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and len(node.args) == 2
                    and isinstance(node.args[1], ast.Constant)):
                loaded.add(module.parent / f"{node.args[1].value}.lua")
    assert others == []
    assert loaded == set((ROOT / "coordinator").rglob("*.lua"))
    for path in loaded:
        head = path.read_text().split("\n\n")[0]
        assert "KEYS[" in head or "ARGV[" in head, f"{path.name}: no KEYS/ARGV header"
