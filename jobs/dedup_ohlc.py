"""Deduplicate raw trades and build event-time OHLC candles, exactly once, in Flink SQL.

    python -m ticklake.jobs.dedup_ohlc [--namespace market] [--timeframes 1m,5m,1h]
        [--out-of-orderness 5s] [--bounded] [--print-sql] ...

One Flink job (one statement set) reads the raw-trades topic and writes

- ``<namespace>.trades`` (Iceberg): every trade once, late ones included;
- ``<namespace>.candles`` (Iceberg) and the candles topic (Kafka, exactly-once): final
  candles of every timeframe, built in event time from the on-time trades;
- ``<namespace>.late_trades`` (Iceberg) and the late-trades topic (Kafka, exactly-once):
  trades that arrived behind the watermark, which no candle contains;
- live outputs (unless ``--no-live``), at-least-once and visible at once (no transaction
  waits for a checkpoint): every deduplicated on-time trade on the live trades topic, and
  every update of the forming candle of every timeframe plus the final candles on the live
  candles topic (upsert stream, key ``EXCHANGE:BASE/QUOTE|<tf>|<window_start_us>``).

The hot path is Flink SQL on the JVM (``ticklake.jobs.ohlc_sql`` writes it); no Python
functions run per record. The Iceberg tables must exist (``ticklake.catalog.tables``) and
the topics too (``ticklake.schemas.topics.ensure_topics``): the job creates no tables, and
of the topics only its live ones when missing (through the JVM's Kafka admin client), so it
needs nothing but PyFlink. ``docs/stream-jobs.md`` describes the pipeline and definitions.

Settings come from ``TICKLAKE_DEDUP_OHLC_*`` environment variables, then the flags below.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticklake.catalog.connection import flink_catalog_ddl, mask_secrets
from ticklake.jobs import flink_conf
from ticklake.jobs.execution import default_checkpoint_dir, execute_and_wait, statement_set
from ticklake.jobs.flink_conf import CHANNEL_BUFFERS, NETWORK_MEMORY, network_config
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.jobs.ohlc_sql import JobSql, SqlOptions, job_sql, timeframe_seconds
from ticklake.jobs.state_sizing import (
    DEDUP_KEY_HEAP_BYTES,
    DESIGN_RATE,
    FINGERPRINT_KEY_BYTES,
    DedupCapacity,
)
from ticklake.jobs.thread_priority import lower_embedded_bulk_threads
from ticklake.logs import configure as configure_logging
from ticklake.schemas.topics import (
    CANDLES,
    LATE_TRADES,
    LIVE_CANDLES,
    LIVE_TRADES,
    RAW_TRADES,
    TopicSpec,
)
from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyflink.table import StatementSet, TableEnvironment

log = logging.getLogger(__name__)

JOB_NAME = "dedup_ohlc"
#: The late-trades topic (Trade layout, keyed by market).
LATE_TRADES_TOPIC = LATE_TRADES.name
DEFAULT_TIMEFRAMES = ("1m", "5m", "15m", "1h", "1d")

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|min|m|h|d)\s*$")
_DURATION_UNIT = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def parse_duration(value: object) -> object:
    """``500ms``, ``5s``, ``2min`` (or ``2m``), ``1h``, ``1d`` -> timedelta; others as is."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return int(match.group(1)) * _DURATION_UNIT[match.group(2)]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


