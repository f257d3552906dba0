"""The Dockerfiles copy files that exist, pin the torch versions of pyproject.toml and expose the metrics port."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.deploy.deploy_files import DEPLOY, REPO_ROOT
from worker.settings import Settings

DOCKERFILES = sorted(path for path in (DEPLOY / "docker").glob("Dockerfile.*") if path.suffix != ".dockerignore")
# The tests set CARGOSCAN_METRICS_PORT=0, so the default comes from the field, not from Settings().
DEFAULT_METRICS_PORT = Settings.model_fields["metrics_port"].default


def _instructions(path) -> list[tuple[str, str]]:
    lines = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
    return lines


def _pinned(package: str) -> str:
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(dependency for dependency in dependencies if re.match(rf"{package}\s*==", dependency)).replace(" ", "")


def test_both_dockerfiles_present():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_copy_sources_exist(path):
    for keyword, rest in _instructions(path):
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert (REPO_ROOT / source).exists(), source


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_torch_pins_match_pyproject(path):
    text = path.read_text()
    assert _pinned("torch") in text
    assert _pinned("torchvision") in text


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_exposes_metrics_port(path):
    instructions = _instructions(path)
    exposed = [rest for keyword, rest in instructions if keyword == "EXPOSE"]
    environment = " ".join(rest for keyword, rest in instructions if keyword == "ENV")

    assert exposed == [str(DEFAULT_METRICS_PORT)]
    assert f"CARGOSCAN_METRICS_PORT={DEFAULT_METRICS_PORT}" in environment
    assert "CARGOSCAN_METRICS_ADDRESS=0.0.0.0" in environment


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_runs_worker_as_non_root(path):
    instructions = _instructions(path)
    command = json.loads(next(rest for keyword, rest in instructions if keyword == "CMD"))

    assert command[:4] == ["celery", "-A", "worker", "worker"]
    assert ("USER", "cargoscan") in instructions
