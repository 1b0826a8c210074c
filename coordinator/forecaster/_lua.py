"""Load the forecaster's Lua scripts (``*.lua`` next to this module) once per client."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script


@cache
def source(name: str) -> str:
    """Return the text of ``<name>.lua``."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text()


def script(client: redis.Redis, name: str) -> Script:
    """Return the registered script ``name`` for ``client`` (EVALSHA, reloaded on NOSCRIPT)."""
    return client.register_script(source(name))
