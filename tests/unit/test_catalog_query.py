"""Query API and SQL over a real SQLite-backed Iceberg catalog with a local warehouse."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import schema_to_pyarrow

from ticklake.catalog import query
from ticklake.catalog.cli import query_command
from ticklake.catalog.maintenance import append_rows
from ticklake.catalog.tables import ensure_market_tables
from ticklake.settings import CatalogConnection, Connections

T0 = datetime(2024, 3, 1, tzinfo=UTC)
MARKETS = ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT", "KRAKEN:XBT/EUR"]
NS = "mkt"


def candle_rows(market: str, day: int, minutes: int, timeframe: str = "1m") -> list[dict[str, Any]]:
    """Deterministic 1m candles of ``market`` on day ``T0 + day``, one per minute."""
    exchange, symbol = market.split(":")
    seed = sum(map(ord, market)) + day
    rows = []
    for i in range(minutes):
        start = T0 + timedelta(days=day, minutes=i)
        us = int(start.timestamp()) * 1_000_000
        base = Decimal(1000 + (seed * 7 + i * 13) % 500)
        rows.append(
            {
                "exchange": exchange, "symbol": symbol, "timeframe": timeframe,
                "window_start": start, "window_start_us": us, "window_end_us": us + 60_000_000,
                "open": base, "high": base + 5, "low": base - 5, "close": base + 1,
                "volume": Decimal(i + 1).scaleb(-3), "quote_volume": base * (i + 1) / 1000,
                "trade_count": i + 1, "vwap": base, "exchange_ts_us": us + 59_000_000,
                "receipt_ts_us": us + 59_500_000, "ingestor_id": "test", "final": True,
                "version": i + 1,
            }
        )  # fmt: skip
    return rows


def to_arrow(table: Any, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        rows, schema=schema_to_pyarrow(table.schema(), include_field_ids=False)
    )


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    ensure_market_tables(cat, NS)
    return cat


@pytest.fixture
def loaded(catalog: SqlCatalog) -> tuple[SqlCatalog, list[dict[str, Any]], list[int]]:
    """Three markets x three days, one append (= one snapshot, one file) per market-day."""
    table = catalog.load_table(f"{NS}.candles")
    every: list[dict[str, Any]] = []
    snapshots = []
    for day in range(3):
        for market in MARKETS:
            rows = candle_rows(market, day, 30)
            snapshots.append(append_rows(table, to_arrow(table, rows)))
            every += rows
    return catalog, every, snapshots


def test_read_candles_returns_exactly_the_range(loaded: Any) -> None:
    catalog, every, _ = loaded
    start, end = T0 + timedelta(days=1, minutes=5), T0 + timedelta(days=2, minutes=3)
    got = query.read_candles(["BINANCE:BTC/USDT", "KRAKEN:XBT/EUR"], "1m", start, end,
                             namespace=NS, catalog=catalog).to_pandas()  # fmt: skip
    truth = pd.DataFrame(every)
    truth = truth[
        truth.exchange.add(":").add(truth.symbol).isin(["BINANCE:BTC/USDT", "KRAKEN:XBT/EUR"])
        & (truth.window_start >= start)
        & (truth.window_start < end)
    ].sort_values(["exchange", "symbol", "window_start"])
    assert len(got) == len(truth) == 2 * (25 + 3)
    for col in ("exchange", "symbol", "window_start_us", "open", "close", "volume", "vwap"):
        assert got[col].tolist() == truth[col].tolist(), col


def test_filters_prune_files(loaded: Any) -> None:
    catalog, _, _ = loaded
    table = catalog.load_table(f"{NS}.candles")
    assert len(list(table.scan().plan_files())) == 9
    one = query.market_scan(table, "BINANCE:ETH/USDT", T0, T0 + timedelta(days=1), timeframe="1m")
    assert len(list(one.plan_files())) == 1
    two = query.market_scan(
        table, ["BINANCE:ETH/USDT", "KRAKEN:XBT/EUR"], T0 + timedelta(minutes=10),
        T0 + timedelta(days=1, hours=1),
    )  # fmt: skip
    assert len(list(two.plan_files())) == 4


def test_time_travel_by_snapshot_and_timestamp(loaded: Any) -> None:
    catalog, _, snapshots = loaded
    table = catalog.load_table(f"{NS}.candles")
    end = T0 + timedelta(days=3)
    old = query.read_candles(MARKETS, "1m", T0, end, snapshot_id=snapshots[3],
                             namespace=NS, catalog=catalog)  # fmt: skip
    assert old.num_rows == 4 * 30
    when = datetime.fromtimestamp(table.snapshot_by_id(snapshots[3]).timestamp_ms / 1000, UTC)
    by_time = query.read_candles(MARKETS, "1m", T0, end, as_of=when, namespace=NS, catalog=catalog)
    assert by_time.num_rows >= old.num_rows
    assert query.read_candles(MARKETS, "1m", T0, end, namespace=NS, catalog=catalog).num_rows == 270
    with pytest.raises(query.NoDataError, match="no snapshot"):
        query.read_candles(MARKETS, "1m", T0, end, snapshot_id=42, namespace=NS, catalog=catalog)
    with pytest.raises(query.NoDataError, match="at or before"):
        query.read_candles(MARKETS, "1m", T0, end, as_of=T0, namespace=NS, catalog=catalog)


def test_errors_say_what_is_wrong(loaded: Any) -> None:
    catalog, _, _ = loaded
    day = T0 + timedelta(days=1)
    with pytest.raises(query.UnknownMarketError, match="BINANCE:DOGE/USDT"):
        query.read_candles("BINANCE:DOGE/USDT", "1m", T0, day, namespace=NS, catalog=catalog)
    with pytest.raises(query.NoDataError, match=r"no data for BINANCE:BTC/USDT .* between"):
        query.read_candles("BINANCE:BTC/USDT", "1m", day + timedelta(days=9),
                           day + timedelta(days=10), namespace=NS, catalog=catalog)  # fmt: skip
    with pytest.raises(query.NoDataError):
        query.read_candles("BINANCE:BTC/USDT", "1h", T0, day, namespace=NS, catalog=catalog)
    with pytest.raises(query.UnknownTableError, match=r"nope\.candles"):
        query.read_candles("BINANCE:BTC/USDT", "1m", T0, day, namespace="nope", catalog=catalog)
    with pytest.raises(query.QueryError, match="malformed market"):
        query.read_candles("BTCUSDT", "1m", T0, day, namespace=NS, catalog=catalog)
    with pytest.raises(query.QueryError, match="time zone"):
        query.read_candles("BINANCE:BTC/USDT", "1m", datetime(2024, 3, 1), day, namespace=NS,
                           catalog=catalog)  # fmt: skip
    with pytest.raises(query.QueryError, match="empty time range"):
        query.read_candles("BINANCE:BTC/USDT", "1m", day, T0, namespace=NS, catalog=catalog)
    with pytest.raises(query.UnknownMarketError, match=r"in mkt\.trades"):
        query.read_trades("BINANCE:BTC/USDT", T0, day, namespace=NS, catalog=catalog)


def test_catalog_down_is_a_service_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        conn = Connections(catalog=CatalogConnection(port=port))
        with pytest.raises(query.ServiceUnavailableError) as info:
            query.open_catalog(conn)
    assert info.value.service == "catalog"
    assert "ticklake up" in (info.value.hint or "")


def test_sql_matches_pandas(loaded: Any) -> None:
    catalog, every, _ = loaded
    got = query.run_sql(
        "SELECT exchange, symbol, count(*) AS n, sum(volume) AS v, max(high) AS h "
        "FROM candles WHERE window_start >= TIMESTAMPTZ '2024-03-02 00:00:00+00' "
        "GROUP BY ALL ORDER BY exchange, symbol",
        namespace=NS, catalog=catalog,
    ).to_pylist()  # fmt: skip
    truth = pd.DataFrame(every)
    truth = truth[truth.window_start >= T0 + timedelta(days=1)]
    agg = truth.groupby(["exchange", "symbol"]).agg(
        n=("open", "size"), v=("volume", "sum"), h=("high", "max")
    )
    assert [(r["exchange"], r["symbol"], r["n"], r["v"], r["h"]) for r in got] == [
        (*k, int(r.n), r.v, r.h) for k, r in agg.iterrows()
    ]
    with pytest.raises(query.QueryError, match="SQL statement failed"):
        query.run_sql("SELECT nope FROM candles", namespace=NS, catalog=catalog)


def test_query_command_outputs(loaded: Any, tmp_path: Path, monkeypatch: Any) -> None:
    catalog, _, _ = loaded
    monkeypatch.setattr(query, "open_catalog", lambda conn=None: catalog)
    sql = "SELECT symbol, count(*) AS n FROM candles GROUP BY symbol ORDER BY symbol"
    runner = CliRunner()
    res = runner.invoke(query_command, [sql, "--namespace", NS, "-o", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == [
        {"symbol": "BTC/USDT", "n": 90}, {"symbol": "ETH/USDT", "n": 90},
        {"symbol": "XBT/EUR", "n": 90},
    ]  # fmt: skip
    res = runner.invoke(query_command, [sql, "--namespace", NS, "-o", "csv"])
    assert res.output.splitlines()[:2] == ['"symbol","n"', '"BTC/USDT",90']
    res = runner.invoke(query_command, [sql, "--namespace", NS])
    assert "ETH/USDT" in res.output and "(3 rows)" in res.output
    out = tmp_path / "r.parquet"
    res = runner.invoke(query_command, [sql, "--namespace", NS, "-o", "parquet", "--out", str(out)])
    assert res.exit_code == 0 and pq.read_table(out).num_rows == 3
    res = runner.invoke(query_command, [sql, "--namespace", NS, "-o", "parquet"])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(query_command, ["SELECT x FROM candles", "--namespace", NS])
    assert res.exit_code == query.QueryError.exit_code
