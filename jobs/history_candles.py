"""Exchange klines fetched for history requests -> the Iceberg candles table, exactly once.

    python -m ticklake.jobs.history_candles [--namespace market] [--topic ...] [--bounded]

The history worker (``ingestors/history.py``) writes the klines of a candle request to the
history-candles topic (``Candle`` layout, ``ingestor_id`` = the ingestor: these are the
exchange's candles, not ones Flink built). This job keeps the first arrival of each
(exchange, symbol, timeframe, window_start_us) (Flink's deduplication pattern, state bounded
by ``dedup_ttl``) and appends it to ``<namespace>.candles``, committing on checkpoints.
Repeats beyond the TTL are kept out by the worker (coverage and windows already in the
lake are never produced again; ``docs/history.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.catalog.connection import flink_catalog_ddl
from ticklake.jobs.execution import default_checkpoint_dir, wait_unless_detached
from ticklake.jobs.functions import function_ddl, micros_to_ltz_sql
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.jobs.ohlc_sql import ICEBERG_CANDLE_COLUMNS
from ticklake.schemas.flink import kafka_table_ddl
from ticklake.schemas.models import Candle
from ticklake.schemas.topics import HISTORY_CANDLES
from ticklake.settings import Connections

JOB_NAME = "history_candles"

HISTORY_CANDLES_TOPIC = HISTORY_CANDLES.name


class HistoryCandlesSettings(BaseSettings):
    """Settings of the job (env prefix ``TICKLAKE_HISTORY_CANDLES_``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_HISTORY_CANDLES_", frozen=True, extra="ignore"
    )

    topic: str = HISTORY_CANDLES_TOPIC
    namespace: str = "market"
    group_id: str = "ticklake-history-candles"
    startup_mode: Literal["earliest-offset", "latest-offset", "group-offsets"] = "earliest-offset"
    checkpoint_interval_ms: int = Field(default=10_000, gt=0)
    checkpoint_dir: str | None = None
    dedup_ttl_ms: int = Field(default=int(timedelta(days=1).total_seconds() * 1000), gt=0)
    parallelism: int = Field(default=1, ge=1)
    bounded: bool = False

    def resolved_checkpoint_dir(self) -> str:
        if self.checkpoint_dir:
            return self.checkpoint_dir
        return default_checkpoint_dir(JOB_NAME)

    def table_config(self) -> dict[str, str]:
        return {
            "pipeline.name": f"ticklake {JOB_NAME}",
            "table.local-time-zone": "UTC",
            "parallelism.default": str(self.parallelism),
            "table.exec.state.ttl": f"{self.dedup_ttl_ms} ms",
            "execution.checkpointing.interval": f"{self.checkpoint_interval_ms} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.dir": self.resolved_checkpoint_dir(),
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        }


def statements(settings: HistoryCandlesSettings, conn: Connections) -> tuple[list[str], str]:
    """(setup statements, the INSERT) of the job."""
    source = {
        "properties.group.id": settings.group_id,
        "scan.startup.mode": settings.startup_mode,
    }
    if settings.startup_mode == "group-offsets":
        source["properties.auto.offset.reset"] = "earliest"
    if settings.bounded:
        source["scan.bounded.mode"] = "latest-offset"
    ddl = kafka_table_ddl(
        Candle,
        "history_candles",
        settings.topic,
        bootstrap_servers=conn.kafka.bootstrap_servers,
        options=source,
        extra_columns=["`proc_time` AS PROCTIME()"],
    )
    cols = ", ".join(f"`{c}`" for c in ICEBERG_CANDLE_COLUMNS)
    select = ", ".join(
        micros_to_ltz_sql("`window_start_us`") if c == "window_start" else f"`{c}`"
        for c in ICEBERG_CANDLE_COLUMNS
    )
    target = f"`{conn.catalog.name}`.`{settings.namespace}`.`candles`"
    insert = f"""INSERT INTO {target} ({cols})
SELECT {select}
FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY `exchange`, `symbol`, `timeframe`, `window_start_us`
    ORDER BY `proc_time` ASC) AS row_num
  FROM history_candles
)
WHERE row_num = 1"""
    return [flink_catalog_ddl(conn), ddl, *function_ddl()], insert


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m ticklake.jobs.{JOB_NAME}", description=__doc__)
    add = p.add_argument
    add("--topic", help=f"history-candles topic (default {HISTORY_CANDLES_TOPIC})")
    add("--namespace", help="Iceberg namespace of the candles table (default market)")
    add("--group-id", help="Kafka consumer group of the source")
    add("--startup-mode", choices=["earliest-offset", "latest-offset", "group-offsets"])
    add("--checkpoint-interval-ms", type=int, help="Iceberg commits on it (default 10000)")
    add("--checkpoint-dir", help="file:// or s3:// URI (default under the state home)")
    add("--parallelism", type=int)
    add("--bounded", action="store_true", default=None, help="stop at the current end offsets")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    args = parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    settings = HistoryCandlesSettings(**overrides)
    conn = Connections.load()
    setup, insert = statements(settings, conn)
    drain_gateway_stderr()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = t_env.get_config()
    for key, value in settings.table_config().items():
        config.set(key, value)
    for statement in setup:
        t_env.execute_sql(statement)
    result = t_env.execute_sql(insert)
    client = result.get_job_client()
    job_id = str(client.get_job_id()) if client is not None else None
    print(f"submitted job {job_id} ({JOB_NAME})", flush=True)
    wait_unless_detached(result)


if __name__ == "__main__":
    main()
