"""Errors leave in one shape; 503 means "try again", 500 means "something is broken".

The Redis error texts below are the servers' own (Redis/Valkey ``server.c``, ``replication.c``,
``cluster.c``), turned into exceptions by redis-py's own parser, so the classification is tested
against what redis-py really raises for each answer.
"""

from __future__ import annotations

import re

import pytest
import redis
from redis._parsers.base import BaseParser

from coordinator import auth, errors, keys
from coordinator.app import create_app
from coordinator.ops.embedded import ValkeyServer
from tests.support import initialise_numbering

pytestmark = pytest.mark.integration

TRANSIENT = [
    "LOADING Redis is loading the dataset in memory",
    "READONLY You can't write against a read only replica.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "MOVED 3999 127.0.0.1:6381",
    "ASK 3999 127.0.0.1:6381",
    "NOREPLICAS Not enough good replicas to write.",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist "
    "to disk.",
    "OOM command not allowed when used memory > 'maxmemory'.",
]

BROKEN = [
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR user_script:12: Script attempted to access nonexistent global variable 'x' script: "
    "4f1a, on @user_script:12.",
    "ERR value is not an integer or out of range",
    # The transient codes inside another error's text are not that error.
    "ERR unknown command 'READONLY', with args beginning with: ",
    "ERR Error running script: @user_script:3: LOADING failed in user code",
    "WRONGTYPE key holds NOREPLICAS",
    "NOPERM User app has no permissions to run the 'evalsha' command",
    "WRONGPASS invalid username-password pair or user is disabled.",
    "CROSSSLOT Keys in request don't hash to the same slot",
    "EXECABORT Transaction discarded because of previous errors.",
    "NOSCRIPT No matching script. Please use EVAL.",
]


@pytest.mark.parametrize("text", TRANSIENT)
def test_server_errors_worth_a_retry_are_transient(text):
    assert errors.is_transient(BaseParser.parse_error(text))


@pytest.mark.parametrize("text", BROKEN)
def test_server_errors_of_a_broken_state_are_not_transient(text):
    assert not errors.is_transient(BaseParser.parse_error(text))


@pytest.mark.parametrize("error", [
    redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    redis.TimeoutError("Timeout reading from socket"),
])
def test_connection_trouble_is_transient(error):
    assert errors.is_transient(error)


def _boom_app(app_config, error):
    app = create_app(app_config)

    def boom():
        raise error

    app.add_url_rule("/boom", "boom", boom)
    return app


@pytest.mark.parametrize("text", ["READONLY You can't write against a read only replica.",
                                  "NOREPLICAS Not enough good replicas to write."])
def test_transient_redis_error_is_503_with_retry_after(app_config, redis_client, text):
    response = _boom_app(app_config, BaseParser.parse_error(text)).test_client().get("/boom")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {
        "code": 503, "status": "Service Unavailable", "errors": {},
        "message": "The coordinator's Redis is unavailable; retry shortly"}
    assert redis_client.zcard(keys.WARNINGS) == 0


def test_broken_redis_error_is_500_with_a_warning(app_config, redis_client):
    error = BaseParser.parse_error("ERR user_script:12: Script attempted to access nonexistent "
                                   "global variable 'x'")
    response = _boom_app(app_config, error).test_client().get("/boom")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    body = response.get_json()
    assert set(body) == {"code", "status", "message", "errors"} and body["errors"] == {}
    assert "will fail again until an operator fixes the cause" in body["message"]
    assert "nonexistent global" not in body["message"]  # server text: log and warning only
    [wid] = redis_client.zrange(keys.WARNINGS, 0, -1)
    assert wid in body["message"] and wid.startswith("internal_error:boom:ResponseError")
    assert "nonexistent global variable" in redis_client.hget(keys.warning(wid), "message")


def test_unexpected_exception_is_500_with_a_warning(app_config, redis_client):
    response = _boom_app(app_config, ZeroDivisionError("x")).test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json()["errors"] == {}
    assert redis_client.zrange(keys.WARNINGS, 0, -1) == ["internal_error:boom:ZeroDivisionError"]


def _take(client, headers, reference="10234"):
    return client.post("/v1/allocations", headers=headers, json={
        "document": "invoice", "reference": reference, "date": "2026-11-21"})


def test_wrong_type_key_in_a_script_is_500_not_retry(client, agent, admin, redis_client):
    """A key of the wrong type makes allocate.lua fail: a broken state, not an outage."""
    blue = agent("blue")
    assert _take(client, blue, "1").status_code == 201
    redis_client.delete(keys.seq_refs("invoice", "invoice", "blue"))
    redis_client.set(keys.seq_refs("invoice", "invoice", "blue"), "not a hash")
    response = _take(client, blue, "2")
    assert response.status_code == 500, response.get_json()
    assert "Retry-After" not in response.headers
    assert "WRONGTYPE" in response.get_json()["message"]
    warnings = client.get("/v1/warnings", headers=admin).get_json()
    assert [w["type"] for w in warnings] == ["internal_error"]
    assert "WRONGTYPE" in warnings[0]["message"]


def test_replay_whose_ledger_entry_is_missing_is_a_clear_500(client, agent, admin, redis_client):
    blue = agent("blue")
    taken = _take(client, blue).get_json()
    redis_client.hdel(keys.seq_ledger("invoice", "2026"), str(taken["number"]))
    counter = redis_client.get(keys.seq_counter("invoice", "2026"))
    response = _take(client, blue)
    assert response.status_code == 500
    body = response.get_json()
    assert re.fullmatch(re.escape(
        "Internal error: the reference index of system 'blue' says invoice '10234' was numbered "
        "in invoice period 2026, but that ledger entry is missing; no new number was taken. "
        "This is not a passing outage: the same request will fail again until an operator "
        "fixes the cause; raised as warning 'internal_error:numbering.Allocations:InternalFault' "
        "(request id ") + "[0-9a-f]{32}\\)", body["message"]), body["message"]
    assert body["errors"] == {}
    assert redis_client.get(keys.seq_counter("invoice", "2026")) == counter  # no new number
    [warning] = client.get("/v1/warnings", headers=admin).get_json()
    assert warning["id"] == "internal_error:numbering.Allocations:InternalFault"
    assert "ledger entry is missing" in warning["message"]


@pytest.fixture
def stale_replica(tmp_path):
    """A real server turned replica of a master that does not exist (link down, read-only)."""
    server = ValkeyServer(tmp_path / "replica").start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield server, client
    client.close()
    server.stop()


def test_real_replica_answers_503_readonly_then_masterdown(stale_replica):
    server, direct = stale_replica
    client = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
    token = auth.new_token(auth.AGENT)
    direct.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record("blue"))
    initialise_numbering(direct)
    headers = {"Authorization": f"Bearer {token}"}
    assert _take(client, headers, "warm").status_code == 201  # sequences initialised
    direct.execute_command("REPLICAOF", "127.0.0.1", "1")  # nothing listens on port 1
    direct.config_set("replica-serve-stale-data", "yes")
    with pytest.raises(redis.ReadOnlyError) as readonly:
        direct.set("probe", "1")
    assert errors.is_transient(readonly.value)
    first = _take(client, headers, "r1")
    assert first.status_code == 503 and first.headers["Retry-After"] == "1"
    direct.config_set("replica-serve-stale-data", "no")
    second = _take(client, headers, "r2")
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"
    assert direct.execute_command("ROLE")[0] == "slave"
