"""Decode cost per scan, the gain from JPEG draft mode, and how decoding scales over threads.

Decoding runs in Pillow's C decoder and torch's resize, which both release the GIL, so
threads should scale until the cores are busy. Processes share no GIL, so equal rates for
two threads and two processes mean the GIL is not the limit. The interference rows show
what decoding on the side costs a concurrent forward pass on the same cores.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.forward_bench import forward_images_per_second
from models import imaging
from models.embedder import SiameseEmbedder
from models.imaging import DEFAULT_MAX_IMAGE_PIXELS, load_scan
from models.inference import decode_one, decode_target
from models.preprocess import PreprocessConfig, to_unit_tensor

CONFIG = PreprocessConfig(image_size=224)

# Checkpoints from before draft oversampling was a setting decode at 2x; shown beside the default.
CONFIG_2X = PreprocessConfig(image_size=224, decode_oversampling=2)


def _decode_full(path: Path) -> torch.Tensor:
    return to_unit_tensor(load_scan(path), CONFIG)


def _decode_draft(path: Path) -> torch.Tensor:
    return decode_one(path, CONFIG, DEFAULT_MAX_IMAGE_PIXELS).image


def _decode_draft_2x(path: Path) -> torch.Tensor:
    return decode_one(path, CONFIG_2X, DEFAULT_MAX_IMAGE_PIXELS).image


def cpu_ms(paths: list[Path], decode) -> float:
    """Return CPU milliseconds per scan that ``decode`` spends on this thread, after one warm-up scan.

    Thread CPU time, unlike wall time, barely changes with other load on the machine.
    """
    decode(paths[0])
    started = time.thread_time()
    for path in paths:
        decode(path)
    return 1000.0 * (time.thread_time() - started) / len(paths)


def grey_check_cpu_ms(paths: list[Path]) -> float:
    """Return CPU milliseconds per scan of the grey-content test that colour files go through."""
    total = 0.0
    for path in paths:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        started = time.thread_time()
        imaging._is_grey_content(rgb)
        total += time.thread_time() - started
    return 1000.0 * total / len(paths)


def forward_cpu_ms(batch_size: int = 32) -> float:
    """Return CPU milliseconds per image of the forward pass on one thread (no spin-waiting to count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = SiameseEmbedder().eval()
        images = torch.randn(batch_size, 3, 224, 224)
        with torch.inference_mode():
            model(images)
            started = time.thread_time()
            model(images)
            return 1000.0 * (time.thread_time() - started) / batch_size
    finally:
        torch.set_num_threads(threads)


def _decode_shape(path: Path) -> tuple[int, ...]:
    return tuple(_decode_draft(path).shape)


def threaded_rate(paths: list[Path], threads: int) -> float:
    """Return scans/s decoding ``paths`` with the production decode on ``threads`` threads."""
    with ThreadPoolExecutor(max_workers=threads) as executor:
        started = time.perf_counter()
        list(executor.map(_decode_shape, paths))
        return len(paths) / (time.perf_counter() - started)


def process_rate(paths: list[Path], processes: int) -> float:
    """Return scans/s decoding ``paths`` in ``processes`` processes, which share no GIL."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        pool.map(_decode_shape, paths[: 2 * processes])
        started = time.perf_counter()
        pool.map(_decode_shape, paths, chunksize=1)
        return len(paths) / (time.perf_counter() - started)


def drafted_count(paths: list[Path], config: PreprocessConfig) -> int:
    target = decode_target(config)
    return sum(load_scan(path, target=target).full_size is not None for path in paths)


def forward_while_decoding(paths: list[Path], threads: int, min_seconds: float) -> float:
    """Return forward images/s at batch 32 while ``threads`` threads decode ``paths`` in a loop."""
    stop = threading.Event()

    def decode_forever() -> None:
        while not stop.is_set():
            for path in paths:
                if stop.is_set():
                    return
                _decode_draft(path)

    workers = [threading.Thread(target=decode_forever, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        return forward_images_per_second(32, min_seconds)
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def run_costs(section, scan_sets: dict[str, list[Path]]) -> None:
    """Rows: per data set, CPU ms per scan to decode in full and in draft mode at 2x and 1x, against the forward pass.

    With every core busy, overlapping cannot hide decoding: the pipeline can reach at most
    forward / (forward + decode) of the bare forward rate.
    """
    forward_ms = forward_cpu_ms()
    for name, paths in scan_sets.items():
        full_ms = cpu_ms(paths, _decode_full)
        draft_2x_ms = cpu_ms(paths, _decode_draft_2x)
        draft_ms = cpu_ms(paths, _decode_draft)
        section.add(
            name, len(paths), full_ms, draft_2x_ms, draft_ms, grey_check_cpu_ms(paths),
            f"{drafted_count(paths, CONFIG_2X)}/{len(paths)}", f"{drafted_count(paths, CONFIG)}/{len(paths)}", forward_ms,
            f"{forward_ms / (forward_ms + draft_2x_ms):.2f}", f"{forward_ms / (forward_ms + draft_ms):.2f}",
        )
    section.note(
        "CPU time of one thread (time.thread_time), so other load on the machine barely changes it; 'ceiling' = "
        "forward / (forward + draft decode), the most the pipeline can reach when decoding and the forward pass share busy cores"
    )


def run_threads(section, paths: list[Path], forward_alone: float, min_seconds: float) -> None:
    """Rows: decode scans/s on 1, 2 and 4 threads, and forward images/s with decoding beside it."""
    one = threaded_rate(paths, 1)
    for threads in (1, 2, 4):
        rate = one if threads == 1 else threaded_rate(paths, threads)
        section.add(f"decode, {threads} thread(s)", rate, f"{rate / one:.2f}x")
    rate = process_rate(paths, 2)
    section.add("decode, 2 processes", rate, f"{rate / one:.2f}x")

    section.add("forward b32 alone", forward_alone, "1.00x")
    for threads in (1, 2):
        rate = forward_while_decoding(paths, threads, min_seconds)
        section.add(f"forward b32 + {threads} decode thread(s)", rate, f"{rate / forward_alone:.2f}x")
