"""Read the market tables: candles and trades for markets and a time range, and SQL.

Filters go down to pyiceberg as row filters on the partition source columns (``exchange``,
``symbol`` and the time column, partitioned by ``day(...)``), so a scan plans only the files
of the wanted days and markets; the rest is never opened.

    from datetime import datetime, UTC
    from ticklake.catalog.query import read_candles
    t = read_candles(["BINANCE:BTC/USDT"], "1m",
                     datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
    df = t.to_pandas()

Every function takes either ``conn`` (the shared catalog, default: ``Connections.load()``) or
``catalog`` (any pyiceberg catalog, e.g. a SQLite one in tests). Errors are typed:
:class:`UnknownTableError`, :class:`UnknownMarketError`, :class:`NoDataError`,
:class:`ServiceUnavailableError`, :class:`QueryError`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ticklake.catalog.tables import CANDLES, DEFAULT_NAMESPACE, TABLES, TRADES
from ticklake.errors import TickLakeError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from pyiceberg.catalog import Catalog
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import DataScan, Table

    from ticklake.settings import Connections

TIMEFRAME_RE = re.compile(r"^[1-9][0-9]*[mhd]$")


class CatalogQueryError(TickLakeError):
    """Base of the errors of reading the lake."""

    exit_code = 10


class UnknownTableError(CatalogQueryError):
    """The table (or its namespace) does not exist in the catalog."""

    exit_code = 11


class UnknownMarketError(CatalogQueryError):
    """No data at all for a market in a table (a typo, or a market never ingested)."""

    exit_code = 12


class NoDataError(CatalogQueryError):
    """The table knows the market, but holds nothing in the requested range."""

    exit_code = 13


class ServiceUnavailableError(CatalogQueryError):
    """The catalog (PostgreSQL) or the warehouse (S3/MinIO) cannot be reached."""

    exit_code = 14

    def __init__(self, service: str, message: str, *, hint: str, detail: str | None = None):
        super().__init__(message, hint=hint, detail=detail)
        self.service = service


class QueryError(CatalogQueryError):
    """Bad input: a malformed market, timeframe, range or SQL statement."""

    exit_code = 2


@dataclass(frozen=True)
class Market:
    exchange: str
    symbol: str

    @classmethod
    def parse(cls, text: str) -> Market:
        """``EXCHANGE:BASE/QUOTE`` (the Kafka key form), e.g. ``BINANCE:BTC/USDT``."""
        exchange, sep, symbol = text.partition(":")
        if not sep or not exchange or "/" not in symbol:
            raise QueryError(
                f"malformed market {text!r}",
                hint="write markets as EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT",
            )
        return cls(exchange.upper(), symbol.upper())

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}"


# -- connection and errors ------------------------------------------------------------------


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """Turn connection failures of PostgreSQL (catalog) and S3 (warehouse) into typed errors."""
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        raise ServiceUnavailableError(
            "catalog",
            "cannot reach the Iceberg catalog (PostgreSQL)",
            detail=str(exc.orig).strip().splitlines()[0] if exc.orig else None,
            hint="start the stack with `ticklake up` (check `ticklake status`), or fix "
            "TICKLAKE_CATALOG__HOST/PORT/USER/PASSWORD",
        ) from exc
    except OSError as exc:
        text = str(exc)
        if _is_s3_failure(text):
            raise ServiceUnavailableError(
                "s3",
                "cannot reach the warehouse object store (S3/MinIO)",
                detail=text.strip().splitlines()[0] if text else None,
                hint="start the stack with `ticklake up` (check `ticklake status`), or fix "
                "TICKLAKE_S3__ENDPOINT and the S3 credentials",
            ) from exc
        raise


def _is_s3_failure(text: str) -> bool:
    markers = ("curl", "AWS Error", "Connection refused", "connect", "S3", "s3://", "endpoint")
    return any(m in text for m in markers)


def open_catalog(conn: Connections | None = None) -> Catalog:
    """The shared catalog, with a clear error when PostgreSQL is down."""
    from ticklake.catalog.connection import load_catalog

    with service_errors():
        return load_catalog(conn)


def _catalog(catalog: Catalog | None, conn: Connections | None) -> Catalog:
    return catalog if catalog is not None else open_catalog(conn)


def load_market_table(
    name: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    conn: Connections | None = None,
    catalog: Catalog | None = None,
) -> Table:
    """Load ``<namespace>.<name>``; :class:`UnknownTableError` if it does not exist."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    cat = _catalog(catalog, conn)
    identifier = name if "." in name else f"{namespace}.{name}"
    with service_errors():
        try:
            return cat.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            known = ", ".join(t.name for t in TABLES)
            raise UnknownTableError(
                f"unknown table {identifier!r}",
                hint=f"the market tables are {known} in namespace {namespace!r}; create them "
                "with ensure_market_tables() or run the dedup_ohlc job",
            ) from exc


