"""A rotated or revoked agent token never comes back after a failover.

Registry and token writes (register, rotate, delete = revoke) are acknowledged only once
durable, like allocations (coordinator/ops/redis_client.py: transactions on the coordinator's
client wait for WAITAOF, or WAIT on servers without it). The scenario, on a real Sentinel
deployment (master, one replica, three sentinels), on both servers:

1. register ``blue`` and ``red``; rotate blue's token once; delete ``red`` (revokes its token);
2. cut replication, then rotate blue's token again;
3. SIGKILL the master; the sentinels promote the replica;
4. every token the admin was told is dead stays dead, the live one works.

The master runs without ``min-replicas-to-write`` here, so the coordinator's own wait is all
that stands between the cut and an acknowledgement. With ``DURABLE_REPLICAS=1`` step 2 must
answer 503 (nothing acknowledged that the replica never saw). With ``DURABLE_REPLICAS=0``
step 2 is acknowledged from the master alone, and after the failover the token it retired
works again: the control run shows the check can fail.
"""

from __future__ import annotations

import time

import pytest
import redis
from cryptography.fernet import Fernet

from coordinator.app import create_app
from tests.coordinator.systems_support import FakeResolver, body
from tests.faults.scenario import register_admin
from tests.faults.sentinel import SentinelCluster

pytestmark = pytest.mark.faults


def _alive(http, token: str) -> bool:
    response = http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401), response.get_json()
    return response.status_code == 200


def _scenario(tmp_path, binary: str | None, rule: bool) -> tuple[int, dict[str, bool]]:
    with SentinelCluster(tmp_path / "cluster", replicas=1, durable=False,
                         binary=binary) as cluster:
        master = redis.Redis.from_url(cluster.master.url, decode_responses=True)
        admin = {"Authorization": f"Bearer {register_admin(master)}"}
        master.execute_command("WAIT", 1, 2000)
        app = create_app({
            "TESTING": True, "SENTINELS": cluster.sentinels_spec,
            "DURABLE_REPLICAS": 1 if rule else 0, "DURABILITY_TIMEOUT_MS": 900,
            "REDIS_SOCKET_TIMEOUT": 2, "SECRET_KEYS": Fernet.generate_key().decode(),
            "SYSTEM_URL_RESOLVER": FakeResolver(), "RATE_LIMIT_ADMIN": 0,
            "RATE_LIMIT_AGENT": 0})
        http = app.test_client()

        created = http.post("/v1/systems", headers=admin, json=body(name="blue"))
        assert created.status_code == 201, created.get_json()
        first = created.get_json()["agent_token"]
        rotated = http.post("/v1/systems/blue/agent-token", headers=admin)
        assert rotated.status_code == 200, rotated.get_json()
        second = rotated.get_json()["agent_token"]
        red = http.post("/v1/systems", headers=admin, json=body(name="red"))
        assert red.status_code == 201, red.get_json()
        red_token = red.get_json()["agent_token"]
        assert http.delete("/v1/systems/red", headers=admin).status_code == 204

        cluster.cut_replication()
        late = http.post("/v1/systems/blue/agent-token", headers=admin)
        told_dead = {"first": first, "red": red_token}
        if late.status_code == 200:
            told_dead["second"] = second  # the admin was told it is replaced

        old = cluster.kill_master()
        cluster.wait_for_new_master(old, timeout=30)
        alive = {}
        for attempt in range(100):
            try:
                alive = {name: _alive(http, token) for name, token in told_dead.items()}
                break
            except (AssertionError, redis.RedisError):  # the client finds the new master
                if attempt == 99:
                    raise
                time.sleep(0.1)
        return late.status_code, alive


def test_rotated_and_revoked_tokens_stay_dead_across_failover(tmp_path, server_binary):
    late, alive = _scenario(tmp_path, server_binary, rule=True)
    assert late == 503, "a rotation the replica never saw must not be acknowledged"
    assert alive == {"first": False, "red": False}


def test_without_the_rule_a_rotated_token_comes_back(tmp_path):
    late, alive = _scenario(tmp_path, None, rule=False)
    assert late == 200, "without the rule the master alone acknowledges"
    assert alive["second"] is True, "the failover must have brought the retired token back"
    assert alive["first"] is False and alive["red"] is False
