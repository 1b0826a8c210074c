"""A real Sentinel deployment on loopback: one master, replicas, three sentinels (quorum 2).

All are ``valkey-server`` processes (the sentinels run with ``--sentinel``). Replication goes
through an ACL user ``repl`` so a test can cut it deterministically (``cut_replication``: the
user is disabled and its connections killed; the replica keeps failing to log in) — the way to
make a replica lag behind acknowledged writes without timing luck.

``durable=True`` puts the durability rule on the master: ``min-replicas-to-write 1`` and
``min-replicas-max-lag``; the coordinator then runs with ``DURABLE_REPLICAS=1`` (WAITAOF).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from coordinator.ops.embedded import ValkeyServer, free_port, server_binary

MASTER_NAME = "invoice-sync"
REPL_USER, REPL_PASSWORD = "repl", "repl-test-password"
# Every node carries both halves: after a failover any of them may be master or replica.
_REPL = [f"user {REPL_USER} on >{REPL_PASSWORD} ~* &* +@all",
         f"masteruser {REPL_USER}", f"masterauth {REPL_PASSWORD}"]


class SentinelCluster:
    """Start, fail over and stop a master + replicas + 3 sentinels.

    Example::

        with SentinelCluster(tmp_path, durable=True) as cluster:
            settings = {"SENTINELS": cluster.sentinels_spec, "DURABLE_REPLICAS": 1}
            ...
            old = cluster.kill_master()
            new, seconds = cluster.wait_for_new_master(old)
    """

    def __init__(self, base_dir: Path, *, replicas: int = 1, durable: bool = True,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 4000,
                 max_lag_s: int = 2, binary: str | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.binary = binary or server_binary()
        self.durable = durable
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        rule = [f"min-replicas-to-write {1 if durable else 0}",
                f"min-replicas-max-lag {max_lag_s}",
                # a (new) master syncs a replica at once, not after the default 5 s wait
                "repl-diskless-sync-delay 0"]
        self.master = ValkeyServer(self.base_dir / "master", extra=[*_REPL, *rule],
                                   binary=self.binary)
        self.replicas = [
            ValkeyServer(self.base_dir / f"replica{i}", binary=self.binary, extra=[
                *_REPL, *rule, f"replicaof 127.0.0.1 {self.master.port}",
            ])
            for i in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen | None] = []

    @property
    def sentinels_spec(self) -> str:
        """The value of ``INVOICE_SYNC_SENTINELS``."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    @property
    def servers(self) -> list[ValkeyServer]:
        return [self.master, *self.replicas]

    def server_at(self, port: int) -> ValkeyServer:
        return next(s for s in self.servers if s.port == port)

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        """Start everything and wait until replicas are in sync and sentinels know each other."""
        self.master.start()
        for replica in self.replicas:
            replica.start()
        for index, port in enumerate(self.sentinel_ports):
            self.sentinels.append(self._start_sentinel(index, port))
        try:
            self.wait_settled(timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait until every replica is in sync and every sentinel knows them and its peers."""
        deadline = time.monotonic() + timeout
        while not self._settled():
            if time.monotonic() > deadline:
                raise TimeoutError("sentinel cluster did not settle in time")
            time.sleep(0.2)

    def _start_sentinel(self, index: int, port: int) -> subprocess.Popen:
        directory = self.base_dir / f"sentinel{index}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", "protected-mode no", f"dir {directory}",
            f"logfile {directory / 'sentinel.log'}", "daemonize no",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]) + "\n")
        return subprocess.Popen(
            [self.binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, socket_timeout=1, decode_responses=True)

    def _settled(self) -> bool:
        try:
            master = self.master_port() if self.sentinels else self.master.port
            replicas = [s for s in self.servers if s.port != master]
            for replica in replicas:
                if not replica.running:
                    return False
                info = redis.Redis.from_url(replica.url, socket_timeout=1).info("replication")
                if info.get("master_link_status") != "up" or info.get("master_port") != master:
                    return False
            if self.durable:
                # A replica whose link is up counts for min-replicas-to-write only once the
                # master has its first ack within the allowed lag: until then every write
                # answers NOREPLICAS, so the cluster is not ready for one.
                info = redis.Redis.from_url(self.server_at(master).url,
                                            socket_timeout=1).info("replication")
                if int(info.get("min_slaves_good_slaves", 0)) < len(replicas):
                    return False
            for port in self.sentinel_ports:
                s = self.sentinel(port)
                known = [r for r in s.sentinel_slaves(MASTER_NAME)
                         if "s_down" not in r.get("flags", "") and
                         "disconnected" not in r.get("flags", "")]
                if len(known) < len(replicas):
                    return False
                if len(s.sentinel_sentinels(MASTER_NAME)) < len(self.sentinel_ports) - 1:
                    return False
        except redis.RedisError:
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the sentinels' majority sees it."""
        votes: dict[int, int] = {}
        for port in self.sentinel_ports:
            try:
                addr = self.sentinel(port).sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if addr:
                votes[int(addr[1])] = votes.get(int(addr[1]), 0) + 1
        return max(votes, key=votes.get) if votes else None

    def current_master(self) -> ValkeyServer:
        return self.server_at(self.master_port())

    def cut_replication(self) -> None:
        """Stop every replica from receiving the master's writes (and from reconnecting)."""
        client = redis.Redis.from_url(self.current_master().url)
        client.execute_command("ACL", "SETUSER", REPL_USER, "off")
        client.execute_command("CLIENT", "KILL", "USER", REPL_USER)

    def kill_master(self) -> int:
        """SIGKILL the current master; return its port."""
        master = self.current_master()
        port = master.port
        master.kill()
        return port

    def wait_for_new_master(self, old_port: int, timeout: float = 30.0) -> tuple[int, float]:
        """Wait until the sentinels name another master that answers as one.

        Returns:
            (port of the new master, seconds waited).
        """
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            port = self.master_port()
            if port and port != old_port:
                try:
                    role = redis.Redis("127.0.0.1", port, socket_timeout=1).execute_command("ROLE")
                    if role[0] in (b"master", "master"):
                        return port, time.monotonic() - started
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"no failover within {timeout}s")

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.sentinels = []
        for server in self.servers:
            server.kill()

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
