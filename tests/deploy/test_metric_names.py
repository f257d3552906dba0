"""Every metric that the dashboard and the alert rules query is one the workers export."""

from __future__ import annotations

import pytest

from tests.deploy.deploy_files import (
    alert_rule_expressions,
    dashboard_expressions,
    exported_series_names,
    metric_names,
    recorded_names,
    recording_rule_names,
)


def test_name_parser_finds_metrics():
    expression = 'sum(rate(cargoscan_scans_total{outcome="failed", job="cargoscan_not_a_metric"}[5m])) / cargoscan:x:rate1h'
    assert metric_names(expression) == {"cargoscan_scans_total"}
    assert recorded_names(expression) == {"cargoscan:x:rate1h"}


def test_name_parser_keeps_suffixes():
    expression = "histogram_quantile(0.9, sum by (le) (rate(cargoscan_scan_latency_seconds_bucket[5m])))"
    assert metric_names(expression) == {"cargoscan_scan_latency_seconds_bucket"}


def test_exported_names_include_suffixes():
    names = exported_series_names()
    assert "cargoscan_scans_total" in names
    assert "cargoscan_scan_latency_seconds_bucket" in names
    assert "cargoscan_batch_size_count" in names
    assert "cargoscan_queue_depth" in names
    assert "cargoscan_scans" not in names


@pytest.mark.parametrize("source", ["dashboard", "alert rules"])
def test_queried_metrics_are_exported(source):
    expressions = dashboard_expressions() if source == "dashboard" else alert_rule_expressions()
    used = set().union(*(metric_names(expression) for expression in expressions))

    assert used, f"no cargoscan_* metric found in the {source}"
    assert used - exported_series_names() == set()


@pytest.mark.parametrize("source", ["dashboard", "alert rules"])
def test_recorded_names_are_defined(source):
    expressions = dashboard_expressions() if source == "dashboard" else alert_rule_expressions()
    used = set().union(*(recorded_names(expression) for expression in expressions))
    assert used - recording_rule_names() == set()


def test_alerts_cover_operations():
    expressions = "\n".join(alert_rule_expressions())
    for name in ("cargoscan_queue_depth", "cargoscan_scans_total", "cargoscan_scans_flagged_total"):
        assert name in expressions
