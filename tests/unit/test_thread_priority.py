"""Bulk threads of a real process get a lower priority; the others keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ticklake.jobs.thread_priority import BulkThreadPriority, lower_bulk_threads, thread_names

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux threads")

# A process whose threads name themselves as the JVM's do (Linux keeps 15 bytes of a name);
# each line on stdin starts one more thread with that name.
CHILD = """
import sys, threading, time
def named(name):
    tid = threading.get_native_id()
    with open(f"/proc/self/task/{tid}/comm", "w") as f:
        f.write(name)
    time.sleep(600)
for line in sys.stdin:
    threading.Thread(target=named, args=(line.strip(),), daemon=True).start()
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def _start(proc: subprocess.Popen[str], name: str) -> int:
    assert proc.stdin is not None
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tids = [t for t, n in thread_names(proc.pid).items() if n == name[:15]]
        if tids:
            return tids[0]
        time.sleep(0.02)
    raise AssertionError(f"thread {name} did not appear")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def test_only_bulk_threads_are_lowered_and_only_once(child: subprocess.Popen[str]) -> None:
    writer = _start(child, "IcebergStreamWriter (1/1)#0")
    snapshot = _start(child, "AsyncOperations-thread-3")
    dedup = _start(child, "Deduplicate[4] -> Calc[5]")
    base = _nice(dedup)
    assert sorted(lower_bulk_threads(child.pid, 10)) == ["AsyncOperations", "IcebergStreamWr"]
    assert (_nice(writer), _nice(snapshot), _nice(dedup)) == (10, 10, base)
    assert lower_bulk_threads(child.pid, 10) == []  # already there
    assert lower_bulk_threads(child.pid, 5) == []  # never raises a priority back
    assert _nice(writer) == 10


def test_the_watcher_lowers_threads_that_start_later(child: subprocess.Popen[str]) -> None:
    watcher = BulkThreadPriority(child.pid, 7, interval_s=0.05).start()
    try:
        late = _start(child, "IcebergFilesCommitter (1/1)#0")
        other = _start(child, "Source: raw_trades")
        deadline = time.monotonic() + 10
        while _nice(late) != 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _nice(late) == 7 and _nice(other) != 7
        assert watcher.lowered == 1
    finally:
        watcher.stop()


def test_no_such_process() -> None:
    assert thread_names(2**22 + 12345) == {}
    assert lower_bulk_threads(2**22 + 12345, 10) == []
