"""Latency percentiles, the same definition in every benchmark's table."""

from __future__ import annotations

import statistics


def latency_percentiles(values_us: list[int]) -> dict[str, float]:
    """n, p50 (median), p99 and max in ms of latencies in µs; NaN when there are none."""
    if not values_us:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ms = sorted(v / 1000 for v in values_us)
    return {
        "n": len(ms),
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
    }
