"""Benchmarks: measured and printed, never asserted. See bench/README.md."""
