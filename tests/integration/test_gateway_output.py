"""The gateway JVM of an embedded job writes to a stderr pipe PyFlink never reads.

Real PyFlink, real JVM, in the Flink job environment's interpreter (where every embedded
job runs). The JVM prints 2,000 lines (about 220 KB) to ``System.err``: with ticklake's
drain (``ticklake.jobs.gateway_output``, installed by every job module) they all arrive on
the driver's stderr, in order; without it the JVM blocks once the 64 KiB pipe is full.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from ticklake.stack.components.flink import flink_python, job_environment
from ticklake.stack.context import StackContext
from ticklake.stack.settings import StackSettings

LINES = 2_000
PAD = "x" * 100

SCRIPT = """
from ticklake.jobs.gateway_output import drain_gateway_stderr
if {drain}:
    drain_gateway_stderr()
from pyflink.java_gateway import get_gateway
err = get_gateway().jvm.java.lang.System.err
for i in range({lines}):
    err.println("line %06d {pad}" % i)
print("printed", flush=True)
"""


def _run(tmp_path: Path, *, drain: bool, timeout_s: float) -> tuple[int | None, str, str]:
    """Run the script; (exit code or None on timeout, stdout, stderr). Kills its JVM too."""
    script = tmp_path / f"gateway_stderr_{drain}.py"
    script.write_text(SCRIPT.format(drain=drain, lines=LINES, pad=PAD))
    ctx = StackContext(StackSettings())
    proc = subprocess.Popen(
        [str(flink_python(ctx)), str(script)],
        env=dict(os.environ) | job_environment(ctx),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the gateway JVM is its child: one group to kill
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.usefixtures("stack")
def test_the_gateway_jvms_stderr_reaches_the_driver_in_full(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, drain=True, timeout_s=180)
    assert code == 0, err[-3000:]
    assert "printed" in out
    lines = [line for line in err.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i:06d} {PAD}" for i in range(LINES)]


@pytest.mark.usefixtures("stack")
def test_without_the_drain_the_gateway_jvm_blocks(tmp_path: Path) -> None:
    """The premise. If PyFlink ever reads the pipe itself, this fails: drop the drain then."""
    code, out, _ = _run(tmp_path, drain=False, timeout_s=45)
    assert code is None, "the JVM wrote 220 KB to its stderr pipe without blocking"
    assert "printed" not in out
