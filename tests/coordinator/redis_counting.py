"""Count what other connections did on a Valkey server (not timed).

- :func:`others` / :func:`since`: commands and bytes sent per connection, from ``tot-cmds``
  and ``tot-net-out`` of ``CLIENT LIST`` (Valkey 8; ``tot-cmds`` includes the calls a script
  makes on the connection's behalf);
- :func:`top_level`: the commands connections sent themselves, as ``MONITOR`` shows them
  (calls made inside a script are left out: one EVALSHA is one command).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import redis


def others(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Per connection but ``client``'s own: (commands, bytes sent to it)."""
    mine = str(client.client_id())
    return {c["id"]: (int(c["tot-cmds"]), int(c["tot-net-out"]))
            for c in client.client_list() if c["id"] != mine}


def since(client: redis.Redis, before: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(commands, bytes sent) of the other connections since ``before`` was read."""
    after = others(client)
    commands = sum(a[0] - before.get(cid, (0, 0))[0] for cid, a in after.items())
    sent = sum(a[1] - before.get(cid, (0, 0))[1] for cid, a in after.items())
    return commands, sent


def top_level(client: redis.Redis, action: Callable[[], object]) -> list[str]:
    """Run ``action``; return the commands connections sent meanwhile (names, upper case)."""
    marker = f"marker:{uuid.uuid4().hex}"
    seen: list[dict] = []
    ready = threading.Event()
    watcher = redis.Redis(connection_pool=redis.ConnectionPool(
        **client.connection_pool.connection_kwargs))

    def watch() -> None:
        with watcher.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                if marker in command["command"]:
                    return
                seen.append(command)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(30)
    client.ping()  # MONITOR is on once the server answered it; a PING after is seen
    try:
        action()
    finally:
        client.get(marker)
        thread.join(30)
        watcher.close()
    return [c["command"].split(" ", 1)[0].upper() for c in seen
            if c.get("client_type") != "lua" and c["command"].upper() != "PING"]
