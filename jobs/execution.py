"""How a job module ends: wait for its Flink job, unless it was submitted detached.

``ticklake.jobs.runner.submit_cluster_job(..., detached=True)`` runs ``flink run --detached``
and sets ``TICKLAKE_JOB_DETACHED=1`` for the job's driver: the driver then returns as soon as
the job is submitted, and the job keeps running on the cluster.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyflink.table import StatementSet, TableEnvironment

    from ticklake.jobs.ohlc_sql import JobSql

DETACHED_ENV = "TICKLAKE_JOB_DETACHED"


class _Waitable(Protocol):
    def wait(self) -> None: ...


def detached() -> bool:
    return os.environ.get(DETACHED_ENV) == "1"


def wait_unless_detached(result: _Waitable) -> None:
    """Block until the job finishes (bounded) or is cancelled, unless submitted detached."""
    if not detached():
        result.wait()


def statement_set(t_env: TableEnvironment, sql: JobSql) -> StatementSet:
    """Apply a SQL job's configuration and setup to ``t_env``; its INSERTs as one statement set."""
    config = t_env.get_config()
    for key, value in sql.config.items():
        config.set(key, value)
    for statement in sql.setup:
        t_env.execute_sql(statement)
    statements = t_env.create_statement_set()
    for insert in sql.inserts:
        statements.add_insert_sql(insert)
    return statements


def execute_and_wait(statements: StatementSet, description: str) -> str | None:
    """Submit ``statements`` as one job, print ``submitted job <id> (<description>)`` (the
    line ``ticklake jobs`` and the tests read the job id from), and wait for it unless
    detached. Returns the job id (``None`` if the environment gives no job client)."""
    result = statements.execute()
    client = result.get_job_client()
    job_id = str(client.get_job_id()) if client is not None else None
    print(f"submitted job {job_id} ({description})", flush=True)
    wait_unless_detached(result)
    return job_id


def default_checkpoint_dir(job_name: str) -> str:
    """``file://`` URI of a job's checkpoints under the state home (when none is given)."""
    from ticklake.home import state_home

    return (state_home() / "data" / "checkpoints" / job_name).resolve().as_uri()
