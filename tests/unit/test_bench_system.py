"""The machine sampler of bench/system.py: hand-computed rates, and a real busy writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from ticklake.bench import freshness_seconds
from ticklake.bench.system import CORES, SystemSampler, per_second, snapshot


def _sample(t: float, **counters: float) -> dict[str, float]:
    zero = {"busy": 0, "iowait": 0, "steal": 0, "total": 0, "cpu_some": 0, "io_some": 0,
            "io_full": 0, "written": 0, "disk_ms": 0, "dirty_mib": 0}  # fmt: skip
    return {**zero, **counters, "t": t}


def test_rates_per_second_from_cumulative_counters() -> None:
    series = [
        _sample(99.5, busy=1, total=10),  # before the start: ignored
        _sample(100.0, busy=10, iowait=0, steal=0, total=100, cpu_some=0, written=0,
                disk_ms=0, dirty_mib=5),
        _sample(100.5, total=150, dirty_mib=9),
        _sample(100.9, busy=70, iowait=8, steal=4, total=180, cpu_some=360_000,
                io_some=90_000, io_full=45_000, written=9 * 2**20, disk_ms=450, dirty_mib=7),
        _sample(101.2, busy=70, total=180),  # a second with one sample: no rates
    ]  # fmt: skip
    out = per_second(series, 100.0)
    assert set(out) == {0}
    s = out[0]
    # 80 ticks of all cores in 0.9 s: 60 busy ticks are 60/80 of the machine's cores.
    assert s["busy"] == pytest.approx(60 / 80 * CORES)
    assert s["iowait"] == pytest.approx(8 / 80 * CORES)
    assert s["steal"] == pytest.approx(4 / 80 * CORES)
    assert s["cpu_some"] == pytest.approx(40.0)  # 0.36 s of 0.9 s
    assert s["io_some"] == pytest.approx(10.0)
    assert s["io_full"] == pytest.approx(5.0)
    assert s["write_mib"] == pytest.approx(10.0)  # 9 MiB in 0.9 s
    assert s["disk_busy"] == pytest.approx(50.0)  # 450 ms in 0.9 s
    assert s["dirty_mib"] == 9  # the largest seen


def _filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, kind = point, fstype
    return kind


def test_a_real_writer_shows_in_the_counters(tmp_path: Path) -> None:
    if _filesystem(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip(f"{tmp_path} is not on a block device: its writes reach no disk")
    before = snapshot()
    sampler = SystemSampler(interval=0.05)
    code = (
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
        "for _ in range(16): os.write(fd, os.urandom(2**20)); os.fsync(fd)\n"
        "t = time.process_time() + 0.5\n"
        "while time.process_time() < t: pass\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "blob")], check=True)
    time.sleep(0.2)
    sampler.stop()
    first, last = sampler.series[0], sampler.series[-1]
    assert len(sampler.series) >= 5
    # 16 MiB went to a disk under fsync, and the child spun half a second of CPU.
    assert last["written"] - first["written"] >= 16 * 2**20
    assert (last["busy"] - before["busy"]) / os.sysconf("SC_CLK_TCK") >= 0.4
    out = tmp_path / "system.json"
    sampler.save(out)
    assert json.loads(out.read_text()) == sampler.series


def _table_by_second(work: Path) -> dict[str, dict[str, str]]:
    """``freshness_seconds.table`` of run 0, phase 0, as {second: {column: cell}}."""
    console = Console(width=300, record=True)
    console.print(freshness_seconds.table(work, 0, 0))
    lines = console.export_text().splitlines()
    head = next(line for line in lines if line.startswith("┃ second"))
    header = [c.strip() for c in head.strip("┃").split("┃")]
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in lines if line[:1] == "│"]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_the_per_second_table_shows_the_machine_beside_the_latencies(tmp_path: Path) -> None:
    start = 1_000_000.0
    us = int(start * 1e6)
    (tmp_path / "phases-0.json").write_text(
        json.dumps([{"rate": 10, "start": us, "end": us + 2_000_000}])
    )
    (tmp_path / "kafka-0.json").write_text(
        json.dumps({"raw": {"samples": [[us + 100_000, 3000], [us + 1_100_000, 5000]]}})
    )
    relay = [[us + 200_000, 11_000], [us + 1_200_000, 480_000]]
    (tmp_path / "relay-0.json").write_text(json.dumps({"relay": {"samples": relay}}))
    system = [
        _sample(start + 0.05, busy=0, total=0),
        _sample(start + 0.95, busy=90, total=100, written=2**20 * 9),
        _sample(start + 1.05, busy=90, total=100, written=2**20 * 9),
        _sample(start + 1.95, busy=180, total=200, written=2**20 * 9),
    ]
    (tmp_path / "system-0.json").write_text(json.dumps(system))
    # The job: 0.25 cores in second 0, 1.5 in second 1.
    cpu = {"job": [[start + 0.0, 10.0, 1], [start + 1.0, 10.25, 1], [start + 2.0, 11.75, 1]]}
    (tmp_path / "cpu-0.json").write_text(json.dumps(cpu))
    by_second = _table_by_second(tmp_path)
    assert by_second["0"]["subscriber"] == "11 / 11"
    assert by_second["1"]["subscriber"] == "480 / 480"
    assert by_second["0"]["raw topic"] == "3 / 3"
    assert by_second["0"]["busy/steal"] == f"{0.9 * CORES:.2f}/0.00"
    assert by_second["0"]["disk MiB/s"] == "10"
    assert by_second["0"]["job"] == "0.25"
    assert by_second["1"]["job"] == "1.50"


def test_the_per_second_table_shows_the_producers_requests(tmp_path: Path) -> None:
    """``phases-N.stats.jsonl`` (librdkafka's statistics): requests/s, in flight, rtt p99."""
    start = 1_000_000.0
    us = int(start * 1e6)
    (tmp_path / "phases-0.json").write_text(
        json.dumps([{"rate": 10, "start": us, "end": us + 3_000_000}])
    )
    (tmp_path / "kafka-0.json").write_text(json.dumps({"raw": {"samples": []}}))
    relay = [[us + s * 1_000_000 + 500_000, 9000] for s in range(3)]
    (tmp_path / "relay-0.json").write_text(json.dumps({"relay": {"samples": relay}}))

    def line(t: int, tx: int, inflight: int, rtt_p99_us: int) -> str:
        broker = {"tx": tx, "waitresp_cnt": inflight, "outbuf_cnt": 0,
                  "rtt": {"p50": 1, "p99": rtt_p99_us, "max": rtt_p99_us},
                  "int_latency": {"p50": 1, "p99": 1, "max": 1}}  # fmt: skip
        return json.dumps({"time": t, "msg_cnt": 0, "brokers": {"b:9092": broker}})

    stats = [line(1_000_000, 100, 0, 0), line(1_000_001, 1300, 3, 8000),
             line(1_000_002, 1900, 5, 250_000)]  # fmt: skip
    (tmp_path / "phases-0.stats.jsonl").write_text("\n".join(stats) + "\n")
    by_second = _table_by_second(tmp_path)
    assert (by_second["0"]["prod req/s"], by_second["0"]["in flight"]) == ("1200", "3")
    assert (by_second["1"]["prod req/s"], by_second["1"]["rtt p99"]) == ("600", "250")
    assert by_second["2"]["prod req/s"] == "-"
