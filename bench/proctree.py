"""CPU and memory of process trees, read from ``/proc`` (Linux), sampled in one thread.

A :class:`TreeSampler` follows named groups of processes, each group one or more root
pids and all their descendants (a JVM's threads are counted through its process, a
process' children through the tree). Cumulative CPU of a process that exits keeps its
last sampled value, so a group's CPU never goes down.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, utime + stime in ticks, rss in pages) of every process."""
    out: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split()
        out[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[21]))
    return out


def _tree(table: Mapping[int, tuple[int, int, int]], roots: Iterable[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo, seen = [], list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in table and pid not in seen:
            seen.add(pid)
            tree.append(pid)
            todo.extend(children.get(pid, []))
    return tree


@dataclass
class _Group:
    roots: list[int]
    cpu_ticks: dict[int, int] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    #: (wall clock, cumulative CPU seconds, RSS MiB) per sample.
    series: list[tuple[float, float, float]] = field(default_factory=list)


class TreeSampler:
    """Samples groups of process trees every ``interval`` seconds until :meth:`stop`.

    ``TreeSampler(pid)`` follows one tree (the group ``"main"``); ``TreeSampler(groups=
    {"job": [pid], "broker": [pid1, pid2]})`` several. Add groups later with :meth:`add`.
    """

    def __init__(
        self,
        root: int | None = None,
        *,
        groups: Mapping[str, Iterable[int]] | None = None,
        interval: float = 0.25,
    ) -> None:
        self.interval = interval
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()
        if root is not None:
            self.add("main", [root])
        for name, roots in (groups or {}).items():
            self.add(name, roots)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, name: str, roots: Iterable[int]) -> None:
        with self._lock:
            self._groups.setdefault(name, _Group([])).roots.extend(roots)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        table = proc_table()
        now = time.time()
        with self._lock:
            for group in self._groups.values():
                rss = 0
                for pid in _tree(table, group.roots):
                    _, ticks, pages = table[pid]
                    group.cpu_ticks[pid] = max(ticks, group.cpu_ticks.get(pid, 0))
                    rss += pages
                rss_mib = rss * PAGE_KIB / 1024
                group.peak_rss_mib = max(group.peak_rss_mib, rss_mib)
                cpu = sum(group.cpu_ticks.values()) / TICK
                group.series.append((now, cpu, rss_mib))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def save(self, path: Path) -> None:
        """Write every group's series as JSON: ``{group: [[wall, cpu_s, rss_mib], ...]}``."""
        with self._lock:
            data = {name: g.series for name, g in self._groups.items()}
            path.write_text(json.dumps(data))

    @property
    def groups(self) -> list[str]:
        return list(self._groups)

    def cpu_total(self, group: str = "main") -> float:
        """Cumulative CPU seconds of a group (its processes alive or not)."""
        return sum(self._groups[group].cpu_ticks.values()) / TICK

    def peak_rss_mib(self, group: str = "main") -> float:
        return self._groups[group].peak_rss_mib

    def cpu_at(self, t: float, group: str = "main") -> float:
        """A group's CPU seconds at wall-clock ``t`` (linear between samples)."""
        prev = (0.0, 0.0)
        for ts, cpu, _ in self._groups[group].series:
            if ts >= t:
                if ts == prev[0]:
                    return cpu
                return prev[1] + (cpu - prev[1]) * (t - prev[0]) / (ts - prev[0])
            prev = (ts, cpu)
        return prev[1]

    def cores(self, start: float, end: float) -> dict[str, float]:
        """Average cores each group used between two wall-clock instants."""
        span = max(end - start, 1e-9)
        return {g: (self.cpu_at(end, g) - self.cpu_at(start, g)) / span for g in self._groups}
