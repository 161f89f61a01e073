"""Bounded Flink SQL job: copy rows from a CSV file into an Iceberg table of the shared catalog.

The stack's round trip uses it to prove the seam Flink -> JDBC catalog (PostgreSQL) ->
S3FileIO (MinIO) that every streaming job relies on. Runs on the embedded MiniCluster.

    python -m ticklake.jobs.catalog_roundtrip --table ns.trades --csv rows.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyflink.table import EnvironmentSettings, TableEnvironment, TableResult

from ticklake.catalog.connection import flink_catalog_ddl
from ticklake.jobs.execution import wait_unless_detached
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.settings import Connections


def build(conn: Connections, table: str, csv_path: str) -> tuple[TableEnvironment, str]:
    """The table environment with source and catalog registered, and the INSERT to run."""
    drain_gateway_stderr()
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("parallelism.default", "1")
    t_env.execute_sql(flink_catalog_ddl(conn))
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE roundtrip_source (
            symbol STRING,
            ts TIMESTAMP(6),
            trade_id STRING,
            price DECIMAL(18, 8),
            amount DECIMAL(18, 8)
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{csv_path}',
            'format' = 'csv'
        )
        """
    )
    insert = (
        f"INSERT INTO `{conn.catalog.name}`.{table} "
        "SELECT symbol, ts, trade_id, price, amount FROM roundtrip_source"
    )
    return t_env, insert


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", required=True, help="namespace.table in the shared catalog")
    parser.add_argument("--csv", required=True, help="absolute path of the CSV input")
    args = parser.parse_args(argv)
    t_env, insert = build(Connections.load(), args.table, args.csv)
    result: TableResult = t_env.execute_sql(insert)
    wait_unless_detached(result)


if __name__ == "__main__":
    main()
