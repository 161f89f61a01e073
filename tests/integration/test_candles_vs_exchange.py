"""Candles from the dedup + OHLC job equal the local exchange's own klines, fetched with CCXT.

The local exchange (fixed seed and genesis, so the tape is the same on every run) serves a
closed 45-minute window of history. It is fetched the way the ingestors fill gaps (CCXT
``fetch_trades`` paging by aggregate-trade id), normalized with the ingestors' own
``TradeNormalizer`` (exact strings, never floats), produced to a fresh one-partition raw
topic in exchange-time order, a share of it twice (a second ingestor), plus one far-future
flush trade; the job runs bounded on the embedded MiniCluster. Then, for every market and
for 1m, 5m and 15m, the Iceberg candles must equal the exchange's klines
(``/api/v3/klines`` through CCXT's implicit ``public_get_klines``, compared as ``Decimal``
from the exchange's strings; CCXT's ``fetch_ohlcv`` must agree with them as floats). The
exchange repeats the previous close with zero volume in an interval without trades;
ticklake emits no candle there: such intervals must have no candle at all.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from tests.integration.test_dedup_ohlc import produce
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.exchange import BackgroundExchange, ExchangeSettings, Tape
from ticklake.ingestors.exchanges.binance import BinanceAdapter
from ticklake.ingestors.normalize import TradeNormalizer
from ticklake.jobs.runner import run_local_job
from ticklake.schemas import CANDLES, RAW_TRADES, Trade
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections

pytestmark = pytest.mark.timeout(600)

MIN_MS = 60_000
GENESIS_MS = int(datetime(2025, 6, 2, tzinfo=UTC).timestamp() * 1000)
START_MS = GENESIS_MS + 60 * MIN_MS  # a closed window, aligned to 15 minutes
END_MS = START_MS + 45 * MIN_MS  # exclusive
SETTINGS = ExchangeSettings(seed=2024, genesis_ms=GENESIS_MS, rate_multiplier=0.1)
MARKETS = ("BTC/USDT", "ETH/BTC", "QUIET/USDT")  # busy, small ticks, silent for minutes
TIMEFRAMES = {"1m": MIN_MS, "5m": 5 * MIN_MS, "15m": 15 * MIN_MS}
FLUSH_MS = END_MS + 24 * 60 * MIN_MS
EIGHT = Decimal("1E-8")


def fetch_window(client: ccxt.binance, symbol: str) -> list[dict[str, Any]]:
    """Every trade of ``[START_MS, END_MS)``: a time-window page, then ``fromId`` pages."""
    page = client.fetch_trades(symbol, START_MS, 1000, {"until": END_MS - 1})
    got = list(page)
    while len(page) == 1000:
        page = client.fetch_trades(symbol, None, 1000, {"fromId": int(page[-1]["id"]) + 1})
        got += [t for t in page if t["timestamp"] < END_MS]
        if page and page[-1]["timestamp"] >= END_MS:
            break
    return got


def klines(client: ccxt.binance, market_id: str, interval: str) -> list[list[str]]:
    """The exchange's raw klines opening in the window (strings, as Binance sends them)."""
    raw = client.public_get_klines(
        {"symbol": market_id, "interval": interval, "startTime": START_MS,
         "endTime": END_MS - 1, "limit": 1000}
    )  # fmt: skip
    return [k for k in raw if START_MS <= int(k[0]) < END_MS]


