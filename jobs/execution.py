"""How a job module ends: wait for its Flink job, unless it was submitted detached.

``ticklake.jobs.runner.submit_cluster_job(..., detached=True)`` runs ``flink run --detached``
and sets ``TICKLAKE_JOB_DETACHED=1`` for the job's driver: the driver then returns as soon as
the job is submitted, and the job keeps running on the cluster.
"""

from __future__ import annotations

import os
from typing import Protocol

DETACHED_ENV = "TICKLAKE_JOB_DETACHED"


class _Waitable(Protocol):
    def wait(self) -> None: ...


def detached() -> bool:
    return os.environ.get(DETACHED_ENV) == "1"


def wait_unless_detached(result: _Waitable) -> None:
    """Block until the job finishes (bounded) or is cancelled, unless submitted detached."""
    if not detached():
        result.wait()
