"""The kept reconciliation equals the full computation, whatever happened in between; reading
it writes nothing and costs the same whatever the numbers; a store of the previous release
gets it built once, not by a GET."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from agent import WhmcsInvoice
from coordinator import keys
from coordinator.exceptions import Conflict
from coordinator.forecaster import reconcile, reconcile_state, store
from coordinator.numbering import allocation, create_series
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy
from tests.support import initialise_numbering, snapshot

pytestmark = pytest.mark.integration

SYSTEMS = ("blue", "red", "green")
SERIES = ("default", "acme")
HAND = ("HAND-1", "HAND-2")


def _invoice(invoice_id: int, number: str) -> WhmcsInvoice:
    day = dt.date(2026, 3, 1)
    return WhmcsInvoice(
        id=invoice_id, invoicenum=number, date=day, duedate=day, datepaid=None, status="Paid",
        subtotal=Decimal(1), credit=Decimal(0), tax=Decimal(0), tax2=Decimal(0),
        total=Decimal(1), currencycode="EUR", updated_at=None)


class World:
    """Drives the real modules: registry, store (as a sync writes), numbering."""

    def __init__(self, client, config):
        self.client, self.config = client, config
        self.allocated: list[dict] = []

    def register(self, name, series):
        registry.create_system(
            self.client, secrets.fernet_from_config(self.config),
            {"name": name, "url": "http://127.0.0.1:9/includes/api.php", "api_identifier": "i" * 16,
             "api_secret": "s" * 20, "step": 100, "series": series},
            UrlPolicy.from_config(self.config))

    def registered(self, name):
        return self.client.sismember(keys.SYSTEMS, name)

    def run(self, op):
        kind, name, *rest = op
        if kind == "register":
            if not self.registered(name):
                self.register(name, rest[0])
        elif not self.registered(name):
            return
        elif kind == "sync":
            changes, synced = rest
            numbers = [*HAND, *(a["formatted"] for a in self.allocated)]
            upserts = [_invoice(i, numbers[pick % len(numbers)]) for i, pick in changes
                       if pick >= 0]
            store.upsert(self.client, name, upserts)
            store.delete(self.client, name, [i for i, pick in changes if pick < 0])
            if synced:
                self.client.hset(keys.sys_sync_state(name), "last_full_at",
                                 "2026-03-02T00:00:00Z")
        elif kind == "allocate":
            entry, _ = allocation.allocate(self.client, name, "invoice", str(rest[0]),
                                           dt.date(2025 + rest[0] % 2, 3, 1))
            self.allocated.append(entry)
        elif kind in ("confirm", "void", "reissue") and self.allocated:
            entry = self.allocated[rest[0] % len(self.allocated)]
            try:
                if kind == "confirm":
                    allocation.transition(self.client, entry["id"], "confirm",
                                          entry["formatted"], actor_kind="admin",
                                          actor_system=None, actor="test")
                elif kind == "void":
                    allocation.transition(self.client, entry["id"], "void", "test",
                                          actor_kind="admin", actor_system=None, actor="test")
                else:
                    new, _ = allocation.reissue(self.client, entry["id"], "test", actor="test")
                    self.allocated.append(new)
            except Conflict:
                pass  # not allowed in this state (a void confirmed, a second reissue)
        elif kind == "move":
            try:
                registry.update_system(self.client, name, {"series": rest[0]},
                                       UrlPolicy.from_config(self.config))
            except Conflict:
                pass  # it has numbers in its series: the registry refuses
        elif kind == "delete":
            registry.delete_system(self.client, name)

    def compact(self):
        """The scheduler's ledger compaction, tiny blocks: old events archived, confirmed
        entries settled into blocks (numbering/compaction.py)."""
        from coordinator.numbering import chain, compaction

        config = {"LEDGER_ARCHIVE_BLOCK": 2, "LEDGER_ARCHIVE_KEEP": 1,
                  "LEDGER_SETTLE_AFTER_SECONDS": 0}
        moved = {"events": 0, "entries": 0}
        for series in SERIES:
            chain.seal(self.client, "invoice", series=series)
            for what, n in compaction.run(self.client, "invoice", config, series=series,
                                          now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)).items():
                moved[what] += n
        return moved


system = st.sampled_from(SYSTEMS)
SYNC = st.tuples(st.just("sync"), system,
                 st.lists(st.tuples(st.integers(1, 6), st.integers(-1, 9)), max_size=5),
                 st.booleans())
ALLOCATE = st.tuples(st.just("allocate"), system, st.integers(0, 20))
CHANGE = st.tuples(st.sampled_from(["confirm", "confirm", "void", "reissue"]), system,
                   st.integers(0, 20))
REFRESH = st.tuples(st.just("refresh"), system)
OPS = st.one_of(
    SYNC, SYNC, SYNC, ALLOCATE, ALLOCATE, ALLOCATE, CHANGE, CHANGE, CHANGE, REFRESH, REFRESH,
    st.tuples(st.just("compact"), system),
    st.one_of(  # changes of structure (each rebuilds the state once): rarer
        st.tuples(st.just("register"), system, st.sampled_from(SERIES)),
        st.tuples(st.just("move"), system, st.sampled_from(SERIES)),
        st.tuples(st.just("delete"), system)),
)


def _kept(client, limit=1000):
    report = reconcile_state.read(client, limit)
    assert report is not None
    return report


def _same(client, limit=1000):
    kept, full = _kept(client, limit), reconcile.full_report(client, limit)
    assert reconcile_state.compare(kept, full) == []
    kept.pop("checked_at"), full.pop("checked_at")
    assert kept == full


@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(  # a confirmed number reported not seen, then voided by an admin; then renumbered
    ops=[("allocate", "blue", 1), ("allocate", "red", 2), ("confirm", "blue", 0),
         ("refresh", "blue"), ("void", "blue", 0), ("refresh", "blue"),
         ("sync", "red", [(1, 3), (2, 3)], True),
         ("refresh", "blue"), ("reissue", "blue", 0), ("confirm", "blue", 2),
         ("sync", "blue", [(1, 4)], True), ("refresh", "blue"), ("sync", "blue", [(1, 0)], False),
         ("refresh", "blue")],
    limit=1000)
@given(ops=st.lists(OPS, min_size=12, max_size=30), limit=st.sampled_from([1, 2, 1000]))
def test_kept_findings_equal_the_full_computation(redis_client, settings_env, ops, limit):
    redis_client.flushall()
    initialise_numbering(redis_client)
    create_series(redis_client, "acme")
    world = World(redis_client, settings_env)
    for name, series in zip(SYSTEMS, ("default", "default", "acme"), strict=True):
        world.register(name, series)
    redis_client.hset(keys.sys_sync_state("blue"), "last_missing_at", "2026-03-01T00:00:00Z")
    reconcile_state.refresh(redis_client)
    for op in ops:
        if op[0] == "compact":
            moved = world.compact()
            event("compaction moved " + ", ".join(k for k, n in sorted(moved.items()) if n))
            continue
        world.run(op)
        if op[0] == "refresh":
            outcome = reconcile_state.refresh(redis_client)
            assert outcome in ("updated", "built")
            event(f"refresh {outcome}")
            _same(redis_client, limit)
    event(f"last refresh {reconcile_state.refresh(redis_client)}")
    _same(redis_client, limit)
    counts = _kept(redis_client)["counts"]
    event("findings: " + ", ".join(sorted(k for k in counts if counts[k] and k in (
        "duplicates", "not_issued", "not_seen"))))


@pytest.fixture
def settings_env(settings):
    return settings


def _commands(client) -> int:
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def _stats_reset(client):
    client.config_resetstat()


def test_get_is_flat_and_writes_nothing(client, admin, redis_client, settings):
    """Redis commands of one GET (INFO commandstats) are the same at 10 and 10,000 numbers,
    and the GET changes no key (every key's content compared); the full computation's grow."""
    world = World(redis_client, settings)
    world.register("blue", "default")
    counted = {}
    for size in (10, 10_000):
        store.write_records(redis_client, "blue", {
            i: store.encode(_invoice(i, f"HAND-{i}")) for i in range(1, size + 1)})
        reconcile_state.refresh(redis_client)
        client.get("/v1/reports/reconciliation", headers=admin)  # first-request work aside
        before = snapshot(redis_client)
        _stats_reset(redis_client)
        response = client.get("/v1/reports/reconciliation", headers=admin)
        stats = redis_client.info("commandstats")
        assert response.status_code == 200
        assert response.get_json()["counts"]["not_issued"] == size
        counted[size] = {k: int(v["calls"]) for k, v in stats.items()
                         if k not in ("cmdstat_info", "cmdstat_config|resetstat")}
        assert snapshot(redis_client) == before
        _stats_reset(redis_client)
        reconcile.full_report(redis_client)
        counted[("full", size)] = _commands(redis_client)
    assert counted[10] == counted[10_000]
    # The full computation HSCANs every number (1,000 a call): 10 more calls at 10,000.
    assert counted[("full", 10_000)] >= counted[("full", 10)] + 9


def test_previous_release_store_is_built_once_not_by_a_get(client, admin, redis_client,
                                                         settings):
    """A store without the state (as the previous release left it): the GET answers 503 and
    writes nothing; the scheduler's update builds it, equal to the full computation."""
    world = World(redis_client, settings)
    world.register("blue", "default")
    world.run(("allocate", "blue", 1))
    world.run(("confirm", "blue", 0))
    store.upsert(redis_client, "blue", [_invoice(1, "HAND-1"), _invoice(2, "HAND-1")])
    redis_client.hset(keys.sys_sync_state("blue"), "last_full_at", "2026-03-02T00:00:00Z")
    # What the previous release had: no state, and its upsert.lua kept no change list.
    redis_client.delete(keys.sys_numbers_changed("blue"))
    before = snapshot(redis_client)
    response = client.get("/v1/reports/reconciliation", headers=admin)
    assert response.status_code == 503
    assert response.get_json()["message"].startswith("The reconciliation is being built")
    assert snapshot(redis_client) == before
    from coordinator.forecaster.scheduler import _reconciliation

    assert _reconciliation(redis_client) == ["built"]
    assert _reconciliation(redis_client) == []  # once
    body = client.get("/v1/reports/reconciliation", headers=admin).get_json()
    assert body["counts"]["duplicates"] == 1 and body["counts"]["not_seen"] == 1
    _same(redis_client)


def test_ledger_compaction_under_the_cursor(redis_client, settings):
    """Compaction settles entries whose new events the state has not read yet (read from their
    settled blocks), and archives events the state lagged behind (then it is rebuilt)."""
    from coordinator.numbering import chain, compaction

    config = {"LEDGER_ARCHIVE_BLOCK": 2, "LEDGER_ARCHIVE_KEEP": 1,
              "LEDGER_SETTLE_AFTER_SECONDS": 0}
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    world = World(redis_client, settings)
    world.register("blue", "default")
    redis_client.hset(keys.sys_sync_state("blue"), "last_full_at", "2026-03-02T00:00:00Z")
    for ref in range(8):
        world.run(("allocate", "blue", ref * 2))  # one period
    for index in (0, 1, 4, 5, 6, 7):
        world.run(("confirm", "blue", index))
    chain.seal(redis_client, "invoice")
    assert reconcile_state.refresh(redis_client) == "built"
    world.run(("confirm", "blue", 2))
    world.run(("confirm", "blue", 3))  # their events unsealed: compaction leaves them listed
    moved = compaction.run(redis_client, "invoice", config, now=later)
    assert moved["entries"] >= 4 and moved["events"] > 0
    assert redis_client.hget(keys.seq_ledger("invoice", "2026"), "3") is None  # settled
    assert reconcile_state.refresh(redis_client) == "updated"
    _same(redis_client)
    assert _kept(redis_client)["counts"]["not_seen"] == 8
    # The state lags behind while compaction archives past its cursor: rebuilt, still equal.
    world.run(("allocate", "blue", 99))
    world.run(("confirm", "blue", 8))
    for _ in range(3):
        world.run(("void", "blue", 8))
        chain.seal(redis_client, "invoice")
        compaction.run(redis_client, "invoice", config, now=later)
    assert chain.first_listed(redis_client, "invoice") > int(redis_client.hget(
        keys.recon("default", "meta"), "cursor:invoice"))
    assert reconcile_state.refresh(redis_client) == "built"
    _same(redis_client)
