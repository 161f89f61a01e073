"""Market state of the risk job, from final candles: last price, ATR (Wilder), ADV.

Pure Python (no PyFlink): ``jobs/risk.py`` keeps one :class:`MarketState` per market in
broadcast state and feeds it every final candle of the candles topic.

- **Last price**: the close of the newest candle of the ATR timeframe (``1m`` by default),
  stamped with the candle's ``window_end_us``; the pre-trade check calls market data stale
  when that stamp is older than the account's ``market_data_max_age_ms``.
- **ATR(n), Wilder's definition** over the candles of the ATR timeframe, in window order:
  ``TR_1 = high_1 - low_1``; ``TR_t = max(high_t - low_t, |high_t - close_{t-1}|,
  |low_t - close_{t-1}|)``; the first ATR is the mean of ``TR_1 .. TR_n`` (at the n-th
  candle); then ``ATR_t = (ATR_{t-1} * (n - 1) + TR_t) / n``. Minutes without a candle
  (no trades) are not filled in; a candle at or before the newest window seen is ignored
  (replays, duplicates). Division runs at 50 significant digits.
- **ADV**: the average traded value (quote volume, or volume x close when the source has
  no quote volume) of the newest ``adv_days`` final daily candles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext

#: Arithmetic context of the risk job: wide enough that sums and products of
#: DECIMAL(28, 8) values are exact; divisions round at the 50th digit.
MATH = Context(prec=50)


@dataclass(frozen=True)
class CandleView:
    """The fields of a final candle the risk job uses."""

    market: str
    timeframe: str
    window_start_us: int
    window_end_us: int
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal | None


def true_range(high: Decimal, low: Decimal, prev_close: Decimal | None) -> Decimal:
    """Wilder's true range of one candle."""
    with localcontext(MATH):
        if prev_close is None:
            return high - low
        return max(high - low, abs(high - prev_close), abs(low - prev_close))


@dataclass
class MarketState:
    """What the risk job knows about one market."""

    market: str
    atr_period: int = 14
    adv_days: int = 20
    last_price: Decimal | None = None
    last_ts_us: int | None = None
    last_window_start_us: int | None = None
    prev_close: Decimal | None = None
    #: True ranges of the first ``atr_period`` candles, until the first ATR exists.
    seed_ranges: list[Decimal] = field(default_factory=list)
    atr: Decimal | None = None
    candles_seen: int = 0
    #: ``window_start_us`` -> traded value of the newest final daily candles.
    daily_values: dict[int, Decimal] = field(default_factory=dict)

    def on_candle(self, candle: CandleView, atr_timeframe: str, adv_timeframe: str) -> bool:
        """Apply one final candle; returns False if it was ignored (old or other timeframe)."""
        if candle.timeframe == adv_timeframe:
            return self._on_daily(candle)
        if candle.timeframe != atr_timeframe:
            return False
        if self.last_window_start_us is not None and (
            candle.window_start_us <= self.last_window_start_us
        ):
            return False
        with localcontext(MATH):
            tr = true_range(candle.high, candle.low, self.prev_close)
            if self.atr is None:
                self.seed_ranges.append(tr)
                if len(self.seed_ranges) == self.atr_period:
                    self.atr = sum(self.seed_ranges, Decimal(0)) / self.atr_period
                    self.seed_ranges = []
            else:
                self.atr = (self.atr * (self.atr_period - 1) + tr) / self.atr_period
        self.prev_close = candle.close
        self.last_price = candle.close
        self.last_ts_us = candle.window_end_us
        self.last_window_start_us = candle.window_start_us
        self.candles_seen += 1
        return True

    def _on_daily(self, candle: CandleView) -> bool:
        with localcontext(MATH):
            value = (
                candle.quote_volume
                if candle.quote_volume is not None
                else candle.volume * candle.close
            )
        self.daily_values[candle.window_start_us] = value
        for old in sorted(self.daily_values)[: -self.adv_days]:
            del self.daily_values[old]
        return True

    @property
    def adv_notional(self) -> Decimal | None:
        """Average daily traded value of the newest ``adv_days`` daily candles."""
        if not self.daily_values:
            return None
        with localcontext(MATH):
            return sum(self.daily_values.values(), Decimal(0)) / len(self.daily_values)


def replay(
    market: str,
    candles: Iterable[CandleView],
    *,
    atr_timeframe: str = "1m",
    adv_timeframe: str = "1d",
    atr_period: int = 14,
    adv_days: int = 20,
) -> MarketState:
    """The state after ``candles`` (tests and tools)."""
    state = MarketState(market, atr_period=atr_period, adv_days=adv_days)
    for candle in candles:
        state.on_candle(candle, atr_timeframe, adv_timeframe)
    return state
