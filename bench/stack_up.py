"""Benchmark: how fast the local stack comes up, and what it costs at idle.

    bin/ticklake bench stack [--runs 3] [--idle-seconds 30]

Runs in its own state directory on free ports (sharing the download cache), so it never
touches a running stack. Per run: ``up`` from stopped (warm caches), ``up`` when already
running (the idempotent path), then the RSS of each process after an idle period, then
``down``. Prints median, min and max; asserts nothing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ticklake.home import cache_dir, state_home
from ticklake.stack.manager import Stack
from ticklake.stack.process import free_port

PORT_VARS = (
    "TICKLAKE_STACK__KAFKA__PORT",
    "TICKLAKE_STACK__KAFKA__CONTROLLER_PORT",
    "TICKLAKE_STACK__MINIO__PORT",
    "TICKLAKE_STACK__MINIO__CONSOLE_PORT",
    "TICKLAKE_STACK__POSTGRES__PORT",
    "TICKLAKE_STACK__FLINK__REST_PORT",
    "TICKLAKE_STACK__FLINK__JOBMANAGER_RPC_PORT",
)


@contextmanager
def scratch_stack() -> Iterator[Path]:
    """A throwaway state directory on free ports, sharing the download cache."""
    base = state_home()
    home = base / "bench-stacks" / uuid.uuid4().hex[:8]
    home.mkdir(parents=True)
    saved = dict(os.environ)
    os.environ["TICKLAKE_CACHE_DIR"] = str(cache_dir())
    os.environ.setdefault("TICKLAKE_FLINK_PYTHON", str(base / "venvs/flink/bin/python"))
    os.environ["TICKLAKE_HOME"] = str(home)
    for var in PORT_VARS:
        os.environ[var] = str(free_port())
    try:
        yield home
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


def run(runs: int = 3, idle_seconds: float = 30.0, flink_cluster: bool = True) -> Table:
    console = Console(stderr=True)
    cold_up: list[float] = []
    warm_up: list[float] = []
    rss: dict[str, list[float]] = {}
    with scratch_stack():
        stack = Stack()
        stack.setup(flink_cluster=flink_cluster)
        for i in range(runs):
            t0 = time.monotonic()
            stack.up(flink_cluster=flink_cluster)
            cold_up.append(time.monotonic() - t0)
            t0 = time.monotonic()
            stack.up(flink_cluster=flink_cluster)
            warm_up.append(time.monotonic() - t0)
            console.print(f"run {i + 1}/{runs}: up {cold_up[-1]:.1f}s; idling {idle_seconds:.0f}s")
            time.sleep(idle_seconds)
            for row in stack.status():
                if row.pids:
                    rss.setdefault(row.name, []).append(row.rss_mib)
            stack.down()
    table = Table(title=f"local stack: {runs} runs, RSS after {idle_seconds:.0f}s idle")
    table.add_column("measure")
    table.add_column("median (min, max)", justify="right")
    table.add_row("`up` from stopped, caches warm (s)", summary(cold_up))
    table.add_row("`up` when already running (s)", summary(warm_up))
    for name, values in rss.items():
        table.add_row(f"RSS {name} (MiB)", summary(values))
    totals = [sum(v[i] for v in rss.values()) for i in range(runs)]
    table.add_row("RSS total (MiB)", summary(totals))
    return table
