"""A TCP chaos proxy on loopback, between an agent and the coordinator.

Each accepted connection gets one action from a policy (seeded, so a run can be repeated):

- ``pass``          forward both ways;
- ``delay``         wait ``delay`` seconds before connecting upstream;
- ``refuse``        reset the connection at once (the request never reaches the coordinator);
- ``cut_request``   forward only the first bytes of the request, then reset both sides;
- ``cut_response``  forward the whole request, then only the first bytes of the response, then
                    reset: the coordinator did the work, the agent never hears about it;
- ``blackhole``     accept the request and never answer (until the agent gives up).

Agents should send ``Connection: close`` so each request meets its own fate.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

ACTIONS = ("pass", "delay", "refuse", "cut_request", "cut_response", "blackhole")


@dataclass
class Action:
    """What happens to one connection."""

    kind: str = "pass"
    delay: float = 0.0
    keep_bytes: int = 0
    """For the cuts: how many bytes get through before the reset."""


def weighted_policy(seed: int, weights: dict[str, float], max_delay: float = 0.3
                    ) -> Callable[[], Action]:
    """Return a seeded policy choosing actions with ``weights`` (kinds of ``ACTIONS``)."""
    rng = random.Random(seed)
    kinds = list(weights)
    lock = threading.Lock()

    def policy() -> Action:
        with lock:
            kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
            return Action(kind, delay=rng.uniform(0, max_delay), keep_bytes=rng.randint(0, 60))

    return policy


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), like a crashed middlebox, not a polite FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Wake the other pump if it is blocked in recv() on this socket (SHUT_RD sends
        # nothing): until that recv returns, close() does not release the socket, and the RST
        # would wait for the peer's next byte or the hold limit — a cut answer would look
        # like a timeout to the agent.
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class ChaosProxy:
    """Forward ``127.0.0.1:<port>`` to ``target`` with faults from ``policy``.

    Example::

        with ChaosProxy(("127.0.0.1", 8080), weighted_policy(7, {"pass": 3, "cut_response": 1}))
                as proxy:
            requests.get(proxy.url + "/livez")
        print(proxy.stats)
    """

    def __init__(self, target: tuple[str, int], policy: Callable[[], Action] | None = None,
                 hold_limit: float = 10.0) -> None:
        self.target = target
        self.policy = policy or (lambda: Action())
        self.hold_limit = hold_limit
        self.stats: Counter = Counter()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChaosProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._listener.close()

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)  # so stop() is noticed; accept() ignores close()
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            # No Nagle: clients write headers and body separately, and a proxy that holds the
            # second write for the first one's ACK adds ~40 ms (delayed ACK) to every request.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            action = self.policy()
            with self._lock:
                self.stats[action.kind] += 1
            threading.Thread(target=self._handle, args=(conn, action), daemon=True).start()

    def _handle(self, client: socket.socket, action: Action) -> None:
        if action.kind == "refuse":
            _reset(client)
            return
        if action.kind == "delay":
            time.sleep(action.delay)
        try:
            upstream = socket.create_connection(self.target, timeout=self.hold_limit)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            _reset(client)
            return
        client.settimeout(self.hold_limit)
        upstream.settimeout(self.hold_limit)
        if action.kind == "blackhole":
            # Swallow the request, answer nothing, let the agent's timeout fire.
            deadline = time.monotonic() + self.hold_limit
            try:
                while time.monotonic() < deadline and client.recv(65536):
                    pass
            except OSError:
                pass
            _reset(client)
            upstream.close()
            return
        up_limit = action.keep_bytes if action.kind == "cut_request" else None
        down_limit = action.keep_bytes if action.kind == "cut_response" else None
        done = threading.Event()
        t = threading.Thread(target=self._pump, args=(client, upstream, up_limit, done),
                             daemon=True)
        t.start()
        self._pump(upstream, client, down_limit, done)
        t.join(self.hold_limit)
        for sock in (client, upstream):
            _reset(sock) if action.kind.startswith("cut") else sock.close()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None,
              done: threading.Event) -> None:
        sent = 0
        try:
            while not done.is_set():
                data = src.recv(65536)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if limit is not None and sent + len(data) > limit:
                    if limit > sent:
                        dst.sendall(data[: limit - sent])
                    done.set()
                    _reset(src)
                    _reset(dst)
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            done.set()
