"""The thread sampler of bench/threads.py on real processes: a busy one and an idle one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ticklake.bench.threads import find_process, group_name, main, sample


def test_numbered_threads_share_a_group() -> None:
    assert group_name("GC Thread#1") == group_name("GC Thread#0") == "GC Thread"
    assert group_name("kafka-producer-network-thread-12") == "kafka-producer-network-thread"
    assert group_name("main") == "main"


def _child(code: str, marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, marker])


def test_a_busy_process_runs_and_a_sleeping_one_does_not(tmp_path: Path) -> None:
    busy_marker, idle_marker = f"busy-{uuid.uuid4()}", f"idle-{uuid.uuid4()}"
    busy = _child("import time\nt = time.time() + 20\nwhile time.time() < t: pass", busy_marker)
    idle = _child("import time\ntime.sleep(20)", idle_marker)
    try:
        busy_pid, idle_pid = find_process(busy_marker), find_process(idle_marker)
        assert (busy_pid, idle_pid) == (busy.pid, idle.pid)
        out = tmp_path / "samples.txt"
        busy_rows = sample(busy.pid, 1.5, 0.25, out)
        idle_rows = sample(idle.pid, 1.5, 0.25)
    finally:
        busy.kill()
        idle.kill()
    # A spinning thread is on a CPU or queued for one the whole time: at least a third of
    # a core even on a loaded 2-core machine; a sleeping one uses next to nothing.
    run, runq = max(busy_rows.values())
    assert run + runq > 700, busy_rows
    assert run > 300, busy_rows
    assert sum(r for r, _ in idle_rows.values()) < 50, idle_rows
    lines = out.read_text().splitlines()
    assert lines and all(len(line.split()) == 5 for line in lines)


def test_cli_says_what_failed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--match", f"nothing-runs-this-{uuid.uuid4()}", "--seconds", "0.1"])
    assert exc.value.code == 2
    assert "is not running; start it first" in capsys.readouterr().err
