"""The risk audit trail: the risk job's committed outputs into Iceberg, exactly once.

    python -m ticklake.jobs.risk_audit [--namespace risk] [--checkpoint-interval 10s]
        [--bounded] [--print-sql] ...

Reads the risk job's exactly-once topics (decisions, violations, account events;
``read_committed``, so only what the risk job committed) and appends each record to
``<namespace>.decisions``, ``.violations`` and ``.account_events``, with the time it was made
as a ``timestamptz`` column (the tables: ``ticklake risk tables`` creates them; the job
refuses to start without them). Exactly once: the Kafka offsets are part of this job's
checkpoints and the Iceberg files commit with them; a restart from a checkpoint or savepoint
(``--from-checkpoint``) neither loses nor repeats a row.

Why a job of its own and not the risk job's sinks (``docs/risk.md``, section 8): the
Iceberg writers' work comes in a burst at every checkpoint (Parquet encoding, file close
and upload, the manifest commit, and the JIT compiling that code), and inside the risk job's
JVM those bursts stalled the pre-trade decisions for about a second every checkpoint. Here
they cost the decisions nothing beyond a share of the cores, and on one machine this job's
process runs at a lower OS priority (``--nice``, embedded MiniCluster only). An outage of the
object store holds up the audit trail (it catches up from Kafka), not the decisions.

All of it is Flink SQL on the JVM; no Python function runs per record. Settings come from
``TICKLAKE_RISK_AUDIT_*`` environment variables, then the flags below.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.catalog.connection import flink_catalog_ddl, mask_secrets
from ticklake.catalog.tables import RISK_NAMESPACE
from ticklake.errors import JobError
from ticklake.jobs import flink_conf
from ticklake.jobs.dedup_ohlc import Duration, _ms
from ticklake.jobs.execution import default_checkpoint_dir, execute_and_wait, statement_set
from ticklake.jobs.functions import function_ddl, micros_to_ltz_sql
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.jobs.ohlc_sql import JobSql
from ticklake.schemas.flink import kafka_table_ddl
from ticklake.schemas.models import WireModel
from ticklake.schemas.risk import AccountEvent, RiskDecision, RiskViolation
from ticklake.schemas.topics import RISK_DECISIONS, RISK_EVENTS, RISK_VIOLATIONS
from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyflink.table import StatementSet, TableEnvironment

JOB_NAME = "risk_audit"


class RiskAuditSettings(BaseSettings):
    """Typed settings of the risk audit job (env prefix ``TICKLAKE_RISK_AUDIT_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_RISK_AUDIT_", frozen=True, extra="ignore"
    )

    decisions_topic: str = RISK_DECISIONS.name
    violations_topic: str = RISK_VIOLATIONS.name
    events_topic: str = RISK_EVENTS.name
    #: Iceberg namespace of the audit tables.
    namespace: str = Field(default=RISK_NAMESPACE, min_length=1)
    #: How rows reach the Iceberg writers: ``none`` (Iceberg's default) chains each writer
    #: to its source, which at parallelism 1 is one file per table partition and checkpoint
    #: already; ``hash`` shuffles by partition first, for parallelism above 1 (else each
    #: writer opens a file for every partition it sees).
    distribution: Literal["none", "hash"] = "none"
    checkpoint_interval: Duration = timedelta(seconds=10)
    checkpoint_dir: str | None = None
    #: Restore from this retained checkpoint (``chk-N``) or savepoint.
    from_checkpoint: str | None = None
    parallelism: int = Field(default=1, ge=1)
    group_id: str = "ticklake-risk-audit"
    #: ``group-offsets`` (default): where this consumer group's last checkpoint left off,
    #: from the earliest offset for a new group. Exactly once across a restart needs the
    #: restore from a checkpoint (``from_checkpoint``); without it, a restart resumes from
    #: the offsets committed with the last completed checkpoint.
    startup_mode: Literal["group-offsets", "earliest-offset", "latest-offset"] = "group-offsets"
    #: Stop at the topics' current end offsets (a catch-up or backfill run); the last rows
    #: commit with the final checkpoint.
    bounded: bool = False
    #: Embedded MiniCluster only: the nice value (0-19) of this job's process and JVM. The
    #: audit is throughput work whose rows become visible a checkpoint later anyway; on a
    #: machine shared with the risk job its bursts should wait for the decisions, not the
    #: other way round. Ignored on a cluster (the TaskManagers run it).
    nice: int = Field(default=10, ge=0, le=19)
    #: More Flink configuration (``--flink-conf KEY=VALUE``), applied last.
    flink_conf: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct(self) -> RiskAuditSettings:
        topics = [self.decisions_topic, self.violations_topic, self.events_topic]
        if len(set(topics)) != len(topics):
            raise ValueError(f"decisions, violations and events need a topic each: {topics}")
        return self

    def resolved_checkpoint_dir(self) -> str:
        if self.checkpoint_dir:
            return self.checkpoint_dir
        return default_checkpoint_dir(JOB_NAME)

    def table_config(self) -> dict[str, str]:
        restore = {"execution.savepoint.path": self.from_checkpoint} if self.from_checkpoint else {}
        return (
            restore
            | {
                "pipeline.name": f"ticklake {JOB_NAME}",
                "table.local-time-zone": "UTC",
                "parallelism.default": str(self.parallelism),
                "execution.checkpointing.interval": f"{_ms(self.checkpoint_interval)} ms",
                "execution.checkpointing.mode": "EXACTLY_ONCE",
                "execution.checkpointing.dir": self.resolved_checkpoint_dir(),
                "execution.checkpointing.externalized-checkpoint-retention": (
                    "RETAIN_ON_CANCELLATION"
                ),
            }
            | self.flink_conf
        )

    def source_options(self) -> dict[str, str]:
        options = {
            "properties.group.id": self.group_id,
            "scan.startup.mode": self.startup_mode,
            "properties.isolation.level": "read_committed",
        }
        if self.startup_mode == "group-offsets":
            options["properties.auto.offset.reset"] = "earliest"
        if self.bounded:
            options["scan.bounded.mode"] = "latest-offset"
        return options


