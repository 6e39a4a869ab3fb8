"""The Grafana dashboard and the Prometheus alert rules in deploy/ ask only for metrics that
batchops exposes; the alerts an operator needs are all there. (`make test` also runs
`promtool check rules` on the rules.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type stubs

from consumer import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD: dict[str, Any] = json.loads(
    (ROOT / "deploy" / "grafana" / "batchops-dashboard.json").read_text("utf-8")
)
RULES: dict[str, Any] = yaml.safe_load(
    (ROOT / "deploy" / "prometheus" / "batchops-alerts.yml").read_text("utf-8")
)
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"]]
METRIC = re.compile(r"\bbatchops_[a-z_]+")


def exposed_names() -> set[str]:
    """Every series name batchops's registry can expose (histogram and counter suffixes too)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names |= {family.name + s for s in ("_total", "_bucket", "_count", "_sum")}
    return names


def expressions() -> list[str]:
    panels = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    return panels + [rule["expr"] for rule in ALERTS]


@pytest.mark.parametrize("expr", expressions())
def test_every_expression_asks_for_metrics_batchops_exposes(expr: str) -> None:
    asked = set(METRIC.findall(expr))
    assert asked, f"no batchops metric in {expr!r}"
    assert asked <= exposed_names(), f"unknown metrics {asked - exposed_names()} in {expr!r}"


def test_the_alerts_cover_the_outbox_dead_letters_consumers_failures_and_webhooks() -> None:
    watched = " ".join(rule["expr"] for rule in ALERTS)
    for metric in (
        "batchops_outbox_oldest_unsent_age_seconds",
        "batchops_queue_messages",
        "batchops_queue_consumers",
        "batchops_batches_finished_total",
        "batchops_webhook_tries_total",
    ):
        assert metric in watched, f"no alert watches {metric}"


@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_every_alert_waits_a_while_and_says_what_to_do(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", rule["for"]), "a blip must not page anyone"
    assert rule["labels"]["severity"] in ("page", "ticket")
    assert rule["annotations"]["summary"]
    assert len(rule["annotations"]["description"]) > 40


def test_the_dashboard_is_importable_with_one_prometheus_data_source() -> None:
    assert DASHBOARD["uid"] == "batchops"
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert [i["name"] for i in DASHBOARD["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"], f"{panel['title']} shows nothing"