class DedupOhlcSettings(BaseSettings):
    """Typed settings of the dedup + OHLC job (env prefix ``TICKLAKE_DEDUP_OHLC_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_DEDUP_OHLC_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    raw_topic: str = RAW_TRADES.name
    candles_topic: str = CANDLES.name
    late_topic: str = LATE_TRADES_TOPIC
    namespace: str = "market"
    #: Comma-separated in the environment and on the command line: ``1m,5m,1h``.
    timeframes: Annotated[tuple[str, ...], NoDecode] = DEFAULT_TIMEFRAMES
    #: Watermark = max event time seen - this bound; trades further behind are late.
    out_of_orderness: Duration = timedelta(seconds=5)
    #: A partition without records for this long stops holding the watermark back.
    idle_timeout: Duration = timedelta(seconds=30)
    #: How long a trade key is remembered for deduplication (processing time since its
    #: first arrival: a first-row dedup never rewrites a key; ``0s``: for the whole run).
    #: Not given: 1 h for unbounded runs, the whole run for ``bounded`` ones
    #: (``resolved_dedup_ttl``, docs/stream-jobs.md 3).
    dedup_ttl: Duration | None = None
    #: How trades are deduplicated. ``fingerprints`` (default): a dedup operator behind the
    #: Kafka source (the ``ticklake-kafka-dedup`` connector, ``jobs/java/.../dedup``) that
    #: keeps 128-bit fingerprints of the keys in primitive arrays, about 60-90 B per key
    #: and no heap object per key, written to the state in chunks at each checkpoint.
    #: ``sql``: Flink SQL's ``ROW_NUMBER`` deduplication, whose heap state costs about 300
    #: B and seven objects per key, which the garbage collector traces and copies
    #: (docs/stream-jobs.md section 3). The two keep different state: a savepoint of one
    #: does not restore the other's dedup keys.
    dedup: Literal["fingerprints", "sql"] = "fingerprints"
    checkpoint_interval: Duration = timedelta(seconds=10)
    #: Where checkpoints go; default ``file://<state home>/data/checkpoints/dedup_ohlc``.
    checkpoint_dir: str | None = None
    #: Flink's changelog state backend over the heap state: each checkpoint writes the
    #: state changes since the last one (to ``<checkpoint dir>/changelog``) instead of a
    #: snapshot of every dedup key, which is taken only every ``state_materialize`` in the
    #: background. On by default, bounded runs too: a full heap snapshot per checkpoint
    #: stalled the live outputs at every checkpoint and grows with the dedup keys (36M at
    #: 10,000 trades/s and a 1 h TTL), and a bounded replay of 5M trades with it was 12%
    #: slower (bench/README.md, session 20). docs/stream-jobs.md section 3.
    state_changelog: bool = True
    #: How often the changelog backend takes its full (asynchronous) snapshot.
    state_materialize: Duration = timedelta(minutes=10)
    parallelism: int = Field(default=1, ge=1)
    #: Prefix of the Kafka sinks' transactional ids: unique per job (deployment).
    transactional_id_prefix: str = "ticklake-dedup-ohlc"
    #: Kafka transaction timeout: above the checkpoint interval, below the broker's max (2 h).
    transaction_timeout: Duration = timedelta(minutes=15)
    group_id: str = "ticklake-dedup-ohlc"
    startup_mode: Literal["earliest-offset", "latest-offset", "group-offsets"] = "earliest-offset"
    #: Stop at the end offsets seen at start (tests, backfills); all windows then close.
    bounded: bool = False
    #: ``on-periodic`` (default, cheap) or ``on-event`` (a watermark after every record:
    #: lateness becomes a pure function of the input order; used by the tests).
    watermark_emit: Literal["on-periodic", "on-event"] = "on-periodic"
    #: Written into every candle's ``ingestor_id``.
    ingestor_id: str = "flink:dedup_ohlc"
    #: Live outputs (at-least-once, no checkpoint wait): deduplicated on-time trades, and
    #: forming + final candles as an upsert stream. ``--no-live`` turns both off.
    live: bool = True
    live_trades_topic: str = LIVE_TRADES.name
    live_candles_topic: str = LIVE_CANDLES.name
    #: Write the live outputs to the Kafka live topics (a durable, replayable copy that
    #: ``ticklake relay bridge`` forwards to the relay). Off (``--no-live-kafka``) with
    #: ``live_relay`` set: the relay only, no Kafka hop.
    live_kafka: bool = True
    #: Also publish the live outputs straight to the relay's XSUB (publish) endpoint, e.g.
    #: ``tcp://127.0.0.1:5557`` (``--live-relay``; Java, JeroMQ, in the job): the same
    #: topics and payloads as the bridge's, without the Kafka hop and the bridge process.
    #: Do not run the bridge on the live topics as well (subscribers would get each update
    #: twice, from two publishers).
    live_relay: str | None = None
    #: Forming candles: at most one update per candle per this interval (processing
    #: time); 0 gives one update per trade. Each update costs an aggregate step, an Avro
    #: record and a Kafka send per timeframe: conflation bounds that by the number of
    #: active candles instead of the trade rate (docs/stream-jobs.md).
    live_conflation: Duration = timedelta(milliseconds=50)
    #: How rows reach the Iceberg writers: ``hash`` (by partition: the writers run in a
    #: task of their own, so their Parquet close and S3 upload at each checkpoint does not
    #: stall the live outputs) or ``none`` (chained to the operators before them: no
    #: shuffle, about a fifth less CPU per trade; for bounded replays and backfills).
    iceberg_distribution: Literal["hash", "none"] = "hash"
    #: Producer ``linger.ms`` of the live sinks: how long a record may wait to batch.
    live_linger: Duration = timedelta(milliseconds=5)
    #: ``execution.buffer-timeout.interval``: the longest a record waits in a network
    #: buffer between operators (Flink's default 100 ms). Lower: fresher live outputs and
    #: more, smaller buffers (a little throughput); 0 flushes after every record.
    buffer_timeout: Duration = timedelta(milliseconds=10)
    #: The source consumer's ``fetch.max.wait.ms``: how long the broker may hold a fetch
    #: that found no new data. Kafka's default, 500 ms, added about 400 ms (p50) between a
    #: trade's arrival and its live output at 10,000 trades/s; 10 ms: about 100-200 ms
    #: (bench/README.md, freshness, session 5), for up to 100 empty fetches/s when idle.
    source_fetch_wait: Duration = timedelta(milliseconds=10)
    #: Embedded MiniCluster only: the nice value (0-19) of its bulk threads (Iceberg writers
    #: and committer, state snapshots; ``jobs/thread_priority.py``), so that on a machine
    #: short of cores their bursts at checkpoints wait for the live path. 0 (the default):
    #: unchanged; 10 made no difference in 3 alternating pairs of ``bench freshness`` at
    #: 10,000 trades/s (bench/README.md, session 17).
    background_nice: int = Field(default=0, ge=0, le=19)
    #: Create the live topics when missing (JVM Kafka admin client, best effort).
    create_live_topics: bool = True
    #: Network buffers (32 KB each) one output channel may hold before its task waits
    #: (``taskmanager.network.memory.max-buffers-per-channel``, Flink's default 10; also the
    #: floating buffers per gate). At every checkpoint an Iceberg writer closes and uploads
    #: its files and reads no input meanwhile; with 10 buffers (~0.2 s of trades at
    #: 10,000/s) the deduplication behind it, and so every live output, stopped for the rest
    #: of that flush (0.5-0.8 s). 500 buffers absorb it (bench/README.md, session 6). On the
    #: MiniCluster every channel is local: the sender's buffers are the only queue.
    channel_buffers: int = Field(default=CHANNEL_BUFFERS, ge=10)
    #: Network memory of the embedded MiniCluster (the pool the channel buffers come from;
    #: Flink's local default is 64 MB). A standalone cluster keeps its own setting.
    network_memory: str = NETWORK_MEMORY
    #: More Flink configuration (``--flink-conf KEY=VALUE``), applied last: network
    #: buffers, state backend, metrics ... On the embedded MiniCluster it configures the
    #: cluster too; a standalone cluster takes its own ``config.yaml`` for cluster options.
    flink_conf: dict[str, str] = Field(default_factory=dict)
    #: Options of the embedded MiniCluster's JVM, which this job's process starts, e.g.
    #: ``-Xmx24g`` for the dedup keys of a long TTL (``ticklake.jobs.state_sizing``). Put
    #: after :data:`EMBEDDED_JVM_DEFAULTS` and before PyFlink's ``JVM_ARGS``, so these
    #: override the defaults and a user's own ``JVM_ARGS`` override both; a standalone
    #: cluster's JVMs are configured by its ``config.yaml`` (bench/README.md, session 10,
    #: for the collector flags tried).
    embedded_jvm_options: str = ""

    def resolved_embedded_jvm_options(self) -> str:
        """:data:`EMBEDDED_JVM_DEFAULTS`, then ``embedded_jvm_options`` (HotSpot takes the
        last of a flag, so the user's options win)."""
        return f"{EMBEDDED_JVM_DEFAULTS} {self.embedded_jvm_options}".strip()

    @field_validator("timeframes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one timeframe")
        if len(set(value)) != len(value):
            raise ValueError("timeframes repeat")
        for tf in value:
            timeframe_seconds(tf)
        return tuple(sorted(value, key=timeframe_seconds))

    @model_validator(mode="after")
    def _bounds(self) -> DedupOhlcSettings:
        if self.out_of_orderness < timedelta(0):
            raise ValueError("out_of_orderness must not be negative")
        ttl = self.resolved_dedup_ttl()
        if ttl < timedelta(0) or timedelta(0) < ttl <= self.out_of_orderness:
            raise ValueError("dedup_ttl must exceed out_of_orderness (or be 0s: the whole run)")
        if not timedelta(0) < self.checkpoint_interval < self.transaction_timeout:
            raise ValueError("need 0 < checkpoint_interval < transaction_timeout")
        if self.state_materialize <= timedelta(0):
            raise ValueError("state_materialize must be positive")
        if self.buffer_timeout < timedelta(0) or self.live_linger < timedelta(0):
            raise ValueError("buffer_timeout and live_linger must not be negative")
        if self.source_fetch_wait < timedelta(0):
            raise ValueError("source_fetch_wait must not be negative")
        if not timedelta(0) <= self.live_conflation <= timedelta(minutes=1):
            raise ValueError("live_conflation must be between 0 (per trade) and 1 minute")
        if self.transaction_timeout >= timedelta(hours=2):
            raise ValueError("transaction_timeout must stay below the broker's 2 h maximum")
        if self.live_relay is not None and not re.fullmatch(
            r"(tcp|ipc|inproc)://\S+", self.live_relay
        ):
            raise ValueError(
                f"live_relay {self.live_relay!r} must be a ZeroMQ endpoint, e.g."
                " tcp://127.0.0.1:5557 (the relay's publish port)"
            )
        if self.live and not self.live_kafka and self.live_relay is None:
            raise ValueError("--no-live-kafka needs --live-relay (or use --no-live)")
        return self

    def resolved_dedup_ttl(self) -> timedelta:
        """The dedup state's TTL; ``timedelta(0)``: none, every key is kept for the run.

        A bounded run replays a range at whatever rate the machine allows (an hour of a
        busy market in well under a minute), so a processing-time TTL measures the replay,
        not the market: it expires nothing in a run shorter than itself, and costs every
        state access its incremental clean-up (about a fifth of the job's CPU,
        docs/stream-jobs.md section 8). Bounded runs therefore keep every key unless
        ``dedup_ttl`` is given; their memory grows with the distinct trades of the run.
        """
        if self.dedup_ttl is not None:
            return self.dedup_ttl
        return timedelta(0) if self.bounded else timedelta(hours=1)

    def resolved_checkpoint_dir(self) -> str:
        if self.checkpoint_dir:
            return self.checkpoint_dir
        return default_checkpoint_dir(JOB_NAME)

    def state_backend_config(self) -> dict[str, str]:
        """The changelog state backend's options (empty when it is off)."""
        if not self.state_changelog:
            return {}
        return {
            "state.changelog.enabled": "true",
            "state.changelog.storage": "filesystem",
            "dstl.dfs.base-path": f"{self.resolved_checkpoint_dir().rstrip('/')}/changelog",
            "state.changelog.periodic-materialize.interval": f"{_ms(self.state_materialize)} ms",
            # A restored job's first checkpoint builds on the snapshot it was restored
            # from: the changelog backend cannot take the full snapshot that Flink's
            # default restore mode (NO_CLAIM) demands, and every checkpoint would fail.
            "execution.state-recovery.claim-mode": "CLAIM",
        }

    def table_config(self) -> dict[str, str]:
        """Flink configuration of the job."""
        return {
            "pipeline.name": f"ticklake {JOB_NAME}",
            "table.local-time-zone": "UTC",
            "parallelism.default": str(self.parallelism),
            "table.exec.state.ttl": f"{_ms(self.resolved_dedup_ttl())} ms",
            "table.exec.source.idle-timeout": f"{_ms(self.idle_timeout)} ms",
            "execution.checkpointing.interval": f"{_ms(self.checkpoint_interval)} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.dir": self.resolved_checkpoint_dir(),
            "execution.checkpointing.externalized-checkpoint-retention": ("RETAIN_ON_CANCELLATION"),
            "execution.buffer-timeout.interval": f"{_ms(self.buffer_timeout)} ms",
            # One optimize block per shared view (trades_checked): every INSERT reads the
            # same Deduplicate operator. Without it each INSERT's projection is pushed
            # into its own copy of the dedup (three operators, three times the state and
            # its TTL cleanup; measured in docs/stream-jobs.md section 8).
            "table.optimizer.reuse-optimize-block-with-digest-enabled": "true",
            # Chained operators hand records on without copying them (SQL operators do
            # not keep references to their input records).
            "pipeline.object-reuse": "true",
            **self.state_backend_config(),
            **network_config(self.channel_buffers, self.network_memory),
            **self.flink_conf,
        }

    def sql_options(self, conn: Connections) -> SqlOptions:
        source: dict[str, str] = {
            "properties.group.id": self.group_id,
            "scan.startup.mode": self.startup_mode,
            "scan.watermark.emit.strategy": self.watermark_emit,
            "properties.fetch.max.wait.ms": str(_ms(self.source_fetch_wait)),
        }
        if self.startup_mode == "group-offsets":
            source["properties.auto.offset.reset"] = "earliest"
        if self.bounded:
            source["scan.bounded.mode"] = "latest-offset"
        live_kafka = self.live and self.live_kafka
        return SqlOptions(
            bootstrap_servers=conn.kafka.bootstrap_servers,
            raw_topic=self.raw_topic,
            candles_topic=self.candles_topic,
            late_topic=self.late_topic,
            catalog=conn.catalog.name,
            namespace=self.namespace,
            timeframes=self.timeframes,
            out_of_orderness_ms=_ms(self.out_of_orderness),
            source_options=source,
            sink_options={
                "properties.transaction.timeout.ms": str(_ms(self.transaction_timeout)),
            },
            transactional_id_prefix=self.transactional_id_prefix,
            ingestor_id=self.ingestor_id,
            live_trades_topic=self.live_trades_topic if live_kafka else None,
            live_candles_topic=self.live_candles_topic if live_kafka else None,
            live_relay=self.live_relay if self.live else None,
            live_sink_options={"properties.linger.ms": str(_ms(self.live_linger))},
            live_conflation_ms=_ms(self.live_conflation),
            iceberg_distribution=self.iceberg_distribution,
            dedup=self.dedup,
            dedup_ttl_ms=_ms(self.resolved_dedup_ttl()),
        )

    def live_topics(self) -> list[TopicSpec[Any]]:
        """The live topics this job writes (renamed as configured); empty with ``--no-live``
        or ``--no-live-kafka``."""
        if not self.live or not self.live_kafka:
            return []
        return [
            LIVE_TRADES.renamed(self.live_trades_topic),
            LIVE_CANDLES.renamed(self.live_candles_topic),
        ]


def ensure_live_topics(settings: DedupOhlcSettings, bootstrap_servers: str) -> None:
    """Create the live topics when missing, with the JVM's Kafka admin client (py4j).

    The job environment has no confluent-kafka, but the Kafka connector's kafka-clients is on
    the gateway JVM's classpath. Best effort: on failure it logs, and the live sinks then
    fail on a missing topic (the broker does not auto-create topics).
    """
    specs = settings.live_topics()
    if not specs or not settings.create_live_topics:
        return
    from pyflink.java_gateway import get_gateway

    try:
        jvm = get_gateway().jvm
        props = jvm.java.util.Properties()
        props.put("bootstrap.servers", bootstrap_servers)
        admin = jvm.org.apache.kafka.clients.admin.AdminClient.create(props)
        try:
            existing = set(admin.listTopics().names().get())
            for spec in specs:
                if spec.name in existing:
                    continue
                topic = jvm.org.apache.kafka.clients.admin.NewTopic(
                    spec.name,
                    jvm.java.util.Optional.of(spec.partitions),
                    jvm.java.util.Optional.empty(),
                )
                configs = jvm.java.util.HashMap()
                for key, value in spec.config().items():
                    configs.put(key, value)
                topic.configs(configs)
                topics = jvm.java.util.ArrayList()
                topics.add(topic)
                try:
                    admin.createTopics(topics).all().get()
                    log.info("created live topic %s", spec.name)
                except Exception as exc:  # TopicExistsException when a peer raced us
                    if "TopicExists" not in str(exc):
                        raise
        finally:
            admin.close()
    except Exception as exc:
        log.warning("could not ensure the live topics %s: %s", [s.name for s in specs], exc)


#: Given to the embedded MiniCluster's JVM before ``embedded_jvm_options``: the heap starts
#: at an eighth of the machine's memory (the JVM's default is a sixty-fourth; its maximum
#: stays a quarter) with every page of it touched at start, so the heap never grows while
#: the job runs. At 10,000 trades/s a growing heap (1.4 to 2.0 GB committed, over a G1
#: mark cycle of about 1.5 s) came with the slow first measured minute of two of four
#: freshness invocations;
#: with these, none of four had one (docs/stream-jobs.md section 8, bench/README.md,
#: session 25). They cost the JVM's start 1-3 s and commit the memory at once.
#: ``-XX:-AlwaysPreTouch`` or an ``-Xms`` in ``embedded_jvm_options`` undo them.
EMBEDDED_JVM_DEFAULTS = "-XX:InitialRAMPercentage=12.5 -XX:+AlwaysPreTouch"


def add_embedded_jvm_options(options: str) -> None:
    """Put ``options`` before ``JVM_ARGS``, which PyFlink gives the MiniCluster's JVM.

    Takes effect when this process starts its gateway JVM (the first table environment);
    options already in ``JVM_ARGS`` come after these, and HotSpot takes the last of a flag.
    """
    options, current = options.strip(), os.environ.get("JVM_ARGS", "")
    if options and options not in current:
        os.environ["JVM_ARGS"] = f"{options} {current}".strip()


def log_dedup_capacity(settings: DedupOhlcSettings) -> DedupCapacity | None:
    """Log how many dedup keys the embedded MiniCluster's heap holds (heap backend only).

    A warning when an unbounded run's TTL cannot hold ``DESIGN_RATE`` trades/s: its keys
    would outgrow the heap (``ticklake.jobs.state_sizing``, docs/stream-jobs.md section 3).
    """
    backend = settings.flink_conf.get("state.backend.type", "hashmap").lower()
    if backend not in ("hashmap", "heap"):
        return None
    from pyflink.java_gateway import get_gateway

    max_heap = int(get_gateway().jvm.java.lang.Runtime.getRuntime().maxMemory())
    key_bytes = FINGERPRINT_KEY_BYTES if settings.dedup == "fingerprints" else DEDUP_KEY_HEAP_BYTES
    capacity = DedupCapacity(max_heap, settings.resolved_dedup_ttl(), key_bytes)
    rate = capacity.sustained_rate
    level = logging.WARNING if rate is not None and rate < DESIGN_RATE else logging.INFO
    log.log(level, capacity.describe())
    return capacity


def plan(settings: DedupOhlcSettings, conn: Connections) -> JobSql:
    """The job's configuration and SQL, without running anything."""
    return job_sql(settings.sql_options(conn), settings.table_config(), flink_catalog_ddl(conn))


def build(
    settings: DedupOhlcSettings, conn: Connections | None = None
) -> tuple[TableEnvironment, StatementSet]:
    """The table environment with every table and view registered, and the job's INSERTs."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    conn = conn or Connections.load()
    sql = plan(settings, conn)
    # Set by `flink run` for its Python driver: the state then lives on the cluster.
    embedded = "PYFLINK_GATEWAY_PORT" not in os.environ
    if embedded:
        add_embedded_jvm_options(settings.resolved_embedded_jvm_options())
    drain_gateway_stderr()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    if embedded:
        log_dedup_capacity(settings)
        lower_embedded_bulk_threads(settings.background_nice)
    ensure_live_topics(settings, conn.kafka.bootstrap_servers)
    return t_env, statement_set(t_env, sql)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given (``None``: not given, the environment or default holds)."""
    return flink_conf.given_arguments(args, "print_sql")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ticklake.jobs.dedup_ohlc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--raw-topic", help=f"raw-trades topic (default {RAW_TRADES.name})")
    add("--candles-topic", help=f"candles topic (default {CANDLES.name})")
    add("--late-topic", help=f"late-trades topic (default {LATE_TRADES_TOPIC})")
    add("--namespace", help="Iceberg namespace of the market tables (default market)")
    add("--timeframes", help="comma-separated, e.g. 1m,5m,15m,1h,1d (the default)")
    add("--out-of-orderness", help="watermark bound, e.g. 5s (default)")
    add("--idle-timeout", help="idle-source timeout, e.g. 30s (default)")
    add(
        "--dedup-ttl",
        help="how long trade keys are remembered, e.g. 6h; 0s: the whole run"
        " (default: 1h, bounded runs the whole run)",
    )
    add("--dedup", choices=["fingerprints", "sql"],
        help="fingerprints (default): ticklake's dedup operator, 128-bit key fingerprints"
        " off the object heap; sql: Flink SQL's ROW_NUMBER deduplication")  # fmt: skip
    add("--checkpoint-interval", help="e.g. 10s (default); Iceberg and Kafka commit on it")
    add("--checkpoint-dir", help="file:// or s3:// URI (default under the state home)")
    add("--state-changelog", action=argparse.BooleanOptionalAction, default=None,
        help="the changelog state backend (default: on)")  # fmt: skip
    add("--state-materialize",
        help="the changelog backend's full snapshot interval, e.g. 10min (default)")  # fmt: skip
    add("--parallelism", type=int, help="default parallelism (default 1)")
    add("--transactional-id-prefix", help="Kafka transactional id prefix, unique per job")
    add("--group-id", help="Kafka consumer group of the source")
    add("--startup-mode", choices=["earliest-offset", "latest-offset", "group-offsets"])
    add("--watermark-emit", choices=["on-periodic", "on-event"])
    add("--bounded", action="store_true", default=None, help="stop at the current end offsets")
    add("--live-trades-topic", help=f"live trades topic (default {LIVE_TRADES.name})")
    add("--live-candles-topic", help=f"live candles topic (default {LIVE_CANDLES.name})")
    add("--no-live", dest="live", action="store_false", default=None,
        help="no live outputs (only the exactly-once ones)")  # fmt: skip
    add(
        "--live-relay",
        metavar="ENDPOINT",
        help="also publish the live outputs straight to the relay's publish port, e.g."
        " tcp://127.0.0.1:5557 (default: Kafka only, forwarded by `ticklake relay bridge`)",
    )
    add("--no-live-kafka", dest="live_kafka", action="store_false", default=None,
        help="with --live-relay: no live Kafka topics (the relay only)")  # fmt: skip
    add("--live-conflation",
        help="forming candles: at most one update per candle per interval, e.g. 50ms "
        "(default); 0ms: one per trade")  # fmt: skip
    add("--iceberg-distribution", choices=["hash", "none"],
        help="hash (default): Iceberg writers in their own task; none: chained")  # fmt: skip
    add("--live-linger", help="producer linger.ms of the live sinks, e.g. 5ms (default)")
    add("--buffer-timeout", help="network buffer timeout, e.g. 10ms (default); 0ms: per record")
    add("--source-fetch-wait", help="the source consumer's fetch.max.wait.ms, e.g. 10ms (default)")
    add("--background-nice", type=int,
        help="embedded MiniCluster: nice value of the Iceberg writers' and snapshot threads,"
        " e.g. 10 (default 0: unchanged)")  # fmt: skip
    add("--embedded-jvm-options",
        help="the embedded MiniCluster's JVM options, e.g. --embedded-jvm-options=-Xmx24g,"
        f" after the defaults ({EMBEDDED_JVM_DEFAULTS})")  # fmt: skip
    flink_conf.add_arguments(p)
    add("--print-sql", action="store_true", help="print the job's SQL and exit")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    configure_logging()
    settings = DedupOhlcSettings(**_overrides(args))
    conn = Connections.load()
    if args.print_sql:
        print(mask_secrets(plan(settings, conn).script(), conn))
        return
    _, statements = build(settings, conn)
    execute_and_wait(statements, JOB_NAME)


if __name__ == "__main__":
    main()
