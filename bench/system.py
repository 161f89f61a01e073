"""Machine-wide pressure, sampled in one thread: where a latency stall's time went.

A per-second latency table says *when* a stall happens; this says what the machine was
doing then. Every ``interval`` seconds a :class:`SystemSampler` reads, from ``/proc``
(Linux):

- ``/proc/stat``: CPU ticks busy, iowait and steal (the hypervisor took the core);
- ``/proc/pressure/{cpu,io}`` (PSI): microseconds in which some runnable task waited for a
  core, and in which some / all tasks waited for I/O;
- ``/proc/diskstats``: bytes written and the time the disk was busy, all disks summed;
- ``/proc/meminfo``: dirty and writeback page cache (a writeback storm shows here).

:func:`per_second` turns the cumulative counters into rates per whole
second since a start instant, the same buckets as ``freshness_seconds``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

CORES = os.cpu_count() or 1
SECTOR = 512


def _cpu() -> tuple[int, int, int, int]:
    """Cumulative ticks: (busy, iowait, steal, total) over all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, iowait, steal, busy + idle + iowait + steal


def _psi(kind: str) -> tuple[int, int]:
    """Cumulative PSI stall µs (some, full) of ``cpu`` or ``io``; zeros without PSI."""
    try:
        with open(f"/proc/pressure/{kind}") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0, 0
    totals = [int(line.rsplit("total=", 1)[1]) for line in lines]
    return totals[0], (totals[1] if len(totals) > 1 else 0)


def _disks() -> tuple[int, int]:
    """Cumulative (bytes written, ms busy) of the whole disks (not their partitions)."""
    written = busy = 0
    with open("/proc/diskstats") as f:
        for line in f:
            parts = line.split()
            name = parts[2]
            if not os.path.exists(f"/sys/block/{name}") or name.startswith(("loop", "ram")):
                continue
            written += int(parts[9]) * SECTOR
            busy += int(parts[12])
    return written, busy


def _dirty_mib() -> float:
    """Dirty + writeback page cache, MiB."""
    kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(("Dirty:", "Writeback:")):
                kib += int(line.split()[1])
    return kib / 1024


def snapshot() -> dict[str, float]:
    busy, iowait, steal, total = _cpu()
    cpu_some, _ = _psi("cpu")
    io_some, io_full = _psi("io")
    written, disk_ms = _disks()
    return {
        "t": time.time(), "busy": busy, "iowait": iowait, "steal": steal, "total": total,
        "cpu_some": cpu_some, "io_some": io_some, "io_full": io_full,
        "written": written, "disk_ms": disk_ms, "dirty_mib": _dirty_mib(),
    }  # fmt: skip


class SystemSampler:
    """Samples :func:`snapshot` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.series: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="system-sampler")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.series.append(snapshot())
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.series))


def per_second(series: list[dict[str, Any]], start: float) -> dict[int, dict[str, float]]:
    """Rates per whole second since wall-clock ``start`` (seconds), from cumulative samples.

    Each second's figures come from the first and last samples inside it: CPU busy, iowait
    and steal in cores; PSI in percent of the time (``cpu_some``: some task waited for a
    core; ``io_some`` / ``io_full``: some / all tasks waited for I/O); disk writes in MiB/s
    and disk busy in percent; ``dirty_mib`` the largest dirty + writeback seen.
    """
    seconds: dict[int, list[dict[str, Any]]] = {}
    for s in series:
        if s["t"] >= start:
            seconds.setdefault(int(s["t"] - start), []).append(s)
    out: dict[int, dict[str, float]] = {}
    for sec, ss in seconds.items():
        a, b = ss[0], ss[-1]
        dt = b["t"] - a["t"]
        ticks = b["total"] - a["total"]
        if dt <= 0 or ticks <= 0:
            continue
        out[sec] = {
            "busy": (b["busy"] - a["busy"]) / ticks * CORES,
            "iowait": (b["iowait"] - a["iowait"]) / ticks * CORES,
            "steal": (b["steal"] - a["steal"]) / ticks * CORES,
            "cpu_some": (b["cpu_some"] - a["cpu_some"]) / dt / 1e4,
            "io_some": (b["io_some"] - a["io_some"]) / dt / 1e4,
            "io_full": (b["io_full"] - a["io_full"]) / dt / 1e4,
            "write_mib": (b["written"] - a["written"]) / dt / 2**20,
            "disk_busy": (b["disk_ms"] - a["disk_ms"]) / dt / 10,
            "dirty_mib": max(s["dirty_mib"] for s in ss),
        }
    return out
