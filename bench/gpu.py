"""Embedder throughput on a CUDA GPU, the share of the compute floor, precision checks, GPU JPEG decoding.

Run through ``bash bench/gpu.sh``; it exits with status 1 and a message where CUDA is missing.
The compute floor is 3.64 GFLOP per 224x224 image (ResNet-18: 1.82 G multiply-adds) divided
by the GPU's dense peak for the arithmetic used. That peak is the bfloat16 or float16 tensor
core rate under mixed precision, and the TF32 rate for float32 convolutions (cuDNN's default
in torch). It comes from the vendor table below or from ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import DATA_ROOT, real_scan_sets  # noqa: E402
from models.embedder import SiameseEmbedder  # noqa: E402
from models.inference import InferenceOptions, decode_many, embed_images, mixed_precision_dtype  # noqa: E402
from models.preprocess import PreprocessConfig  # noqa: E402

FLOP_PER_IMAGE = 3.64e9
CONFIG = PreprocessConfig(image_size=224)

# Dense (no structured sparsity) peak TFLOP/s from NVIDIA's data sheets: (tensor-core
# bfloat16/float16, TF32). Matched by substring of torch.cuda.get_device_properties().name.
PEAK_TFLOPS = {
    "H200": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


@dataclass(frozen=True)
class Variant:
    name: str
    options: InferenceOptions


VARIANTS = (
    Variant("fp32", InferenceOptions(mixed_precision=False, channels_last=False)),
    Variant("fp32 + channels_last", InferenceOptions(mixed_precision=False, channels_last=True)),
    Variant("amp", InferenceOptions(mixed_precision=True, channels_last=False)),
    Variant("amp + channels_last", InferenceOptions(mixed_precision=True, channels_last=True)),
    Variant("amp + channels_last + compile", InferenceOptions(mixed_precision=True, channels_last=True, compile=True)),
)


def peak_tflops(device_name: str, mixed_precision: bool, override: float | None = None) -> float | None:
    """Return the dense peak for ``device_name``, or ``override``; None for an unknown GPU."""
    if override:
        return override
    for key, (half, tf32) in PEAK_TFLOPS.items():
        if key in device_name:
            return half if mixed_precision else tf32
    return None


def floor_fraction(images_per_second: float, peak: float | None) -> float | None:
    """Return the achieved share of the compute floor: images/s x FLOP per image / peak FLOP/s."""
    if peak is None:
        return None
    return images_per_second * FLOP_PER_IMAGE / (peak * 1e12)


def _rate(model, variant: Variant, batch: int, min_seconds: float) -> float:
    images = torch.rand(batch, 3, 224, 224).pin_memory()
    device = torch.device("cuda")
    for _ in range(3):
        embed_images(model, images, CONFIG, device, variant.options)
    torch.cuda.synchronize()

    count = 0
    started = time.perf_counter()
    while count < 5 or time.perf_counter() - started < min_seconds:
        embed_images(model, images, CONFIG, device, variant.options)
        count += 1
    return count * batch / (time.perf_counter() - started)


def throughput(model, batches: list[int], min_seconds: float, override: float | None, skip_compile: bool) -> float:
    name = torch.cuda.get_device_properties(0).name
    print("| variant | batch | images/s | share of compute floor |")
    print("| --- | --- | --- | --- |")
    best = 0.0
    for variant in VARIANTS:
        if skip_compile and variant.options.compile:
            continue
        peak = peak_tflops(name, variant.options.mixed_precision, override)
        for batch in batches:
            rate = _rate(model, variant, batch, min_seconds)
            best = max(best, rate)
            share = floor_fraction(rate, peak)
            print(f"| {variant.name} | {batch} | {rate:.0f} | {'unknown peak' if share is None else f'{share:.1%}'} |", flush=True)
    print()
    return best


def agreement(model, skip_compile: bool) -> bool:
    """Compare each variant's embeddings with float32 on the CPU; returns whether all are within tolerance."""
    torch.manual_seed(3)
    images = torch.rand(16, 3, 224, 224)
    cpu_model = SiameseEmbedder().eval()
    cpu_model.load_state_dict({key: value.cpu() for key, value in model.state_dict().items()})
    reference = embed_images(cpu_model, images, CONFIG, torch.device("cpu"))

    print("| variant | relative error vs CPU float32 | tolerance | ok |")
    print("| --- | --- | --- | --- |")
    passed = True
    for variant in VARIANTS:
        if skip_compile and variant.options.compile:
            continue
        result = embed_images(model, images, CONFIG, torch.device("cuda"), variant.options)
        error = float((result - reference).norm() / reference.norm())
        # TF32 keeps 10 mantissa bits, bfloat16 8: errors of that order add up over 18 layers.
        tolerance = 5e-2 if variant.options.mixed_precision else 5e-3
        passed &= error < tolerance
        print(f"| {variant.name} | {error:.2e} | {tolerance:.0e} | {'yes' if error < tolerance else 'NO'} |")
    print()
    return passed


