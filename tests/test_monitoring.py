"""deploy/prometheus and deploy/grafana: promtool accepts the rules and a real scrape, the rules
fire on the series they are meant for, and every metric they and the dashboard name exists."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from coordinator import keys
from coordinator.forecaster import stats
from coordinator.numbering import allocation
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy
from tests.support import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "invoice-sync.json"
METRIC = re.compile(r"\b(invoice_sync_[a-z_]+|up)\b(?!\s*\()")


def promtool() -> str:
    return require_tool("promtool", "prometheus")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=RULES.parent)


@pytest.fixture
def scrape(app_config, redis_client, agent) -> str:
    """A /metrics answer with every family populated: a synced system, numbers, requests."""
    from cryptography.fernet import Fernet

    from coordinator.app import create_app

    key = Fernet.generate_key().decode()
    app = create_app({**app_config, "SECRET_KEYS": key, "UNCONFIRMED_GRACE_SECONDS": 0})
    registry.create_system(redis_client, secrets.fernet_from_config({"SECRET_KEYS": key}),
                           {"name": "blue", "url": "http://127.0.0.1:9/includes/api.php",
                            "api_identifier": "i", "api_secret": "s"},
                           UrlPolicy.from_config(app.config))
    redis_client.hset(keys.sys_sync_state("blue"), "last_full_at", "2026-11-21T10:00:00Z")
    stats.record(redis_client, "blue", "done", 120, 1.5)
    stats.record(redis_client, "blue", "failed", 0, 0.2)
    allocation.allocate(redis_client, "blue", "invoice", "1", dt.date.today())
    client = app.test_client()
    answer = client.post("/v1/allocations", json={"document": "invoice", "reference": "x"},
                         headers=agent("blue"))
    assert answer.status_code == 201
    return client.get("/metrics").get_data(as_text=True)


def test_promtool_accepts_the_rules():
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_rules_fire_on_the_series_they_are_meant_for():
    result = run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_a_scrape(scrape):
    assert 'invoice_sync_system_syncs_total{result="failed",system="blue"} 1.0' in scrape
    assert 'invoice_sync_unconfirmed_past_grace{sequence="invoice",series="default"} 2.0' in scrape
    result = run("check", "metrics", stdin=scrape)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == result.stderr.strip() == ""


def referenced(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


def test_rules_and_dashboard_name_only_metrics_that_exist(scrape):
    exposed = {sample.name for family in text_string_to_metric_families(scrape)
               for sample in family.samples} | {"up"}  # up: Prometheus's own, per target
    rules = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for source, expressions in (("alerts.yml", rules), ("grafana", panels)):
        names = referenced(expressions)
        assert names, source
        assert names <= exposed, (source, sorted(names - exposed))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert dashboard["uid"] == "invoice-sync" and len(set(ids)) == len(ids)


BY = re.compile(r"\bby \(([^)]*)\)")


def test_rules_and_dashboard_group_only_by_labels_their_metrics_have(scrape):
    """A ``by (series, …)`` on a metric without that label groups everything into one line."""
    labels: dict[str, set[str]] = {"up": set()}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    rules = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]]
    panels = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
              for target in panel["targets"]]
    target_labels = {"instance", "job"}  # added by Prometheus to every scraped sample
    for expr in rules + panels:
        known = set().union(*(labels[name] for name in referenced([expr])), target_labels)
        for group in BY.findall(expr):
            wanted = {label.strip() for label in group.split(",") if label.strip()}
            assert wanted <= known, (expr, sorted(wanted - known))