#: (model, Iceberg table, its time column, the microsecond field it comes from, the
#: settings field naming its topic)
AUDITED: tuple[tuple[type[WireModel], str, str, str, str], ...] = (
    (RiskDecision, "decisions", "decision_ts", "decision_ts_us", "decisions_topic"),
    (RiskViolation, "violations", "detected_ts", "detected_ts_us", "violations_topic"),
    (AccountEvent, "account_events", "emitted_ts", "emitted_ts_us", "events_topic"),
)


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def job_sql(settings: RiskAuditSettings, conn: Connections) -> JobSql:
    """The job's configuration, setup statements and INSERTs, without running anything."""
    bootstrap = conn.kafka.bootstrap_servers
    setup = [*function_ddl(), flink_catalog_ddl(conn)]
    inserts = []
    hint = f"/*+ OPTIONS('distribution-mode'={_q(settings.distribution)}) */"
    for model, table, ts_col, us_field, topic_field in AUDITED:
        source = f"in_{table}"
        setup.append(
            kafka_table_ddl(
                model,
                source,
                getattr(settings, topic_field),
                bootstrap_servers=bootstrap,
                options=settings.source_options(),
            )
        )
        # The table's columns: the time column, then the record's fields in schema order
        # (``catalog/tables.py``, ``_risk_columns``); the types are the same Avro types.
        columns = ", ".join(f"`{f['name']}`" for f in model.avro_schema()["fields"])
        target = f"`{conn.catalog.name}`.`{settings.namespace}`.`{table}` {hint}"
        inserts.append(
            f"INSERT INTO {target} SELECT {micros_to_ltz_sql(f'`{us_field}`')} AS `{ts_col}`,"
            f" {columns} FROM {source}"
        )
    return JobSql(config=settings.table_config(), setup=setup, inserts=inserts)


