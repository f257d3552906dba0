"""Shared fixtures: databases (SQLite and PostgreSQL), synthetic scans, a tiny checkpoint.

PostgreSQL and Redis are real services on 127.0.0.1; tests that need them are marked and
skip with the reason when the service is down. Each PostgreSQL test gets its own database.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from models.embedder import SiameseEmbedder
from models.checkpoint import save_checkpoint
from models.preprocess import PreprocessConfig
from models.synthetic import SceneConfig, render_scan, write_png16

POSTGRES_ADMIN_URL = os.environ.get("CARGOSCAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CARGOSCAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")

# The Celery app reads its broker when first imported; point it at the test Redis, and keep
# in-process code from opening a metrics port.
os.environ["CARGOSCAN_BROKER_URL"] = REDIS_URL
os.environ["CARGOSCAN_METRICS_PORT"] = "0"
DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xray"
TINY_SCENE = SceneConfig(width=96, height=48)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(autouse=True)
def _restore_torch_rng():
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cargoscan.db'}"


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not _port_open("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")

    import psycopg

    name = f"cargoscan_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """Each test using this runs on both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def redis_url() -> str:
    if not _port_open("127.0.0.1", 6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def scan_folder(tmp_path: Path) -> Path:
    """Eight small 16-bit synthetic scans, four with a concealed item."""
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(8):
        scan = render_scan(rng, with_item=index % 2 == 0, config=TINY_SCENE)
        write_png16(folder / f"scan_{index:02d}.png", scan.pixels)
    return folder


@pytest.fixture
def exemplar_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Positive and negative exemplar folders of three synthetic scans each."""
    rng = np.random.default_rng(11)
    folders = []
    for label in ("positive", "negative"):
        folder = tmp_path / "exemplars" / label
        folder.mkdir(parents=True)
        for index in range(3):
            scan = render_scan(rng, with_item=label == "positive", config=TINY_SCENE)
            write_png16(folder / f"{label}_{index}.png", scan.pixels)
        folders.append(folder)
    return folders[0], folders[1]


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A randomly initialised embedder at 32 px input, with a threshold that flags some scans.

    Random weights give arbitrary distances, so the threshold is large: these tests check
    plumbing and bookkeeping, not detection.
    """
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, SiameseEmbedder().eval(), PreprocessConfig(image_size=32), threshold=1e6, metadata={"purpose": "tests"})
    return path


@pytest.fixture
def enrolled_database(database_url: str, tiny_checkpoint: Path, exemplar_folders: tuple[Path, Path]):
    """A migrated database holding one exemplar set made by the tiny checkpoint."""
    from db.database import open_database
    from models.scanfiles import list_scan_files
    from scheduler.enroll import enroll

    database = open_database(database_url)
    positive, negative = exemplar_folders
    enroll(database.sessions, tiny_checkpoint, list_scan_files(positive), list_scan_files(negative), name="test-exemplars")
    yield database
    database.dispose()


@pytest.fixture
def data_root() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real X-ray scans not found at {DATA_ROOT}")
    return DATA_ROOT
