"""The candles benchmark's recorded tape: generated once (seeded), cached, and its truth.

A tape is a table of trade records in **arrival order** (the order they go into Kafka):
several busy markets with random-walk prices, a quiet market with hours-long gaps, trades
exactly on minute boundaries, several trades on the same microsecond (ids in order), about
12% of trades arriving up to ``MAX_DELAY_US`` behind their event time (out of order, well
within the jobs' lateness bound), and about 5% of trades sent a second time by a second
ingestor (the duplicate copy arrives up to ``MAX_DUP_DELAY_US`` after the first). At the end
every market gets two *closing* trades from ``close_us`` on, so that streaming peers that
close windows by the event time of their key (Quix Streams) close every window of the tape; the
comparison covers the candles that end at or before ``cutoff_us`` (every candle of the
tape except those of the closing trades).

Prices and amounts are integers of ``10**-places`` (per market), so the truth sums are exact
integer arithmetic; they become ``Decimal`` only at the end. The truth is computed with pandas
independently of every contender: first arrival per (exchange, symbol, trade id) wins, then
per market and floored window: open/close by (event time, trade id left-padded to 32), high,
low, sums, count, VWAP rounded like Flink (38 digits HALF_UP, then 8 places HALF_UP).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ticklake.bench.candles_defs import (
    BOUND_MS,
    CANDLE_KEY,
    CANDLE_VALUE,
    HOUR,
    MIN,
    TIMEFRAMES_US,
    CandleRow,
    S,
    vwap,
)

__all__ = ["BOUND_MS", "CANDLE_KEY", "CANDLE_VALUE", "TIMEFRAMES_US", "CandleRow", "vwap"]

log = logging.getLogger(__name__)

#: Event-time start and length of the tape: crosses one UTC day boundary.
T0 = int(datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp()) * S
SPAN_US = 36 * HOUR
MAX_DELAY_US = 2 * S
MAX_DUP_DELAY_US = 3 * S
TAPE_VERSION = 1


@dataclass(frozen=True)
class Market:
    exchange: str
    symbol: str
    price_places: int
    amount_places: int
    start_price: int  # in units of 10**-price_places
    weight: float
    first_id: int


MARKETS = (
    Market("BINANCE", "BTC/USDT", 2, 5, 6_500_000, 30, 3_000_000_000),
    Market("BINANCE", "ETH/USDT", 2, 4, 340_000, 20, 1_500_000_000),
    Market("BINANCE", "SOL/USDT", 3, 2, 150_000, 10, 990),  # ids cross 999 -> 1000
    Market("BINANCE", "ETH/BTC", 5, 4, 5_231, 5, 700_000_000),
    Market("COINBASE", "BTC/USD", 2, 8, 6_500_500, 15, 600_000_000),
    Market("KRAKEN", "XBT/EUR", 1, 8, 600_000, 10, 90_000_000),
    Market("OKX", "DOGE/USDT", 5, 0, 15_000, 10, 40_000_000),
)
#: The quiet market: a few short clusters of trades hours apart.
QUIET = Market("BITSTAMP", "LTC/EUR", 2, 8, 8_000, 0, 5_000)
ALL_MARKETS = (*MARKETS, QUIET)
INGESTORS = ("bench-ingestor-1", "bench-ingestor-2")


@dataclass(frozen=True)
class TapeStats:
    records: int
    trades: int
    duplicates: int
    delayed: int
    on_boundary: int
    same_timestamp: int
    quiet_trades: int
    max_disorder_us: int


def close_us() -> int:
    """Event time of the closing trades: after the end of the last day window + grace."""
    return T0 + SPAN_US + 10 * MIN


def cutoff_us() -> int:
    """Candles ending at or before this are compared (all but the closing trades')."""
    return T0 + SPAN_US


def generate(records: int, seed: int = 11) -> pd.DataFrame:
    """A tape of about ``records`` records in arrival order (columns: see the module doc)."""
    rng = np.random.default_rng(seed)
    n_dup_share = 0.05
    trades = int(records / (1 + n_dup_share))
    weights = np.array([m.weight for m in MARKETS], dtype=float)
    counts = rng.multinomial(trades - 12, weights / weights.sum())
    frames = []
    for mi, (m, n) in enumerate(zip(MARKETS, counts, strict=True)):
        ts = np.sort(rng.integers(T0, T0 + SPAN_US, n, dtype=np.int64))
        snap = rng.random(n) < 0.02  # exactly on a minute boundary (a window start)
        ts[snap] -= ts[snap] % MIN
        same = np.flatnonzero(rng.random(n) < 0.03)  # the previous trade's microsecond
        same = same[same > 0]
        ts = np.sort(ts)
        ts[same] = ts[same - 1]
        ts = np.maximum.accumulate(ts)
        frames.append(_market_frame(rng, mi, m, ts))
    # The quiet market: three clusters of four trades, hours apart.
    qts = np.array(
        [c + j * 7 * S for c in (T0 + 17 * S, T0 + 5 * HOUR + 59 * MIN, T0 + 30 * HOUR + 3 * S)
         for j in range(4)], dtype=np.int64,
    )  # fmt: skip
    frames.append(_market_frame(rng, len(MARKETS), QUIET, qts))
    df = pd.concat(frames, ignore_index=True)
    n = len(df)
    delayed = rng.random(n) < 0.12
    delay = np.where(delayed, rng.integers(0, MAX_DELAY_US, n), 0)
    df["ingestor"] = np.int8(0)
    df["arrival"] = df["ts"] + delay
    dups = df[rng.random(n) < n_dup_share].copy()
    dups["ingestor"] = np.int8(1)
    dups["receipt"] += 7
    dups["arrival"] += rng.integers(0, MAX_DUP_DELAY_US, len(dups))
    # Closing trades, two per market (ten minutes apart, so that peers rolling longer
    # timeframes up from closed 1m bars close them too), after everything else.
    closing = []
    for mi, m in enumerate(ALL_MARKETS):
        at = np.array([close_us() + mi, close_us() + 10 * MIN + mi], dtype=np.int64)
        c = _market_frame(rng, mi, m, at)
        c["trade_id"] = m.first_id + 10**9 + np.arange(2)
        closing.append(c)
    close = pd.concat(closing, ignore_index=True)
    close["ingestor"] = np.int8(0)
    close["arrival"] = close["ts"] + 10 * MIN
    df = pd.concat([df, dups, close], ignore_index=True)
    df = df.sort_values("arrival", kind="stable", ignore_index=True)
    return df.drop(columns=["arrival"])


def _market_frame(rng: np.random.Generator, mi: int, m: Market, ts: np.ndarray) -> pd.DataFrame:
    n = len(ts)
    steps = rng.integers(-3, 4, n)
    price = np.maximum(m.start_price + np.cumsum(steps), 1).astype(np.int64)
    return pd.DataFrame(
        {
            "market": np.full(n, mi, dtype=np.int8),
            "ts": ts,
            "receipt": ts + rng.integers(500, 40_000, n),
            "trade_id": m.first_id + np.arange(n, dtype=np.int64),
            "side": (rng.random(n) < 0.5).astype(np.int8),
            "price": price,
            "amount": rng.integers(1, 2_000_000, n, dtype=np.int64),
        }
    )


def stats(df: pd.DataFrame) -> TapeStats:
    """What the tape holds (the unit test checks these against the generator's promises)."""
    firsts = df.drop_duplicates(["market", "trade_id"], keep="first")
    running_max = firsts["ts"].cummax().shift(1).fillna(0).astype(np.int64)
    disorder = int((running_max - firsts["ts"]).max())
    per_market_prev = firsts.sort_values(["market", "ts"])["ts"].groupby(firsts["market"]).diff()
    return TapeStats(
        records=len(df),
        trades=len(firsts),
        duplicates=len(df) - len(firsts),
        delayed=int((firsts["ts"] < running_max).sum()),
        on_boundary=int((firsts["ts"] % MIN == 0).sum()),
        same_timestamp=int((per_market_prev == 0).sum()),
        quiet_trades=int((firsts["market"] == ALL_MARKETS.index(QUIET)).sum()),
        max_disorder_us=max(disorder, 0),
    )


def load_or_generate(directory: Path, records: int, seed: int = 11) -> pd.DataFrame:
    """The cached tape (parquet) for these parameters, generated on first use."""
    path = directory / f"tape-v{TAPE_VERSION}-{records}-{seed}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    df = generate(records, seed)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.rename(path)
    log.info("generated %s (%d records) in %.0fs", path.name, len(df), time.monotonic() - t0)
    return df


# -- records on the wire ----------------------------------------------------------------


def encoded_records(df: pd.DataFrame) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of every record: the Avro binary of ``trade.avsc`` (as serde)."""
    from ticklake.ingestors.replay import avro_decimal, avro_long, avro_string
    from ticklake.schemas.models import market_key

    heads = [avro_string(m.exchange) + avro_string(m.symbol) for m in ALL_MARKETS]
    keys = [market_key(m.exchange, m.symbol).encode() for m in ALL_MARKETS]
    price_mul = [10 ** (8 - m.price_places) for m in ALL_MARKETS]
    amount_mul = [10 ** (8 - m.amount_places) for m in ALL_MARKETS]
    ingestors = [avro_string(i) for i in INGESTORS]
    sides = [avro_string("sell"), avro_string("buy")]
    names = ("market", "ts", "receipt", "ingestor", "trade_id", "side", "price", "amount")
    cols = [df[c].to_numpy().tolist() for c in names]
    for mi, ts, rc, ing, tid, side, price, amount in zip(*cols, strict=True):
        yield keys[mi], b"".join(
            (heads[mi], avro_long(ts), avro_long(rc), ingestors[ing], avro_string(str(tid)),
             sides[side], avro_decimal(price * price_mul[mi]),
             avro_decimal(amount * amount_mul[mi]), b"\x00")
        )  # fmt: skip


def produce(df: pd.DataFrame, bootstrap: str, topic: str, partitions: int = 12) -> float:
    """Create ``topic`` (the raw-trades layout) and send the whole tape; returns seconds."""
    from confluent_kafka import Producer

    from ticklake.ingestors.replay import REPLAY_PRODUCER_CONFIG
    from ticklake.schemas.models import Trade
    from ticklake.schemas.serde import schema_header
    from ticklake.schemas.topics import RAW_TRADES, ensure_topics

    spec = RAW_TRADES.renamed(topic)
    ensure_topics(bootstrap, [spec])
    failures: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {**REPLAY_PRODUCER_CONFIG, "bootstrap.servers": bootstrap, "on_delivery": on_delivery}
    )
    headers: dict[str, str | bytes | None] = dict([schema_header(Trade)])
    t0 = time.monotonic()
    produce_, poll = producer.produce, producer.poll
    for key, value in encoded_records(df):
        try:
            produce_(topic, value, key, headers=headers)
        except BufferError:
            poll(0.05)
            produce_(topic, value, key, headers=headers)
    remaining = producer.flush(300)
    if remaining or failures:
        raise RuntimeError(f"tape load: {remaining} undelivered, {len(failures)} failed")
    return time.monotonic() - t0


# -- the truth ---------------------------------------------------------------------------


def truth(df: pd.DataFrame, timeframes: tuple[str, ...] = tuple(TIMEFRAMES_US)) -> set[CandleRow]:
    """Every candle of the tape ending at or before the cutoff, computed with pandas."""
    d = df.drop_duplicates(["market", "trade_id"], keep="first")
    d = d.assign(
        pad=d["trade_id"].astype(str).str.rjust(32, "0"),
        notional=d["price"].astype(object) * d["amount"].astype(object),  # exact ints
    ).sort_values(["ts", "pad"], kind="stable")
    out: set[CandleRow] = set()
    for tf in timeframes:
        size = TIMEFRAMES_US[tf]
        w = d.assign(window_start_us=d["ts"] // size * size)
        w = w[w["window_start_us"] + size <= cutoff_us()]
        g = w.groupby(["market", "window_start_us"], sort=True)
        c = g.agg(
            open=("price", "first"),
            close=("price", "last"),
            high=("price", "max"),
            low=("price", "min"),
            volume=("amount", "sum"),
            quote_volume=("notional", "sum"),
            trade_count=("price", "size"),
            exchange_ts_us=("ts", "last"),
        ).reset_index()
        grouped: list[Any] = list(c.itertuples(index=False))
        for r in grouped:
            m = ALL_MARKETS[int(r.market)]
            p, a = m.price_places, m.amount_places
            volume = Decimal(int(r.volume)).scaleb(-a)
            quote = Decimal(int(r.quote_volume)).scaleb(-(p + a))
            start = int(r.window_start_us)
            out.add(
                (m.exchange, m.symbol, tf, start, start + size,
                 Decimal(int(r.open)).scaleb(-p), Decimal(int(r.high)).scaleb(-p),
                 Decimal(int(r.low)).scaleb(-p), Decimal(int(r.close)).scaleb(-p),
                 volume, quote, int(r.trade_count), vwap(quote, volume), int(r.exchange_ts_us))
            )  # fmt: skip
    return out


def truth_cached(directory: Path, df: pd.DataFrame, records: int, seed: int) -> set[CandleRow]:
    """The truth for the cached tape, itself cached (JSON of strings)."""
    path = directory / f"truth-v{TAPE_VERSION}-{records}-{seed}.json"
    if path.exists():
        return {_row_from_json(r) for r in json.loads(path.read_text())}
    rows = truth(df)
    path.write_text(json.dumps(sorted([[str(v) for v in r] for r in rows])))
    return rows


_INT_POSITIONS = (3, 4, 11, 13)


def _row_from_json(r: list[str]) -> CandleRow:
    return tuple(
        v if i < 3 else int(v) if i in _INT_POSITIONS else Decimal(v) for i, v in enumerate(r)
    )


@dataclass(frozen=True)
class Verdict:
    compared: int
    missing: int
    unexpected: int

    @property
    def correct(self) -> bool:
        return self.compared > 0 and not self.missing and not self.unexpected


def compare(want: set[CandleRow], got: list[CandleRow], timeframes: tuple[str, ...]) -> Verdict:
    """Exact comparison (Decimal equality) of the candles of ``timeframes`` up to the cutoff.

    A candle produced twice counts as unexpected (a duplicate output is wrong too).
    """
    want_tf = {r for r in want if r[2] in timeframes}
    got_in = [r for r in got if r[2] in timeframes and r[4] <= cutoff_us()]
    got_set = set(got_in)
    dupes = len(got_in) - len(got_set)
    return Verdict(
        compared=len(want_tf),
        missing=len(want_tf - got_set),
        unexpected=len(got_set - want_tf) + dupes,
    )
