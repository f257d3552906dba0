"""Tests for models.embedder: the ResNet-18 embedder and its starting weights."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub
from torchvision.models import ResNet18_Weights, resnet18

from models.checkpoint import save_checkpoint
from models.embedder import EMBEDDING_DIM, SiameseEmbedder, build_embedder
from models.preprocess import PreprocessConfig


def _images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _seeded_embedder(seed: int = 0) -> SiameseEmbedder:
    torch.manual_seed(seed)
    return SiameseEmbedder().eval()


@pytest.fixture(scope="module")
def embedder() -> SiameseEmbedder:
    with torch.random.fork_rng():
        return _seeded_embedder()


def test_output_shape(embedder):
    with torch.no_grad():
        assert embedder(_images(3)).shape == (3, EMBEDDING_DIM)


def test_embedding_dim_is_512():
    assert EMBEDDING_DIM == 512


def test_no_classifier_layer(embedder):
    assert isinstance(embedder.backbone.fc, torch.nn.Identity)


def test_alone_matches_in_batch(embedder):
    # In eval mode batch norm uses running statistics, so an image's embedding must not
    # depend on the other images in its batch.
    batch = _images(32)
    with torch.no_grad():
        in_batch = embedder(batch)[5]
        alone = embedder(batch[5:6])[0]
    tolerance = 1e-4 * float(alone.norm())
    assert torch.allclose(alone, in_batch, rtol=0.0, atol=tolerance)


def test_deterministic_in_eval(embedder):
    images = _images(2)
    with torch.no_grad():
        assert torch.equal(embedder(images), embedder(images))


@pytest.mark.parametrize(
    "shape",
    [(3, 64, 64), (2, 1, 64, 64), (2, 4, 64, 64), (1, 2, 3, 64, 64)],
    ids=["no-batch", "one-channel", "four-channels", "five-dim"],
)
def test_wrong_shape_raises(embedder, shape):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        embedder(torch.zeros(shape))


# --- build_embedder ----------------------------------------------------------------------------


def test_build_none():
    built, origin = build_embedder("none")
    assert isinstance(built, SiameseEmbedder)
    assert origin.kind == "random"


def test_build_default_is_none():
    _, origin = build_embedder()
    assert origin.kind == "random"


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A randomly initialised torchvision ResNet-18, with its state dict saved to a file."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        reference = resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def test_build_from_torchvision_file(torchvision_weights):
    path, reference = torchvision_weights
    built, origin = build_embedder(str(path))
    assert origin.kind == "file"
    assert origin.detail == str(path)
    assert torch.equal(built.backbone.conv1.weight, reference.conv1.weight)


def test_build_from_file_matches_features(torchvision_weights):
    path, reference = torchvision_weights
    built, _ = build_embedder(str(path))
    built.eval()
    reference.fc = torch.nn.Identity()
    images = _images(2, size=32)
    with torch.no_grad():
        assert torch.allclose(built(images), reference(images), atol=1e-6)


def test_build_from_checkpoint_file(tmp_path):
    source = _seeded_embedder(seed=5)
    path = tmp_path / "model.pt"
    save_checkpoint(path, source, PreprocessConfig(image_size=32))
    built, origin = build_embedder(str(path))
    assert origin.kind == "file"
    assert torch.equal(built.backbone.layer4[1].conv2.weight, source.backbone.layer4[1].conv2.weight)


def test_build_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_embedder(str(tmp_path / "absent.pth"))


def test_build_mismatched_file_raises(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match="do not match ResNet-18"):
        build_embedder(str(path))


# --- ImageNet weights ------------------------------------------------------------------------------


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


def test_imagenet_failure_names_weights_option(monkeypatch):
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", _offline)
    with pytest.raises(RuntimeError, match="--weights"):
        build_embedder("imagenet")


def test_imagenet_failure_keeps_cause(monkeypatch):
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", _offline)
    with pytest.raises(RuntimeError) as caught:
        build_embedder("imagenet")
    assert isinstance(caught.value.__cause__, OSError)
    assert "network is unreachable" in str(caught.value)


def test_imagenet_download_failure(monkeypatch, tmp_path):
    # An empty torch hub cache and a failing download stand in for a machine without
    # network access. torchvision's real loading path must then end in the same RuntimeError.
    def no_download(url, *args, **kwargs):
        raise urllib.error.URLError(f"no network for {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(RuntimeError, match="--weights") as caught:
        build_embedder("imagenet")
    assert "no network for https://" in str(caught.value)


def test_imagenet_loads_state(monkeypatch, torchvision_weights):
    _, reference = torchvision_weights
    state = reference.state_dict()
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1, "get_state_dict", lambda *args, **kwargs: state)
    built, origin = build_embedder("imagenet")
    assert origin.kind == "imagenet"
    assert torch.equal(built.backbone.conv1.weight, state["conv1.weight"])


def test_imagenet_cached_weights_load():
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    if not cached.is_file():
        pytest.skip(f"ImageNet ResNet-18 weights are not cached at {cached}")
    _, origin = build_embedder("imagenet")
    assert origin.kind == "imagenet"