def lower_own_priority(nice: int) -> int:
    """Raise this process's nice value to ``nice`` (never lower it); the JVM that PyFlink
    starts next inherits it. Returns the nice value now in force."""
    current = os.nice(0)
    if nice > current:
        current = os.nice(nice - current)
    return current


def build(
    settings: RiskAuditSettings, conn: Connections | None = None
) -> tuple[TableEnvironment, StatementSet]:
    """The table environment with the sources and the catalog, and the job's INSERTs."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    conn = conn or Connections.load()
    sql = job_sql(settings, conn)
    if "PYFLINK_GATEWAY_PORT" not in os.environ:  # the embedded MiniCluster (not `flink run`)
        lower_own_priority(settings.nice)
    drain_gateway_stderr()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    statements = statement_set(t_env, dataclasses.replace(sql, inserts=[]))
    _require_tables(t_env, conn.catalog.name, settings.namespace)
    for insert in sql.inserts:
        statements.add_insert_sql(insert)
    return t_env, statements


def _require_tables(t_env: TableEnvironment, catalog: str, namespace: str) -> None:
    """Fail before submitting when an audit table is missing (the job would fail later,
    deep in the planner, with a message that names none of this)."""
    from pyflink.table.catalog import ObjectPath

    flink_catalog = t_env.get_catalog(catalog)
    if flink_catalog is None:
        raise JobError(f"the Iceberg catalog {catalog!r} is not registered in the job")
    missing = [
        f"{namespace}.{table}"
        for _, table, *_ in AUDITED
        if not flink_catalog.table_exists(ObjectPath(namespace, table))
    ]
    if missing:
        raise JobError(
            f"the risk audit tables {', '.join(missing)} do not exist in catalog {catalog!r}",
            hint=f"create them with `ticklake risk tables --namespace {namespace}`, then"
            " submit the job again",
        )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return flink_conf.given_arguments(args, "print_sql")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ticklake.jobs.risk_audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--decisions-topic", help=f"committed decisions (default {RISK_DECISIONS.name})")
    add("--violations-topic", help=f"committed violations (default {RISK_VIOLATIONS.name})")
    add("--events-topic", help=f"committed account events (default {RISK_EVENTS.name})")
    add("--namespace", help=f"Iceberg namespace of the audit tables (default {RISK_NAMESPACE})")
    add("--distribution", choices=["none", "hash"],
        help="none (default): writers chained to the sources; hash: by partition, for"
        " parallelism above 1")  # fmt: skip
    add("--checkpoint-interval", help="e.g. 10s (default); the Iceberg files commit on it")
    add("--checkpoint-dir", help="file:// or s3:// URI (default under the state home)")
    add("--from-checkpoint", help="restore from this retained checkpoint (chk-N) or savepoint")
    add("--parallelism", type=int, help="default parallelism (default 1)")
    add("--group-id", help="Kafka consumer group of the sources (default ticklake-risk-audit)")
    add("--startup-mode", choices=["group-offsets", "earliest-offset", "latest-offset"])
    add("--bounded", action="store_true", default=None,
        help="stop at the topics' current end offsets")  # fmt: skip
    add("--nice", type=int,
        help="embedded MiniCluster: nice value of the job's process and JVM"
        " (default 10)")  # fmt: skip
    add("--flink-conf", action="append", type=flink_conf.key_value, metavar="KEY=VALUE",
        help="more Flink configuration, repeatable")  # fmt: skip
    add("--print-sql", action="store_true", help="print the job's SQL and exit")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = RiskAuditSettings(**_overrides(args))
    conn = Connections.load()
    if args.print_sql:
        print(mask_secrets(job_sql(settings, conn).script(), conn))
        return
    try:
        _, statements = build(settings, conn)
    except JobError as exc:
        print(exc.render(), file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    execute_and_wait(statements, JOB_NAME)


if __name__ == "__main__":
    main()
