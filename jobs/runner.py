"""Run a job module on the embedded MiniCluster, from the platform environment.

A job module is run by the Flink job environment's interpreter with the connector jars on
the gateway classpath. Only the standard library and pydantic-based settings are used here,
so this module is importable from both environments.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from ticklake.errors import JobError


def run_local_job(
    module: str, args: Sequence[str] = (), *, timeout_s: float | None = 900.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` in the Flink environment; raise JobError on failure."""
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    python = flink_python(ctx)
    env = dict(os.environ)
    env.update(job_environment(ctx))
    cmd = [str(python), "-m", module, *args]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise JobError(
            f"job {module} did not finish within {timeout_s:.0f}s",
            hint="see the job's output above; a bounded job should finish by itself",
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise JobError(
            f"job {module} failed with exit code {proc.returncode}",
            detail=tail,
            hint="the lines above are the end of the job's output",
        )
    if proc.stderr and os.environ.get("TICKLAKE_JOB_ECHO"):
        sys.stderr.write(proc.stderr)
    return proc
