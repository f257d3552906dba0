"""The compose files parse and use the images, ports and settings the code expects."""

from __future__ import annotations

import pytest

from tests.deploy.deploy_files import COMPOSE_FILES, DEPLOY, PROMETHEUS_CONFIG, load_yaml, settings_variables
from worker.settings import Settings

EXPECTED_SERVICES = {"redis", "postgres", "migrate", "worker", "scheduler", "prometheus", "grafana"}


def _services() -> dict[str, dict]:
    services = {}
    for path in COMPOSE_FILES:
        services.update(load_yaml(path)["services"])
    return services


def _command(service: dict) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else command


def _worker_services() -> dict[str, dict]:
    return {name: service for name, service in _services().items() if _command(service)[:4] == ["celery", "-A", "worker", "worker"]}


def test_compose_has_services():
    assert EXPECTED_SERVICES <= set(load_yaml(COMPOSE_FILES[0])["services"])


def test_environment_names_are_settings():
    known = settings_variables()
    for name, service in _services().items():
        for variable in service.get("environment", {}):
            if variable.startswith("CARGOSCAN_"):
                assert variable in known, f"{name}: {variable} is not a field of worker.settings.Settings"


def test_environment_values_are_valid_settings():
    prefix = Settings.model_config["env_prefix"]
    for name, service in _services().items():
        values = {
            variable[len(prefix):].lower(): value
            for variable, value in service.get("environment", {}).items()
            if variable.startswith(prefix)
        }
        Settings(**values)


def test_builds_name_existing_dockerfiles():
    for name, service in _services().items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
            assert (context / "pyproject.toml").is_file(), name


def test_cargoscan_images_are_built():
    services = _services()
    built = {service["image"] for service in services.values() if "build" in service}
    for name, service in services.items():
        if service.get("image", "").startswith("cargoscan/"):
            assert service["image"] in built, name


def test_migration_runs_db_upgrade():
    from scheduler.cli import _build_parser

    command = _command(_services()["migrate"])
    assert command == ["cargoscan", "db", "upgrade"]
    assert _build_parser().parse_args(command[1:]).db_command == "upgrade"


@pytest.mark.parametrize("name", ["worker", "worker-gpu1", "worker-cpu"])
def test_worker_serves_metrics(name):
    service = _worker_services()[name]
    environment = service["environment"]
    port = environment.get("CARGOSCAN_METRICS_PORT", str(Settings.model_fields["metrics_port"].default))

    assert environment["CARGOSCAN_METRICS_ADDRESS"] == "0.0.0.0"
    assert port in service["expose"]
    assert environment["CARGOSCAN_BROKER_URL"].startswith("redis://redis:6379/")


def test_prometheus_scrapes_every_worker():
    job = next(job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"] if job["job_name"] == "cargoscan-worker")
    discovery = job["dns_sd_configs"][0]

    for name, service in _worker_services().items():
        assert name in discovery["names"]
        assert str(discovery["port"]) == service["environment"]["CARGOSCAN_METRICS_PORT"]


def test_gpu_workers_reserve_one_gpu():
    gpu_workers = {name: service for name, service in _worker_services().items() if service["environment"].get("CARGOSCAN_DEVICE") == "cuda"}
    device_ids = []
    for name, service in gpu_workers.items():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        assert devices[0]["capabilities"] == ["gpu"], name
        assert len(devices[0]["device_ids"]) == 1, name
        device_ids += devices[0]["device_ids"]
    assert len(gpu_workers) >= 2
    assert len(set(device_ids)) == len(device_ids)


def test_prefork_workers_set_multiprocess_dir():
    for name, service in _worker_services().items():
        if "prefork" in _command(service):
            assert service["environment"]["CARGOSCAN_METRICS_MULTIPROC_DIR"], name


def test_scheduler_runs_beat_with_nightly_run():
    scheduler = _services()["scheduler"]
    environment = scheduler["environment"]

    assert _command(scheduler)[:4] == ["celery", "-A", "worker", "beat"]
    assert environment["CARGOSCAN_METRICS_PORT"] == "0"
    assert environment["CARGOSCAN_NIGHTLY_DROP_FOLDER"].startswith(environment["CARGOSCAN_SCAN_ROOT"])
    Settings(nightly_time=environment["CARGOSCAN_NIGHTLY_TIME"])


def test_prometheus_mounts_rules_next_to_config():
    prometheus = _services()["prometheus"]
    targets = {volume.split(":")[1] for volume in prometheus["volumes"]}
    rule_files = load_yaml(PROMETHEUS_CONFIG)["rule_files"]

    assert "/etc/prometheus/prometheus.yml" in targets
    for rule_file in rule_files:
        assert f"/etc/prometheus/{rule_file}" in targets


def test_passwords_are_placeholders():
    for path in COMPOSE_FILES:
        text = path.read_text()
        for line in text.splitlines():
            if "PASSWORD" in line and ":" in line and not line.lstrip().startswith("#"):
                assert "${" in line, f"{path.name}: {line.strip()}"
