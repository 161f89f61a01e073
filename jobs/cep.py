"""Market and feed patterns on the stream (CEP), each match one alert, exactly once.

    python -m ticklake.jobs.cep [--patterns-file cep.toml] [--patterns price_spike,dead_feed]
        [--patterns-dir DIR] [--namespace market] [--bounded] [--print-sql] ...

One Flink job (one statement set) reads the final candles (``ticklake.candles``, written
exactly-once by ``dedup_ohlc``, read ``read_committed``) and the feed heartbeats
(``ticklake.feed.heartbeats``), runs every enabled pattern, and writes each match as an
:class:`~ticklake.schemas.alerts.Alert` to the alerts topic (Kafka, exactly-once, keyed by
market; the relay bridge publishes it live as ``EXCHANGE:BASE/QUOTE|alert``) and to
``<namespace>.alerts`` (Iceberg, ``ticklake.catalog.tables.ensure_alerts_table``).

Patterns are SQL files (``jobs/patterns/*.sql``, plus ``--patterns-dir``); their parameters
come from the pattern defaults, then the patterns file (TOML, per pattern and per market):

    [price_spike]
    pct = "5"
    [price_spike.markets."BINANCE:BTC/USDT"]
    pct = "2.5"
    window = "10m"

All of it is Flink SQL on the JVM (``ticklake.jobs.cep_sql`` writes it); no Python function
runs per record. ``docs/cep.md`` documents the patterns and how to add one. Settings come
from ``TICKLAKE_CEP_*`` environment variables, then the flags below.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticklake.catalog.connection import flink_catalog_ddl, mask_secrets
from ticklake.jobs.cep_sql import (
    CepSqlOptions,
    Pattern,
    PatternConfig,
    PatternError,
    load_patterns,
    resolve,
)
from ticklake.jobs.dedup_ohlc import Duration
from ticklake.jobs.execution import default_checkpoint_dir, execute_and_wait, statement_set
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.jobs.ohlc_sql import JobSql, timeframe_seconds
from ticklake.schemas.topics import ALERTS, CANDLES, FEED_HEARTBEATS
from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyflink.table import StatementSet, TableEnvironment

JOB_NAME = "cep"
BUILTIN_PATTERNS = ("price_spike", "volume_surge", "stale_feed", "dead_feed")


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


def read_pattern_configs(path: Path) -> dict[str, PatternConfig]:
    """The patterns file: ``[<pattern>]`` values and ``[<pattern>.markets."EX:B/Q"]`` overrides."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PatternError(f"cannot read the patterns file {path}: {exc}") from exc
    configs: dict[str, PatternConfig] = {}
    for name, section in data.items():
        if not isinstance(section, dict):
            raise PatternError(f"{path}: [{name}] must be a table of parameters")
        markets = section.get("markets", {})
        values = {k: str(v) for k, v in section.items() if k != "markets"}
        if not isinstance(markets, dict) or not all(isinstance(v, dict) for v in markets.values()):
            raise PatternError(f'{path}: [{name}.markets."EXCHANGE:BASE/QUOTE"] tables expected')
        configs[name] = PatternConfig(
            values=values,
            markets={m: {k: str(v) for k, v in mv.items()} for m, mv in markets.items()},
        )
    return configs


