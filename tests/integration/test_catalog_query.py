"""The query API on the real stack (PostgreSQL JDBC catalog, MinIO warehouse).

Interoperability: the same candles read by pyiceberg and by DuckDB (over the Parquet files
of pyiceberg's scan plan, read from MinIO; DuckDB's iceberg extension cannot be installed
offline) compare equal, and both equal the rows written.
"""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pytest
from pyiceberg.io.pyarrow import schema_to_pyarrow

from tests.unit.test_catalog_query import MARKETS, T0, candle_rows, to_arrow
from ticklake.catalog import query
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.maintenance import append_rows
from ticklake.catalog.tables import ensure_market_tables
from ticklake.settings import Connections, S3Connection

COLUMNS = ["exchange", "symbol", "window_start_us", "open", "high", "low", "close", "volume",
           "quote_volume", "vwap", "trade_count"]  # fmt: skip


@pytest.fixture(scope="module")
def filled(conn: Connections) -> tuple[str, list[dict[str, Any]]]:
    ns = f"it_query_{uuid.uuid4().hex[:8]}"
    catalog = load_catalog(conn)
    ensure_market_tables(catalog, ns)
    table = catalog.load_table(f"{ns}.candles")
    rows: list[dict[str, Any]] = []
    for day in range(2):
        batch = [r for m in MARKETS for r in candle_rows(m, day, 20)]
        append_rows(table, to_arrow(table, batch))
        rows += batch
    return ns, rows


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r[c] for c in COLUMNS)


def test_pyiceberg_and_duckdb_read_the_same_rows(conn: Connections, filled: Any) -> None:
    ns, written = filled
    table = load_catalog(conn).load_table(f"{ns}.candles")
    via_pyiceberg = query.read_candles(MARKETS, "1m", T0, T0 + timedelta(days=2),
                                       namespace=ns, conn=conn)  # fmt: skip
    tasks = list(table.scan().plan_files())
    dataset = ds.dataset(
        [query.strip_scheme(t.file.file_path) for t in tasks],
        schema=schema_to_pyarrow(table.schema(), include_field_ids=False),
        format="parquet",
        filesystem=query.warehouse_filesystem(table),
    )
    db = duckdb.connect()
    db.register("candles_parquet", dataset)
    cols = ", ".join(COLUMNS)
    via_duckdb = db.sql(f"SELECT {cols} FROM candles_parquet ORDER BY ALL").to_arrow_table()
    assert (
        sorted(map(_key, via_pyiceberg.select(COLUMNS).to_pylist()))
        == sorted(map(_key, via_duckdb.to_pylist()))
        == sorted(map(_key, written))
    )
    # and run_sql (DuckDB over pyiceberg's plan) agrees on an aggregate
    agg = query.run_sql("SELECT count(*) AS n, sum(volume) AS v FROM candles", namespace=ns,
                        conn=conn).to_pylist()  # fmt: skip
    assert agg == [{"n": len(written), "v": sum(r["volume"] for r in written)}]


def test_pruning_on_minio(conn: Connections, filled: Any) -> None:
    ns, _ = filled
    table = load_catalog(conn).load_table(f"{ns}.candles")
    assert len(list(table.scan().plan_files())) == 6
    one = query.market_scan(table, MARKETS[1], T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert len(list(one.plan_files())) == 1


def test_s3_down_is_a_service_error(conn: Connections, filled: Any) -> None:
    ns, _ = filled
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        bad = conn.model_copy(update={"s3": S3Connection(endpoint=f"http://127.0.0.1:{port}")})
        with pytest.raises(query.ServiceUnavailableError) as info:
            query.read_candles(MARKETS[0], "1m", T0, T0 + timedelta(days=1), namespace=ns,
                               conn=bad)  # fmt: skip
    assert info.value.service == "s3"
