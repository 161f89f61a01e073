"""ticklake's Flink SQL functions (Java, ``jobs/java/``), by the names the jobs' SQL uses.

The jar is built by ``ticklake setup`` (``ticklake.stack.components.flink.functions_jar``)
and put on the classpath of the MiniCluster and of the cluster with the connector jars.
Each job registers the functions as ``TEMPORARY SYSTEM`` functions in its setup statements
(:func:`function_ddl`), so its SQL, and any SQL file a data engineer adds, can call them
like built-ins.
"""

from __future__ import annotations

#: SQL name -> Java class (``jobs/java/src/...``).
FUNCTIONS: dict[str, str] = {
    # Epoch microseconds (BIGINT) -> exact TIMESTAMP_LTZ(6).
    "TICKLAKE_MICROS_TO_LTZ": "io.ticklake.flink.functions.MicrosToTimestampLtz",
    # (exchange_ts_us, trade_id, price) -> the sortable open/close key of a trade.
    "TICKLAKE_OHLC_KEY": "io.ticklake.flink.functions.OhlcOrderKey",
}


def function_ddl() -> list[str]:
    """``CREATE TEMPORARY SYSTEM FUNCTION`` statements for every ticklake function."""
    return [
        f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} AS '{cls}' LANGUAGE JAVA"
        for name, cls in FUNCTIONS.items()
    ]


def micros_to_ltz_sql(us: str) -> str:
    """Epoch microseconds (BIGINT) as an exact ``TIMESTAMP_LTZ(6)``."""
    return f"TICKLAKE_MICROS_TO_LTZ({us})"
