"""The embedded MiniCluster's bulk threads at a lower OS priority (Linux ``nice``).

On one machine the job's threads share the cores with the broker, the relay and each other.
At every checkpoint the heap snapshot (``AsyncOperations``) and the Iceberg writers' file
close and upload burst for up to a second, and the writers encode Parquet all along: on 2
cores that work takes CPU the live path (source, dedup, windows, live sinks) needs. It is
throughput work: a few milliseconds' wait goes unnoticed there. Linux keeps a nice value per
thread (``setpriority(PRIO_PROCESS, tid, n)``), and raising one's own needs no privilege.
Under contention a thread at nice 10 gets about a tenth of the share of a nice-0 thread; a
core nobody else wants is still all its own, so the bulk work keeps up as long as the machine
has the cores for the whole job on average.

Measured at 10,000 trades/s (``bench/README.md``, freshness, session 17): nice 10 made no
difference beyond the run-to-run spread, so the jobs' ``--background-nice`` is 0 (off) by
default; the option stays for machines more contended than that one.

A daemon thread of the job's driver looks at the JVM's threads every second and lowers the
ones named in :data:`BULK_THREADS` (thread pools start threads late, and a checkpoint's
snapshot threads appear with the first checkpoint). It only ever raises a nice value. Only
for the embedded MiniCluster, whose JVM is the driver's own; on a cluster the TaskManagers'
cores are theirs alone, and a deployment sizes them instead.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: Thread name prefixes (Linux keeps the first 15 bytes of a name) of the bulk work: the
#: Iceberg writer and committer tasks, Iceberg's worker pool, the state backends' snapshot
#: and changelog upload threads.
BULK_THREADS = (
    "IcebergStreamWr",
    "IcebergFilesCom",
    "iceberg-worker-",
    "AsyncOperations",
    "periodic-materi",
    "ChangelogUpload",
)


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> name of the process ``pid`` (threads that end meanwhile are skipped)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            out[int(tid)] = Path(f"/proc/{pid}/task/{tid}/comm").read_text().rstrip("\n")
        except OSError:
            continue
    return out


def lower_bulk_threads(pid: int, nice: int, names: tuple[str, ...] = BULK_THREADS) -> list[str]:
    """Give the threads of ``pid`` whose name starts with one of ``names`` the nice value
    ``nice``, unless theirs is already as high; returns the names of the threads changed."""
    changed = []
    for tid, name in thread_names(pid).items():
        if not name.startswith(names):
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed.append(name)
        except OSError:  # the thread ended
            continue
    return changed


class BulkThreadPriority:
    """Keeps the bulk threads of process ``pid`` at ``nice``, checking every ``interval_s``."""

    def __init__(self, pid: int, nice: int, interval_s: float = 1.0) -> None:
        self.pid = pid
        self.nice = nice
        self.interval_s = interval_s
        self.lowered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bulk-thread-nice", daemon=True)

    def start(self) -> BulkThreadPriority:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        seen: set[str] = set()
        while not self._stop.is_set() and Path(f"/proc/{self.pid}").exists():
            changed = lower_bulk_threads(self.pid, self.nice)
            self.lowered += len(changed)
            for name in sorted(set(changed) - seen):
                log.info("thread %s of the MiniCluster's JVM now at nice %d", name, self.nice)
                seen.add(name)
            self._stop.wait(self.interval_s)


def lower_embedded_bulk_threads(nice: int) -> BulkThreadPriority | None:
    """Start keeping the bulk threads of this driver's JVM (the embedded MiniCluster, started
    by PyFlink's gateway) at ``nice``; ``None`` when ``nice`` is 0 or not on Linux."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return None
    from pyflink.java_gateway import get_gateway

    pid = int(get_gateway().jvm.java.lang.ProcessHandle.current().pid())
    return BulkThreadPriority(pid, nice).start()
