"""``ticklake jobs``: submit the job modules of ``jobs/`` locally or to the cluster, and
operate running jobs on the cluster (list, cancel, savepoint, resubmit from a savepoint)."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from ticklake.errors import JobError
from ticklake.jobs.rest import FlinkRestClient

#: Job names -> modules runnable as ``python -m`` in the Flink environment.
JOBS = {
    "dedup_ohlc": "ticklake.jobs.dedup_ohlc",
    "history_candles": "ticklake.jobs.history_candles",
    "cep": "ticklake.jobs.cep",
    "risk": "ticklake.jobs.risk",
    "risk_audit": "ticklake.jobs.risk_audit",
    "sql_script": "ticklake.jobs.sql_script",
    "catalog_roundtrip": "ticklake.jobs.catalog_roundtrip",
}

out = Console(highlight=False)


def _rest() -> FlinkRestClient:
    from ticklake.settings import Connections

    return FlinkRestClient(Connections.load().flink.rest_url)


@click.group("jobs")
def jobs_group() -> None:
    """Flink jobs: submit locally (embedded MiniCluster) or to the cluster; operate them."""


@jobs_group.command(
    "submit", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("name", type=click.Choice(sorted(JOBS)))
@click.option(
    "--target",
    type=click.Choice(["local", "cluster"]),
    default="local",
    show_default=True,
    help="embedded MiniCluster, or the standalone cluster",
)
@click.option("--detached", is_flag=True, help="cluster only: return once the job runs")
@click.option(
    "--from-savepoint",
    "savepoint",
    default=None,
    help="cluster only: start from this savepoint or retained checkpoint",
)
@click.pass_context
def submit(
    ctx: click.Context, name: str, target: str, detached: bool, savepoint: str | None
) -> None:
    """Submit job NAME; arguments after NAME go to the job (e.g. `-- --help`).

    The same job module runs on both targets. A local run lasts as long as the job (bounded
    jobs end by themselves; Ctrl-C stops an unbounded one).
    """
    from ticklake.jobs.runner import run_local_job, submit_cluster_job

    args = [a for a in ctx.args if a != "--"]
    module = JOBS[name]
    if target == "local":
        if detached or savepoint:
            raise JobError(
                "--detached and --from-savepoint need --target cluster",
                hint="the embedded MiniCluster lives in the submitting process",
            )
        click.echo(run_local_job(module, args, timeout_s=None), nl=False)
    else:
        click.echo(
            submit_cluster_job(module, args, detached=detached, savepoint=savepoint), nl=False
        )


@jobs_group.command("list")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def list_jobs(output: str) -> None:
    """Jobs on the cluster with their state."""
    rest = _rest()
    jobs = rest.jobs()
    if output == "json":
        click.echo(json.dumps([asdict(j) for j in jobs]))
        return
    table = Table(title=f"Flink jobs at {rest.base}")
    for col in ("job id", "name", "state"):
        table.add_column(col)
    for j in jobs:
        table.add_row(j.job_id, j.name, j.state)
    out.print(table)


@jobs_group.command("cancel")
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a running job (no savepoint; see `jobs savepoint --cancel`)."""
    rest = _rest()
    rest.cancel(job_id)
    click.echo(rest.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"}))


@jobs_group.command("savepoint")
@click.argument("job_id")
@click.option("--cancel", "cancel_job", is_flag=True, help="stop the job with the savepoint")
@click.option("--dir", "target_dir", default=None, help="target directory (default: cluster's)")
def savepoint_cmd(job_id: str, cancel_job: bool, target_dir: str | None) -> None:
    """Take a savepoint; with --cancel, the upgrade path: stop, change the job, resubmit
    with `ticklake jobs submit NAME --target cluster --from-savepoint <printed path>`."""
    rest = _rest()
    click.echo(rest.savepoint(job_id, target_dir, cancel_job=cancel_job))
