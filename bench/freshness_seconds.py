"""Per-second percentiles of a kept freshness run: tell a periodic stall from steady load.

    TICKLAKE_BENCH_WORK=/tmp/fresh .venv/bin/python -m ticklake.bench freshness --rates 10000
    .venv/bin/python -m ticklake.bench.freshness_seconds /tmp/fresh [--run 1] [--phase 0]

Reads ``phases-N.json``, ``kafka-N.json`` and ``relay-N.json`` of run ``N`` (0-based, as the
files are named) from the work directory and buckets every sample of phase ``K`` by the
second of its receipt timestamp. Prints p50 / p99 (ms) per second for the raw topic, the
job's share (live record ``CreateTime``), the live trade, the forming 1m candle and the SDK
subscriber. When the run kept ``system-N.json`` and ``cpu-N.json`` (``bench freshness``
writes them with ``TICKLAKE_BENCH_WORK``), each second also shows the machine
(``bench/system.py``: cores busy and stolen, CPU and I/O pressure, disk writes, dirty pages)
and the cores of the broker, the job, MinIO, PostgreSQL and the bench's producer. With
``--producer-config statistics.interval.ms=1000``, also the producer's requests per second,
requests in flight and round-trip p99 (librdkafka's statistics).

A stall shows as a second whose p50 jumps and a backlog that drains over the next ones; at
checkpoint intervals it points at the checkpoint (``bench/README.md``, session 6).
"""

from __future__ import annotations

import argparse
import itertools
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


GROUPS = ("kafka", "job", "minio", "postgres", "producer")


def _machine(work: Path, run: int, start: float) -> dict[int, dict[str, str]]:
    """Per-second machine columns from ``system-N.json`` and ``cpu-N.json``, if kept."""
    from ticklake.bench.system import per_second

    sys_file, cpu_file = work / f"system-{run}.json", work / f"cpu-{run}.json"
    if not sys_file.exists():
        return {}
    out: dict[int, dict[str, str]] = {}
    for sec, m in per_second(json.loads(sys_file.read_text()), start).items():
        out[sec] = {
            "busy/steal": f"{m['busy']:.2f}/{m['steal']:.2f}",
            "psi cpu": f"{m['cpu_some']:.0f}%",
            "psi io some/full": f"{m['io_some']:.0f}/{m['io_full']:.0f}%",
            "disk MiB/s": f"{m['write_mib']:.0f}",
            "dirty": f"{m['dirty_mib']:.0f}",
        }
    if cpu_file.exists():
        groups = json.loads(cpu_file.read_text())
        for name in GROUPS:
            series = groups.get(name, [])
            for sec, cells in out.items():
                a, b = start + sec, start + sec + 1
                inside = [(t, c) for t, c, _ in series if a <= t <= b]
                if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
                    (t0, c0), (t1, c1) = inside[0], inside[-1]
                    cells[name] = f"{(c1 - c0) / (t1 - t0):.2f}"
                else:
                    cells[name] = "-"
    return out


def _producer_stats(work: Path, run: int, start: float) -> dict[int, dict[str, str]]:
    """Per-second columns from the producer's ``phases-N.stats.jsonl``, if kept.

    The bench's trade producer writes it when run with ``--producer-config
    statistics.interval.ms=1000``: produce requests per second (all brokers), requests
    awaiting a response at the sample, and the interval's round-trip p99 (ms, worst broker).
    """
    path = work / f"phases-{run}.stats.jsonl"
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out: dict[int, dict[str, str]] = {}
    for before, now in itertools.pairwise(lines):
        if now["time"] <= before["time"]:
            continue
        sent = sum(b["tx"] for b in now["brokers"].values()) - sum(
            b["tx"] for b in before["brokers"].values()
        )
        second = int(now["time"] - 1 - start)  # the interval's second (whole-second clock)
        rtt_p99 = max((b["rtt"]["p99"] for b in now["brokers"].values()), default=0)
        out[second] = {
            "prod req/s": f"{sent / (now['time'] - before['time']):.0f}",
            "in flight": str(sum(b["waitresp_cnt"] for b in now["brokers"].values())),
            "rtt p99": f"{rtt_p99 / 1000:.0f}",
        }
    return out


def table(work: Path, run: int, phase: int) -> Table:
    ph = json.loads((work / f"phases-{run}.json").read_text())[phase]
    kafka = json.loads((work / f"kafka-{run}.json").read_text())
    relay = json.loads((work / f"relay-{run}.json").read_text())["relay"]
    none: dict[str, Samples] = {"samples": [], "created": []}  # the relay path has no
    series = {  # Kafka live topics, so no (a0), (a), (b)
        "raw topic": kafka["raw"]["samples"],
        "in the job": kafka.get("trades", none)["created"],
        "live trade": kafka.get("trades", none)["samples"],
        "forming 1m": kafka.get("candles", none)["samples"],
        "subscriber": relay["samples"],
    }
    by_second = {name: buckets(s, ph["start"], ph["end"]) for name, s in series.items()}
    machine = _machine(work, run, ph["start"] / 1e6)
    for second, stats in _producer_stats(work, run, ph["start"] / 1e6).items():
        machine.setdefault(second, {}).update(stats)
    t = Table(title=f"{work}: run {run}, phase {phase} ({ph['rate']:,}/s), ms p50 / p99")
    t.add_column("second", justify="right")
    t.add_column("trades", justify="right")
    for name in series:
        t.add_column(name, justify="right")
    extra = list(dict.fromkeys(name for named in machine.values() for name in named))
    for name in extra:
        t.add_column(name, justify="right")
    for second in sorted(by_second["live trade"] or by_second["subscriber"]):
        cells = []
        for name in series:
            p = latency_percentiles(by_second[name].get(second, []))
            cells.append(f"{p['p50']:.0f} / {p['p99']:.0f}" if p["n"] else "-")
        cells += [machine.get(second, {}).get(name, "-") for name in extra]
        n = len(by_second["live trade"].get(second, by_second["subscriber"].get(second, [])))
        t.add_row(str(second), str(n), *cells)
    return t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ticklake.bench.freshness_seconds")
    p.add_argument("work", type=Path, help="the TICKLAKE_BENCH_WORK directory of a run")
    p.add_argument("--run", type=int, default=1, help="0-based run index (default 1: warm)")
    p.add_argument("--phase", type=int, default=0, help="0-based phase (rate) index")
    a = p.parse_args(argv)
    Console(width=300).print(table(a.work, a.run, a.phase))


if __name__ == "__main__":
    main()
