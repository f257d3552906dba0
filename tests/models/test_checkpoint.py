"""Tests for models.checkpoint: saving, loading, versioning and rejecting unusable files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from models.checkpoint import (
    FORMAT,
    Checkpoint,
    FORMAT_VERSION,
    CheckpointError,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from models.embedder import SiameseEmbedder
from models.preprocess import PreprocessConfig

PREPROCESS = PreprocessConfig(image_size=48, resize_mode="letterbox", fill=0.9)
METADATA = {"run": "unit test", "epochs": 3, "history": [{"epoch": 1, "loss": 0.25}]}


class _Annotation:
    """A plain Python object that torch.load(weights_only=True) must not rebuild."""

    def __init__(self, note: str) -> None:
        self.note = note


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, str, SiameseEmbedder]:
    """One checkpoint shared by the module: its path, the sha256 from save_checkpoint and the source embedder."""
    path = tmp_path_factory.mktemp("checkpoint") / "nested" / "model.pt"
    with torch.random.fork_rng():
        torch.manual_seed(1)
        embedder = SiameseEmbedder().eval()
    version = save_checkpoint(path, embedder, PREPROCESS, threshold=0.37, metadata=METADATA)
    return path, version, embedder


@pytest.fixture(scope="module")
def loaded(saved) -> Checkpoint:
    path, _, _ = saved
    return load_checkpoint(path)


def _corrupt_copy(source: Path, target: Path, keep_fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep_fraction)])
    return target


def _reason(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    return str(caught.value)


# --- roundtrip ------------------------------------------------------------------------------


def test_roundtrip_preprocess(loaded):
    assert loaded.preprocess == PREPROCESS


def test_roundtrip_threshold(loaded):
    assert loaded.threshold == pytest.approx(0.37)


def test_roundtrip_metadata(loaded):
    assert loaded.metadata == METADATA


def test_roundtrip_same_outputs(saved, loaded):
    _, _, original = saved
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded.embedder(images), original(images), atol=1e-6)


def test_loaded_in_eval_mode(loaded):
    assert not loaded.embedder.training


def test_loaded_records_path(saved):
    path, _, _ = saved
    assert load_checkpoint(str(path)).path == path


def test_save_creates_parent_folder(saved):
    path, _, _ = saved
    assert path.parent.name == "nested"
    assert path.is_file()


def test_save_leaves_no_temporary_file(saved):
    path, _, _ = saved
    assert [entry.name for entry in path.parent.iterdir()] == ["model.pt"]


def test_conftest_tiny_checkpoint_loads(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint.preprocess.image_size == 32
    assert checkpoint.threshold == 1e6
    assert checkpoint.metadata == {"purpose": "tests"}


# --- version ----------------------------------------------------------------------------------


def test_version_is_file_sha256(saved, loaded):
    path, _, _ = saved
    assert loaded.version == hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_returns_version(saved):
    path, version, _ = saved
    assert version == hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_sha256_small_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"cargo" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"cargo" * 1000).hexdigest()


def test_file_sha256_multi_block(tmp_path):
    # Over 1 MiB, so the hash is fed in more than one block.
    data = bytes(range(256)) * 5000
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_version_changes_with_threshold(saved, tmp_path):
    _, version, embedder = saved
    other = save_checkpoint(tmp_path / "other.pt", embedder, PREPROCESS, threshold=0.5, metadata=METADATA)
    assert other != version


# --- rejected files ---------------------------------------------------------------------------


def test_arbitrary_object_rejected(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "note": _Annotation("hello")}, path)
    assert "weights_only" in _reason(path)


def test_plain_state_dict_rejected(tmp_path):
    path = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(2, 2)}, path)
    assert "not a CargoScan checkpoint" in _reason(path)


def test_plain_tensor_rejected(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    assert "not a CargoScan checkpoint" in _reason(path)


def test_other_format_version_rejected(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1}, path)
    assert f"format version {FORMAT_VERSION + 1}" in _reason(path)


def test_missing_state_dict_rejected(tmp_path):
    path = tmp_path / "incomplete.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "preprocess": PREPROCESS.to_dict()}, path)
    assert "incomplete" in _reason(path)


def test_mismatched_weights_rejected(tmp_path):
    path = tmp_path / "mismatched.pt"
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {"backbone.conv1.weight": torch.zeros(1)},
        "preprocess": PREPROCESS.to_dict(),
    }
    torch.save(payload, path)
    assert "does not match ResNet-18" in _reason(path)


def test_missing_file_rejected(tmp_path):
    assert "not found" in _reason(tmp_path / "absent.pt")


def test_directory_rejected(tmp_path):
    assert "not found" in _reason(tmp_path)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.5, 0.99], ids=["empty", "half", "tail-cut"])
def test_truncated_file_rejected(saved, tmp_path, keep_fraction):
    path, _, _ = saved
    with pytest.raises(CheckpointError):
        load_checkpoint(_corrupt_copy(path, tmp_path / "cut.pt", keep_fraction))


@pytest.mark.parametrize(
    "content",
    [b"this is not a checkpoint\n", bytes(range(256)) * 16],
    ids=["text", "binary"],
)
def test_garbage_file_rejected(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_equal_weights_same_version(tmp_path):
    import torch

    from models.checkpoint import save_checkpoint
    from models.embedder import SiameseEmbedder
    from models.preprocess import PreprocessConfig

    torch.manual_seed(0)
    embedder = SiameseEmbedder().eval()

    first = save_checkpoint(tmp_path / "a.pt", embedder, PreprocessConfig(image_size=32))
    second = save_checkpoint(tmp_path / "b.pt", embedder, PreprocessConfig(image_size=32))

    assert first == second
