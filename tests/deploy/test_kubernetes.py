"""The Kubernetes manifests parse and agree with each other and with the code's settings."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.deploy.deploy_files import COMPOSE_FILES, K8S, load_yaml, load_yaml_documents, settings_variables
from worker.settings import Settings


def _resources() -> list[dict]:
    documents = []
    for name in load_yaml(K8S / "kustomization.yaml")["resources"]:
        documents += load_yaml_documents(K8S / name)
    return documents


def _find(kind: str, name: str) -> dict:
    matches = [doc for doc in _resources() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _config() -> dict[str, str]:
    return _find("ConfigMap", "cargoscan-config")["data"]


def _pod_spec(kind: str, name: str) -> dict:
    return _find(kind, name)["spec"]["template"]["spec"]


def _containers() -> list[dict]:
    return [container for doc in _resources() if doc["kind"] in ("Deployment", "Job") for container in doc["spec"]["template"]["spec"]["containers"]]


def test_every_manifest_listed_and_parsed():
    listed = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for document in _resources():
        assert document["apiVersion"]
        assert document["kind"]
        assert document["metadata"]["name"]


def test_environment_names_are_settings():
    known = settings_variables()
    names = set(_config())
    for container in _containers():
        names |= {variable["name"] for variable in container.get("env", [])}
    assert {name for name in names if name.startswith("CARGOSCAN_")} <= known


def test_config_values_are_valid_settings():
    prefix = Settings.model_config["env_prefix"]
    Settings(**{key[len(prefix):].lower(): value for key, value in _config().items()})


def test_containers_read_config_and_secret():
    for container in _containers():
        assert {"configMapRef": {"name": "cargoscan-config"}} in container["envFrom"], container["name"]
    for container in _containers():
        if container["name"] != "beat":
            database = next(variable for variable in container["env"] if variable["name"] == "CARGOSCAN_DATABASE_URL")
            assert database["valueFrom"]["secretKeyRef"] == {"name": "cargoscan-database", "key": "url"}


def test_worker_takes_one_gpu():
    container = _pod_spec("Deployment", "cargoscan-worker")["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"][:4] == ["celery", "-A", "worker", "worker"]
    assert container["command"][container["command"].index("--pool") + 1] == "solo"


def test_worker_metrics_port_matches_config():
    deployment = _find("Deployment", "cargoscan-worker")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = int(_config()["CARGOSCAN_METRICS_PORT"])

    assert _config()["CARGOSCAN_METRICS_ADDRESS"] == "0.0.0.0"
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert _find("Service", "cargoscan-worker-metrics")["spec"]["ports"][0]["port"] == port


def test_keda_scales_worker_on_queue():
    scaled = _find("ScaledObject", "cargoscan-worker")
    trigger = scaled["spec"]["triggers"][0]
    broker = urlparse(_config()["CARGOSCAN_BROKER_URL"])

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == _find("Deployment", "cargoscan-worker")["metadata"]["name"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == _config()["CARGOSCAN_QUEUE"]
    assert trigger["metadata"]["address"] == f"{broker.hostname}:{broker.port}"
    assert trigger["metadata"]["databaseIndex"] == broker.path.lstrip("/")
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_migration_job_runs_db_upgrade():
    job = _find("Job", "cargoscan-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["cargoscan", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_beat_runs_once():
    beat = _find("Deployment", "cargoscan-beat")
    container = beat["spec"]["template"]["spec"]["containers"][0]

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert container["command"][:4] == ["celery", "-A", "worker", "beat"]
    assert {"name": "CARGOSCAN_METRICS_PORT", "value": "0"} in container["env"]


def test_images_match_compose_builds():
    compose = load_yaml(COMPOSE_FILES[0])["services"]
    built = {service["image"] for service in compose.values() if "build" in service}
    kustomized = {image["name"] for image in load_yaml(K8S / "kustomization.yaml")["images"]}

    for container in _containers():
        assert container["image"] in built, container["name"]
        assert container["image"].split(":")[0] in kustomized, container["name"]
