"""Candlestick charts from Iceberg candles (matplotlib, Agg backend)."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.unit.test_catalog_query import NS, T0, candle_rows, to_arrow
from ticklake.catalog.chart import ChartError, chart_candles
from ticklake.catalog.maintenance import append_rows
from ticklake.catalog.tables import ensure_market_tables

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[SqlCatalog, None, None]:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    ensure_market_tables(cat, NS)
    table = cat.load_table(f"{NS}.candles")
    append_rows(table, to_arrow(table, candle_rows("BINANCE:BTC/USDT", 0, 30)))
    return cat, None, None


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib not installed")
def test_chart_writes_a_png_with_price_and_volume(loaded: Any, tmp_path: Path) -> None:
    cat, _, _ = loaded
    out = tmp_path / "btc.png"
    path, count = chart_candles("BINANCE:BTC/USDT", "1m", T0, T0 + timedelta(days=1), out,
                                namespace=NS, catalog=cat)  # fmt: skip
    assert count == 30
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.skipif(HAVE_MATPLOTLIB, reason="matplotlib is installed")
def test_chart_without_matplotlib_says_what_to_install(loaded: Any, tmp_path: Path) -> None:
    cat, _, _ = loaded
    with pytest.raises(ChartError, match="matplotlib not installed") as info:
        chart_candles("BINANCE:BTC/USDT", "1m", T0, T0 + timedelta(days=1), tmp_path / "x.png",
                      namespace=NS, catalog=cat)  # fmt: skip
    assert "pyproject.toml" in (info.value.hint or "")
