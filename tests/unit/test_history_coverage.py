"""Coverage of history requests and trade ids in the lake (SQLite-backed Iceberg catalog)."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.unit.test_catalog_query import to_arrow
from ticklake.catalog.coverage import LakeIndex, as_datetime, merge, subtract
from ticklake.catalog.maintenance import append_rows
from ticklake.catalog.tables import ensure_market_tables

NS = "hist"
T0 = 1_767_225_600_000_000  # 2026-01-01 UTC, microseconds
DAY = 86_400_000_000


def points(intervals: list[tuple[int, int]]) -> set[int]:
    return {p for s, e in intervals for p in range(s, e)}


def test_merge_and_subtract_match_point_sets() -> None:
    rng = random.Random(5)
    for _ in range(500):
        covered = [(a, a + rng.randint(0, 8)) for a in (rng.randint(0, 40) for _ in range(4))]
        start, end = sorted(rng.sample(range(50), 2))
        merged = merge(covered)
        assert points(merged) == points(covered)
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(merged))
        gaps = subtract(start, end, covered)
        assert points(gaps) == set(range(start, end)) - points(covered)
        assert all(s < e for s, e in gaps)


def test_subtract_edges() -> None:
    assert subtract(0, 10, []) == [(0, 10)]
    assert subtract(0, 10, [(0, 10)]) == []
    assert subtract(0, 10, [(-5, 3), (3, 4), (8, 20)]) == [(4, 8)]


@pytest.fixture
def lake(tmp_path: Path) -> LakeIndex:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    ensure_market_tables(cat, NS)
    return LakeIndex(cat, NS)


def trade_row(symbol: str, trade_id: int, ts_us: int) -> dict[str, object]:
    return {
        "exchange": "BINANCE",
        "symbol": symbol,
        "trade_id": str(trade_id),
        "side": "buy",
        "price": Decimal("100.00000000"),
        "amount": Decimal("0.50000000"),
        "exchange_ts": as_datetime(ts_us),
        "exchange_ts_us": ts_us,
        "receipt_ts_us": ts_us,
        "ingestor_id": "it",
        "request_id": None,
    }


def test_coverage_is_recorded_per_market_and_data_type(lake: LakeIndex) -> None:
    scope = {"data_type": "trades", "timeframe": None}
    assert lake.covered("BINANCE", "BTC/USDT", start_us=T0, end_us=T0 + DAY, **scope) == []
    for start, end in ((T0, T0 + 100), (T0 + 100, T0 + 200), (T0 + DAY, T0 + DAY + 5)):
        lake.record(exchange="BINANCE", symbol="BTC/USDT", start_us=start, end_us=end,
                    row_count=1, request_id="r", snapshot_id=None, **scope)  # fmt: skip
    lake.record(exchange="BINANCE", symbol="ETH/USDT", start_us=T0, end_us=T0 + 1000,
                row_count=1, request_id="r", snapshot_id=None, **scope)  # fmt: skip
    lake.record(exchange="BINANCE", symbol="BTC/USDT", start_us=T0, end_us=T0 + 1000,
                row_count=1, request_id="r", snapshot_id=None, data_type="candles",
                timeframe="1m")  # fmt: skip
    got = lake.covered("BINANCE", "BTC/USDT", start_us=T0 + 50, end_us=T0 + DAY + 1, **scope)
    assert got == [(T0, T0 + 200), (T0 + DAY, T0 + DAY + 5)]
    assert lake.covered("BINANCE", "BTC/USDT", start_us=T0 + 200, end_us=T0 + 300, **scope) == []
    candles = lake.covered("BINANCE", "BTC/USDT", data_type="candles", timeframe="1m",
                           start_us=T0, end_us=T0 + 10)  # fmt: skip
    assert candles == [(T0, T0 + 1000)]


def test_trade_ids_of_a_range_at_a_snapshot(lake: LakeIndex) -> None:
    table = lake.trades()
    assert table is not None
    assert lake.trade_ids("BINANCE", "BTC/USDT", T0, T0 + DAY) == set()
    rows = [trade_row("BTC/USDT", i, T0 + i * 1000) for i in range(10)]
    rows += [trade_row("ETH/USDT", i, T0 + i * 1000) for i in range(10)]
    first = append_rows(table, to_arrow(table, rows))
    table = lake.trades()
    assert table is not None
    append_rows(table, to_arrow(table, [trade_row("BTC/USDT", 3, T0 + 3000)]))  # a duplicate
    append_rows(table, to_arrow(table, [trade_row("BTC/USDT", 99, T0 + 5500)]))
    got = lake.trade_ids("BINANCE", "BTC/USDT", T0 + 2000, T0 + 6000)
    assert got == {"2", "3", "4", "5", "99"}
    at_first = lake.trade_ids("BINANCE", "BTC/USDT", T0 + 2000, T0 + 6000, snapshot_id=first)
    assert at_first == {"2", "3", "4", "5"}
