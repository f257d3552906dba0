"""Measure CargoScan's batch throughput, latency, exemplar search, database writes and memory.

Run from the repository root with the project's virtual environment:

    .venv/bin/python bench/throughput.py            # full run, about 15 minutes on 2 idle cores
    .venv/bin/python bench/throughput.py --quick    # smaller inputs, a few minutes
    .venv/bin/python bench/throughput.py --sections forward,exemplars

It prints Markdown tables, each with the load average before and after it, because other
work on the machine distorts CPU figures. Sections that need the real scans in
../shared/data/xray are skipped when that folder is absent. The Celery sections need Redis
on 127.0.0.1:6379 and use its database 13 with a private queue.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA_ROOT, REDIS_URL, format_load, load_average, postgres_available, real_scan_sets, redis_available, section  # noqa: E402

# The Celery app reads its broker when first imported, and in-process code must not open a
# metrics port. Both are set before any worker module is imported.
os.environ["CARGOSCAN_BROKER_URL"] = REDIS_URL
os.environ["CARGOSCAN_METRICS_PORT"] = "0"

import torch  # noqa: E402

from models.inference import default_torch_threads  # noqa: E402

SECTIONS = ("forward", "decode", "pipeline", "celery", "exemplars", "database", "memory")
GOALS = {"in-process": 0.90, "celery": 0.85}


def main() -> int:
    arguments = _parse_arguments()
    selected = [name.strip() for name in arguments.sections.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(SECTIONS))
    if unknown:
        print(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2

    torch.set_num_threads(default_torch_threads(1))
    quick = arguments.quick
    output: list[str] = [_header(quick)]
    print(output[0], flush=True)
    ratios: dict[str, float] = {}
    forward: dict[int, float] = {}

    with tempfile.TemporaryDirectory(prefix="cargoscan-bench-") as temporary:
        workdir = Path(temporary)
        for name in selected:
            rendered = _run_section(name, quick, workdir, ratios, forward, arguments)
            for text in rendered:
                output.append(text)
                print(text, flush=True)

    summary = _summary(ratios)
    output.append(summary)
    print(summary, flush=True)
    if arguments.output:
        Path(arguments.output).write_text("\n".join(output))
    return 0


def _parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs in every section (a few minutes in all)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated sections to run; default: {','.join(SECTIONS)}")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the pipeline and Celery sections (default 32)")
    parser.add_argument(
        "--scans-per-set", type=int, help="real scans per data set (sixray, cargo) in the pipeline and Celery sections; default 256, 48 with --quick"
    )
    parser.add_argument("--output", help="also write the Markdown tables to this file")
    return parser.parse_args()


def _header(quick: bool) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "unknown")
    return "\n".join([
        f"## CargoScan benchmark{' (--quick)' if quick else ''}",
        "",
        f"- started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, commit {commit}",
        f"- {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads in this process",
        f"- load average (1/5/15 min) at start: {format_load(load_average())}",
        f"- real scans: {'found at ' + str(DATA_ROOT) if DATA_ROOT.is_dir() else 'not found; pipeline, decode and Celery sections skipped'}",
        "",
    ])


def _run_section(name: str, quick: bool, workdir: Path, ratios: dict, forward: dict, arguments) -> list[str]:
    batch_size = arguments.batch_size
    min_seconds = 1.5 if quick else 4.0

    if name == "forward":
        from bench import forward_bench

        with section("Bare forward pass, random 224x224 tensors", ["batch", "images/s", "ms/batch"]) as table:
            forward.update(forward_bench.run(table, [1, 8, 32, 64], min_seconds))
        return [table.render()]

    if name == "exemplars":
        from bench import exemplar_bench

        counts = [1_000, 10_000, 100_000] + ([] if quick else [1_000_000])
        columns = ["data", "exemplars", "exact ms/batch", "approx ms/batch", "speed-up", "index build s", "probes/lists", "recall@1"]
        with section("Exemplar search, batches of 64 queries, 512-d", columns) as table:
            exemplar_bench.run(table, counts, [10_000] if quick else [10_000, 100_000], repeats=3)
        return [table.render()]

    if name == "database":
        from bench import database_bench

        with section("Result writes, one transaction per batch", ["database", "rows/batch", "rows/s", "ms/batch"]) as table:
            database_bench.run(table, workdir, [32, 256], rows=1280 if quick else 6400)
        return [table.render()]

    if name == "memory":
        if not redis_available():
            return ["### Worker memory\n\nskipped: Redis is not running on 127.0.0.1:6379\n"]
        from bench import memory_bench

        scans = 2_000 if quick else 10_000
        columns = ["scans", "seconds", "RSS start MiB", "RSS after warm-up MiB", "RSS end MiB", "RSS peak MiB", "growth MiB"]
        with section(f"Worker memory over {scans} scans", columns) as table:
            memory_bench.run(table, workdir, scans, timeout_s=600)
        return [table.render()]

    scan_sets = real_scan_sets(limit=arguments.scans_per_set or (48 if quick else 256))
    if not scan_sets:
        return [f"### {name}\n\nskipped: real scans not found at {DATA_ROOT}\n"]

    if name == "decode":
        return _decode_sections(scan_sets, quick, forward, min_seconds)

    if name == "pipeline":
        from bench import inprocess_bench

        columns = ["scans", "prefetch", "count", "images/s", "bare fwd images/s", "ratio", "fwd+score in pipeline images/s", "write share", "failed"]
        with section(f"In-process pipeline (cargoscan screen), batch {batch_size}", columns) as table:
            ratios.update({f"in-process, {key}": value for key, value in inprocess_bench.run(table, workdir, scan_sets, batch_size, min_seconds).items()})
        return [table.render()]

    if name == "celery":
        if not redis_available():
            return ["### Celery\n\nskipped: Redis is not running on 127.0.0.1:6379\n"]
        from bench import celery_bench

        paths = [path for paths in scan_sets.values() for path in paths]
        kind = "postgresql" if postgres_available() else "sqlite"
        throughput_columns = [
            "workers", "scans", "images/s", "bare fwd images/s", "ratio", "batches", "full batches", "in batches", "decode",
            "inference", "write",
        ]
        latency_columns = ["load", "scans", "p50 s", "p99 s", "max s", "bound s"]
        with section(f"Celery through Redis, batch {batch_size}", throughput_columns) as throughput:
            with section("End-to-end latency through Celery", latency_columns) as latency:
                ratios.update(
                    celery_bench.run(
                        throughput, latency, workdir, paths, kind, batch_size, delay_ms=200,
                        lone_scans=8 if quick else 20, min_seconds=min_seconds,
                    )
                )
        return [throughput.render(), latency.render()]

    raise AssertionError(name)


def _decode_sections(scan_sets, quick: bool, forward: dict, min_seconds: float) -> list[str]:
    from bench import decode_bench
    from bench.forward_bench import forward_images_per_second

    sample = {name: paths[: 16 if quick else 32] for name, paths in scan_sets.items()}
    columns = [
        "scans", "count", "full decode ms", "draft 2x ms", "draft 1x ms", "grey check ms", "reduced at 2x", "reduced at 1x",
        "forward ms/image", "ceiling 2x", "ceiling 1x",
    ]
    with section("CPU cost per scan on one thread, 224x224 target", columns) as costs:
        decode_bench.run_costs(costs, sample)

    mixed = [path for paths in sample.values() for path in paths]
    forward_alone = forward.get(32) or forward_images_per_second(32, min_seconds)
    with section("Threads and the GIL: decoding and a concurrent forward pass", ["work", "rate/s", "relative"]) as threads:
        decode_bench.run_threads(threads, mixed, forward_alone, min_seconds)
    return [costs.render(), threads.render()]


def _summary(ratios: dict[str, float]) -> str:
    lines = ["### Ratios against the goals", "", "| path | ratio to bare forward | goal | met |", "| --- | --- | --- | --- |"]
    for key, ratio in ratios.items():
        goal = GOALS["celery"] if key.startswith("celery") else GOALS["in-process"]
        lines.append(f"| {key} | {ratio:.2f} | >= {goal:.2f} | {'yes' if ratio >= goal else 'no'} |")
    lines.append("")
    lines.append(f"load average at the end: {format_load(load_average())}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
