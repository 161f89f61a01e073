"""Per-second percentiles of a kept freshness run: tell a periodic stall from steady load.

    TICKLAKE_BENCH_WORK=/tmp/fresh .venv/bin/python -m ticklake.bench freshness --rates 10000
    .venv/bin/python -m ticklake.bench.freshness_seconds /tmp/fresh [--run 1] [--phase 0]

Reads ``phases-N.json``, ``kafka-N.json`` and ``relay-N.json`` of run ``N`` (0-based, as the
files are named) from the work directory and buckets every sample of phase ``K`` by the
second of its receipt timestamp. Prints p50 / p99 (ms) per second for the raw topic, the
job's share (live record ``CreateTime``), the live trade, the forming 1m candle and the SDK
subscriber. A stall shows as a second whose p50 jumps and a backlog that drains over the
next ones; at checkpoint intervals it points at the checkpoint (``bench/README.md``,
session 6).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ticklake.bench.stats import latency_percentiles

Samples = list[list[int]]


def buckets(samples: Samples, start_us: int, end_us: int) -> dict[int, list[int]]:
    """Latencies (µs) by whole second since ``start_us`` (receipt in [start, end))."""
    out: dict[int, list[int]] = defaultdict(list)
    for receipt, latency in samples:
        if start_us <= receipt < end_us:
            out[(receipt - start_us) // 1_000_000].append(latency)
    return out


def table(work: Path, run: int, phase: int) -> Table:
    ph = json.loads((work / f"phases-{run}.json").read_text())[phase]
    kafka = json.loads((work / f"kafka-{run}.json").read_text())
    relay = json.loads((work / f"relay-{run}.json").read_text())["relay"]
    series = {
        "raw topic": kafka["raw"]["samples"],
        "in the job": kafka["trades"]["created"],
        "live trade": kafka["trades"]["samples"],
        "forming 1m": kafka["candles"]["samples"],
        "subscriber": relay["samples"],
    }
    by_second = {name: buckets(s, ph["start"], ph["end"]) for name, s in series.items()}
    t = Table(title=f"{work}: run {run}, phase {phase} ({ph['rate']:,}/s), ms p50 / p99")
    t.add_column("second", justify="right")
    t.add_column("trades", justify="right")
    for name in series:
        t.add_column(name, justify="right")
    for second in sorted(by_second["live trade"]):
        cells = []
        for name in series:
            p = latency_percentiles(by_second[name].get(second, []))
            cells.append(f"{p['p50']:.0f} / {p['p99']:.0f}" if p["n"] else "-")
        t.add_row(str(second), str(len(by_second["live trade"][second])), *cells)
    return t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ticklake.bench.freshness_seconds")
    p.add_argument("work", type=Path, help="the TICKLAKE_BENCH_WORK directory of a run")
    p.add_argument("--run", type=int, default=1, help="0-based run index (default 1: warm)")
    p.add_argument("--phase", type=int, default=0, help="0-based phase (rate) index")
    a = p.parse_args(argv)
    Console(width=200).print(table(a.work, a.run, a.phase))


if __name__ == "__main__":
    main()