class CepSettings(BaseSettings):
    """Typed settings of the CEP job (env prefix ``TICKLAKE_CEP_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_CEP_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    candles_topic: str = CANDLES.name
    heartbeats_topic: str = FEED_HEARTBEATS.name
    alerts_topic: str = ALERTS.name
    namespace: str = "market"
    #: Enabled patterns, comma-separated in the environment and on the command line.
    patterns: Annotated[tuple[str, ...], NoDecode] = BUILTIN_PATTERNS
    #: TOML file of parameter values per pattern and market (see the module doc).
    patterns_file: Path | None = None
    #: Extra directories of pattern files (``*.sql``), comma-separated.
    patterns_dir: Annotated[tuple[Path, ...], NoDecode] = ()
    #: The candle timeframe the candle patterns run on.
    timeframe: str = "1m"
    #: Only candles from this producer (``ingestor_id``); empty: every final candle.
    candle_producer: str = "flink:dedup_ohlc"
    #: Watermark bound of both inputs (candles arrive in window order per market).
    out_of_orderness: Duration = timedelta(seconds=5)
    idle_timeout: Duration = timedelta(seconds=30)
    checkpoint_interval: Duration = timedelta(seconds=10)
    checkpoint_dir: str | None = None
    #: Restore from this retained checkpoint or savepoint (embedded runs; on the cluster
    #: use ``ticklake jobs submit --from-savepoint``).
    from_checkpoint: str | None = None
    parallelism: int = Field(default=1, ge=1)
    transactional_id_prefix: str = "ticklake-cep"
    transaction_timeout: Duration = timedelta(minutes=15)
    group_id: str = "ticklake-cep"
    startup_mode: Literal["earliest-offset", "latest-offset", "group-offsets"] = "earliest-offset"
    #: Stop at the end offsets seen at start. End of input is the end of event time: every
    #: feed's last heartbeat then counts as missed (dead_feed), so replays of whole tapes
    #: should leave dead_feed out or run unbounded.
    bounded: bool = False
    #: Once the heartbeats topic has been idle for ``idle_timeout``, their event time
    #: follows the wall clock, so ``dead_feed`` reports feeds that all stopped at once (the
    #: only ingestor crashed; ``docs/cep.md``). Turn it off to replay recorded heartbeats
    #: unbounded (when the tape ends every feed would be reported dead); ``bounded`` runs
    #: never use it.
    liveness_clock: bool = True
    watermark_emit: Literal["on-periodic", "on-event"] = "on-periodic"

    @field_validator("patterns", "patterns_dir", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value

    @model_validator(mode="after")
    def _bounds(self) -> CepSettings:
        if not self.patterns:
            raise ValueError("enable at least one pattern")
        if len(set(self.patterns)) != len(self.patterns):
            raise ValueError("patterns repeat")
        if self.out_of_orderness < timedelta(0):
            raise ValueError("out_of_orderness must not be negative")
        if not timedelta(0) < self.checkpoint_interval < self.transaction_timeout:
            raise ValueError("need 0 < checkpoint_interval < transaction_timeout")
        if self.transaction_timeout >= timedelta(hours=2):
            raise ValueError("transaction_timeout must stay below the broker's 2 h maximum")
        return self

    def selected_patterns(self) -> list[Pattern]:
        found = load_patterns(self.patterns_dir)
        missing = [p for p in self.patterns if p not in found]
        if missing:
            raise PatternError(f"unknown pattern(s) {missing}; known: {sorted(found)}")
        return [found[p] for p in self.patterns]

    def pattern_configs(self, patterns: Sequence[Pattern]) -> dict[str, PatternConfig]:
        """The patterns file, checked against the patterns' declared parameters."""
        configs = read_pattern_configs(self.patterns_file) if self.patterns_file else {}
        known = load_patterns(self.patterns_dir)
        for name in configs:
            if name not in known:
                raise PatternError(f"{self.patterns_file}: no pattern named {name!r}")
        for p in patterns:
            resolve(p, configs.get(p.name, PatternConfig()))
        return configs

    def resolved_checkpoint_dir(self) -> str:
        if self.checkpoint_dir:
            return self.checkpoint_dir
        return default_checkpoint_dir(JOB_NAME)

    def table_config(self) -> dict[str, str]:
        restore = {"execution.savepoint.path": self.from_checkpoint} if self.from_checkpoint else {}
        return restore | {
            "pipeline.name": f"ticklake {JOB_NAME}",
            "table.local-time-zone": "UTC",
            "parallelism.default": str(self.parallelism),
            "table.exec.source.idle-timeout": f"{_ms(self.idle_timeout)} ms",
            "execution.checkpointing.interval": f"{_ms(self.checkpoint_interval)} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.dir": self.resolved_checkpoint_dir(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        }

    def sql_options(self, conn: Connections) -> CepSqlOptions:
        source: dict[str, str] = {
            "properties.group.id": self.group_id,
            "scan.startup.mode": self.startup_mode,
            "scan.watermark.emit.strategy": self.watermark_emit,
        }
        if self.startup_mode == "group-offsets":
            source["properties.auto.offset.reset"] = "earliest"
        if self.bounded:
            source["scan.bounded.mode"] = "latest-offset"
        patterns = self.selected_patterns()
        return CepSqlOptions(
            bootstrap_servers=conn.kafka.bootstrap_servers,
            candles_topic=self.candles_topic,
            heartbeats_topic=self.heartbeats_topic,
            alerts_topic=self.alerts_topic,
            catalog=conn.catalog.name,
            namespace=self.namespace,
            timeframe=self.timeframe,
            candle_producer=self.candle_producer,
            out_of_orderness_ms=_ms(self.out_of_orderness),
            source_options=source,
            sink_options={
                "properties.transaction.timeout.ms": str(_ms(self.transaction_timeout)),
            },
            transactional_id_prefix=self.transactional_id_prefix,
            patterns=patterns,
            configs=self.pattern_configs(patterns),
            liveness_clock=self.liveness_clock and not self.bounded,
        )


def plan(settings: CepSettings, conn: Connections) -> JobSql:
    """The job's configuration and SQL, without running anything."""
    from ticklake.jobs.cep_sql import job_sql

    return job_sql(settings.sql_options(conn), settings.table_config(), flink_catalog_ddl(conn))


def build(
    settings: CepSettings, conn: Connections | None = None
) -> tuple[TableEnvironment, StatementSet]:
    """The table environment with every table and view registered, and the job's INSERTs."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    sql = plan(settings, conn or Connections.load())
    drain_gateway_stderr()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    return t_env, statement_set(t_env, sql)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v is not None and k != "print_sql"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ticklake.jobs.cep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--candles-topic", help=f"final candles topic (default {CANDLES.name})")
    add("--heartbeats-topic", help=f"feed heartbeats topic (default {FEED_HEARTBEATS.name})")
    add("--alerts-topic", help=f"alerts topic (default {ALERTS.name})")
    add("--namespace", help="Iceberg namespace of <namespace>.alerts (default market)")
    add(
        "--patterns",
        help=f"enabled patterns, comma-separated (default {','.join(BUILTIN_PATTERNS)})",
    )
    add("--patterns-file", type=Path, help="TOML parameters per pattern and market")
    add("--patterns-dir", help="extra directories of pattern files, comma-separated")
    add("--timeframe", help="candle timeframe the candle patterns use (default 1m)")
    add("--candle-producer", help="only candles of this ingestor_id (default flink:dedup_ohlc)")
    add("--out-of-orderness", help="watermark bound of both inputs, e.g. 5s (default)")
    add("--idle-timeout", help="idle-source timeout, e.g. 30s (default)")
    add("--checkpoint-interval", help="e.g. 10s (default); Iceberg and Kafka commit on it")
    add("--checkpoint-dir", help="file:// or s3:// URI (default under the state home)")
    add("--from-checkpoint", help="restore from this retained checkpoint (chk-N) or savepoint")
    add("--parallelism", type=int, help="default parallelism (default 1)")
    add("--transactional-id-prefix", help="Kafka transactional id prefix, unique per job")
    add("--group-id", help="Kafka consumer group prefix of the sources")
    add("--startup-mode", choices=["earliest-offset", "latest-offset", "group-offsets"])
    add("--watermark-emit", choices=["on-periodic", "on-event"])
    add("--bounded", action="store_true", default=None, help="stop at the current end offsets")
    add(
        "--liveness-clock",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="heartbeats' event time follows the wall clock once their topic is idle, so "
        "dead_feed sees every feed stop at once (default on; off to replay recorded heartbeats)",
    )
    add("--print-sql", action="store_true", help="print the job's SQL and exit")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = CepSettings(**_overrides(args))
    conn = Connections.load()
    if args.print_sql:
        print(mask_secrets(plan(settings, conn).script(), conn))
        return
    _, statements = build(settings, conn)
    execute_and_wait(statements, JOB_NAME)


if __name__ == "__main__":
    main()
