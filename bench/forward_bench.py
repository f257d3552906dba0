"""Bare embedder forward pass on random 224x224 tensors: the ceiling for every other path."""

from __future__ import annotations

import time

import torch

from models.embedder import SiameseEmbedder


def forward_images_per_second(batch_size: int, min_seconds: float, image_size: int = 224, min_batches: int = 2) -> float:
    """Return images/s of eval-mode forward passes under inference_mode, after one warm-up batch."""
    torch.manual_seed(0)
    model = SiameseEmbedder().eval()
    images = torch.randn(batch_size, 3, image_size, image_size)

    with torch.inference_mode():
        model(images)

        batches = 0
        started = time.perf_counter()
        while batches < min_batches or time.perf_counter() - started < min_seconds:
            model(images)
            batches += 1
        elapsed = time.perf_counter() - started
    return batches * batch_size / elapsed


def run(section, batch_sizes: list[int], min_seconds: float) -> dict[int, float]:
    """Fill ``section`` with one row per batch size; returns images/s by batch size."""
    results = {}
    for batch_size in batch_sizes:
        rate = forward_images_per_second(batch_size, min_seconds)
        results[batch_size] = rate
        section.add(batch_size, rate, 1000.0 * batch_size / rate)
    section.note(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, float32, eval, torch.inference_mode")
    return results
