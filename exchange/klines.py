"""Klines computed from the exchange's own trades, with Binance's interval and window rules.

A kline's open is its first trade by (time, id), its close the last, high/low the extremes,
volume the summed quantity, quote volume the summed price x quantity, count the number of
trades. An interval without trades repeats the previous close with zero volume (as Binance's
do); klines before the one holding the market's first visible trade (its "listing") are
not served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ticklake.exchange.market import Candle, MarketTape

SECOND_MS = 1000
_FIXED_MS: dict[str, int] = {
    "1s": SECOND_MS,
    "1m": 60 * SECOND_MS,
    "3m": 3 * 60 * SECOND_MS,
    "5m": 5 * 60 * SECOND_MS,
    "15m": 15 * 60 * SECOND_MS,
    "30m": 30 * 60 * SECOND_MS,
    "1h": 3600 * SECOND_MS,
    "2h": 2 * 3600 * SECOND_MS,
    "4h": 4 * 3600 * SECOND_MS,
    "6h": 6 * 3600 * SECOND_MS,
    "8h": 8 * 3600 * SECOND_MS,
    "12h": 12 * 3600 * SECOND_MS,
    "1d": 86_400 * SECOND_MS,
    "3d": 3 * 86_400 * SECOND_MS,
    "1w": 7 * 86_400 * SECOND_MS,
}
INTERVALS = (*_FIXED_MS, "1M")
_MONDAY_MS = 4 * 86_400 * SECOND_MS  # 1970-01-05, the first Monday: weeks start on Mondays


@dataclass(frozen=True)
class Interval:
    """A kline interval, optionally shifted into a time zone (``offset_ms`` east of UTC)."""

    name: str
    offset_ms: int = 0

    def open_of(self, ts_ms: int) -> int:
        """The open time of the kline containing ``ts_ms``."""
        local = ts_ms + self.offset_ms
        if self.name == "1M":
            day = datetime.fromtimestamp(local // 1000, UTC)
            start = datetime(day.year, day.month, 1, tzinfo=UTC)
            return int(start.timestamp()) * 1000 - self.offset_ms
        length = _FIXED_MS[self.name]
        anchor = _MONDAY_MS if self.name == "1w" else 0
        return (local - anchor) // length * length + anchor - self.offset_ms

    def next_open(self, open_ms: int) -> int:
        if self.name == "1M":
            day = datetime.fromtimestamp((open_ms + self.offset_ms) // 1000, UTC)
            year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
            return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000 - self.offset_ms
        return open_ms + _FIXED_MS[self.name]

    def previous_open(self, open_ms: int) -> int:
        return self.open_of(open_ms - 1)


@dataclass(frozen=True)
class Kline:
    open_time: int
    close_time: int
    candle: Candle  # count 0 for an interval without trades


def klines(
    market: MarketTape,
    interval: Interval,
    *,
    now_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[Kline]:
    """Binance's window rules: with ``start_ms`` the first ``limit`` klines opening at or
    after it; otherwise the last ``limit`` klines opening at or before ``end_ms`` (or now).
    Nothing after ``now_ms``; the current kline holds the trades up to now."""
    last_visible = now_ms if end_ms is None else min(end_ms, now_ms)
    listing = market.trades(market.genesis_ms, now_ms, limit=1)  # the first visible trade
    if not len(listing):
        return []
    floor = interval.open_of(int(listing.ts[0]))
    opens: list[int] = []
    if start_ms is not None:
        current = max(interval.open_of(start_ms), floor)
        if current < start_ms:
            current = interval.next_open(current)
        while current <= last_visible and len(opens) < limit:
            opens.append(current)
            current = interval.next_open(current)
    else:
        current = interval.open_of(last_visible)
        while current >= floor and len(opens) < limit:
            opens.append(current)
            current = interval.previous_open(current)
        opens.reverse()
    if not opens:
        return []
    result: list[Kline] = []
    previous = market.last_price_before(opens[0])
    for open_ms in opens:
        close_ms = interval.next_open(open_ms) - 1
        candle = market.candle(open_ms, min(close_ms, now_ms))
        if candle is None:
            assert previous is not None  # every kline from the listing on has a price
            candle = Candle(0, previous, previous, previous, previous, 0, 0, 0, 0)
        previous = candle.close
        result.append(Kline(open_ms, close_ms, candle))
    return result


def parse_time_zone(value: str) -> int:
    """Binance's ``timeZone``: ``"8"``, ``"-1:00"``, ``"05:45"``; range [-12:00, +14:00]."""
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    hours_text, _, minutes_text = text.partition(":")
    hours, minutes = int(hours_text), int(minutes_text or "0")
    if not 0 <= minutes < 60:
        raise ValueError(value)
    offset = sign * (hours * 60 + minutes) * 60_000
    if not -12 * 3_600_000 <= offset <= 14 * 3_600_000:
        raise ValueError(value)
    return offset
