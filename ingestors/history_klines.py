"""Exchange klines for candle history requests: paging, exact decimals, ``Candle`` records.

CCXT's ``fetch_ohlcv`` returns floats by default; the kline client is switched to strings
(``client.number = str``, CCXT's own switch for exact numbers), so prices and volumes go
from the exchange's text to ``Decimal`` without a float in between. Klines carry no quote
volume or trade count in CCXT's OHLCV, so those stay null. Only closed windows are served
(the caller bounds the range); a window is "in the range" when its start is.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from ticklake.ingestors.normalize import TradeNormalizer
from ticklake.schemas import Candle, DeadLetter
from ticklake.schemas.models import timeframe_us

DAY_US = 86_400_000_000

#: Runs one REST call with the worker's retries (``HistoryWorker._rest`` bound to a client).
RestCall = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


def candle_timeframe_us(timeframe: str | None) -> int | None:
    """The length of a timeframe the candles table holds (whole minutes dividing a day)."""
    length = timeframe_us(timeframe) if timeframe else None
    if length is None or length < 60_000_000 or DAY_US % length:
        return None
    return length


def _decimal(text: Any) -> Decimal:
    try:
        return Decimal(str(text))
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a decimal number") from exc


async def fetch_klines(
    rest: RestCall,
    client: Any,
    normalizer: TradeNormalizer,
    *,
    symbol: str,
    timeframe: str,
    start_us: int,
    end_us: int,
    limit: int,
    receipt_us: int,
    on_bad: Callable[[DeadLetter], None],
) -> dict[int, Candle]:
    """Candles of the windows starting in ``[start_us, end_us)``, by window start (us)."""
    tf_us = candle_timeframe_us(timeframe)
    if tf_us is None:
        raise ValueError(f"timeframe {timeframe!r} is not a candle timeframe")
    tf_ms = tf_us // 1000
    out: dict[int, Candle] = {}
    cursor = -(-start_us // tf_us) * tf_ms  # first window start at or after start, in ms
    end_ms = -(-end_us // 1000)
    while cursor * 1000 < end_us:
        until = min(cursor + limit * tf_ms, end_ms) - 1
        call = functools.partial(
            client.fetch_ohlcv, symbol, timeframe, cursor, limit, {"until": until}
        )
        rows = await rest(call)
        for row in rows:
            opened = int(row[0]) * 1000
            if not start_us <= opened < end_us or opened % tf_us:
                continue
            try:
                candle = Candle(
                    exchange=normalizer.exchange,
                    symbol=symbol,
                    exchange_ts_us=opened + tf_us - 1000,  # Binance's close time
                    receipt_ts_us=receipt_us,
                    ingestor_id=normalizer.ingestor_id,
                    timeframe=timeframe,
                    window_start_us=opened,
                    window_end_us=opened + tf_us,
                    open=_decimal(row[1]),
                    high=_decimal(row[2]),
                    low=_decimal(row[3]),
                    close=_decimal(row[4]),
                    volume=_decimal(row[5]),
                    final=True,
                    version=0,
                )
            except (ValidationError, ValueError) as exc:
                on_bad(
                    normalizer.dead_letter(
                        "INVALID_CANDLE", str(exc), row, symbol=symbol, original_ts_us=opened
                    )
                )
                continue
            out[opened] = candle
        cursor = until + 1
    return out
