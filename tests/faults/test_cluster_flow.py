"""Everything the coordinator serves, over real HTTP, on a real Redis Cluster.

Three masters with one replica each (``tests/faults/cluster.py``), ``DURABLE_REPLICAS=1``, the
sync queue on a plain Valkey (``INVOICE_SYNC_QUEUE_REDIS_URL``), WHMCS installations served by
the project's fake WHMCS. The admin flow (series, systems registered, moved, rotated and
deleted, tokens), allocations in two series, syncs with an RQ worker, reports, warnings and
the ledger's verify and export all answer as on one server: no CROSSSLOT, no 500. The last
test checks every ``/v1`` route of the app was called and answered 2xx.

Then "another slot keeps serving": two series on two masters, one master killed (its replica
held back from failover meanwhile): the other series keeps numbering, the killed one answers
503 with no number, and after the failover it goes on exactly where it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
import requests
from cryptography.fernet import Fernet
from rq import SimpleWorker

from coordinator import keys
from coordinator.app import create_app
from coordinator.auth.cache import CLIENT_NAME
from coordinator.config import load_settings
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs
from coordinator.forecaster import defaults as forecaster_defaults
from coordinator.forecaster.connections import queue_connection
from coordinator.numbering import checkpoints
from coordinator.ops.embedded import ValkeyServer
from coordinator.ops.redis_client import make_redis
from tests.conftest import SERVERS, resolve_server
from tests.faults.cluster import ClusterDeployment
from tests.faults.conftest import register_admin
from tests.live import LiveCoordinator

pytestmark = pytest.mark.faults

YEAR = "2026"
DATE = "2026-11-21"


class Recorder:
    """Admin/agent HTTP calls that remember which routes answered 2xx."""

    def __init__(self, app, url: str) -> None:
        self.adapter = app.url_map.bind("localhost")
        self.url = url
        self.answered: set[tuple[str, str]] = set()
        self.master_down = False

    def __call__(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        response = requests.request(method, self.url + path, timeout=30,
                                    headers={"Authorization": f"Bearer {token}"}, **kwargs)
        # Never a 500. Never a 503 either while every master is up: a transaction or script
        # spanning slots reaches the server as CROSSSLOT or MOVED, and MOVED answers 503.
        allowed = {503} if self.master_down else set()
        assert response.status_code < 500 or response.status_code in allowed, (
            method, path, response.status_code, response.text)
        if response.status_code < 300:
            rule, _ = self.adapter.match(path.split("?")[0], method=method, return_rule=True)
            self.answered.add((method, rule.rule))
        return response


class Stack:
    """The cluster, the queue Redis, the coordinator over HTTP, the admin token."""

    def __init__(self, cluster, queue, app, live, admin, http) -> None:
        self.cluster, self.queue, self.app, self.live = cluster, queue, app, live
        self.admin, self.http = admin, http
        self.state: dict = {}
        self.exits = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.exits.close()

    def data(self) -> redis.RedisCluster:
        return self.cluster.client()


@pytest.fixture(scope="module", params=SERVERS)
def stack(request, tmp_path_factory) -> Iterator[Stack]:
    """All of it, once per server (Valkey, Debian's Redis 7.0); the tests run in order."""
    binary = resolve_server(request.config, request.param)
    base = tmp_path_factory.mktemp("cluster-flow")
    monkeypatch = pytest.MonkeyPatch()
    with ClusterDeployment(base / "cluster", binary=binary) as cluster:
        queue = ValkeyServer(base / "queue").start()
        try:
            # The app and the RQ jobs read the same settings, as two processes would.
            for name, value in {
                "REDIS_CLUSTER": cluster.seeds, "QUEUE_REDIS_URL": queue.url,
                "DURABLE_REPLICAS": "1", "SECRET_KEYS": Fernet.generate_key().decode(),
                "ALLOW_HTTP_SYSTEM_URLS": "true", "ALLOW_PRIVATE_SYSTEM_URLS": "true",
                "RATE_LIMIT_AGENT": "0", "RATE_LIMIT_ADMIN": "0",
                "LEDGER_SIGNING_KEYS": checkpoints.generate_key(),
            }.items():
                monkeypatch.setenv(f"INVOICE_SYNC_{name}", value)
            for name in ("REDIS_URL", "SENTINELS", "ADMIN_TOKEN"):
                monkeypatch.delenv(f"INVOICE_SYNC_{name}", raising=False)
            app = create_app()
            live = LiveCoordinator(app, "").start()
            admin = register_admin(cluster.client())
            with Stack(cluster, queue, app, live, admin, Recorder(app, live.url)) as stack:
                yield stack
            live.close()
        finally:
            monkeypatch.undo()
            queue.stop()


def _ok(response: requests.Response, status: int = 200) -> dict | list:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else {}


def test_admin_flow_series_systems_tokens_and_allocations(stack):
    http, admin = stack.http, stack.admin
    # Series: a second legal entity, its settings, and one created and deleted again.
    _ok(http("POST", "/v1/series", admin, json={"name": "acme", "description": "Acme Ltd"}),
        201)
    _ok(http("PATCH", "/v1/series/acme", admin, json={"description": "Acme Limited"}))
    assert [s["name"] for s in _ok(http("GET", "/v1/series", admin))] == ["default", "acme"]
    assert _ok(http("GET", "/v1/series/acme", admin))["description"] == "Acme Limited"
    _ok(http("PATCH", "/v1/series/acme/sequences/invoice", admin,
             json={"format": "AC-{YEAR}-{NUMBER}", "padding": 0}))
    assert len(_ok(http("GET", "/v1/series/acme/sequences", admin))) == 2
    _ok(http("GET", "/v1/series/acme/sequences/invoice", admin))
    _ok(http("POST", "/v1/series", admin, json={"name": "spare"}), 201)
    _ok(http("DELETE", "/v1/series/spare", admin), 204)
    _ok(http("PATCH", "/v1/sequences/invoice", admin, json={"format": "INV-{YEAR}-{NUMBER}",
                                                             "padding": 0}))

    # Systems: registered in two series (one slot each: this answered 500 CROSSSLOT before).
    tokens = {}
    fakes = stack.state.setdefault("fakes", {})
    for name, series in (("blue", "default"), ("red", "acme"), ("green", "default")):
        fake = FakeWhmcs(f"ident-{name}", f"secret-{name}")
        fakes[name] = fake
        url = stack.exits.enter_context(serve_fake_whmcs(fake)).url
        created = _ok(http("POST", "/v1/systems", admin, json={
            "name": name, "url": url, "api_identifier": f"ident-{name}",
            "api_secret": f"secret-{name}", "auto_sync": False, "series": series}), 201)
        tokens[name] = created["agent_token"]
    assert [s["name"] for s in _ok(http("GET", "/v1/systems", admin))] == [
        "blue", "green", "red"]
    _ok(http("PATCH", "/v1/systems/blue", admin, json={"description": "Blue GmbH"}))
    assert _ok(http("GET", "/v1/systems/blue", admin))["description"] == "Blue GmbH"
    # green moves to acme (it has no number yet), then is deleted.
    assert _ok(http("PATCH", "/v1/systems/green", admin, json={"series": "acme"}))[
        "series"] == "acme"

    def allocate(system: str, reference: str, document: str = "invoice") -> dict:
        return _ok(http("POST", "/v1/allocations", tokens[system], json={
            "document": document, "reference": reference, "date": DATE}), 201)

    blue = [allocate("blue", f"b{i}") for i in range(3)]
    red = [allocate("red", f"r{i}") for i in range(3)]
    green = allocate("green", "g0")
    credit = allocate("blue", "c0", "credit_note")
    assert [a["formatted"] for a in blue] == [f"INV-{YEAR}-{n}" for n in (1, 2, 3)]
    assert [a["formatted"] for a in red] + [green["formatted"]] == [
        f"AC-{YEAR}-{n}" for n in (1, 2, 3, 4)]
    assert {a["series"] for a in red} == {"acme"} and credit["series"] == "default"
    _ok(http("POST", f"/v1/allocations/{blue[0]['id']}/confirm", tokens["blue"],
             json={"invoicenum": blue[0]["formatted"]}))
    _ok(http("POST", f"/v1/allocations/{blue[1]['id']}/void", tokens["blue"],
             json={"reason": "deleted in WHMCS"}))
    assert _ok(http("GET", f"/v1/allocations/{blue[0]['id']}", admin))["status"] == "confirmed"
    reissued = _ok(http("POST", f"/v1/allocations/{blue[1]['id']}/reissue", admin,
                        json={"reason": "voided by mistake"}), 201)
    assert reissued["formatted"] == f"INV-{YEAR}-4"

    # Rotation: the old token is dead at once, the new one replays the same numbers.
    rotated = _ok(http("POST", "/v1/systems/blue/agent-token", admin))["agent_token"]
    assert http("POST", "/v1/allocations", tokens["blue"], json={
        "document": "invoice", "reference": "b2", "date": DATE}).status_code == 401
    tokens["blue"] = rotated
    again = _ok(http("POST", "/v1/allocations", rotated, json={
        "document": "invoice", "reference": "b2", "date": DATE}))
    assert again["formatted"] == blue[2]["formatted"]
    assert _ok(http("GET", "/v1/whoami", rotated))["system"] == "blue"
    # Tokens are cached in the coordinator, read and tracked on the master of their slot.
    tokens_master = redis.Redis("127.0.0.1", stack.cluster.master_of(keys.TOKENS),
                                decode_responses=True)
    assert any(c["name"] == CLIENT_NAME and "t" in c["flags"]
               for c in tokens_master.client_list())

    # Deletion: token revoked, forecaster data purged, the ledger keeps green's number.
    data = stack.data()
    data.hset(keys.sys_invoices("green"), "1", "{}")
    _ok(http("DELETE", "/v1/systems/green", admin), 204)
    assert http("GET", "/v1/whoami", tokens["green"]).status_code == 401
    assert not data.exists(keys.sys_invoices("green"))
    assert http("GET", "/v1/systems/green", admin).status_code == 404

    # Admin and auditor tokens.
    auditor = _ok(http("POST", "/v1/tokens", admin, json={"role": "auditor", "label": "KPMG"}),
                  201)
    assert auditor["role"] == "auditor"
    listed = _ok(http("GET", "/v1/tokens", admin))
    assert {t["role"] for t in listed} == {"admin", "auditor", "agent"}
    assert len([t for t in listed if t["role"] == "agent"]) == 2  # blue's new one, red's
    _ok(http("GET", "/v1/tokens/audit", admin))
    stack.state["auditor"] = auditor["token"]
    spare = _ok(http("POST", "/v1/tokens", admin, json={"role": "auditor", "label": "x"}), 201)
    _ok(http("DELETE", f"/v1/tokens/{spare['id']}", admin))
    assert http("GET", "/v1/whoami", spare["token"]).status_code == 401

    # Sequences of the default series (the /v1/sequences routes) and their admin views.
    _ok(http("PATCH", "/v1/sequences/invoice", admin, json={"next_number": 10,
                                                             "period": YEAR}))
    assert allocate("blue", "b9")["formatted"] == f"INV-{YEAR}-10"
    assert [s["name"] for s in _ok(http("GET", "/v1/sequences", admin))] == [
        "invoice", "credit_note"]
    assert _ok(http("GET", "/v1/sequences/invoice", admin))["next_number"] == 11
    assert _ok(http("GET", "/v1/sequences/invoice/gaps", admin, params={"period": YEAR}))
    assert _ok(http("GET", "/v1/sequences/invoice/audit", admin))
    ledger = _ok(http("GET", "/v1/sequences/invoice/ledger", admin, params={"period": YEAR}))
    assert [e["number"] for e in ledger["entries"]] == [1, 2, 3, 4, 10]
    assert _ok(http("GET", "/v1/series/acme/sequences/invoice/audit", admin))
    _ok(http("GET", "/v1/series/acme/sequences/invoice/gaps", admin, params={"period": YEAR}))
    acme = _ok(http("GET", "/v1/series/acme/sequences/invoice/ledger", admin,
                    params={"period": YEAR}))
    assert [(e["system"], e["number"]) for e in acme["entries"]] == [
        ("red", 1), ("red", 2), ("red", 3), ("green", 4)]
    # A batch in acme's slot: two new numbers and a replay, all or nothing, on one master
    # (verified with the rest of the chain in the next test).
    taken = _ok(http("POST", "/v1/allocation-batches", tokens["red"], json={"items": [
        {"document": "invoice", "reference": ref, "date": DATE} for ref in ("r3", "r4", "r0")]}))
    assert [(a["formatted"], a["replay"]) for a in taken["items"]] == [
        (f"AC-{YEAR}-5", False), (f"AC-{YEAR}-6", False), (red[0]["formatted"], True)]
    stack.state["tokens"] = tokens


def test_ledger_verify_and_export_on_the_cluster(stack):
    http, auditor = stack.http, stack.state["auditor"]
    signed = _ok(http("POST", "/v1/series/acme/sequences/invoice/ledger/checkpoints",
                      stack.admin), 201)
    assert signed["events"] >= 4
    for series in ("default", "acme"):
        for sequence in ("invoice", "credit_note"):
            base = f"/v1/series/{series}/sequences/{sequence}/ledger"
            verdict = _ok(http("GET", base + "/verify", auditor))
            assert verdict["ok"] is True, verdict
            signed_here = (series, sequence) == ("acme", "invoice")
            assert verdict["checkpoints"] == int(signed_here), (series, sequence, verdict)
            lines = http("GET", base + "/export", auditor).text.splitlines()
            assert lines, (series, sequence)
            assert http("GET", base + "/export", auditor,
                        params={"format": "csv"}).status_code == 200
    assert verdict["events"] == 0  # acme issued no credit note
    default = _ok(http("GET", "/v1/series/default/sequences/invoice/ledger/verify", auditor))
    # issued ×4, confirmed, voided, two settings changes, a next number raised
    assert default["events"] >= 7


def test_syncs_reports_and_warnings_on_the_cluster(stack):
    http, admin = stack.http, stack.admin
    fakes = stack.state["fakes"]
    expected = {}
    for name in ("blue", "red"):
        fake = fakes[name]
        fake.seed(23, seed=7, start_date=dt.date(2026, 1, 1), days=300, currencies=("EUR",))
        expected[name] = sum(Decimal(r["total"]) for r in fake.invoices_snapshot()
                             if r["status"] == "Paid")
    synced = {name: _ok(http("POST", f"/v1/systems/{name}/syncs", admin,
                             json={"mode": "full"}), 202) for name in ("blue", "red")}
    # The jobs are on the queue Redis, none on the Cluster; a real RQ worker runs them.
    client = make_redis(load_settings())
    SimpleWorker([forecaster_defaults.QUEUE_NAME],
                 connection=queue_connection(client)).work(burst=True)
    for name, record in synced.items():
        done = _ok(http("GET", f"/v1/syncs/{record['id']}", admin))
        assert (done["state"], done["invoices"]) == ("done", 23), done
        assert _ok(http("GET", f"/v1/systems/{name}/syncs", admin))[0]["id"] == record["id"]
    revenue = _ok(http("GET", "/v1/reports/revenue", admin, params={
        "by": "system", "from": "2026-01", "to": "2026-11"}))
    assert {row["key"]: Decimal(row["gross"]) for row in revenue["rows"]} == expected
    assert all(expected.values())
    _ok(http("GET", "/v1/reports/receivables", admin))
    _ok(http("GET", "/v1/reports/forecast", admin))
    _ok(http("GET", "/v1/reports/reconciliation", admin))
    warnings = _ok(http("GET", "/v1/warnings", admin))
    assert warnings, "reconciliation finds WHMCS numbers the coordinator never issued"
    _ok(http("POST", f"/v1/warnings/{warnings[0]['id']}/ack", admin))
    for path in ("/readyz", "/healthz", "/livez", "/metrics", "/openapi.json"):
        assert requests.get(stack.live.url + path, timeout=30).status_code == 200, path


def test_every_route_answered_on_the_cluster(stack):
    wanted = {(method, rule.rule) for rule in stack.app.url_map.iter_rules()
              if rule.rule.startswith("/v1/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert wanted - stack.http.answered == set()


def _series_on_another_master(stack: Stack, avoid: set[int], prefix: str = "east") -> str:
    """A series name whose hash tag's slot is served by none of the masters in ``avoid``."""
    for index in range(1000):
        name = f"{prefix}-{index}"
        if stack.cluster.master_of(keys.series_record(name)) not in avoid:
            return name
    raise LookupError("no series name on another master")


def test_a_resharded_series_keeps_numbering_where_it_was(stack):
    """An operator moves a series' slot to another master (``--cluster reshard``). The
    coordinator's slot map is stale: at most one allocation is refused (503, no number), then
    it learns the map again and numbering goes on from the moved keys, exactly in order."""
    http, admin, cluster = stack.http, stack.admin, stack.cluster
    tokens = stack.state["tokens"]
    auth_master = cluster.master_of(keys.TOKENS)
    moved = _series_on_another_master(stack, {auth_master}, prefix="west")
    _ok(http("POST", "/v1/series", admin, json={"name": moved}), 201)
    tokens["lima"] = _ok(http("POST", "/v1/systems", admin, json={
        "name": "lima", "url": "http://127.0.0.1:9/includes/api.php", "api_identifier": "i",
        "api_secret": "s", "auto_sync": False, "series": moved}), 201)["agent_token"]

    def allocate(reference: str) -> requests.Response:
        return http("POST", "/v1/allocations", tokens["lima"], json={
            "document": "invoice", "reference": reference, "date": DATE})

    assert [_ok(allocate(f"l{i}"), 201)["number"] for i in range(2)] == [1, 2]
    source = cluster.move_slot(keys.series_record(moved), auth_master)
    assert cluster.master_of(keys.series_record(moved)) == auth_master != source
    http.master_down = True  # the one stale-map answer may be a 503
    try:
        first = allocate("l-moved")
        if first.status_code == 503:
            assert "number" not in first.json(), first.text
            first = allocate("l-moved")  # the agent's retry: the same request
    finally:
        http.master_down = False
    assert _ok(first, 201)["number"] == 3
    assert _ok(allocate("l-next"), 201)["number"] == 4
    ledger = _ok(http("GET", f"/v1/series/{moved}/sequences/invoice/ledger", admin,
                      params={"period": YEAR}))
    assert [e["number"] for e in ledger["entries"]] == [1, 2, 3, 4]
    verdict = _ok(http("GET", f"/v1/series/{moved}/sequences/invoice/ledger/verify", admin))
    assert verdict["ok"] is True, verdict


def test_another_slot_keeps_serving_while_a_master_is_down(stack):
    http, admin, cluster = stack.http, stack.admin, stack.cluster
    tokens = stack.state["tokens"]
    # The token store's master stays up (every request authenticates there); the victim
    # series lives on another master, the survivor series on a master that is not the victim.
    auth_master = cluster.master_of(keys.TOKENS)
    victim = _series_on_another_master(stack, {auth_master})
    victim_master = cluster.master_of(keys.series_record(victim))
    survivor, survivor_system = next(
        (series, system) for series, system in (("default", "blue"), ("acme", "red"))
        if cluster.master_of(keys.series_record(series)) != victim_master)
    _ok(http("POST", "/v1/series", admin, json={"name": victim}), 201)
    tokens["kilo"] = _ok(http("POST", "/v1/systems", admin, json={
        "name": "kilo", "url": "http://127.0.0.1:9/includes/api.php", "api_identifier": "i",
        "api_secret": "s", "auto_sync": False, "series": victim}), 201)["agent_token"]

    def allocate(system: str, reference: str) -> requests.Response:
        return http("POST", "/v1/allocations", tokens[system], json={
            "document": "invoice", "reference": reference, "date": DATE})

    before = [_ok(allocate("kilo", f"k{i}"), 201)["number"] for i in range(3)]
    assert before == [1, 2, 3]
    survivor_last = _ok(allocate(survivor_system, "s-before"), 201)["number"]

    # The victim's replica may not take over yet: the outage lasts as long as the test says.
    replica = cluster.replica_of(victim_master)
    replica_client = redis.Redis("127.0.0.1", replica, decode_responses=True)
    replica_client.config_set("cluster-replica-no-failover", "yes")
    cluster.kill(victim_master)
    http.master_down = True
    try:
        refused = [allocate("kilo", f"k-down-{i}") for i in range(3)]
        assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
        assert not any("number" in r.json() for r in refused)
        during = [_ok(allocate(survivor_system, f"s-down-{i}"), 201)["number"]
                  for i in range(3)]
        assert during == [survivor_last + 1, survivor_last + 2, survivor_last + 3]
        assert cluster.master_of(keys.series_record(victim)) == victim_master  # no failover
    finally:
        replica_client.config_set("cluster-replica-no-failover", "no")
    promoted = cluster.wait_promoted(victim_master, keys.series_record(victim))
    assert promoted == replica
    # DURABLE_REPLICAS=1: the promoted master serves once it has a replica again.
    cluster.node(victim_master).start()
    cluster.wait_healthy()
    deadline = time.monotonic() + 30
    while (answer := allocate("kilo", "k-down-0")).status_code == 503:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    assert _ok(answer, 201)["number"] == before[-1] + 1  # exactly where it was
    assert _ok(allocate("kilo", "k1"))["number"] == 2  # and the old answers stand
    ledger = _ok(http("GET", f"/v1/series/{victim}/sequences/invoice/ledger", admin,
                      params={"period": YEAR}))
    assert [e["number"] for e in ledger["entries"]] == [1, 2, 3, 4]
    verdict = _ok(http("GET", f"/v1/series/{victim}/sequences/invoice/ledger/verify", admin))
    assert verdict["ok"] is True, verdict
