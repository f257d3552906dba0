"""The Grafana dashboard: schema fields, data source, queries and units of every panel."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.deploy.deploy_files import DASHBOARD_PROVIDERS, DATASOURCES, load_dashboard, load_yaml

REQUIRED_METRICS = (
    "cargoscan_scans_total",
    "cargoscan_scan_latency_seconds_bucket",
    "cargoscan_batch_size",
    "cargoscan_queue_depth",
    "cargoscan_scans_flagged_total",
    "cargoscan_scans_failed_total",
    "cargoscan_worker_info",
)


def _panels() -> list[dict]:
    return [panel for panel in load_dashboard()["panels"] if panel["type"] != "row"]


def _datasource_uid() -> str:
    return load_yaml(DATASOURCES)["datasources"][0]["uid"]


def test_dashboard_schema_fields():
    dashboard = load_dashboard()
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_panels_have_datasource():
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": _datasource_uid()}, panel["title"]


def test_panels_have_targets():
    for panel in _panels():
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == _datasource_uid(), panel["title"]


def test_panels_have_units():
    for panel in _panels():
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_panels_have_layout():
    for panel in load_dashboard()["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_dashboard_covers_operations():
    queries = "\n".join(target["expr"] for panel in _panels() for target in panel["targets"])
    for name in REQUIRED_METRICS:
        assert name in queries, name
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(cargoscan_scan_latency_seconds_bucket" in queries
    assert "by (service, instance)" in queries
    assert "by (model_version)" in queries


def test_provider_path_is_mounted():
    from tests.deploy.deploy_files import COMPOSE_FILES

    compose = load_yaml(COMPOSE_FILES[0])
    mounts = [volume.split(":")[1] for volume in compose["services"]["grafana"]["volumes"]]
    assert load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"] in mounts


def test_queries_parse_with_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed; deploy/check-config.sh installs it")

    # promtool checks PromQL only inside rule files, so each query becomes a recording rule.
    rules = []
    for index, panel in enumerate(_panels()):
        for target in panel["targets"]:
            expression = target["expr"].replace("$__rate_interval", "5m")
            rules.append({"record": f"dashboard:panel{index}:{target['refId']}", "expr": expression})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = subprocess.run([promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
