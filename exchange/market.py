"""The simulated trade tape: a pure function of (seed, market, time).

Every market's tape is built from two kinds of seeded random draws, each from its own
``numpy`` PCG64 stream keyed by (seed, market, unit), so any unit can be generated on its own:

* a **day** (UTC): per-minute arrival rates (a mild daily cycle; quiet markets switch whole
  blocks of minutes on and off), per-minute trade counts (Poisson), and the price path's minute
  anchors (a Brownian bridge between day-start levels, which follow a mean-reverting walk);
* a **minute bucket**: the trades of one minute: arrival times (uniform order statistics, which
  is what a Poisson process looks like given its count, in whole milliseconds, so several trades
  may share one), prices (a Brownian bridge between the minute's two anchors, at the bid or the
  ask by side, on the tick), sizes (log-normal, on the lot step) and sides.

Trade ids count per market from ``first_trade_id`` at the tape origin (2025-01-01), contiguous
and strictly increasing in (time, id) order, like Binance's. The genesis only limits what is
served: the trades before it exist in the function but are never shown.

Prices and sizes are integers here (ticks and lot steps); ``Decimal`` values and Binance's
8-decimal strings are made from them exactly.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from ticklake.exchange.settings import (
    DAY_MS,
    MINUTE_MS,
    TAPE_ORIGIN_MS,
    ExchangeSettings,
    MarketSpec,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

MINUTES_PER_DAY = 1440
E8 = 10**8
_REVERSION_PER_DAY = 1.0 / 30.0  # day-start levels revert to start_price with a ~month horizon
_DIURNAL_AMPLITUDE = 0.3
_STREAM_DAY_COUNTS = 0  # arrivals and prices draw from separate streams, so a different
_STREAM_DAY_PRICES = 2  # rate multiplier changes the trades but not the day's price path
_STREAM_BUCKET = 1


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade as the exchange reports it; ``price`` and ``amount`` are exact."""

    symbol: str
    id: int
    timestamp: int
    price: Decimal
    amount: Decimal
    is_buyer_maker: bool

    @property
    def side(self) -> str:
        """The taker's side, as CCXT reports it (the buyer being the maker means a sell)."""
        return "sell" if self.is_buyer_maker else "buy"