# -- scans ------------------------------------------------------------------------------------


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise QueryError(
            f"timestamp {ts.isoformat()} has no time zone",
            hint="pass aware datetimes, e.g. datetime(2024, 3, 1, tzinfo=UTC)",
        )
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def predicate(kind: Any, column: str, value: Any) -> BooleanExpression:
    """``kind(column, value)``: pyiceberg's predicates are pydantic models that mypy sees
    without their positional ``__init__``."""
    expr: BooleanExpression = kind(column, value)
    return expr


def _range_filter(time_column: str, start: datetime, end: datetime) -> BooleanExpression:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    lo, hi = _micros(start), _micros(end)
    if hi <= lo:
        raise QueryError(
            f"empty time range: {start.isoformat()} is not before {end.isoformat()}",
            hint="--from must be earlier than --to (the range is [from, to))",
        )
    return And(predicate(GreaterThanOrEqual, time_column, lo), predicate(LessThan, time_column, hi))


def _market_filter(markets: Sequence[Market]) -> BooleanExpression:
    from pyiceberg.expressions import AlwaysTrue, And, EqualTo, In, Or

    if not markets:
        return AlwaysTrue()
    by_exchange: dict[str, list[str]] = {}
    for m in markets:
        by_exchange.setdefault(m.exchange, []).append(m.symbol)
    expr: BooleanExpression | None = None
    for exchange, symbols in by_exchange.items():
        sym = (
            predicate(EqualTo, "symbol", symbols[0])
            if len(symbols) == 1
            else predicate(In, "symbol", set(symbols))
        )
        term = And(predicate(EqualTo, "exchange", exchange), sym)
        expr = term if expr is None else Or(expr, term)
    assert expr is not None
    return expr


