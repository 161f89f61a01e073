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
ALERTS = "alerts"
HISTORY_COVERAGE = "history_coverage"

#: Properties of every market table. Flink writes GZIP Parquet unless the table says
#: otherwise; 128 MiB files are the usual Iceberg target (compaction aims at it too).
#: Parquet dictionaries stop at 32 KiB a column (Parquet's default is 2 MiB): the
#: low-cardinality columns (exchange, symbol, side, ingestor) stay dictionary-encoded, the
#: unique ones (trade ids, timestamps) fall back to plain encoding after a few thousand
#: values instead of hashing every value of a checkpoint's file into a dictionary that
#: compresses nothing (10% of the streaming job's Java CPU at 10,000 trades/s).
TABLE_PROPERTIES: dict[str, str] = {
    "write.parquet.compression-codec": "zstd",
    "write.parquet.dict-size-bytes": str(32 * 1024),
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


#: Ranges that history requests have put into the lake (``catalog/coverage.py``).
HISTORY_COVERAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("exchange", "string"),
    ("symbol", "string"),
    ("data_type", "string"),
    ("timeframe", "string"),
    ("start_ts", "timestamptz"),
    ("start_ts_us", "long"),
    ("end_ts_us", "long"),
    ("row_count", "long"),
    ("request_id", "string"),
    ("snapshot_id", "long"),
    ("recorded_ts_us", "long"),
)
COVERAGE_TABLE = TableDef(HISTORY_COVERAGE, HISTORY_COVERAGE_COLUMNS, "start_ts", ("end_ts_us",))


#: Pattern matches of the CEP job (``jobs/cep.py``), the layout of ``schemas/alert.avsc``
#: plus ``window_start`` (the partition and sort time).
ALERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("alert_id", "string"),
    ("pattern", "string"),
    ("severity", "string"),
    ("exchange", "string"),
    ("symbol", "string"),
    ("ingestor_id", "string"),
    ("window_start", "timestamptz"),
    ("window_start_us", "long"),
    ("window_end_us", "long"),
    ("exchange_ts_us", "long"),
    ("receipt_ts_us", "long"),
    ("observed", "string"),
    ("threshold", "string"),
    ("reference", "string"),
    ("unit", "string"),
    ("message", "string"),
)
ALERTS_TABLE = TableDef(ALERTS, ALERT_COLUMNS, "window_start", ("pattern",))


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

    Returns ``{"<namespace>.<table>": created}``. Idempotent: an existing table keeps its
    schema, partitioning and sort order (schema evolution is a separate, deliberate step),
    and gets those of ``TABLE_PROPERTIES`` it lacks (a newer ticklake's, such as the
    Parquet dictionary cap); a property already set, by ticklake or by hand, is kept.
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
        else:
            add_missing_properties(catalog, identifier)
        created[identifier] = not exists
    return created


def add_missing_properties(catalog: Catalog, identifier: str) -> dict[str, str]:
    """Set the ``TABLE_PROPERTIES`` an existing table lacks; returns what was set.

    Best effort: the properties tune writing, the table works without them. A concurrent
    commit (two jobs starting at once) is retried once on fresh metadata, then logged.
    """
    from pyiceberg.exceptions import CommitFailedException

    for attempt in (1, 2):
        table = catalog.load_table(identifier)
        missing = {k: v for k, v in TABLE_PROPERTIES.items() if k not in table.properties}
        if not missing:
            return {}
        try:
            with table.transaction() as tx:
                tx.set_properties(missing)
        except CommitFailedException as exc:
            if attempt == 2:
                log.warning("could not set %s on %s: %s", sorted(missing), identifier, exc)
                return {}
            continue
        log.info("set %s on Iceberg table %s", sorted(missing), identifier)
        return missing
    return {}


def ensure_coverage_table(catalog: Catalog, namespace: str = DEFAULT_NAMESPACE) -> bool:
    """Create ``<namespace>.history_coverage`` if it does not exist; True if created.

    Not one of the market tables (``TABLES``): the history notifier writes it, the history
    workers read it to skip ranges already in the lake.
    """
    catalog.create_namespace_if_not_exists(namespace)
    identifier = f"{namespace}.{COVERAGE_TABLE.name}"
    if catalog.table_exists(identifier):
        add_missing_properties(catalog, identifier)
        return False
    catalog.create_table_if_not_exists(
        identifier,
        schema=COVERAGE_TABLE.schema(),
        partition_spec=COVERAGE_TABLE.partition_spec(),
        sort_order=COVERAGE_TABLE.sort_order(),
        properties=TABLE_PROPERTIES,
    )
    log.info("created Iceberg table %s", identifier)
    return True


