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
