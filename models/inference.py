"""Decode scans in parallel and embed them: the shared steps of enrollment and screening.

On the CPU, embedding runs in float32 exactly as a plain forward pass does. On CUDA it uses
automatic mixed precision, channels-last tensors, pinned host memory with non-blocking
copies and, when asked for, ``torch.compile``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch
from torch import nn

from models.embedder import SiameseEmbedder
from models.imaging import DEFAULT_MAX_IMAGE_PIXELS, DecodeTarget, ScanReadError, load_scan
from models.preprocess import PreprocessConfig, normalize, to_unit_tensor
from models.tiling import ScanTiles, cut_tiles


@dataclass(frozen=True)
class Decoded:
    """One scan after decoding, or ``error`` with the reason it failed.

    In whole-scan mode ``image`` is (3, S, S) in [0, 1]. In tile mode ``tiles`` contains the
    scan's tiles and their boxes, and ``image`` is None.
    """

    image: torch.Tensor | None
    error: str | None
    width: int = 0
    height: int = 0
    tiles: ScanTiles | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class InferenceOptions:
    """Options of the CUDA embedding path. The CPU path ignores every option and stays float32.

    ``mixed_precision`` runs the forward pass under autocast in bfloat16 where the GPU
    supports it, else float16. ``compile`` wraps the embedder in ``torch.compile`` once per
    module, which costs a compilation on the first batch of each new batch size.
    """

    mixed_precision: bool = True
    channels_last: bool = True
    compile: bool = False


def decode_target(config: PreprocessConfig) -> DecodeTarget:
    """Return the decode target for ``config``'s network input, the same for every stage."""
    if config.tiles is not None:
        # Fitting both sides to the tile height keeps the shorter side (the height of a
        # wide scan) at the oversampling times that height or more.
        return DecodeTarget(size=config.tiles.scan_height, keep_aspect=False, oversampling=config.decode_oversampling)
    return DecodeTarget(
        size=config.image_size, keep_aspect=config.resize_mode == "letterbox", oversampling=config.decode_oversampling,
    )


def decode_one(path: str | os.PathLike[str], config: PreprocessConfig, max_image_pixels: int) -> Decoded:
    """Decode and resize one scan; a bad file becomes a :class:`Decoded` carrying the reason."""
    try:
        scan = load_scan(path, max_image_pixels=max_image_pixels, target=decode_target(config))
    except ScanReadError as error:
        return Decoded(image=None, error=error.reason)

    if config.tiles is None:
        return Decoded(image=to_unit_tensor(scan, config), error=None, width=scan.width, height=scan.height)
    try:
        tiles = cut_tiles(scan, config.tiles)
    except ValueError as error:
        return Decoded(image=None, error=str(error), width=scan.width, height=scan.height)
    return Decoded(image=None, error=None, width=scan.width, height=scan.height, tiles=tiles)


def decode_many(
    paths: Sequence[str | os.PathLike[str]],
    config: PreprocessConfig,
    executor: Executor,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Decoded]:
    """Decode scans on ``executor``'s threads; Pillow and torch release the GIL while they work."""
    futures = [executor.submit(decode_one, path, config, max_image_pixels) for path in paths]
    return [future.result() for future in futures]


def default_torch_threads(worker_processes: int = 1) -> int:
    """Return the intra-op thread count for one of ``worker_processes`` processes on this machine.

    The CPUs this process may run on (its affinity mask) are divided evenly, at least one
    each, so that workers sharing a machine do not oversubscribe its cores.
    """
    if worker_processes < 1:
        raise ValueError(f"worker_processes must be at least 1, got {worker_processes}")
    return max(1, len(os.sched_getaffinity(0)) // worker_processes)


@torch.inference_mode()
def embed_images(
    embedder: SiameseEmbedder,
    images: torch.Tensor,
    config: PreprocessConfig,
    device: torch.device,
    options: InferenceOptions | None = None,
) -> torch.Tensor:
    """Embed (N, 3, S, S) unit images in one forward pass; returns (N, 512) float32 on the CPU."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, S, S), got {tuple(images.shape)}")

    if device.type == "cuda":
        return _embed_cuda(embedder, images, config, device, options or InferenceOptions())
    return embedder(normalize(images.to(device), config)).float().cpu()


def mixed_precision_dtype(device: torch.device) -> torch.dtype:
    """Return bfloat16 where ``device`` supports it, else float16."""
    with torch.cuda.device(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _embed_cuda(
    embedder: SiameseEmbedder, images: torch.Tensor, config: PreprocessConfig, device: torch.device, options: InferenceOptions
) -> torch.Tensor:
    # Pinned memory lets the copy run asynchronously. Nothing overlaps with it here, but it
    # avoids the staging copy that pageable memory costs.
    images = images if images.is_pinned() else images.pin_memory()
    batch = normalize(images.to(device, non_blocking=True), config)
    module = _cuda_module(embedder, options)
    if options.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)

    if options.mixed_precision:
        with torch.autocast(device_type="cuda", dtype=mixed_precision_dtype(device)):
            embeddings = module(batch)
    else:
        embeddings = module(batch)
    return embeddings.float().cpu()


# Compiled wrappers, one per embedder module, dropped together with the module.
_compiled: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _cuda_module(embedder: SiameseEmbedder, options: InferenceOptions) -> nn.Module:
    if options.channels_last:
        # In place and cheap after the first call: the weights already have this layout.
        embedder.to(memory_format=torch.channels_last)
    if not options.compile:
        return embedder
    if embedder not in _compiled:
        _compiled[embedder] = torch.compile(embedder)
    return _compiled[embedder]
