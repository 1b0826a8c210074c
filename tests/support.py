"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests

from coordinator.keys import RATE_LIMIT_PREFIX
from coordinator.ops.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]


def key_content(raw: redis.Redis, key: bytes) -> object:
    """Return what ``key`` holds, independent of how the server lays it out in memory.

    Not ``DUMP``: a hash or set in hashtable encoding is serialised in bucket order, and that
    order changes under an incremental rehash, which a mere read (HGET) advances. Two DUMPs
    of an unchanged hash can therefore differ.
    """
    kind = raw.type(key).decode()
    if kind == "hash":
        return kind, sorted(raw.hgetall(key).items())
    if kind == "set":
        return kind, sorted(raw.smembers(key))
    if kind == "zset":
        return kind, raw.zrange(key, 0, -1, withscores=True)
    if kind == "list":
        return kind, raw.lrange(key, 0, -1)
    if kind == "string":
        return kind, raw.get(key)
    return kind, raw.dump(key)


def snapshot(target: str | redis.Redis, skip: tuple[bytes, ...] = ()) -> dict[bytes, object]:
    """Return every data key with its content, to prove a request changed nothing.

    Rate-limit counters (and keys starting with one of ``skip``) are left out: every request,
    accepted or not, is counted by design, and they expire on their own.
    """
    raw = redis.Redis.from_url(target) if isinstance(target, str) else redis.Redis(
        connection_pool=redis.ConnectionPool(**{
            **target.connection_pool.connection_kwargs, "decode_responses": False})
    )
    volatile = (RATE_LIMIT_PREFIX.encode(), *skip)
    try:
        return {
            key: key_content(raw, key)
            for key in sorted(raw.scan_iter(count=1000))
            if not key.startswith(volatile)
        }
    finally:
        raw.close()


REQUIRE_TOOLS = "INVOICE_SYNC_REQUIRE_TOOLS"
"""Set to 1 by .ci/run: CI installs every tool the tests use, so a missing one is a failure."""


def tools_required() -> bool:
    """Whether a missing tool must fail the test instead of skipping it (see REQUIRE_TOOLS)."""
    return os.environ.get(REQUIRE_TOOLS, "").strip().lower() in {"1", "true", "yes", "on"}


def missing_tool(reason: str) -> None:
    """Skip for a missing tool, or fail when INVOICE_SYNC_REQUIRE_TOOLS says CI installed it."""
    if tools_required():
        pytest.fail(f"{reason} (and {REQUIRE_TOOLS} is set: CI must install it)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, install: str | None = None) -> str:
    """Return the path of command ``name``; skip (or fail in CI) when it is not installed."""
    found = shutil.which(name)
    if found is None:
        hint = f" (apt-get install -y {install or name})"
        missing_tool(f"{name} is not installed{hint}; NOT tested")
    return found


def interrupt(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server process the way Ctrl-C does; kill it if it does not exit in ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def user_env(home: Path) -> dict[str, str]:
    """A new user's shell: no INVOICE_SYNC_* setting, this checkout importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("INVOICE_SYNC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"PYTHONPATH": str(ROOT), "HOME": str(home)})
    return env


class Serve:
    """``invoice-sync serve`` as a real process in a new user's environment (one worker).

    Usage::

        with Serve(tmp_path / "data") as serve:
            requests.get(serve.url + "/readyz")
    """

    def __init__(self, data_dir: Path, port: int | None = None, *args: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}-{id(self)}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "coordinator", "serve", "--port", str(self.port),
                 "--data-dir", str(data_dir), "--workers", "1", "--no-sync-worker", *args],
                cwd=data_dir.parent, env=user_env(data_dir.parent), stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        """What the process printed so far."""
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60) -> Serve:
        """Wait until ``/readyz`` answers 200; fail with the log if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, "serve did not become ready:\n" + self.output()
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop it as Ctrl-C does."""
        interrupt(self.process)

    def __enter__(self) -> Serve:
        return self.wait_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def previous_release(ref: str, target: Path) -> Path:
    """Extract commit ``ref`` of this repository into ``target`` (for upgrade tests).

    Skips (fails under ``INVOICE_SYNC_REQUIRE_TOOLS``) when git cannot produce it.
    """
    # The nearest directory with a .git: ROOT, or for a copy of the tree made inside the work
    # tree (the mutation run's git-ignored mutants/<module>/), the work tree itself, since git
    # refuses to run in an ignored directory and the upgrade tests would silently skip there.
    repository = next((p for p in (ROOT, *ROOT.parents) if (p / ".git").exists()), ROOT)
    try:
        archive = subprocess.run(["git", "-C", str(repository), "archive", ref],
                                 capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        reason = f"git archive {ref} failed ({error})"
        if os.environ.get("INVOICE_SYNC_REQUIRE_TOOLS"):
            pytest.fail(f"the upgrade test needs the previous release: {reason}")
        pytest.skip(reason)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, timeout=60)
    return target


def release_data_dir(ref: str, script: Path, factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A stopped Valkey data dir that ``script`` filled with the code of commit ``ref``
    (:func:`previous_release`, :func:`legacy_data_dir`), and the script's output."""
    code = previous_release(ref, factory.mktemp(f"release-{ref}"))
    data = factory.mktemp(f"release-{ref}-valkey")
    return data, legacy_data_dir(code, script, data)


def legacy_data_dir(release: Path, script: Path, data: Path) -> dict:
    """Run ``script <redis url> <output json>`` with the code of ``release`` on a Valkey of
    data dir ``data``, stop the server, and return the script's output.

    The script imports ``coordinator`` from ``release`` (its ``PYTHONPATH``): the data is made
    by the old code itself, which the output's ``code`` (the module path) shows.
    """
    from coordinator.ops.embedded import ValkeyServer

    output = data.parent / f"{data.name}.json"
    server = ValkeyServer(data).start()
    try:
        run = subprocess.run([sys.executable, str(script), server.url, str(output)],
                             env={**os.environ, "PYTHONPATH": str(release)}, cwd=release,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        server.stop()
    import json

    done = json.loads(output.read_text())
    assert done["code"].startswith(str(release))  # the old code made the data
    return done


@contextmanager
def upgraded_copy(source: Path, tmp_path: Path) -> Iterator[tuple]:
    """This release's Valkey started on a copy of a previous release's data dir (AOF
    reloaded), with a client; both closed afterwards. Yields ``(server, client)``."""
    from coordinator.ops.embedded import ValkeyServer

    copy = tmp_path / "valkey"
    shutil.copytree(source, copy)
    with ValkeyServer(copy) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            yield server, client
        finally:
            client.close()


def at_once(calls: list) -> list:
    """Run every callable of ``calls`` in its own thread, released together; their results."""
    import threading

    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def initialise_numbering(client) -> None:
    """Initialise the numbering of a fresh test store, as ``serve``'s first start does."""
    from coordinator.numbering import guard

    guard.mark_initialised(client, "test fixture")
