"""Many threads and several processes allocate at once: no duplicate, no gap, one number each."""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from coordinator import auth, keys
from coordinator.numbering import iter_ledger

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]

SYSTEMS = ("blue", "red", "orange")


def _register(client: redis.Redis) -> dict[str, dict]:
    headers = {}
    for system in SYSTEMS:
        token = auth.new_token(auth.AGENT)
        client.hset(keys.TOKENS, auth.digest(token), auth.agent_token_record(system))
        headers[system] = {"Authorization": f"Bearer {token}"}
    return headers


def _worker(url: str, headers: dict[str, dict], worker: int, count: int, queue) -> None:
    """One process: its own app and Redis connections; each reference asked twice, shuffled."""
    from coordinator.app import create_app

    client = create_app({"TESTING": True, "REDIS_URL": url}).test_client()
    work = [(SYSTEMS[i % len(SYSTEMS)], f"p{worker}-{i}") for i in range(count)] * 2
    random.Random(worker).shuffle(work)
    results = []
    for system, reference in work:
        document = "credit_note" if reference.endswith("7") else "invoice"
        response = client.post("/v1/allocations", headers=headers[system], json={
            "document": document, "reference": reference, "date": "2026-05-05"})
        results.append((system, document, reference, response.status_code,
                         response.get_json().get("id")))
    queue.put(results)


def _check(results, redis_client):
    by_key: dict[tuple, set] = {}
    statuses: dict[tuple, list] = {}
    for system, document, reference, status, allocation_id in results:
        assert status in (200, 201), (status, allocation_id)
        by_key.setdefault((system, document, reference), set()).add(allocation_id)
        statuses.setdefault((system, document, reference), []).append(status)
    # Every reference exactly one number; exactly one of its requests created it.
    assert all(len(ids) == 1 for ids in by_key.values())
    assert all(sorted(s) == [200, 201] for s in statuses.values())
    for sequence, document in (("invoice", "invoice"), ("credit_note", "credit_note")):
        ids = {next(iter(v)) for k, v in by_key.items() if k[1] == document}
        numbers = sorted(int(i.rsplit(":", 1)[1]) for i in ids)
        assert numbers == list(range(1, len(ids) + 1))  # no duplicate, no gap
        ledger = list(iter_ledger(redis_client, sequence, "2026"))
        assert [e["number"] for e in ledger] == numbers
        assert {(e["system"], e["reference"]) for e in ledger} == {
            (k[0], k[2]) for k in by_key if k[1] == document}


def test_threads_allocate_without_duplicate_or_gap(app, redis_client):
    headers = _register(redis_client)
    work = [(SYSTEMS[i % 3], f"t{i}") for i in range(300)] * 2
    random.Random(1).shuffle(work)

    def one(item):
        system, reference = item
        document = "credit_note" if reference.endswith("7") else "invoice"
        response = app.test_client().post("/v1/allocations", headers=headers[system], json={
            "document": document, "reference": reference, "date": "2026-05-05"})
        return system, document, reference, response.status_code, response.get_json().get("id")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, work))
    _check(results, redis_client)


def test_processes_allocate_without_duplicate_or_gap(valkey, redis_client):
    headers = _register(redis_client)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(valkey.url, headers, w, 120, queue))
                 for w in range(4)]
    for process in processes:
        process.start()
    results = [item for _ in processes for item in queue.get(timeout=120)]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    _check(results, redis_client)


def test_threads_with_increment_follow_it(app, redis_client, admin):
    headers = _register(redis_client)
    app.test_client().patch("/v1/sequences/invoice", headers=admin, json={"increment": 3})

    def one(i):
        return app.test_client().post("/v1/allocations", headers=headers["blue"], json={
            "document": "invoice", "reference": f"r{i}", "date": "2026-05-05"}).get_json()

    with ThreadPoolExecutor(8) as pool:
        numbers = sorted(entry["number"] for entry in pool.map(one, range(100)))
    assert numbers == list(range(3, 301, 3))
