"""A real Redis/Valkey Cluster on loopback: three masters with one replica each.

Six ``valkey-server --cluster-enabled yes`` processes (or Debian's ``redis-server``), joined with
``--cluster create … --cluster-replicas 1`` of the matching CLI (the wheel's ``valkey-cli`` next
to its ``valkey-server``, or ``redis-cli``). ``cluster-node-timeout`` is short so a killed
master's replica is promoted in a few seconds; ``cluster-require-full-coverage no`` keeps the
other masters' slots served meanwhile.

Example::

    with ClusterDeployment(tmp_path) as cluster:
        settings = {"REDIS_CLUSTER": cluster.seeds, "DURABLE_REPLICAS": 1}
        port = cluster.master_of("{seq:invoice}")
        cluster.kill(port)
        cluster.wait_promoted(port, "{seq:invoice}")
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster, key_slot

from coordinator.ops.embedded import ValkeyServer, server_binary

BUS_OFFSET = 10000
"""A node's cluster bus listens on its port + 10000."""

_handed_out: set[int] = set()
"""Ports and bus ports given to nodes by this process: free when checked, bound only later."""


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (where every client connection and every
    ``free_port()`` server of the other tests gets its port)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too.

    Both lie below the ephemeral range, so no connection or other test's server takes them
    between this check and the node's start; and neither is the port or bus port of a node
    picked before (a node started first would otherwise bind its bus on the next one's port).
    """
    high = max(_ephemeral_low() - BUS_OFFSET - 1, 15001)
    while True:
        port = random.randint(15000, high)
        pair = {port, port + BUS_OFFSET}
        if pair & _handed_out:
            continue
        try:
            for candidate in pair:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        _handed_out.update(pair)
        return port


def cli_for(binary: str) -> str | None:
    """The cluster CLI matching a server binary: its sibling, else one on PATH."""
    path = Path(binary)
    name = "valkey-cli" if "valkey" in path.name else "redis-cli"
    sibling = path.with_name(name)
    return str(sibling) if sibling.exists() else shutil.which(name)


class ClusterDeployment:
    """Start, fail over and stop a 3 × (master + replica) cluster."""

    def __init__(self, base_dir: Path, *, binary: str | None = None, masters: int = 3,
                 node_timeout_ms: int = 1000) -> None:
        self.binary = binary or server_binary()
        self.cli = cli_for(self.binary)
        self.base_dir = Path(base_dir)
        self.nodes = [
            ValkeyServer(self.base_dir / f"node{i}", binary=self.binary, port=cluster_port(),
                         extra=[
                "cluster-enabled yes", f"cluster-config-file {self.base_dir}/nodes{i}.conf",
                f"cluster-node-timeout {node_timeout_ms}",
                "cluster-require-full-coverage no",
                # a replica cut off for a while may still be promoted (the test kills masters)
                "cluster-replica-validity-factor 0",
            ])
            for i in range(masters * 2)
        ]

    @property
    def seeds(self) -> str:
        """The value of ``INVOICE_SYNC_REDIS_CLUSTER``."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, port: int) -> ValkeyServer:
        return next(n for n in self.nodes if n.port == port)

    def start(self, timeout: float = 60.0) -> ClusterDeployment:
        if self.cli is None:
            raise RuntimeError(f"no cluster CLI next to {self.binary} or on PATH")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [self.cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()  # no node left running behind a failed start
            raise
        return self

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, socket_timeout=1, decode_responses=True)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` and every master that
        runs has a replica in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._healthy():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise TimeoutError("cluster did not become healthy")

    def _healthy(self) -> bool:
        running = [n for n in self.nodes if n.running]
        for node in running:
            client = self._client(node.port)
            if client.cluster("info")["cluster_state"] != "ok":
                return False
            info = client.info("replication")
            if info["role"] == "master" and int(info.get("connected_slaves", 0)) < 1:
                return False
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if not node.running:
                continue
            try:
                ranges = self._slots(node.port)
            except redis.RedisError:
                continue
            for start, end, master in ranges:
                if start <= slot <= end:
                    return master
        raise LookupError(f"no master for slot {slot}")

    def _slots(self, port: int) -> list[tuple[int, int, int]]:
        raw = self._client(port).execute_command("CLUSTER", "SLOTS")
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in raw]

    def masters(self) -> list[int]:
        """Ports of the masters serving slots now."""
        return sorted({m for _, _, m in self._slots(next(
            n.port for n in self.nodes if n.running))})

    def replica_of(self, master: int) -> int:
        """The port of a running replica of the master at ``master``."""
        for node in self.nodes:
            if node.running and node.port != master:
                info = self._client(node.port).info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master:
                    return node.port
        raise LookupError(f"no replica of :{master}")

    def kill(self, port: int) -> None:
        """SIGKILL one node."""
        self.node(port).kill()

    def wait_promoted(self, old_master: int, key: str, timeout: float = 30.0) -> int:
        """Wait until another node serves ``key``, which ``old_master`` served; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                masters = self.masters()
                if old_master not in masters and len(masters) == len(self.nodes) // 2:
                    return self.master_of(key)
            except (redis.RedisError, StopIteration, LookupError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"no replica of :{old_master} was promoted in {timeout}s")

    def move_slot(self, key: str, to_master: int) -> int:
        """Reshard: move ``key``'s slot, with its keys, to the master at ``to_master``, the
        way ``--cluster reshard`` does (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE on every
        master). Clients keep their old slot map until a MOVED teaches them; returns the port
        of the master that served the slot."""
        slot = key_slot(key.encode())
        source = self.master_of(key)
        old, new = self._client(source), self._client(to_master)
        old_id, new_id = (c.execute_command("CLUSTER", "MYID") for c in (old, new))
        new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", old_id)
        old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", new_id)
        while moved := old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            old.execute_command("MIGRATE", "127.0.0.1", to_master, "", 0, 5000, "KEYS", *moved)
        for port in self.masters():
            self._client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        return source

    def client(self) -> RedisCluster:
        """A cluster-aware client of this deployment (decoded strings)."""
        return RedisCluster("127.0.0.1", self.nodes[0].port, decode_responses=True)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> ClusterDeployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
