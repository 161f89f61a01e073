"""The README's main job, end to end: exchange -> two ingestors -> Kafka -> Flink -> Iceberg."""

from __future__ import annotations

from ticklake.pipeline import run_pipeline
from ticklake.settings import Connections
from ticklake.stack.manager import Stack


def test_main_job_candles_equal_the_exchange_klines(stack: Stack, conn: Connections) -> None:
    report = run_pipeline(
        ("BTC/USDT", "ETH/USDT", "QUIET/USDT"), history_minutes=3, live_seconds=8.0
    )
    # Two ingestors on the same markets: duplicates on Kafka, each trade once in Iceberg.
    assert report.raw_messages > report.unique_trades > 0
    assert report.raw_messages >= 1.5 * report.unique_trades
    # Every closed minute equals the local exchange's own kline, fetched through CCXT.
    assert report.compared >= 4, report
    assert report.mismatches == []
    assert report.matched == report.compared
