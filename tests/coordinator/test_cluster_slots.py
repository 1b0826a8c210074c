"""Guard: every Lua script the coordinator runs touches one Redis Cluster hash slot, whatever
the series, system, reference, token or warning names.

A Cluster refuses a script whose KEYS are in more than one slot (CROSSSLOT), so a key builder
that lost its hash tag, or a script given a key of another unit of work, breaks Cluster
deployments only. Here the real code paths run on the session's Valkey with names drawn by
hypothesis, every script call is recorded where all of them pass (``coordinator.lua.run``,
and the rate limiter's EVAL), and the KEYS of each call must share ``key_slot`` — the
function redis-py's Cluster client routes with (CRC16 of the hash tag, mod 16384). The test
also fails when a ``.lua`` file is never run here, so a new script cannot skip the guard.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import key_slot

import coordinator
from agent import WhmcsInvoice
from coordinator import keys, lua
from coordinator.backup import snapshot
from coordinator.forecaster import lock, store
from coordinator.numbering import allocation, chain, compaction, migrate, recover, sequences
from coordinator.numbering import series as series_mod
from coordinator.ops.ratelimit import RateLimiter
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy
from coordinator.warnings import store as warnings

pytestmark = pytest.mark.integration

ROOT = Path(coordinator.__file__).parent

OFF_CLUSTER = {"warnings/migrate.lua"}
"""Scripts that may span slots because they never run on a Cluster: the previous release's
untagged warnings exist only on a single server, and ``warnings.store.migrate_legacy`` does
nothing on a Cluster client (checked below)."""

NAMES = st.from_regex(series_mod.NAME_PATTERN, fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
               max_size=40)


class Recorder:
    """Wrap the script runners; remember (script file, KEYS) of every call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        original_run, original_eval = lua.run, redis.Redis.eval
        by_source = {s.compact_source: s for s in _scripts()}

        def run(client, script, script_keys, args, then=None):
            self.calls.append((_file_of(script), [str(k) for k in script_keys]))
            return original_run(client, script, script_keys, args, then)

        def eval_(client, source, numkeys, *keys_and_args):
            script = by_source[source]  # only the coordinator's own scripts are sent
            self.calls.append((_file_of(script), [str(k) for k in keys_and_args[:numkeys]]))
            return original_eval(client, source, numkeys, *keys_and_args)

        monkeypatch.setattr(lua, "run", run)
        monkeypatch.setattr(redis.Redis, "eval", eval_)


def _scripts() -> list[lua.LuaScript]:
    found = []
    for path in sorted(ROOT.rglob("*.lua")):
        package = ".".join(path.relative_to(ROOT.parent).parent.parts)
        found.append(lua.LuaScript.load(package, path.stem))
    return found


def _file_of(script: lua.LuaScript) -> str:
    for path in ROOT.rglob(f"{script.name}.lua"):
        if path.read_text() == script.source:
            return str(path.relative_to(ROOT))
    raise LookupError(script.name)


def _invoice(number: str) -> WhmcsInvoice:
    return WhmcsInvoice(
        id=1, invoicenum=number, date=dt.date(2026, 3, 2), duedate=dt.date(2026, 3, 30),
        datepaid=None, status="Unpaid", subtotal=Decimal("10.00"), credit=Decimal("0.00"),
        tax=Decimal("0.00"), tax2=Decimal("0.00"), total=Decimal("10.00"),
        currencycode="EUR", updated_at=None)


