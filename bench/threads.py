"""Per thread of a running process: time running vs time runnable but waiting for a core.

``python -m ticklake.bench.threads --match TEXT [--seconds 60] [--interval 1] [--out FILE]``
finds the newest process whose command line contains TEXT (e.g. ``pyflink`` for a job's
MiniCluster JVM, ``kafka.Kafka`` for the broker) and samples Linux's
``/proc/<pid>/task/<tid>/schedstat`` of each of its threads every interval. That file counts
the nanoseconds a thread ran and the nanoseconds it was runnable in the run queue without a
CPU. A thread that waits on a lock (Python's GIL, a monitor) or for input sleeps, which is
neither. So the two columns tell "needs a core" apart from "waits for something else".

Threads are grouped by name with trailing numbers dropped (``GC Thread#0`` and ``GC
Thread#1`` are one row); ``comm`` holds at most 15 characters. With ``--out``, every sample
is also written as ``ts tid name run_ms runq_ms`` lines, to line up with other per-second
figures (``bench risk`` keeps its observations with ``TICKLAKE_BENCH_WORK``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

_TRAILING_NUMBER = re.compile(r"[-_#\s]*\d+$")


@dataclass(frozen=True)
class ThreadTimes:
    name: str
    run_ns: int
    runq_ns: int


def group_name(comm: str) -> str:
    """``GC Thread#1`` -> ``GC Thread``; names without a number stay as they are."""
    return _TRAILING_NUMBER.sub("", comm.strip()) or comm.strip()


def find_process(match: str) -> int | None:
    """The newest process (highest start time) whose command line contains ``match``."""
    best: tuple[int, int] | None = None
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            start = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            continue
        mine = match in cmd and "ticklake.bench.threads" not in cmd
        if mine and (best is None or start > best[0]):
            best = (start, int(entry.name))
    return None if best is None else best[1]


def read_threads(pid: int) -> dict[int, ThreadTimes]:
    """Every live thread of ``pid``: its name and its schedstat counters (ns)."""
    out: dict[int, ThreadTimes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that just ended
            name = (task / "comm").read_text().strip()
            run, runq, _ = (task / "schedstat").read_text().split()
            out[int(task.name)] = ThreadTimes(name, int(run), int(runq))
    return out


def sample(
    pid: int, seconds: float, interval: float, out: Path | None = None
) -> dict[str, tuple[float, float]]:
    """Sample for ``seconds``; per thread group, (run, runq) in ms per second of wall time."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    prev = read_threads(pid)
    start = time.monotonic()
    lines = out.open("w") if out else None
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            time.sleep(min(interval, seconds - elapsed))
            now = time.time()
            try:
                cur = read_threads(pid)
            except OSError:  # the process ended
                break
            for tid, t in cur.items():
                before = prev.get(tid)
                if before is None or t.run_ns < before.run_ns:  # new (or reused) thread id
                    continue
                run, runq = t.run_ns - before.run_ns, t.runq_ns - before.runq_ns
                totals[group_name(t.name)][0] += run / 1e6
                totals[group_name(t.name)][1] += runq / 1e6
                if lines and (run or runq):
                    name = t.name.replace(" ", "_")
                    lines.write(f"{now:.3f} {tid} {name} {run / 1e6:.1f} {runq / 1e6:.1f}\n")
            prev = cur
    finally:
        if lines:
            lines.close()
    wall = max(time.monotonic() - start, 1e-9)
    return {name: (run / wall, runq / wall) for name, (run, runq) in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ticklake.bench.threads",
        description="Per thread of a process: ms running and ms waiting for a core, per second.",
    )
    parser.add_argument("--match", help="text in the process's command line")
    parser.add_argument("--pid", type=int, help="sample this process instead of --match")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=15, help="thread groups to print")
    parser.add_argument("--out", type=Path, help="also write every sample to this file")
    args = parser.parse_args(argv)
    if not args.pid and not args.match:
        parser.error("give --match TEXT (or --pid N)")
    pid = args.pid or find_process(args.match)
    if pid is None or not Path(f"/proc/{pid}").exists():
        what = f"pid {args.pid}" if args.pid else f"no process matching {args.match!r}"
        parser.exit(2, f"error: {what} is not running; start it first\n")
    rows = sample(pid, args.seconds, args.interval, args.out)
    print(f"pid {pid}, {args.seconds:g} s: ms per second of wall time")
    print(f"{'thread group':40s} {'running':>8s} {'waiting for a core':>19s}")
    for name, (run, runq) in sorted(rows.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{name[:40]:40s} {run:8.1f} {runq:19.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