@dataclass(frozen=True, slots=True)
class Trades:
    """A run of consecutive trades of one market as arrays (ids are consecutive)."""

    ids: I64
    ts: I64
    ticks: I64
    steps: I64
    maker: BOOL

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: slice | BOOL) -> Trades:
        return Trades(
            self.ids[key], self.ts[key], self.ticks[key], self.steps[key], self.maker[key]
        )

    def between(self, start_ms: int, end_ms: int) -> Trades:
        """The trades with ``start_ms <= ts <= end_ms`` (``ts`` is sorted)."""
        lo = int(np.searchsorted(self.ts, start_ms, side="left"))
        hi = int(np.searchsorted(self.ts, end_ms, side="right"))
        return self if lo == 0 and hi == len(self.ts) else self[lo:hi]

    @staticmethod
    def concat(parts: list[Trades]) -> Trades:
        if not parts:
            return EMPTY
        if len(parts) == 1:
            return parts[0]
        return Trades(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("ids", "ts", "ticks", "steps", "maker")
EMPTY = Trades(
    np.empty(0, np.int64),
    np.empty(0, np.int64),
    np.empty(0, np.int64),
    np.empty(0, np.int64),
    np.empty(0, np.bool_),
)


@dataclass(frozen=True, slots=True)
class Candle:
    """The aggregate of a run of trades, in ticks, lot steps and ticks x steps."""

    count: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    taker_buy_volume: int
    taker_buy_quote: int

    @staticmethod
    def of(t: Trades) -> Candle | None:
        if len(t) == 0:
            return None
        notional = t.ticks * t.steps  # per minute this stays far below 2**63
        taker_buy = ~t.maker
        return Candle(
            count=len(t),
            open=int(t.ticks[0]),
            high=int(t.ticks.max()),
            low=int(t.ticks.min()),
            close=int(t.ticks[-1]),
            volume=int(t.steps.sum()),
            quote=int(notional.sum()),
            taker_buy_volume=int(t.steps[taker_buy].sum()),
            taker_buy_quote=int(notional[taker_buy].sum()),
        )

    def then(self, later: Candle | None) -> Candle:
        """This candle followed by a later one (Python ints, so sums never overflow)."""
        if later is None:
            return self
        return Candle(
            count=self.count + later.count,
            open=self.open,
            high=max(self.high, later.high),
            low=min(self.low, later.low),
            close=later.close,
            volume=self.volume + later.volume,
            quote=self.quote + later.quote,
            taker_buy_volume=self.taker_buy_volume + later.taker_buy_volume,
            taker_buy_quote=self.taker_buy_quote + later.taker_buy_quote,
        )


@dataclass(frozen=True, slots=True)
class _Day:
    counts: I64  # trades per minute, MINUTES_PER_DAY
    offsets: I64  # first-id offset of each minute within the day, MINUTES_PER_DAY + 1
    anchors: F64  # log price (relative to start_price) at each minute boundary, + 1


def _generator(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


class MarketTape:
    """The tape of one market; thread-safe, with bounded caches."""

    def __init__(self, spec: MarketSpec, *, seed: int, genesis_ms: int, rate_multiplier: float):
        self.spec = spec
        self.seed = seed
        self.genesis_ms = genesis_ms
        self.tick_e8 = int(spec.tick_size * E8)
        self.step_e8 = int(spec.step_size * E8)
        digest = hashlib.blake2b(spec.market_id.encode(), digest_size=8).digest()
        self._key = int.from_bytes(digest, "big")
        self._origin_day = TAPE_ORIGIN_MS // DAY_MS
        self._sigma = spec.volatility_per_minute
        self._sigma_day = self._sigma * math.sqrt(MINUTES_PER_DAY)
        self._tick = float(spec.tick_size)
        self._start = float(spec.start_price)
        self._log_qty = math.log(float(spec.median_qty))
        phase = (self._key % 1000) / 1000 * 2 * math.pi
        cycle = np.sin(np.arange(MINUTES_PER_DAY) / MINUTES_PER_DAY * 2 * math.pi + phase)
        per_minute = spec.trades_per_second * 60 * rate_multiplier
        self._base_rates: F64 = per_minute * (1 + _DIURNAL_AMPLITUDE * cycle)
        self._chain_level: list[float] = [0.0]  # log level at the start of origin_day + i
        self._chain_id: list[int] = [spec.first_trade_id]  # first id of origin_day + i
        self._days: OrderedDict[int, _Day] = OrderedDict()
        self._buckets: OrderedDict[int, Trades] = OrderedDict()
        self._minute_candles: OrderedDict[int, Candle | None] = OrderedDict()
        self._lock = threading.RLock()

    # -- generation ------------------------------------------------------------------------

    def _day_counts(self, day: int) -> I64:
        rng = _generator(self.seed, self._key, _STREAM_DAY_COUNTS, day)
        rates = self._base_rates
        if self.spec.active_fraction < 1.0:
            block = self.spec.quiet_block_minutes
            blocks = -(-MINUTES_PER_DAY // block)
            active = rng.random(blocks) < self.spec.active_fraction
            rates = rates * np.repeat(active, block)[:MINUTES_PER_DAY]
        return rng.poisson(rates).astype(np.int64)

    def _day_prices(self, day: int) -> tuple[np.random.Generator, float]:
        """The day's price stream and its first draw, the day-to-day level shock."""
        rng = _generator(self.seed, self._key, _STREAM_DAY_PRICES, day)
        return rng, float(rng.standard_normal())

    def _ensure_chain(self, day: int) -> None:
        """Extend the day-start levels and first ids up to ``day`` (inclusive)."""
        index = day - self._origin_day
        while len(self._chain_level) <= index:
            d = self._origin_day + len(self._chain_level) - 1
            _, shock = self._day_prices(d)
            level = self._chain_level[-1]
            self._chain_level.append(level * (1 - _REVERSION_PER_DAY) + self._sigma_day * shock)
            self._chain_id.append(self._chain_id[-1] + int(self._day_counts(d).sum()))

    def _day(self, day: int) -> _Day:
        with self._lock:
            cached = self._days.get(day)
            if cached is not None:
                self._days.move_to_end(day)
                return cached
            self._ensure_chain(day + 1)
            counts = self._day_counts(day)
            rng, _ = self._day_prices(day)
            start = self._chain_level[day - self._origin_day]
            end = self._chain_level[day - self._origin_day + 1]
            walk = np.concatenate(([0.0], np.cumsum(rng.standard_normal(MINUTES_PER_DAY))))
            walk *= self._sigma
            frac = np.arange(MINUTES_PER_DAY + 1) / MINUTES_PER_DAY
            anchors = start + walk - frac * (walk[-1] - (end - start))
            offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
            result = _Day(counts, offsets, anchors)
            self._days[day] = result
            if len(self._days) > 64:
                self._days.popitem(last=False)
            return result

    def _first_id_of_day(self, day: int) -> int:
        with self._lock:
            self._ensure_chain(day)
            return self._chain_id[day - self._origin_day]

    def count_in_minute(self, minute: int) -> int:
        """How many trades the minute holds (before any genesis or clock cut)."""
        day, index = divmod(minute, MINUTES_PER_DAY)
        return int(self._day(day).counts[index])

    def bucket(self, minute: int) -> Trades:
        """All trades of one minute (``minute`` = epoch ms // 60000), genesis ignored."""
        with self._lock:
            cached = self._buckets.get(minute)
            if cached is not None:
                self._buckets.move_to_end(minute)
                return cached
            result = self._make_bucket(minute)
            self._buckets[minute] = result
            if len(self._buckets) > 256:
                self._buckets.popitem(last=False)
            return result

    def _make_bucket(self, minute: int) -> Trades:
        day_index, index = divmod(minute, MINUTES_PER_DAY)
        day = self._day(day_index)
        n = int(day.counts[index])
        if n == 0:
            return EMPTY
        first = self._first_id_of_day(day_index) + int(day.offsets[index])
        rng = _generator(self.seed, self._key, _STREAM_BUCKET, minute)
        offsets = np.sort(rng.integers(0, MINUTE_MS, n)).astype(np.int64)
        z = rng.standard_normal(n + 1)
        frac = offsets / MINUTE_MS
        walk = np.cumsum(z[:n] * np.sqrt(np.diff(frac, prepend=0.0))) * self._sigma
        walk_end = walk[-1] + z[n] * math.sqrt(1.0 - frac[-1]) * self._sigma
        a0, a1 = float(day.anchors[index]), float(day.anchors[index + 1])
        log_mid = a0 + (a1 - a0) * frac + walk - frac * walk_end
        sizes = np.exp(self._log_qty + self.spec.qty_dispersion * rng.standard_normal(n))
        maker = rng.random(n) < 0.5
        bid = np.floor(self._start * np.exp(log_mid) / self._tick).astype(np.int64)
        ticks = np.maximum(bid + (~maker).astype(np.int64), 1)  # takers buy at the ask
        steps = np.maximum(np.rint(sizes / float(self.spec.step_size)), 1).astype(np.int64)
        ids = np.arange(first, first + n, dtype=np.int64)
        return Trades(ids, minute * MINUTE_MS + offsets, ticks, steps, maker)

    # -- queries ---------------------------------------------------------------------------

    def _clip(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        return max(start_ms, self.genesis_ms), end_ms

    def _minutes(self, first: int, last: int, *, reverse: bool = False) -> Iterator[Trades]:
        """Non-empty buckets from minute ``first`` to ``last``, in either direction."""
        step = -1 if reverse else 1
        minute = last if reverse else first
        while first <= minute <= last:
            day, index = divmod(minute, MINUTES_PER_DAY)
            counts = self._day(day).counts
            if counts[index]:
                yield self.bucket(minute)
            minute += step

    def trades(self, start_ms: int, end_ms: int, limit: int | None = None) -> Trades:
        """Trades with ``start_ms <= timestamp <= end_ms`` (and after genesis), oldest first,
        at most ``limit`` (the oldest ones)."""
        start_ms, end_ms = self._clip(start_ms, end_ms)
        parts: list[Trades] = []
        total = 0
        if start_ms > end_ms:
            return EMPTY
        for bucket in self._minutes(start_ms // MINUTE_MS, end_ms // MINUTE_MS):
            part = bucket.between(start_ms, end_ms)
            parts.append(part)
            total += len(part)
            if limit is not None and total >= limit:
                break
        result = Trades.concat(parts)
        return result if limit is None else result[:limit]

    def latest_trades(self, start_ms: int, end_ms: int, limit: int) -> Trades:
        """The newest ``limit`` trades with ``start_ms <= timestamp <= end_ms``, oldest first."""
        start_ms, end_ms = self._clip(start_ms, end_ms)
        parts: list[Trades] = []
        total = 0
        if start_ms > end_ms:
            return EMPTY
        for bucket in self._minutes(start_ms // MINUTE_MS, end_ms // MINUTE_MS, reverse=True):
            part = bucket.between(start_ms, end_ms)
            parts.append(part)
            total += len(part)
            if total >= limit:
                break
        result = Trades.concat(parts[::-1])
        return result[max(0, len(result) - limit) :]

    def minute_of_id(self, trade_id: int, last_day: int) -> int | None:
        """The minute holding trade ``trade_id``, searching no later than day ``last_day``;
        ids before the origin map to the origin, ids after ``last_day`` to None."""
        with self._lock:
            self._ensure_chain(last_day + 1)
            chain = self._chain_id
        index = bisect.bisect_right(chain, trade_id) - 1
        if index < 0:
            return self._origin_day * MINUTES_PER_DAY
        day = self._origin_day + index
        if day > last_day:
            return None
        offsets = self._day(day).offsets
        minute = int(np.searchsorted(offsets, trade_id - chain[index], side="right")) - 1
        return day * MINUTES_PER_DAY + min(max(minute, 0), MINUTES_PER_DAY - 1)

    def trades_from_id(self, from_id: int, end_ms: int, limit: int) -> Trades:
        """Up to ``limit`` trades with ``id >= from_id`` and ``genesis <= timestamp <= end_ms``."""
        found = self.minute_of_id(from_id, end_ms // DAY_MS)
        if found is None:
            return EMPTY
        start_minute = max(found, self.genesis_ms // MINUTE_MS)
        parts: list[Trades] = []
        total = 0
        for bucket in self._minutes(start_minute, end_ms // MINUTE_MS):
            part = bucket.between(self.genesis_ms, end_ms)
            part = part[max(0, from_id - int(part.ids[0])) :] if len(part) else part
            parts.append(part)
            total += len(part)
            if total >= limit:
                break
        return Trades.concat(parts)[:limit]

    def minute_candle(self, minute: int) -> Candle | None:
        """The candle of a whole minute after genesis (cached)."""
        if minute * MINUTE_MS < self.genesis_ms or not self.count_in_minute(minute):
            return None
        with self._lock:
            if minute in self._minute_candles:
                self._minute_candles.move_to_end(minute)
                return self._minute_candles[minute]
        candle = Candle.of(self.bucket(minute))
        with self._lock:
            self._minute_candles[minute] = candle
            if len(self._minute_candles) > 200_000:
                self._minute_candles.popitem(last=False)
        return candle

    def candle(self, start_ms: int, end_ms: int) -> Candle | None:
        """The candle of all trades with ``start_ms <= timestamp <= end_ms``."""
        start_ms, end_ms = self._clip(start_ms, end_ms)
        result: Candle | None = None
        minute = start_ms // MINUTE_MS
        while minute * MINUTE_MS <= end_ms:
            lo, hi = minute * MINUTE_MS, minute * MINUTE_MS + MINUTE_MS - 1
            if lo >= start_ms and hi <= end_ms:
                part = self.minute_candle(minute)
            else:
                part = Candle.of(self.trades(max(lo, start_ms), min(hi, end_ms)))
            result = part if result is None else result.then(part)
            minute += 1
        return result

    def last_price_before(self, ts_ms: int) -> int | None:
        """Ticks of the last trade with ``genesis <= timestamp < ts_ms``, or None."""
        if ts_ms <= self.genesis_ms:
            return None
        last = self.latest_trades(self.genesis_ms, ts_ms - 1, 1)
        return int(last.ticks[-1]) if len(last) else None

    # -- conversions -----------------------------------------------------------------------

    def to_trades(self, t: Trades) -> list[Trade]:
        """Exact ``Trade`` objects for an array run."""
        tick, step, symbol = self.spec.tick_size, self.spec.step_size, self.spec.symbol
        return [
            Trade(symbol, int(i), int(ts), Decimal(int(p)) * tick, Decimal(int(q)) * step, bool(m))
            for i, ts, p, q, m in zip(t.ids, t.ts, t.ticks, t.steps, t.maker, strict=True)
        ]


class Tape:
    """All markets of the exchange, by Binance id (``BTCUSDT``) or unified symbol."""

    def __init__(self, settings: ExchangeSettings, *, now_ms: int | None = None):
        self.settings = settings
        self.genesis_ms = settings.resolved_genesis_ms(now_ms)
        self.markets: dict[str, MarketTape] = {
            spec.market_id: MarketTape(
                spec,
                seed=settings.seed,
                genesis_ms=self.genesis_ms,
                rate_multiplier=settings.rate_multiplier,
            )
            for spec in settings.markets
        }
        self._by_symbol = {m.spec.symbol: m for m in self.markets.values()}

    def market(self, symbol_or_id: str) -> MarketTape:
        """The market for ``BTC/USDT`` or ``BTCUSDT``; KeyError if there is none."""
        found = self.markets.get(symbol_or_id) or self._by_symbol.get(symbol_or_id)
        if found is None:
            raise KeyError(symbol_or_id)
        return found

    def trades(self, symbol: str, start_ms: int, end_ms: int) -> list[Trade]:
        """Ground truth: every trade of ``symbol`` with ``start_ms <= timestamp <= end_ms``."""
        market = self.market(symbol)
        return market.to_trades(market.trades(start_ms, end_ms))