def _exercise(client: redis.Redis, series: str, system: str, reference: str,
              detail: str) -> None:
    """Run every script through the code that runs it in production."""
    client.flushall()
    # The release before series: fenced and committed into ``default`` (migrate_*.lua).
    client.hset(keys.legacy_seq_prefix("invoice") + "settings", mapping={"reset": "never"})
    migrate.migrate(client)
    if series != series_mod.DEFAULT:
        series_mod.create_series(client, series)
    fernet = secrets.fernet_from_keys([secrets.generate_key()])
    registry.create_system(client, fernet, {
        "name": system, "url": "https://billing.example/includes/api.php",
        "api_identifier": "i", "api_secret": "s", "series": series}, UrlPolicy())
    sequences.set_dedicated(client, True, actor="admin", series=series)  # route.lua
    sequences.update(client, "invoice", {"next_number": 5}, actor="admin",
                     series=series, period="2026")  # settings.lua
    confirmed = []
    for document in ("invoice", "credit_note"):
        entry, _ = allocation.allocate(client, system, document, reference,
                                       dt.date(2026, 3, 2))  # allocate.lua
        confirmed.append(entry["id"])
        allocation.transition(client, entry["id"], "confirm", entry["formatted"],
                              actor_kind="agent", actor_system=system,
                              actor=f"agent:{system}")  # transition.lua
        chain.seal(client, document, series=series)  # seal.lua
    voided, _ = allocation.allocate(client, system, "invoice", reference + "!",
                                    dt.date(2026, 3, 3))
    allocation.transition(client, voided["id"], "void", "r", actor_kind="admin",
                          actor_system=None, actor="admin")
    allocation.reissue(client, voided["id"], "r", actor="admin")  # reissue.lua
    # Compaction (compact.lua, settle.lua), then a change to a settled entry (unsettle.lua).
    assert compaction.run(client, "invoice", {"LEDGER_ARCHIVE_BLOCK": 1, "LEDGER_ARCHIVE_KEEP": 1,
                                              "LEDGER_SETTLE_AFTER_SECONDS": 0},
                          series=series)["entries"] == 1
    allocation.transition(client, confirmed[0], "void", "r", actor_kind="admin",
                          actor_system=None, actor="admin")
    # invoice-sync recover (recover.lua): a number in use that the ledger lacks.
    found = recover.Evidence(system, "INV-2026-000040", "journal:x", reference=reference + "?",
                             document="invoice", series=series, sequence="invoice",
                             period="2026", number=40)
    recover.apply(client, recover.plan(client, [found], {}), actor="admin", reason="r")
    # invoice-sync backup (dump_unit.lua): one script per hash tag, on a bytes client.
    raw = redis.Redis(connection_pool=redis.ConnectionPool(**{
        **client.connection_pool.connection_kwargs, "decode_responses": False}))
    snapshot.take(raw)
    raw.connection_pool.disconnect()
    # The forecaster: the sync lock and the upsert fenced by it.
    assert lock.claim(client, system, "sync-1", 60_000)
    assert lock.renew(client, system, "sync-1", 60_000)
    store.upsert(client, system, [_invoice(reference)], owner="sync-1")
    assert lock.release(client, system, "sync-1")
    # The token lookup and request count (ratelimit.lua), and a warning (raise.lua).
    RateLimiter({"agent": 10}, failures=5).lookup(client, "ab" * 32, known=False,
                                                  address="203.0.113.9")
    warnings.raise_warning(client, warnings.DUPLICATE_NUMBER, "m", system=system,
                           detail=detail)
    # The previous release's warnings, moved on a single server only (warnings/migrate.lua).
    client.hset(keys.legacy_warning("old"), mapping={"id": "old", "type": "x"})
    client.zadd(keys.LEGACY_WARNINGS, {"old": 1})
    warnings.migrate_legacy(client)
    # The one-time filling of the open-warning sets of a previous release's store.
    client.delete(keys.WARNINGS_OPEN_INDEXED)
    warnings.index_open(client)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(series=NAMES, system=NAMES, reference=TEXT, detail=TEXT)
def test_every_script_touches_one_slot(redis_client, monkeypatch, series, system, reference,
                                       detail):
    recorder = Recorder(monkeypatch)
    _exercise(redis_client, series, system, reference, detail)
    monkeypatch.undo()
    ran = {name for name, _ in recorder.calls}
    assert ran == {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.lua")}, (
        "every script must be run by this guard")
    for name, script_keys in recorder.calls:
        slots = {key_slot(key.encode()) for key in script_keys}
        if name in OFF_CLUSTER:
            continue
        assert len(slots) == 1, (name, script_keys)


def test_scripts_that_span_slots_do_not_run_on_a_cluster():
    class Cluster(redis.RedisCluster):
        def __init__(self) -> None:  # no connection: it must not be used at all
            pass

        def __getattr__(self, name):
            raise AssertionError(f"{name} called on a Cluster")

    assert warnings.migrate_legacy(Cluster()) == 0


def test_the_registry_shares_the_token_stores_slot():
    # register, rotate and delete change these three keys in one MULTI/EXEC.
    for name in ("blue", "a", "x" * 63, "0-_"):
        assert {key_slot(k.encode()) for k in (keys.system(name), keys.SYSTEMS, keys.TOKENS)
                } == {key_slot(keys.AUTH_TAG.encode())}
