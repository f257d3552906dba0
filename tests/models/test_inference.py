"""Embedding in models.inference: float32 on the CPU, mixed precision on CUDA.

Tests marked ``gpu`` skip without CUDA. They compare the CUDA paths with the CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from models.embedder import SiameseEmbedder
from models.inference import InferenceOptions, default_torch_threads, embed_images
from models.preprocess import PreprocessConfig, normalize

CONFIG = PreprocessConfig(image_size=64)
CPU = torch.device("cpu")


@pytest.fixture
def embedder() -> SiameseEmbedder:
    torch.manual_seed(0)
    return SiameseEmbedder().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _plain_forward(embedder: SiameseEmbedder, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return embedder(normalize(images, CONFIG)).float()


def test_cpu_embedding_bit_identical(embedder, images):
    result = embed_images(embedder, images, CONFIG, CPU)
    assert result.dtype == torch.float32
    assert torch.equal(result, _plain_forward(embedder, images))


def test_cpu_ignores_cuda_options(embedder, images):
    options = InferenceOptions(mixed_precision=True, channels_last=True, compile=True)
    result = embed_images(embedder, images, CONFIG, CPU, options)
    assert torch.equal(result, _plain_forward(embedder, images))


def test_cpu_leaves_weights_contiguous(embedder, images):
    embed_images(embedder, images, CONFIG, CPU, InferenceOptions(channels_last=True))
    weight = embedder.backbone.conv1.weight
    assert weight.is_contiguous()


def test_embed_rejects_wrong_shape(embedder):
    with pytest.raises(ValueError, match=r"\(N, 3, S, S\)"):
        embed_images(embedder, torch.rand(3, 64, 64), CONFIG, CPU)


def test_torch_threads_one_process_takes_all_cpus():
    assert default_torch_threads(1) == len(os.sched_getaffinity(0))


def test_torch_threads_shared_evenly():
    cpus = len(os.sched_getaffinity(0))
    assert default_torch_threads(2) == max(1, cpus // 2)


def test_torch_threads_at_least_one():
    assert default_torch_threads(10_000) == 1


def test_torch_threads_rejects_zero_processes():
    with pytest.raises(ValueError, match="worker_processes"):
        default_torch_threads(0)


# --- CUDA ---------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def _on_cuda(embedder: SiameseEmbedder) -> SiameseEmbedder:
    torch.manual_seed(0)
    copy = SiameseEmbedder().eval()
    copy.load_state_dict(embedder.state_dict())
    return copy.to("cuda")


def _relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return float((result - reference).norm() / reference.norm())


@pytest.mark.gpu
@cuda
def test_cuda_float32_matches_cpu(embedder, images):
    reference = embed_images(embedder, images, CONFIG, CPU)
    options = InferenceOptions(mixed_precision=False, channels_last=False)
    result = embed_images(_on_cuda(embedder), images, CONFIG, torch.device("cuda"), options)
    assert result.device.type == "cpu"
    assert result.dtype == torch.float32
    # TF32 matrix units may be on, and they keep about 10 bits of mantissa.
    assert _relative_error(result, reference) < 5e-3


@pytest.mark.gpu
@cuda
def test_cuda_mixed_precision_matches_cpu(embedder, images):
    reference = embed_images(embedder, images, CONFIG, CPU)
    result = embed_images(_on_cuda(embedder), images, CONFIG, torch.device("cuda"), InferenceOptions())
    assert result.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa, and errors of that order accumulate over 18 layers.
    assert _relative_error(result, reference) < 5e-2


@pytest.mark.gpu
@cuda
def test_cuda_channels_last_matches_contiguous(embedder, images):
    model = _on_cuda(embedder)
    device = torch.device("cuda")
    plain = embed_images(model, images, CONFIG, device, InferenceOptions(mixed_precision=False, channels_last=False))
    channels_last = embed_images(model, images, CONFIG, device, InferenceOptions(mixed_precision=False, channels_last=True))
    assert _relative_error(channels_last, plain) < 5e-3


@pytest.mark.gpu
@pytest.mark.slow
@cuda
def test_cuda_compile_matches_eager(embedder, images):
    model = _on_cuda(embedder)
    device = torch.device("cuda")
    eager = embed_images(model, images, CONFIG, device, InferenceOptions())
    compiled = embed_images(model, images, CONFIG, device, InferenceOptions(compile=True))
    assert _relative_error(compiled, eager) < 5e-2