def jpeg_decoding(best_rate: float, limit: int) -> None:
    """Compare CPU decoding (the production path, all CPUs) with nvJPEG, against the best GPU embedding rate."""
    import torchvision.io as tvio

    sets = real_scan_sets()
    paths = [path for paths in sets.values() for path in paths if path.suffix.lower() in (".jpg", ".jpeg")][:limit]
    if not paths:
        print(f"GPU JPEG decoding skipped: no JPEG scans under {DATA_ROOT}\n")
        return

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as executor:
        decode_many(paths[:8], CONFIG, executor)
        started = time.perf_counter()
        decode_many(paths, CONFIG, executor)
        cpu_rate = len(paths) / (time.perf_counter() - started)

    data = [tvio.read_file(str(path)) for path in paths]
    _gpu_decode(tvio, data[:8])
    torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(data), 64):
        _gpu_decode(tvio, data[start : start + 64])
    torch.cuda.synchronize()
    gpu_rate = len(paths) / (time.perf_counter() - started)

    print("| decoding | scans/s | keeps up with the best embedding rate |")
    print("| --- | --- | --- |")
    print(f"| CPU, production decode_one, {os.cpu_count()} threads | {cpu_rate:.0f} | {'yes' if cpu_rate >= best_rate else 'no'} |")
    print(f"| GPU, torchvision.io.decode_jpeg(device='cuda') + resize | {gpu_rate:.0f} | {'yes' if gpu_rate >= best_rate else 'no'} |")
    print(f"\n{len(paths)} JPEG scans from {DATA_ROOT}; best embedding rate {best_rate:.0f} images/s.")
    print("nvJPEG output differs from the production decode (no draft scaling, its own IDCT, no grey-content rule),")
    print("so it is measured here as the option for a CPU that cannot keep up, not wired into screening.\n")


def _gpu_decode(tvio, data: list[torch.Tensor]) -> torch.Tensor:
    decoded = tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device="cuda")
    resized = [
        F.interpolate(image[None].float().div_(255), size=(224, 224), mode="bilinear", antialias=True, align_corners=False)[0]
        for image in decoded
    ]
    return torch.stack(resized)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and shorter timings")
    parser.add_argument("--peak-tflops", type=float, help="dense peak TFLOP/s of this GPU for the arithmetic used, if not in the table")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    arguments = parser.parse_args()

    if not torch.cuda.is_available():
        print("bench/gpu.py: CUDA is not available (no NVIDIA GPU, or a CPU-only torch build); nothing measured", file=sys.stderr)
        return 1

    properties = torch.cuda.get_device_properties(0)
    dtype = mixed_precision_dtype(torch.device("cuda"))
    print(f"## GPU benchmark: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, {properties.multi_processor_count} SMs")
    print(f"torch {torch.__version__}, mixed precision in {dtype}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}\n")

    torch.manual_seed(0)
    model = SiameseEmbedder().eval().to("cuda")
    batches = [1, 32, 256] if arguments.quick else [1, 8, 32, 64, 128, 256]
    passed = agreement(model, arguments.no_compile)
    best = throughput(model, batches, 1.0 if arguments.quick else 3.0, arguments.peak_tflops, arguments.no_compile)
    jpeg_decoding(best, 256 if arguments.quick else 705)
    return 0 if passed else 3


if __name__ == "__main__":
    sys.exit(main())
