"""Decode scans in parallel and embed them: the shared steps of enrollment and screening."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from models.embedder import SiameseEmbedder
from models.imaging import DEFAULT_MAX_IMAGE_PIXELS, ScanReadError, load_scan
from models.preprocess import PreprocessConfig, normalize, to_unit_tensor


@dataclass(frozen=True)
class Decoded:
    """One scan after decoding: ``image`` is (3, S, S) in [0, 1], or ``error`` says why it failed."""

    image: torch.Tensor | None
    error: str | None
    width: int = 0
    height: int = 0


def decode_one(path: str | os.PathLike[str], config: PreprocessConfig, max_image_pixels: int) -> Decoded:
    """Decode and resize one scan; a bad file becomes a :class:`Decoded` carrying the reason."""
    try:
        scan = load_scan(path, max_image_pixels=max_image_pixels)
    except ScanReadError as error:
        return Decoded(image=None, error=error.reason)
    return Decoded(image=to_unit_tensor(scan, config), error=None, width=scan.width, height=scan.height)


def decode_many(
    paths: Sequence[str | os.PathLike[str]],
    config: PreprocessConfig,
    executor: Executor,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[Decoded]:
    """Decode scans on ``executor``'s threads; Pillow and torch release the GIL while they work."""
    futures = [executor.submit(decode_one, path, config, max_image_pixels) for path in paths]
    return [future.result() for future in futures]


@torch.inference_mode()
def embed_images(
    embedder: SiameseEmbedder, images: torch.Tensor, config: PreprocessConfig, device: torch.device
) -> torch.Tensor:
    """Embed (N, 3, S, S) unit images in one forward pass; returns (N, 512) float32 on the CPU."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, S, S), got {tuple(images.shape)}")

    if device.type == "cuda":
        images = images.pin_memory().to(device, non_blocking=True)
    else:
        images = images.to(device)
    return embedder(normalize(images, config)).float().cpu()
