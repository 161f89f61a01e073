"""Definitions shared by every part of the candles benchmark (stdlib only: the Quix Streams
peer runs in an environment without numpy and pandas)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

S = 1_000_000
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
TIMEFRAMES_US = {"1m": MIN, "5m": 5 * MIN, "15m": 15 * MIN, "1h": HOUR, "1d": DAY}
#: The jobs' lateness bound in the benchmark (Flink out-of-orderness, Quix grace).
BOUND_MS = 5_000

#: The compared candle fields (``receipt_ts_us``, ``ingestor_id`` and ``version`` are the
#: producer's own bookkeeping, not market data).
CANDLE_KEY = ("exchange", "symbol", "timeframe", "window_start_us")
CANDLE_VALUE = ("window_end_us", "open", "high", "low", "close", "volume", "quote_volume",
                "trade_count", "vwap", "exchange_ts_us")  # fmt: skip
CandleRow = tuple[Any, ...]


def vwap(quote_volume: Decimal, volume: Decimal) -> Decimal:
    """Flink's DECIMAL division: 38 significant digits HALF_UP, then scale 8 HALF_UP."""
    with localcontext() as ctx:
        ctx.prec, ctx.rounding = 38, ROUND_HALF_UP
        return (quote_volume / volume).quantize(Decimal("1E-8"), rounding=ROUND_HALF_UP)