def _snapshot(table: Table, snapshot_id: int | None, as_of: datetime | None) -> int | None:
    if snapshot_id is not None and as_of is not None:
        raise QueryError("give snapshot_id or as_of, not both")
    if snapshot_id is not None:
        if table.snapshot_by_id(snapshot_id) is None:
            raise NoDataError(
                f"table {'.'.join(table.name())} has no snapshot {snapshot_id}",
                hint="list snapshots with table.inspect.snapshots(); expired snapshots are gone",
            )
        return snapshot_id
    if as_of is not None:
        snap = table.snapshot_as_of_timestamp(_micros(as_of) // 1000)
        if snap is None:
            raise NoDataError(
                f"table {'.'.join(table.name())} has no snapshot at or before {as_of.isoformat()}",
                hint="the table was empty then, or its snapshots of that time have expired",
            )
        return snap.snapshot_id
    return None


def _markets(markets: Sequence[str | Market] | str | Market) -> list[Market]:
    if isinstance(markets, str | Market):
        markets = [markets]
    return [m if isinstance(m, Market) else Market.parse(m) for m in markets]


def _time_column(table_name: str) -> str:
    for t in TABLES:
        if t.name == table_name:
            return t.time_column
    raise UnknownTableError(f"unknown market table {table_name!r}")


def market_scan(
    table: Table,
    markets: Sequence[str | Market] | str | Market,
    start: datetime,
    end: datetime,
    *,
    timeframe: str | None = None,
    columns: Sequence[str] = ("*",),
    snapshot_id: int | None = None,
    as_of: datetime | None = None,
) -> DataScan:
    """The pyiceberg scan of ``markets`` in ``[start, end)``: partition-pruned, not yet read."""
    from pyiceberg.expressions import And, EqualTo

    time_column = _time_column(table.name()[-1])
    row_filter = And(_market_filter(_markets(markets)), _range_filter(time_column, start, end))
    if timeframe is not None:
        if not TIMEFRAME_RE.match(timeframe):
            raise QueryError(
                f"malformed timeframe {timeframe!r}",
                hint="timeframes are whole minutes, hours or days: 1m, 5m, 15m, 1h, 4h, 1d",
            )
        row_filter = And(row_filter, predicate(EqualTo, "timeframe", timeframe))
    return table.scan(
        row_filter=row_filter,
        selected_fields=tuple(columns),
        snapshot_id=_snapshot(table, snapshot_id, as_of),
    )


def _read(
    table: Table,
    markets: Sequence[str | Market] | str | Market,
    start: datetime,
    end: datetime,
    *,
    timeframe: str | None,
    columns: Sequence[str],
    snapshot_id: int | None,
    as_of: datetime | None,
) -> pa.Table:
    wanted = _markets(markets)
    scan = market_scan(
        table, wanted, start, end, timeframe=timeframe, columns=columns,
        snapshot_id=snapshot_id, as_of=as_of,
    )  # fmt: skip
    with service_errors():
        result = scan.to_arrow()
    if result.num_rows:
        time_column = _time_column(table.name()[-1])
        return result.sort_by([("exchange", "ascending"), ("symbol", "ascending"),
                               (time_column, "ascending")])  # fmt: skip
    _explain_empty(table, wanted, start=start, end=end, timeframe=timeframe,
                   snapshot_id=scan.snapshot_id)  # fmt: skip
    return result


def _explain_empty(
    table: Table,
    markets: list[Market],
    *,
    start: datetime,
    end: datetime,
    timeframe: str | None,
    snapshot_id: int | None,
) -> None:
    """Raise the right error for an empty result: unknown market, or no data in range."""
    name = ".".join(table.name())
    with service_errors():
        for m in markets:
            probe = table.scan(row_filter=_market_filter([m]), snapshot_id=snapshot_id)
            if next(iter(probe.plan_files()), None) is None:
                raise UnknownMarketError(
                    f"unknown market {m} in {name}",
                    hint="markets are EXCHANGE:BASE/QUOTE in upper case as ingested; list "
                    f'them with: ticklake query "SELECT DISTINCT exchange, symbol FROM '
                    f'{table.name()[-1]}"',
                )
    what = f"{name} ({timeframe})" if timeframe else name
    raise NoDataError(
        f"no data for {', '.join(map(str, markets))} in {what} between "
        f"{start.isoformat()} and {end.isoformat()}",
        hint="widen the range or check the timeframe; candles exist only for minutes with trades",
    )


def read_candles(
    markets: Sequence[str | Market] | str | Market,
    timeframe: str,
    start: datetime,
    end: datetime,
    *,
    columns: Sequence[str] = ("*",),
    snapshot_id: int | None = None,
    as_of: datetime | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    conn: Connections | None = None,
    catalog: Catalog | None = None,
) -> pa.Table:
    """Candles of ``timeframe`` whose window starts in ``[start, end)``, sorted by market, time.

    ``snapshot_id`` or ``as_of`` reads the table as it was (time travel). Raises
    :class:`NoDataError` rather than returning an empty table.
    """
    table = load_market_table(CANDLES, namespace=namespace, conn=conn, catalog=catalog)
    return _read(table, markets, start, end, timeframe=timeframe, columns=columns,
                 snapshot_id=snapshot_id, as_of=as_of)  # fmt: skip


def read_trades(
    markets: Sequence[str | Market] | str | Market,
    start: datetime,
    end: datetime,
    *,
    columns: Sequence[str] = ("*",),
    snapshot_id: int | None = None,
    as_of: datetime | None = None,
    table: str = TRADES,
    namespace: str = DEFAULT_NAMESPACE,
    conn: Connections | None = None,
    catalog: Catalog | None = None,
) -> pa.Table:
    """Trades (or ``table="late_trades"``) with ``exchange_ts`` in ``[start, end)``."""
    tbl = load_market_table(table, namespace=namespace, conn=conn, catalog=catalog)
    return _read(tbl, markets, start, end, timeframe=None, columns=columns,
                 snapshot_id=snapshot_id, as_of=as_of)  # fmt: skip


# -- SQL ----------------------------------------------------------------------------------------


def referenced_tables(sql: str, names: Sequence[str]) -> list[str]:
    """The table names among ``names`` that appear as words in ``sql``."""
    return [n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", sql, re.IGNORECASE)]


def register_table(
    db: duckdb.DuckDBPyConnection, view: str, table: Table, snapshot_id: int | None = None
) -> int:
    """Expose an Iceberg table to DuckDB as ``view``; returns the number of data files.

    Lazily, as a pyarrow dataset over the Parquet files of the scan plan (DuckDB pushes
    projections and filters into it), when the plan has no delete files and the table only
    ever had one schema; otherwise the scan is read through pyiceberg (which applies deletes
    and resolves columns by field id) and registered as an Arrow table.
    """
    import pyarrow.dataset as ds
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    with service_errors():
        tasks = list(table.scan(snapshot_id=snapshot_id).plan_files())
        arrow_schema = schema_to_pyarrow(table.schema(), include_field_ids=False)
        if not tasks:
            db.register(view, arrow_schema.empty_table())
        elif any(t.delete_files for t in tasks) or len(table.schemas()) > 1:
            # Deletes, or files of older schemas (renamed columns): let pyiceberg resolve them.
            db.register(view, table.scan(snapshot_id=snapshot_id).to_arrow())
        else:
            fs = warehouse_filesystem(table)
            paths = [strip_scheme(t.file.file_path) for t in tasks]
            db.register(view, ds.dataset(paths, schema=arrow_schema, format="parquet",
                                         filesystem=fs))  # fmt: skip
    return len(tasks)


def run_sql(
    sql: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    conn: Connections | None = None,
    catalog: Catalog | None = None,
) -> pa.Table:
    """Run ``sql`` (DuckDB dialect) over the market tables of ``namespace``.

    Each market table the statement names (``trades``, ``candles``, ``late_trades``) is a view.
    """
    import duckdb

    cat = _catalog(catalog, conn)
    names = [t.name for t in TABLES]
    used = referenced_tables(sql, names)
    db = duckdb.connect()
    try:
        for name in used:
            register_table(db, name, load_market_table(name, namespace=namespace, catalog=cat))
        try:
            with service_errors():
                rel = db.sql(sql)
                return rel.to_arrow_table() if rel is not None else _empty()
        except duckdb.Error as exc:
            raise QueryError(
                "the SQL statement failed",
                detail=str(exc),
                hint=f"the tables are {', '.join(names)} (DuckDB SQL dialect)",
            ) from exc
    finally:
        db.close()


def _empty() -> pa.Table:
    import pyarrow as pa

    return pa.table({})


# -- storage ------------------------------------------------------------------------------------


def strip_scheme(path: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key``; ``file:///x`` -> ``/x``; others unchanged."""
    for scheme in ("s3://", "s3a://", "s3n://"):
        if path.startswith(scheme):
            return path[len(scheme) :]
    if path.startswith("file://"):
        return path[len("file://") :]
    return path


def warehouse_filesystem(table: Table) -> object:
    """A pyarrow filesystem for the table's location (S3 with the catalog's credentials)."""
    from pyarrow import fs

    if table.location().startswith(("s3://", "s3a://", "s3n://")):
        props = table.io.properties
        endpoint = props.get("s3.endpoint", "")
        scheme, _, host = endpoint.partition("://")
        return fs.S3FileSystem(
            access_key=props.get("s3.access-key-id"),
            secret_key=props.get("s3.secret-access-key"),
            region=props.get("s3.region", "us-east-1"),
            endpoint_override=host or None,
            scheme=scheme or "https",
            connect_timeout=float(props.get("s3.connect-timeout", 5)),
            request_timeout=float(props.get("s3.request-timeout", 30)),
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
        )
    return fs.LocalFileSystem()
