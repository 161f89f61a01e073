"""Pre-trade risk checks and portfolio monitors on the stream (``docs/risk.md``).

    python -m ticklake.jobs.risk [--checkpoint-interval 10s] ...

Reads proposals, fills, broker positions, account commands and limits (all keyed by
account, published by user containers and adapters) as **raw** Kafka records and decodes
them in Python (:class:`~ticklake.jobs.risk_function.InputDecoder`): a record that is not
a valid message of its topic goes to the dead-letter topic with the reason, and the job goes
on. Reads the final candles (the platform's own, exactly-once topic, ``read_committed``)
with Table API DDL derived from the ``.avsc`` files (Flink's Avro format). Runs
:class:`~ticklake.jobs.risk_function.RiskFunction` (keyed by account, market data and
default limits broadcast). Writes

- decisions, violations and account events to Kafka **exactly-once** (transactions that
  commit with each checkpoint), from which the ``risk_audit`` job (``jobs/risk_audit.py``)
  writes the Iceberg audit tables ``risk.decisions``, ``.violations``, ``.account_events``
  (``--namespace NS`` makes this job write them itself instead: one job less to run, but a
  stall of the decisions at every checkpoint);
- decisions and account events also **at-least-once** to the live topics, visible at once
  (consumers deduplicate by ``proposal_id`` / ``event_id``): the low-latency path;
- invalid inputs to the dead-letter topic (``DeadLetter``, ``source_component`` =
  ``flink:risk``), exactly-once.

Settings come from ``TICKLAKE_RISK_*`` environment variables, then the flags below.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.catalog.connection import flink_catalog_ddl
from ticklake.jobs import flink_conf
from ticklake.jobs.dedup_ohlc import Duration, _ms
from ticklake.jobs.execution import default_checkpoint_dir, execute_and_wait
from ticklake.jobs.flink_conf import CHANNEL_BUFFERS, NETWORK_MEMORY, network_config
from ticklake.jobs.functions import function_ddl, micros_to_ltz_sql
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.jobs.risk_inputs import ACCOUNT_INPUTS
from ticklake.jobs.thread_priority import lower_embedded_bulk_threads
from ticklake.schemas.flink import kafka_sink_ddl, kafka_table_ddl
from ticklake.schemas.models import Candle, DeadLetter, WireModel
from ticklake.schemas.risk import AccountEvent, RiskDecision, RiskViolation
from ticklake.schemas.serde import SCHEMA_HEADER
from ticklake.schemas.topics import (
    CANDLES,
    DEAD_LETTERS,
    RISK_BROKER_POSITIONS,
    RISK_COMMANDS,
    RISK_DECISIONS,
    RISK_DECISIONS_LIVE,
    RISK_EVENTS,
    RISK_EVENTS_LIVE,
    RISK_FILLS,
    RISK_LIMITS,
    RISK_PROPOSALS,
    RISK_VIOLATIONS,
)
from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyflink.table import StatementSet, StreamTableEnvironment

    from ticklake.jobs.risk_function import RiskConfig

# ``ticklake.jobs.risk_function`` (PyFlink) is imported where it is used: the settings and
# the SQL of this module are read and unit tested without PyFlink.

JOB_NAME = "risk"


class RiskSettings(BaseSettings):
    """Typed settings of the risk job (env prefix ``TICKLAKE_RISK_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_RISK_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    proposals_topic: str = RISK_PROPOSALS.name
    fills_topic: str = RISK_FILLS.name
    broker_positions_topic: str = RISK_BROKER_POSITIONS.name
    commands_topic: str = RISK_COMMANDS.name
    limits_topic: str = RISK_LIMITS.name
    candles_topic: str = CANDLES.name
    decisions_topic: str = RISK_DECISIONS.name
    violations_topic: str = RISK_VIOLATIONS.name
    events_topic: str = RISK_EVENTS.name
    decisions_live_topic: str = RISK_DECISIONS_LIVE.name
    events_live_topic: str = RISK_EVENTS_LIVE.name
    #: Invalid account inputs (undecodable or breaking the contract) go here.
    dead_letters_topic: str = DEAD_LETTERS.name
    #: Iceberg namespace of audit tables written by this job itself; empty (the default):
    #: none, the ``risk_audit`` job writes the audit trail from the exactly-once topics in
    #: a JVM of its own. In this job the Iceberg writers' bursts at every checkpoint stalled
    #: the decisions for about a second (session 26, 1,000 proposals/s on 2 cores: decision
    #: p99 504-522 ms, against 29-91 ms in 11 of 12 runs with the audit job beside it;
    #: ``docs/risk.md``, section 8).
    namespace: str = ""
    #: With ``namespace``: how the audit rows reach the Iceberg writers: ``hash`` (by table
    #: partition) puts the writers in tasks of their own; ``none`` (Iceberg's default)
    #: chains them to the task that feeds them (see ``record_sinks``).
    audit_distribution: Literal["hash", "none"] = "hash"
    #: Where the exactly-once topics and the audit are written: ``own_task`` (behind a
    #: network hop, off the thread that runs the rules) or ``chained`` to the rules. The
    #: live topics are always chained to the rules: they are the low-latency path.
    record_sinks: Literal["own_task", "chained"] = "own_task"
    atr_timeframe: str = "1m"
    adv_timeframe: str = "1d"
    atr_period: int = Field(default=14, ge=1)
    adv_days: int = Field(default=20, ge=1)
    #: How often an account with open positions is marked to market between its events.
    monitor_interval: Duration = timedelta(seconds=1)
    #: How long proposal, fill and command ids are remembered (duplicates ignored): at
    #: least this long, at most twice (two generations, ``jobs/risk_seen.py``).
    dedup_ttl: Duration = timedelta(days=7)
    checkpoint_interval: Duration = timedelta(seconds=10)
    checkpoint_dir: str | None = None
    parallelism: int = Field(default=1, ge=1)
    transactional_id_prefix: str = "ticklake-risk"
    transaction_timeout: Duration = timedelta(minutes=15)
    group_id: str = "ticklake-risk"
    startup_mode: Literal["earliest-offset", "latest-offset", "group-offsets"] = "earliest-offset"
    #: ``process`` (separate Python workers, the default) or ``thread`` (Python embedded in
    #: the TaskManager JVM through pemja: no serialization hop, lower latency).
    python_mode: Literal["process", "thread"] = "process"
    #: Records and time per Python bundle; small bundles = low latency (defaults 100000/1s).
    bundle_size: int = Field(default=1000, ge=1)
    bundle_time: Duration = timedelta(milliseconds=5)
    #: Network buffer flush interval (Flink's default 100 ms).
    buffer_timeout: Duration = timedelta(milliseconds=5)
    #: The sources' ``fetch.max.wait.ms``. Kafka's default, 500 ms: 10 ms cut the dedup +
    #: OHLC job's latency, but made no difference here (`bench risk`, session 5: the job is
    #: a queue at 1,000 proposals/s, so its fetches always find data).
    source_fetch_wait: Duration = timedelta(milliseconds=500)
    #: The sources' ``fetch.min.bytes`` (Kafka's default 1: the broker answers a fetch as
    #: soon as one record is there). Above one record's size, a fetch waits for that many
    #: bytes or ``source_fetch_wait``, whichever comes first: fewer, fuller fetches.
    source_fetch_min_bytes: int = Field(default=1, ge=1)
    #: The live topics' producer ``linger.ms``: 0 sends each decision in a request of its
    #: own, as soon as it is decided; a few ms batch them (fewer requests for the producer
    #: thread and the broker, at most that much added to the end-to-end latency).
    live_linger: Duration = timedelta(0)
    #: The exactly-once topics' producer ``linger.ms``. Their records become visible only
    #: when the checkpoint commits (the sink flushes first, whatever the linger), so a wait
    #: to batch costs no latency anyone sees, and sending each decision in a request of its
    #: own cost the broker and the job's producer thread CPU the live path needs (Kafka's
    #: default is 0 ms).
    record_linger: Duration = timedelta(milliseconds=100)
    #: Network buffers per output channel (Flink's default 10; ``jobs/flink_conf.py``). The
    #: rules send to the exactly-once sinks and the audit writers through channels; with
    #: 10 buffers and the 5 ms buffer timeout those hold ~50 ms of output, less than a
    #: writer's pause at a checkpoint. The same setting as the dedup + OHLC job, where it
    #: removed such stalls; here an A/B was inconclusive (``docs/risk.md``, section 6).
    channel_buffers: int = Field(default=CHANNEL_BUFFERS, ge=10)
    #: Network memory of the embedded MiniCluster.
    network_memory: str = NETWORK_MEMORY
    #: Unaligned checkpoints: the barrier overtakes the records in the channels (they are
    #: stored in the checkpoint) instead of each input waiting, blocked, for the barriers of
    #: the others. At 300 proposals/s, past the JVM's warm-up, aligned checkpoints stalled
    #: the rules for 16-17 seconds in two minutes (in-job p50 over 100 ms), unaligned ones for
    #: 4-6 (bench/README.md, risk, session 10). Exactly-once outputs are unchanged.
    unaligned_checkpoints: bool = True
    #: Embedded MiniCluster only: the nice value (0-19) of its bulk threads (the audit's
    #: Iceberg writers and committer, state snapshots; ``jobs/thread_priority.py``). 0 (the
    #: default): unchanged.
    background_nice: int = Field(default=0, ge=0, le=19)
    #: More Flink configuration (``--flink-conf KEY=VALUE``), applied last.
    flink_conf: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds(self) -> RiskSettings:
        if not timedelta(0) < self.checkpoint_interval < self.transaction_timeout:
            raise ValueError("need 0 < checkpoint_interval < transaction_timeout")
        if self.transaction_timeout >= timedelta(hours=2):
            raise ValueError("transaction_timeout must stay below the broker's 2 h maximum")
        if self.dedup_ttl < timedelta(milliseconds=1):
            raise ValueError("dedup_ttl must be at least 1 ms (ids are remembered that long)")
        if min(self.live_linger, self.record_linger, self.source_fetch_wait) < timedelta(0):
            raise ValueError("live_linger, record_linger, source_fetch_wait: not negative")
        topics = list(input_topics(self).values())
        if len(set(topics)) != len(topics):
            raise ValueError(
                f"each account input needs a topic of its own (one source reads them all and"
                f" tells them apart by topic): {input_topics(self)}"
            )
        return self

    def resolved_checkpoint_dir(self) -> str:
        if self.checkpoint_dir:
            return self.checkpoint_dir
        return default_checkpoint_dir(JOB_NAME)

    def flink_config(self) -> dict[str, str]:
        return {
            "pipeline.name": f"ticklake {JOB_NAME}",
            "table.local-time-zone": "UTC",
            "parallelism.default": str(self.parallelism),
            "execution.checkpointing.interval": f"{_ms(self.checkpoint_interval)} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.dir": self.resolved_checkpoint_dir(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.buffer-timeout.interval": f"{_ms(self.buffer_timeout)} ms",
            "execution.checkpointing.unaligned.enabled": str(self.unaligned_checkpoints).lower(),
            "python.execution-mode": self.python_mode,
            "python.executable": sys.executable,
            "python.fn-execution.bundle.size": str(self.bundle_size),
            "python.fn-execution.bundle.time": str(_ms(self.bundle_time)),
            **network_config(self.channel_buffers, self.network_memory),
            **self.flink_conf,
        }

    def operator_config(self) -> RiskConfig:
        from ticklake.jobs.risk_function import RiskConfig

        return RiskConfig(
            atr_timeframe=self.atr_timeframe,
            adv_timeframe=self.adv_timeframe,
            atr_period=self.atr_period,
            adv_days=self.adv_days,
            monitor_interval_ms=_ms(self.monitor_interval),
            dedup_ttl_ms=_ms(self.dedup_ttl),
        )


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _source_options(s: RiskSettings) -> dict[str, str]:
    options = {
        "properties.group.id": s.group_id,
        "scan.startup.mode": s.startup_mode,
        "properties.isolation.level": "read_committed",
        "properties.fetch.max.wait.ms": str(_ms(s.source_fetch_wait)),
        "properties.fetch.min.bytes": str(s.source_fetch_min_bytes),
    }
    if s.startup_mode == "group-offsets":
        options["properties.auto.offset.reset"] = "earliest"
    return options


def input_topics(s: RiskSettings) -> dict[str, str]:
    """Account input kind -> its topic."""
    return {
        "proposal": s.proposals_topic,
        "fill": s.fills_topic,
        "broker_position": s.broker_positions_topic,
        "command": s.commands_topic,
        "limits": s.limits_topic,
    }


def raw_source_ddl(table: str, topics: Sequence[str], s: RiskSettings, bootstrap: str) -> str:
    """Kafka topics as raw records: key and value bytes, the schema header, coordinates.

    One table reads every topic in ``topics`` (the connector's ``'topic' = 'a;b'`` list):
    one source task and one consumer, whose records carry their ``topic``.
    """
    options = {
        "connector": "kafka",
        "topic": ";".join(topics),
        "properties.bootstrap.servers": bootstrap,
        "key.format": "raw",
        "key.fields": "record_key",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    } | _source_options(s)
    with_ = ",\n  ".join(f"{_q(k)} = {_q(v)}" for k, v in options.items())
    return (
        f"CREATE TEMPORARY TABLE {table} (\n"
        "  `record_key` BYTES,\n"
        "  `record_value` BYTES,\n"
        "  `headers` MAP<STRING, BYTES> METADATA VIRTUAL,\n"
        "  `topic` STRING METADATA VIRTUAL,\n"
        "  `partition` INT METADATA VIRTUAL,\n"
        "  `offset` BIGINT METADATA VIRTUAL,\n"
        "  `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL\n"
        f") WITH (\n  {with_}\n)"
    )


#: The columns :class:`~ticklake.jobs.risk_function.InputDecoder` reads, in its order.
RAW_COLUMNS = (
    "kind", "record_key", "record_value", "schema_ref", "topic", "partition", "offset", "ts_ms",
)  # fmt: skip


def raw_inputs_query(s: RiskSettings) -> str:
    """One stream of every account input's raw records, tagged with their kind.

    The kind comes from the record's topic (each kind has a topic of its own: the settings
    refuse two kinds on one topic).
    """
    ms = (
        "TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', CAST(`ts` AS TIMESTAMP(3)))"
        " * CAST(1000 AS BIGINT) + EXTRACT(MILLISECOND FROM CAST(`ts` AS TIMESTAMP(3)))"
    )
    topics = input_topics(s)
    kind = " ".join(f"WHEN {_q(topics[k])} THEN {_q(k)}" for k in ACCOUNT_INPUTS)
    return (
        f"SELECT CAST(CASE `topic` {kind} END AS STRING) AS `kind`, `record_key`,"
        f" `record_value`, `headers`[{_q(SCHEMA_HEADER)}] AS `schema_ref`, `topic`,"
        f" `partition`, `offset`, CAST({ms} AS BIGINT) AS `ts_ms` FROM raw_inputs"
    )


def source_ddls(s: RiskSettings, bootstrap: str) -> list[str]:
    """Kafka source tables: the five account inputs (raw, one source) and the candles."""
    topics = input_topics(s)
    return [
        raw_source_ddl("raw_inputs", [topics[k] for k in ACCOUNT_INPUTS], s, bootstrap),
        kafka_table_ddl(Candle, "in_candles", s.candles_topic, bootstrap_servers=bootstrap,
                        options=_source_options(s)),
    ]  # fmt: skip


def sink_ddl(
    model: type[WireModel],
    table: str,
    topic: str,
    s: RiskSettings,
    bootstrap: str,
    *,
    suffix: str,
    key: str = "account",
) -> str:
    """A Kafka sink keyed by ``key``; ``suffix`` empty: at-least-once (live topics)."""
    options = {
        "key.format": "raw",
        "key.fields": key,
        "value.fields-include": "ALL",
        "sink.delivery-guarantee": "exactly-once" if suffix else "at-least-once",
    }
    if suffix:
        options["sink.transactional-id-prefix"] = f"{s.transactional_id_prefix}-{suffix}"
        options["properties.transaction.timeout.ms"] = str(_ms(s.transaction_timeout))
        options["properties.linger.ms"] = str(_ms(s.record_linger))
    else:
        options["properties.linger.ms"] = str(_ms(s.live_linger))
    return kafka_sink_ddl(model, table, topic, bootstrap_servers=bootstrap, options=options)


def sinks(s: RiskSettings, bootstrap: str) -> list[str]:
    return [
        sink_ddl(
            RiskDecision, "out_decisions", s.decisions_topic, s, bootstrap, suffix="decisions"
        ),
        sink_ddl(
            RiskViolation, "out_violations", s.violations_topic, s, bootstrap, suffix="violations"
        ),
        sink_ddl(AccountEvent, "out_events", s.events_topic, s, bootstrap, suffix="events"),
        sink_ddl(RiskDecision, "live_decisions", s.decisions_live_topic, s, bootstrap, suffix=""),
        sink_ddl(AccountEvent, "live_events", s.events_live_topic, s, bootstrap, suffix=""),
        sink_ddl(DeadLetter, "out_dead_letters", s.dead_letters_topic, s, bootstrap,
                 suffix="deadletters", key="source_component"),
    ]  # fmt: skip


#: (view, model, Iceberg table, its time column, the microsecond field it comes from)
OUTPUTS = (
    ("decisions", RiskDecision, "decisions", "decision_ts", "decision_ts_us"),
    ("violations", RiskViolation, "violations", "detected_ts", "detected_ts_us"),
    ("account_events", AccountEvent, "account_events", "emitted_ts", "emitted_ts_us"),
)


def inserts(s: RiskSettings, catalog: str) -> list[str]:
    from ticklake.jobs.risk_function import typed_select

    out = [
        f"INSERT INTO out_decisions {typed_select(RiskDecision, 'decisions')}",
        f"INSERT INTO out_violations {typed_select(RiskViolation, 'violations')}",
        f"INSERT INTO out_events {typed_select(AccountEvent, 'account_events')}",
        f"INSERT INTO live_decisions {typed_select(RiskDecision, 'decisions_live')}",
        f"INSERT INTO live_events {typed_select(AccountEvent, 'account_events_live')}",
        f"INSERT INTO out_dead_letters {typed_select(DeadLetter, 'dead_letters')}",
    ]
    if s.namespace:
        for view, model, table, ts_col, us_field in OUTPUTS:
            hint = f"/*+ OPTIONS('distribution-mode'={_q(s.audit_distribution)}) */"
            target = f"`{catalog}`.`{s.namespace}`.`{table}` {hint}"
            extra = [f"{micros_to_ltz_sql(f'`{us_field}`')} AS `{ts_col}`"]
            out.append(f"INSERT INTO {target} {typed_select(model, view, extra)}")
    return out


def _thread_mode_path() -> None:
    """Thread mode embeds the interpreter through pemja, which does not see a virtualenv's
    packages (FLINK-38585); put them on ``PYTHONPATH`` before the JVM starts."""
    site = sysconfig.get_paths()["purelib"]
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if site not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([site, *paths])


def build(
    settings: RiskSettings, conn: Connections | None = None
) -> tuple[StreamTableEnvironment, StatementSet]:
    """The environment with the whole pipeline, and the statement set that runs it."""
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from ticklake.jobs.risk_function import (
        DEAD_LETTER_OUTPUT,
        DEFAULT_LIMITS,
        EVENTS,
        VIOLATIONS,
        InputDecoder,
        RiskFunction,
        markets_descriptor,
        row_type,
    )

    conn = conn or Connections.load()
    if settings.python_mode == "thread":
        _thread_mode_path()
    config = Configuration()
    for key, value in settings.flink_config().items():
        config.set_string(key, value)
    drain_gateway_stderr()
    env = StreamExecutionEnvironment.get_execution_environment(config)
    t_env = StreamTableEnvironment.create(env)
    if "PYFLINK_GATEWAY_PORT" not in os.environ:  # the embedded MiniCluster (not `flink run`)
        lower_embedded_bulk_threads(settings.background_nice)
    for key, value in settings.flink_config().items():
        t_env.get_config().set(key, value)
    bootstrap = conn.kafka.bootstrap_servers
    for ddl in [*function_ddl(), *source_ddls(settings, bootstrap), *sinks(settings, bootstrap)]:
        t_env.execute_sql(ddl)
    if settings.namespace:
        t_env.execute_sql(flink_catalog_ddl(conn))

    pickled = Types.PICKLED_BYTE_ARRAY()
    accounts = (
        t_env.to_data_stream(t_env.sql_query(raw_inputs_query(settings)))
        .process(InputDecoder(), output_type=pickled)
        .name("decode account inputs")
        .uid("ticklake-risk-decode")
    )
    defaults = accounts.get_side_output(DEFAULT_LIMITS)
    tfs = ", ".join(_q(tf) for tf in {settings.atr_timeframe, settings.adv_timeframe})
    candles = t_env.to_data_stream(
        t_env.sql_query(
            "SELECT CONCAT(`exchange`, ':', `symbol`), `timeframe`, `window_start_us`,"
            " `window_end_us`, CAST(`high` AS STRING), CAST(`low` AS STRING),"
            " CAST(`close` AS STRING), CAST(`volume` AS STRING),"
            " CAST(`quote_volume` AS STRING)"
            f" FROM in_candles WHERE `final` AND `timeframe` IN ({tfs})"
        )
    ).map(lambda r: ("candle", r[0], _candle_payload(r)), output_type=pickled)

    decisions = (
        accounts.key_by(lambda v: v[1], key_type=Types.STRING())
        .connect(candles.union(defaults).broadcast(markets_descriptor()))
        .process(RiskFunction(settings.operator_config()), output_type=row_type(RiskDecision))
        .name("risk rules")
        # A fixed uid: the accounts' keyed state (portfolios, limits, seen ids, breakers)
        # maps across changes of the rest of the graph (docs/risk.md, "Upgrades").
        .uid("ticklake-risk-rules")
    )
    events = decisions.get_side_output(EVENTS)
    streams = {
        "decisions": decisions,
        "violations": decisions.get_side_output(VIOLATIONS),
        "account_events": events,
    }
    # The live topics are written from the thread that runs the rules (the fast path);
    # the exactly-once topics and the Iceberg audit, unless chained, from a task of their
    # own behind a network hop (their serialization and writers off that thread).
    t_env.create_temporary_view("decisions_live", t_env.from_data_stream(decisions))
    t_env.create_temporary_view("account_events_live", t_env.from_data_stream(events))
    own_task = settings.record_sinks == "own_task"
    for view, stream in streams.items():
        record = stream.rebalance() if own_task else stream
        t_env.create_temporary_view(view, t_env.from_data_stream(record))
    t_env.create_temporary_view(
        "dead_letters", t_env.from_data_stream(accounts.get_side_output(DEAD_LETTER_OUTPUT))
    )
    statements = t_env.create_statement_set()
    for insert in inserts(settings, conn.catalog.name):
        statements.add_insert_sql(insert)
    return t_env, statements


def _candle_payload(row: Any) -> tuple[Any, ...]:
    from decimal import Decimal

    return (
        row[1], row[2], row[3], Decimal(row[4]), Decimal(row[5]), Decimal(row[6]),
        Decimal(row[7]), None if row[8] is None else Decimal(row[8]),
    )  # fmt: skip


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return flink_conf.given_arguments(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ticklake.jobs.risk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    for name in RiskSettings.model_fields:
        if name.endswith("_topic"):
            add(
                f"--{name.replace('_', '-')}",
                help=f"topic (default {RiskSettings.model_fields[name].default})",
            )
    add("--namespace",
        help="write the Iceberg audit tables of this namespace from this job (default '':"
        " none; the risk_audit job writes them)")  # fmt: skip
    add(
        "--audit-distribution",
        choices=["hash", "none"],
        help="hash (default): Iceberg writers in tasks of their own; none: chained to their feeder",
    )
    add(
        "--record-sinks",
        choices=["own_task", "chained"],
        help="own_task (default): exactly-once topics and audit off the rules' thread",
    )
    add("--atr-timeframe", help="candles the ATR and last price come from (default 1m)")
    add("--adv-timeframe", help="candles the ADV comes from (default 1d)")
    add("--atr-period", type=int, help="ATR period (default 14)")
    add("--adv-days", type=int, help="daily candles averaged for the ADV (default 20)")
    add("--monitor-interval", help="mark-to-market interval of open accounts (default 1s)")
    add("--dedup-ttl",
        help="input ids are remembered at least this long, at most twice (default 7d)")  # fmt: skip
    add("--checkpoint-interval", help="e.g. 10s (default); Kafka and Iceberg commit on it")
    add("--checkpoint-dir", help="file:// or s3:// URI (default under the state home)")
    add("--parallelism", type=int, help="default parallelism (default 1)")
    add("--transactional-id-prefix", help="Kafka transactional id prefix, unique per job")
    add("--group-id", help="Kafka consumer group of the sources")
    add("--startup-mode", choices=["earliest-offset", "latest-offset", "group-offsets"])
    add("--python-mode", choices=["process", "thread"])
    add("--bundle-size", type=int, help="records per Python bundle (default 1000)")
    add("--bundle-time", help="time per Python bundle (default 5ms)")
    add("--buffer-timeout", help="network buffer flush interval (default 5ms)")
    add("--source-fetch-wait", help="the sources' fetch.max.wait.ms (default 500ms)")
    add("--source-fetch-min-bytes", type=int, help="the sources' fetch.min.bytes (default 1)")
    add("--live-linger", help="the live topics' producer linger.ms, e.g. 2ms (default 0ms)")
    add("--record-linger",
        help="the exactly-once topics' producer linger.ms (default 100ms: they commit on"
        " checkpoints)")  # fmt: skip
    add("--background-nice", type=int,
        help="embedded MiniCluster: nice value of the audit writers' and snapshot threads,"
        " e.g. 10 (default 0: unchanged)")  # fmt: skip
    add("--unaligned-checkpoints", action=argparse.BooleanOptionalAction, default=None,
        help="unaligned checkpoints (default on)")  # fmt: skip
    flink_conf.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    settings = RiskSettings(**_overrides(parser().parse_args(argv)))
    _, statements = build(settings)
    execute_and_wait(statements, JOB_NAME)


if __name__ == "__main__":
    main()
