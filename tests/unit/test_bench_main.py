"""``ticklake bench``'s own entry point: refused combinations and SIGTERM clean-up."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ticklake.bench.__main__ import main

# A benchmark stands in for a real one: ``run`` blocks in a ``try`` whose ``finally`` is what
# a real benchmark uses to stop its job, its child processes and its scratch stack.
_BLOCKING_BENCH = """
import time
from ticklake.bench import stack_up

def run(*args):
    try:
        print("running", flush=True)
        time.sleep(60)
    finally:
        print("cleaned up", flush=True)

stack_up.run = run
from ticklake.bench.__main__ import main
main(["stack"])
"""


def test_freshness_refuses_iceberg_only_sinks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["freshness", "--sinks", "iceberg"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sinks iceberg has none" in err
    assert "bench candles" in err


def test_sigterm_unwinds_the_benchmark_through_its_finally() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCKING_BENCH],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "cleaned up" in out, err
    assert proc.returncode == 128 + signal.SIGTERM


def test_freshness_refuses_a_producer_setting_without_a_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["freshness", "--producer-config", "linger.ms"])
    assert exc.value.code == 2
    assert "--producer-config takes KEY=VALUE, got 'linger.ms'" in capsys.readouterr().err
