"""Run a job module on the embedded MiniCluster or submit it to the standalone cluster.

Both paths run the same job module: locally with the Flink environment's interpreter (the
job's ``execute`` starts a MiniCluster in that process), on the cluster through the wheel's
``flink run -pym`` (the client builds the job graph and the cluster runs it). The connector
jars reach both through ``HADOOP_CLASSPATH``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

from ticklake.errors import JobError
from ticklake.jobs.execution import DETACHED_ENV


def _run(cmd: list[str], env: dict[str, str], what: str, timeout_s: float | None) -> str:
    # Own session: on timeout the whole tree (flink script, client JVM, Python driver) goes.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise JobError(
            f"{what} did not finish within {timeout_s:.0f}s",
            hint="a bounded job should finish by itself; check the stack with `ticklake status`",
        ) from exc
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if proc.returncode != 0:
        tail = "\n".join((stdout + stderr).splitlines()[-40:])
        raise JobError(
            f"{what} failed with exit code {proc.returncode}",
            detail=tail,
            hint="the lines above are the end of the job's output",
        )
    if os.environ.get("TICKLAKE_JOB_ECHO"):
        sys.stderr.write(stdout + stderr)
    return stdout


def run_local_job(module: str, args: Sequence[str] = (), *, timeout_s: float | None = 900.0) -> str:
    """Run ``python -m module args`` on the embedded MiniCluster; returns its stdout."""
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    env = dict(os.environ) | job_environment(ctx)
    cmd = [str(flink_python(ctx)), "-m", module, *args]
    return _run(cmd, env, f"job {module} (embedded MiniCluster)", timeout_s)


def submit_cluster_job(
    module: str,
    args: Sequence[str] = (),
    *,
    rest_url: str | None = None,
    detached: bool = False,
    savepoint: str | None = None,
    allow_non_restored_state: bool = False,
    timeout_s: float | None = 900.0,
) -> str:
    """Submit the job module to the standalone cluster with ``flink run -pym``.

    Without ``detached`` the call returns when the job's ``wait()`` returns (bounded jobs).
    """
    from ticklake.settings import Connections
    from ticklake.stack.components.flink import (
        FlinkClusterComponent,
        flink_python,
        job_environment,
        pyflink_home,
    )
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    cluster = FlinkClusterComponent(ctx)
    url = urlparse(rest_url or Connections.load().flink.rest_url)
    home = pyflink_home(ctx)
    python = str(flink_python(ctx))
    env = dict(os.environ) | job_environment(ctx)
    env.update(FLINK_HOME=str(home), FLINK_CONF_DIR=str(cluster.base / "conf"))
    cmd = [str(home / "bin" / "flink"), "run", "-m", f"{url.hostname}:{url.port}"]
    if detached:
        cmd.append("--detached")
        env[DETACHED_ENV] = "1"
    if savepoint:
        # Resume from a savepoint or a retained checkpoint (the upgrade path of a job).
        cmd += ["--fromSavepoint", savepoint]
        if allow_non_restored_state:
            cmd.append("--allowNonRestoredState")
    cmd += ["-pyclientexec", python, "-pyexec", python, "-pym", module, *args]
    return _run(cmd, env, f"job {module} (cluster {url.netloc})", timeout_s)
