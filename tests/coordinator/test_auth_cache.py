"""The per-process token cache (coordinator/auth/cache.py) on both real servers: a cached token
costs no round trip, and whatever changes the tokens hash (a revocation, FLUSHDB, a revocation
while the cache's connection was down) is seen by the very next lookup."""

from __future__ import annotations

import os

import pytest

from coordinator import auth, keys
from coordinator.auth import tokens
from coordinator.auth.cache import CLIENT_NAME, TokenCache
from coordinator.exceptions import AuthError
from tests.coordinator import redis_counting

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]


@pytest.fixture
def cache():
    made = TokenCache()
    yield made
    made.clear()  # its connection closed: the next test counts its own


def _tracking_ids(client) -> list[str]:
    return [c["id"] for c in client.client_list()
            if c["name"] == CLIENT_NAME and "t" in c["flags"]]


def _answered(client) -> None:
    # The coordinator answers its own changes to the tokens hash only after their durability
    # wait, a later round trip (DurableRedis): by then Redis has written the invalidation to
    # every tracking connection. A PING on this plain client stands in for that wait.
    client.ping()


def test_a_cached_token_costs_no_round_trip_until_redis_says_it_changed(redis_client, cache):
    record, token = tokens.create_token(redis_client, auth.AUDITOR, "reader", "cli")
    keeper, _ = tokens.create_token(redis_client, auth.ADMIN, "keeper", "cli")
    header = f"Bearer {token}"
    assert auth.authenticate(redis_client, header, None, cache=cache).token_id == record["id"]
    sent = redis_counting.top_level(
        redis_client, lambda: auth.authenticate(redis_client, header, None, cache=cache))
    assert sent == []  # served from the process, nothing sent to Redis
    assert len(_tracking_ids(redis_client)) == 1
    tokens.revoke_token(redis_client, record["id"], "cli")  # through another connection
    _answered(redis_client)
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, header, None, cache=cache)

    _, token = tokens.create_token(redis_client, auth.AUDITOR, "again", "cli")
    assert auth.authenticate(redis_client, f"Bearer {token}", None, cache=cache)
    redis_client.delete(keys.TOKENS)  # as FLUSHDB would, or a restore of an older backup
    _answered(redis_client)
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, f"Bearer {token}", None, cache=cache)


def test_a_revocation_while_the_cache_was_cut_off_is_not_missed(redis_client, cache):
    record, token = tokens.create_token(redis_client, auth.AUDITOR, "reader", "cli")
    tokens.create_token(redis_client, auth.ADMIN, "keeper", "cli")
    header = f"Bearer {token}"
    assert auth.authenticate(redis_client, header, None, cache=cache).kind == auth.AUDITOR
    (tracking,) = _tracking_ids(redis_client)
    redis_client.client_kill_filter(_id=tracking)  # its invalidations would be lost now
    tokens.revoke_token(redis_client, record["id"], "cli")
    with pytest.raises(AuthError):
        auth.authenticate(redis_client, header, None, cache=cache)
    # And the cache works again on a new connection, tracked from its first read.
    _, other = tokens.create_token(redis_client, auth.AUDITOR, "other", "cli")
    assert auth.authenticate(redis_client, f"Bearer {other}", None, cache=cache)
    assert cache.get(redis_client, auth.digest(other)) is not None
    assert len(_tracking_ids(redis_client)) == 1


def test_a_forked_worker_reads_on_a_tracked_connection_of_its_own(redis_client, cache):
    """gunicorn forks its workers from a master that may have looked tokens up already: a
    worker must not read from the master's socket (two processes, one stream of replies and
    invalidations), it connects again with tracking on."""
    record, token = tokens.create_token(redis_client, auth.AUDITOR, "reader", "cli")
    tokens.create_token(redis_client, auth.ADMIN, "keeper", "cli")
    token_digest = auth.digest(token)
    stored = cache.get(redis_client, token_digest)
    assert stored is not None
    pid = os.fork()
    if pid == 0:  # the worker: report through its exit code only
        code = 1
        try:
            found = cache.get(redis_client, token_digest)
            code = 0 if (found, len(_tracking_ids(redis_client))) == (stored, 2) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The master's own connection still hears of changes.
    tokens.revoke_token(redis_client, record["id"], "cli")
    _answered(redis_client)
    assert cache.get(redis_client, token_digest) is None
