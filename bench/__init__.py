"""Benchmarks of CargoScan: run ``python bench/throughput.py --help``."""
