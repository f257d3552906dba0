"""Load the files under deploy/ and list the metric and setting names that the code defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
COMPOSE_FILES = [DEPLOY / "compose.yaml", DEPLOY / "compose.multi-gpu.yaml"]
K8S = DEPLOY / "k8s"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "cargoscan.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "cargoscan.yml"

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])cargoscan_[A-Za-z0-9_]+")
_RECORDED_NAME = re.compile(r"(?<![A-Za-z0-9_:])cargoscan:[A-Za-z0-9_:]+")

_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "gauge": ("",),
    "info": ("_info",),
}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def metric_names(expression: str) -> set[str]:
    """Return the ``cargoscan_*`` metric names in a PromQL expression, ignoring string literals such as label values."""
    return set(_METRIC_NAME.findall(_STRING_LITERAL.sub('""', expression)))


def recorded_names(expression: str) -> set[str]:
    """Return the ``cargoscan:*`` recording-rule names in a PromQL expression."""
    return set(_RECORDED_NAME.findall(_STRING_LITERAL.sub('""', expression)))


def exported_series_names() -> set[str]:
    """Return every series name the worker's /metrics can contain, from the metric families the code registers."""
    from prometheus_client import REGISTRY

    import worker.metrics  # noqa: F401  (registers the metrics)
    from worker.queue_depth import QueueDepthCollector

    families = [family for family in REGISTRY.collect() if family.name.startswith("cargoscan")]
    families += list(QueueDepthCollector("redis://127.0.0.1:6379/0", []).describe())

    names = set()
    for family in families:
        for suffix in _SERIES_SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def settings_variables() -> set[str]:
    """Return the ``CARGOSCAN_*`` environment variables that :class:`worker.settings.Settings` reads."""
    from worker.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    return {prefix + name.upper() for name in Settings.model_fields}


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in load_dashboard()["panels"] for target in panel.get("targets", [])]


def alert_rule_expressions() -> list[str]:
    return [rule["expr"] for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"]]


def recording_rule_names() -> set[str]:
    return {rule["record"] for group in load_yaml(ALERT_RULES)["groups"] for rule in group["rules"] if "record" in rule}
