"""The market tables of the lake: deduplicated trades, candles, late trades.

Created idempotently from Python (pyiceberg) because Flink DDL cannot declare hidden
partitioning (``day(exchange_ts)``); the Flink jobs then write into them by name. Every
table is partitioned by day and market (``exchange``, ``symbol`` identity partitions) and
sorted by time, stores Parquet with zstd, and uses exact decimals.

Platform environment only: pyiceberg is imported inside the functions, so importing this
module costs nothing and never pulls pyiceberg into a Flink job.

    from ticklake.catalog.connection import load_catalog
    from ticklake.catalog.tables import ensure_market_tables
    ensure_market_tables(load_catalog(), namespace="market")
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.partitioning import PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.table.sorting import SortOrder
    from pyiceberg.types import IcebergType

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "market"
TRADES = "trades"
CANDLES = "candles"
LATE_TRADES = "late_trades"

#: Properties of every market table. Flink writes GZIP Parquet unless the table says
#: otherwise; 128 MiB files are the usual Iceberg target (compaction aims at it too).
TABLE_PROPERTIES: dict[str, str] = {
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(128 * 1024 * 1024),
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
}

# Columns as (name, Iceberg type name). Every field is optional: Flink's Iceberg sink refuses
# to write a nullable Flink column (most computed columns are) into a required field.
TRADE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("exchange", "string"),
    ("symbol", "string"),
    ("trade_id", "string"),
    ("side", "string"),
    ("price", "decimal(18, 8)"),
    ("amount", "decimal(18, 8)"),
    ("exchange_ts", "timestamptz"),
    ("exchange_ts_us", "long"),
    ("receipt_ts_us", "long"),
    ("ingestor_id", "string"),
    ("request_id", "string"),
)

CANDLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("exchange", "string"),
    ("symbol", "string"),
    ("timeframe", "string"),
    ("window_start", "timestamptz"),
    ("window_start_us", "long"),
    ("window_end_us", "long"),
    ("open", "decimal(18, 8)"),
    ("high", "decimal(18, 8)"),
    ("low", "decimal(18, 8)"),
    ("close", "decimal(18, 8)"),
    ("volume", "decimal(38, 8)"),
    ("quote_volume", "decimal(38, 16)"),
    ("trade_count", "long"),
    ("vwap", "decimal(18, 8)"),
    ("exchange_ts_us", "long"),
    ("receipt_ts_us", "long"),
    ("ingestor_id", "string"),
    ("final", "boolean"),
    ("version", "long"),
)


@dataclass(frozen=True)
class TableDef:
    """One market table: columns, the time column it is partitioned and sorted by."""

    name: str
    columns: tuple[tuple[str, str], ...]
    time_column: str
    #: Extra sort columns after the time column.
    sort_after: tuple[str, ...] = ()

    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def schema(self) -> Schema:
        from pyiceberg.schema import Schema
        from pyiceberg.types import NestedField

        return Schema(
            *(
                NestedField(i, name, _iceberg_type(kind), required=False)
                for i, (name, kind) in enumerate(self.columns, start=1)
            )
        )

    def _field_id(self, name: str) -> int:
        return self.column_names().index(name) + 1

    def partition_spec(self) -> PartitionSpec:
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.transforms import DayTransform, IdentityTransform

        return PartitionSpec(
            PartitionField(
                self._field_id(self.time_column), 1000, DayTransform(), f"{self.time_column}_day"
            ),
            PartitionField(self._field_id("exchange"), 1001, IdentityTransform(), "exchange"),
            PartitionField(self._field_id("symbol"), 1002, IdentityTransform(), "symbol"),
        )

    def sort_order(self) -> SortOrder:
        from pyiceberg.table.sorting import SortField, SortOrder
        from pyiceberg.transforms import IdentityTransform

        return SortOrder(
            *(
                SortField(source_id=self._field_id(name), transform=IdentityTransform())
                for name in (self.time_column, *self.sort_after)
            )
        )


TABLES: tuple[TableDef, ...] = (
    TableDef(TRADES, TRADE_COLUMNS, "exchange_ts", ("trade_id",)),
    TableDef(CANDLES, CANDLE_COLUMNS, "window_start", ("timeframe",)),
    TableDef(LATE_TRADES, TRADE_COLUMNS, "exchange_ts", ("trade_id",)),
)


def _iceberg_type(kind: str) -> IcebergType:
    from pyiceberg.types import (
        BooleanType,
        DecimalType,
        LongType,
        StringType,
        TimestamptzType,
    )

    simple: dict[str, IcebergType] = {
        "string": StringType(),
        "long": LongType(),
        "boolean": BooleanType(),
        "timestamptz": TimestamptzType(),
    }
    if kind in simple:
        return simple[kind]
    if kind.startswith("decimal(") and kind.endswith(")"):
        precision, scale = (int(p) for p in kind[len("decimal(") : -1].split(","))
        return DecimalType(precision, scale)
    raise ValueError(f"unknown column type {kind!r}")


def ensure_market_tables(catalog: Catalog, namespace: str = DEFAULT_NAMESPACE) -> dict[str, bool]:
    """Create the namespace and the market tables that do not exist yet.

    Returns ``{"<namespace>.<table>": created}``. Idempotent: an existing table is left as
    it is (schema evolution is a separate, deliberate step).
    """
    catalog.create_namespace_if_not_exists(namespace)
    created: dict[str, bool] = {}
    for table in TABLES:
        identifier = f"{namespace}.{table.name}"
        exists = catalog.table_exists(identifier)
        if not exists:
            catalog.create_table_if_not_exists(
                identifier,
                schema=table.schema(),
                partition_spec=table.partition_spec(),
                sort_order=table.sort_order(),
                properties=TABLE_PROPERTIES,
            )
            log.info("created Iceberg table %s", identifier)
        created[identifier] = not exists
    return created