def ensure_alerts_table(catalog: Catalog, namespace: str = DEFAULT_NAMESPACE) -> bool:
    """Create ``<namespace>.alerts`` (day + market partitions) if missing; True if created.

    Kept apart from the market tables (``TABLES``): only the CEP job writes it.
    """
    catalog.create_namespace_if_not_exists(namespace)
    identifier = f"{namespace}.{ALERTS_TABLE.name}"
    if catalog.table_exists(identifier):
        add_missing_properties(catalog, identifier)
        return False
    catalog.create_table_if_not_exists(
        identifier,
        schema=ALERTS_TABLE.schema(),
        partition_spec=ALERTS_TABLE.partition_spec(),
        sort_order=ALERTS_TABLE.sort_order(),
        properties=TABLE_PROPERTIES,
    )
    log.info("created Iceberg table %s", identifier)
    return True


# --- the risk audit trail (jobs/risk.py, docs/risk.md) ------------------------------------

RISK_NAMESPACE = "risk"


def _risk_columns(avro_name: str, time_column: str) -> tuple[tuple[str, str], ...]:
    """The columns of ``schemas/<avro_name>.avsc`` plus ``time_column`` (timestamptz)."""
    from ticklake.schemas.models import load_avsc

    columns: list[tuple[str, str]] = [(time_column, "timestamptz")]
    for field in load_avsc(avro_name)["fields"]:
        kind = field["type"][1] if isinstance(field["type"], list) else field["type"]
        if isinstance(kind, dict):
            kind = f"decimal({kind['precision']}, {kind['scale']})"
        columns.append((field["name"], kind))
    return tuple(columns)


#: Decisions, violations and account events of the risk job, each with the time it was made
#: (partitioned by its day and ``bucket(RISK_ACCOUNT_BUCKETS, account)``, sorted by it).
RISK_TABLES: tuple[TableDef, ...] = (
    TableDef("decisions", _risk_columns("risk_decision", "decision_ts"), "decision_ts"),
    TableDef("violations", _risk_columns("risk_violation", "detected_ts"), "detected_ts"),
    TableDef("account_events", _risk_columns("account_event", "emitted_ts"), "emitted_ts"),
)


#: Account buckets of the risk audit tables. An identity partition per account made the
#: job open a Parquet file per account, table and checkpoint (each new file also parses a
#: Hadoop configuration): with 100 accounts the audit writers cost more CPU than the rules
#: (bench/README.md, risk, session 4). Buckets bound that at 16 files per table and
#: checkpoint, and a query for one account still reads one bucket.
RISK_ACCOUNT_BUCKETS = 16


def ensure_risk_tables(catalog: Catalog, namespace: str = RISK_NAMESPACE) -> dict[str, bool]:
    """Create the risk audit tables that do not exist yet; ``{"<ns>.<table>": created}``.

    Tables created before the account buckets keep their identity partition by account
    (Iceberg partition evolution can change it: ``table.update_spec()``).
    """
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import BucketTransform, DayTransform

    catalog.create_namespace_if_not_exists(namespace)
    created: dict[str, bool] = {}
    for table in RISK_TABLES:
        identifier = f"{namespace}.{table.name}"
        exists = catalog.table_exists(identifier)
        if not exists:
            time_id = table.column_names().index(table.time_column) + 1
            account_id = table.column_names().index("account") + 1
            spec = PartitionSpec(
                PartitionField(time_id, 1000, DayTransform(), f"{table.time_column}_day"),
                PartitionField(
                    account_id, 1001, BucketTransform(RISK_ACCOUNT_BUCKETS), "account_bucket"
                ),
            )
            catalog.create_table_if_not_exists(
                identifier,
                schema=table.schema(),
                partition_spec=spec,
                sort_order=table.sort_order(),
                properties=TABLE_PROPERTIES,
            )
            log.info("created Iceberg table %s", identifier)
        else:
            add_missing_properties(catalog, identifier)
        created[identifier] = not exists
    return created
