"""Upgrade from the release before the kept reconciliation (8f1eb66): its data dir, made by
that release's own code on a real Valkey, gets the reconciliation state built once by the
scheduler (a GET before answers 503 and writes nothing), with the very findings the full
computation gives; its warnings are counted by the gauge's open sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import keys
from coordinator.app import create_app
from coordinator.forecaster import reconcile, reconcile_state
from coordinator.forecaster.scheduler import _reconciliation
from coordinator.warnings import store as warnings
from tests.support import release_data_dir, snapshot, upgraded_copy

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = "8f1eb66"
HERE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> tuple[Path, dict]:
    return release_data_dir(PREVIOUS_RELEASE, HERE / "recon_release.py", tmp_path_factory)


def test_previous_release_store_gets_the_same_findings_built_once(release_dir, tmp_path):
    source, done = release_dir
    with upgraded_copy(source, tmp_path) as (server, client):
        assert not client.exists(keys.RECON_STATE)  # the premise: that release kept none
        http = create_app({"TESTING": True, "REDIS_URL": server.url}).test_client()
        admin = {"Authorization": f"Bearer {done['admin_token']}"}
        before = snapshot(client)
        answer = http.get("/v1/reports/reconciliation", headers=admin)
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert snapshot(client) == before  # not built by a GET
        assert _reconciliation(client) == ["built"]  # the scheduler's tick (serve runs one)
        assert _reconciliation(client) == []  # once
        body = http.get("/v1/reports/reconciliation", headers=admin).get_json()
        full = reconcile.full_report(client)
        assert reconcile_state.compare(body, full) == []
        a2 = done["issued"]["a2"]
        assert body["by_series"]["default"]["not_seen"] == [
            {"number": a2["formatted"], "system": "blue", "allocation": a2["id"]}]
        assert body["duplicates"] == [{"number": "HAND-1",
                                       "systems": [{"system": "blue", "invoices": 2}]}]
        assert body["counts"] == {"numbers_seen": 4, "numbers_issued": 3, "duplicates": 1,
                                  "not_issued": 2, "not_seen": 1}
        # The warnings that release's worker raised are counted by the gauge, and the check
        # after the next sync raises the same ones again.
        assert warnings.unacked_by_type(client) == {warnings.DUPLICATE_NUMBER: 1,
                                                    warnings.UNKNOWN_NUMBER: 2,
                                                    warnings.MISSING_NUMBER: 1}
        assert sorted(reconcile.check(client)) == sorted(done["warnings"])