def fetch_from_exchange() -> tuple[
    list[Trade], dict[tuple[str, str], list[list[str]]], dict[tuple[str, str], list[list[float]]]
]:
    """The window's trades (normalized as the ingestors do), raw klines and CCXT OHLCV."""
    adapter = BinanceAdapter()
    normalizer = TradeNormalizer("binance", "it-klines-1", MARKETS, adapter.raw_fields)
    want_klines: dict[tuple[str, str], list[list[str]]] = {}
    ohlcv: dict[tuple[str, str], list[list[float]]] = {}
    trades: list[Trade] = []
    with BackgroundExchange(SETTINGS) as exchange:
        client = ccxt.binance(exchange.ccxt_config())
        client.load_markets()
        for symbol in MARKETS:
            fetched = fetch_window(client, symbol)
            received = [normalizer.trade(t, receipt_us=t["timestamp"] * 1000 + 2_500)
                        for t in fetched]  # fmt: skip
            # The fetch is the exchange's ground truth, trade for trade.
            truth = Tape(SETTINGS).trades(symbol, START_MS, END_MS - 1)
            assert [(t.trade_id, t.price, t.amount) for t in received] == [
                (str(t.id), t.price, t.amount) for t in truth
            ]
            trades += received
            market_id = client.market(symbol)["id"]
            for tf, size in TIMEFRAMES.items():
                want_klines[symbol, tf] = klines(client, market_id, tf)
                ohlcv[symbol, tf] = client.fetch_ohlcv(symbol, tf, START_MS, 45 * MIN_MS // size)
    return trades, want_klines, ohlcv


def compare(
    in_window: pd.DataFrame,
    want_klines: dict[tuple[str, str], list[list[str]]],
    ohlcv: dict[tuple[str, str], list[list[float]]],
) -> Counter[str]:
    """Each market's candles equal its non-empty klines; empty intervals have no candle."""
    compared = Counter[str]()
    for (symbol, tf), rows in want_klines.items():
        size = TIMEFRAMES[tf]
        mine = in_window[(in_window["symbol"] == symbol) & (in_window["timeframe"] == tf)]
        by_start = {int(r.window_start_us) // 1000: r for r in mine.itertuples(index=False)}
        assert len(by_start) == len(mine), f"{symbol} {tf}: a window twice"
        non_empty = {int(k[0]): k for k in rows if int(k[8]) > 0}
        # Every interval of the window: a candle exactly where the exchange saw trades.
        all_starts = range(START_MS, END_MS, size)
        assert set(by_start) == set(non_empty), (symbol, tf, sorted(set(by_start) ^ set(non_empty)))
        served = {int(k[0]) for k in rows}
        for k in rows:
            if int(k[8]) == 0:  # an empty interval: a flat, zero-volume kline, no candle
                assert Decimal(k[5]) == 0 and k[1] == k[2] == k[3] == k[4]
                compared[f"{tf} empty"] += 1
        compared[f"{tf} not served"] += len(set(all_starts) - served)
        for start, k in non_empty.items():
            c = by_start[start]
            assert int(k[6]) == start + size - 1
            assert (c.open, c.high, c.low, c.close) == tuple(Decimal(v) for v in k[1:5]), (
                symbol, tf, start)  # fmt: skip
            assert c.volume == Decimal(k[5]), (symbol, tf, start)
            assert c.trade_count == int(k[8]), (symbol, tf, start)
            # The exchange rounds quote volume half-even to 8 places; ticklake keeps it exact.
            assert c.quote_volume.quantize(EIGHT, rounding=ROUND_HALF_EVEN) == Decimal(k[7])
            assert c.window_end_us == (start + size) * 1000
            compared[tf] += 1
        # CCXT's unified fetch_ohlcv (floats) says the same as the raw klines.
        unified = [o for o in ohlcv[symbol, tf] if START_MS <= o[0] < END_MS]
        assert [o[0] for o in unified] == [int(k[0]) for k in rows]
        assert unified == [[int(k[0]), *(float(v) for v in k[1:6])] for k in rows]

    return compared


def test_candles_equal_the_exchange_klines(conn: Connections, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_TRADES, name=f"it.klines.raw.{run}", partitions=1)
    candles_topic = CANDLES.renamed(f"it.klines.candles.{run}")
    late_topic = RAW_TRADES.renamed(f"it.klines.late.{run}")
    ensure_topics(conn.kafka.bootstrap_servers, [raw, candles_topic, late_topic])
    namespace = f"it_klines_{run}"
    assert all(ensure_market_tables(load_catalog(conn), namespace).values())

    trades, want_klines, ohlcv = fetch_from_exchange()

    # Exchange-time order across markets (one partition: nothing is late); every 5th trade
    # again from a second ingestor right behind it; then the flush trade.
    trades.sort(key=lambda t: (t.exchange_ts_us, t.symbol, int(t.trade_id)))
    records: list[Trade] = []
    for i, t in enumerate(trades):
        records.append(t)
        if i % 5 == 0:
            records.append(t.model_copy(update={"ingestor_id": "it-klines-2"}))
    flush = trades[0].model_copy(
        update={"exchange_ts_us": FLUSH_MS * 1000, "receipt_ts_us": FLUSH_MS * 1000,
                "trade_id": str(10**12)}
    )  # fmt: skip
    records.append(flush)
    produce(conn, raw.name, records)

    t0 = time.monotonic()
    run_local_job(
        "ticklake.jobs.dedup_ohlc",
        [
            "--raw-topic", raw.name,
            "--candles-topic", candles_topic.name,
            "--late-topic", late_topic.name,
            "--namespace", namespace,
            "--timeframes", ",".join(TIMEFRAMES),
            "--out-of-orderness", "2s",
            "--watermark-emit", "on-event",
            "--bounded",
            "--checkpoint-interval", "2s",
            "--checkpoint-dir", tmp_path.joinpath("checkpoints").as_uri(),
            "--transactional-id-prefix", f"it-klines-{run}",
            "--group-id", f"it-klines-{run}",
        ],
        timeout_s=420,
    )  # fmt: skip
    job_s = time.monotonic() - t0

    got = load_catalog(conn).load_table(f"{namespace}.candles").scan().to_pandas()
    assert set(got["exchange"]) == {"BINANCE"}
    in_window = got[got["window_start_us"] < END_MS * 1000]
    # Outside the window: only the flush trade's own candles.
    outside = got[got["window_start_us"] >= END_MS * 1000]
    flush_candles = zip(
        outside["symbol"], outside["timeframe"], outside["trade_count"], strict=True
    )
    assert sorted(flush_candles) == sorted((flush.symbol, tf, 1) for tf in TIMEFRAMES)
    assert in_window["window_start_us"].min() >= START_MS * 1000

    compared = compare(in_window, want_klines, ohlcv)

    # Every market had trades in most 1m intervals, and the quiet one had empty ones.
    by_market = Counter(in_window[in_window["timeframe"] == "1m"]["symbol"])
    assert by_market["BTC/USDT"] == by_market["ETH/BTC"] == 45
    assert 0 < by_market["QUIET/USDT"] < 45
    assert sum(compared[tf] for tf in TIMEFRAMES) == len(in_window)
    assert list(got["window_start"]) == [pd.Timestamp(us * 1000, tz="UTC")
                                         for us in got["window_start_us"]]  # fmt: skip
    print(
        f"\n{len(trades)} trades ({len(records) - len(trades) - 1} duplicates) in "
        f"{(END_MS - START_MS) // MIN_MS} min, {len(MARKETS)} markets; job {job_s:.1f}s; "
        f"candles equal to klines: {dict(compared)}"
    )
