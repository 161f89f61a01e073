"""The ingestor's history worker against the local exchange (in-process) and a SQLite lake.

Kafka is replaced by a recording sink (the worker is under test, not the producer); the
truth is the exchange's own tape (``Tape``), never the worker's output.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.unit.test_catalog_query import to_arrow
from ticklake.catalog.coverage import LakeIndex, as_datetime
from ticklake.catalog.maintenance import append_rows
from ticklake.catalog.tables import ensure_market_tables
from ticklake.exchange import ExchangeSettings, LocalExchange
from ticklake.exchange.faults import FaultRequest
from ticklake.exchange.market import Tape
from ticklake.ingestors.backoff import Backoff
from ticklake.ingestors.exchanges import BinanceAdapter
from ticklake.ingestors.history import HistorySettings, HistoryWorker
from ticklake.ingestors.kafka_sink import KafkaSink
from ticklake.schemas import Candle, DeadLetter, HistoryFetch, HistoryRequest, Trade, WireModel

NS = "hist"
MINUTE_MS = 60_000
SETTINGS = ExchangeSettings(seed=7)


class RecordingSink:
    """Stands in for KafkaSink: keeps what the worker sends."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.dead: list[DeadLetter] = []
        self.other: list[WireModel] = []

    def trade(self, record: Trade) -> None:
        self.trades.append(record)

    def dead_letter(self, record: DeadLetter) -> None:
        self.dead.append(record)

    def send(self, spec: Any, record: WireModel) -> None:
        self.other.append(record)

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def check(self) -> None:
        return None


def request(
    symbol: str, start_ms: int, end_ms: int, timeframe: str | None = None
) -> HistoryRequest:
    return HistoryRequest(
        request_id=uuid.uuid4().hex,
        client_id="c",
        exchange="BINANCE",
        symbol=symbol,
        data_type="candles" if timeframe else "trades",
        timeframe=timeframe,
        start_ts_us=start_ms * 1000,
        end_ts_us=end_ms * 1000,
        requested_ts_us=time.time_ns() // 1000,
    )


def truth(symbol: str, start_ms: int, end_ms: int) -> list[tuple[str, str, str, int]]:
    return [
        (str(t.id), str(t.price), str(t.amount), t.timestamp * 1000)
        for t in Tape(SETTINGS).trades(symbol, start_ms, end_ms - 1)
    ]


def keyed(trades: list[Trade]) -> list[tuple[str, str, str, int]]:
    return sorted(
        ((t.trade_id, str(t.price.normalize()), str(t.amount.normalize()), t.exchange_ts_us)
         for t in trades), key=lambda r: (r[3], int(r[0])),
    )  # fmt: skip


def norm(rows: list[tuple[str, str, str, int]]) -> list[tuple[str, str, str, int]]:
    from decimal import Decimal

    return sorted(
        ((i, str(Decimal(p).normalize()), str(Decimal(a).normalize()), ts) for i, p, a, ts in rows),
        key=lambda r: (r[3], int(r[0])),
    )


@pytest.fixture
def lake(tmp_path: Path) -> LakeIndex:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    ensure_market_tables(cat, NS)
    return LakeIndex(cat, NS)


def run(lake: LakeIndex, body: Any, page_limit: int = 100) -> None:
    async def main() -> None:
        async with LocalExchange(SETTINGS) as ex:
            sink = RecordingSink()
            worker = HistoryWorker(
                [BinanceAdapter(url=ex.url)],
                cast(KafkaSink, sink),
                lake,
                ingestor_id="w-1",
                settings=HistorySettings(enabled=True, namespace=NS, page_limit=page_limit),
                rest_backoff=Backoff(0.01, 0.05, 4),
            )
            try:
                await body(ex, worker, sink)
            finally:
                await worker.close()

    asyncio.run(main())


def to_lake(lake: LakeIndex, trades: list[Trade]) -> None:
    table = lake.trades()
    assert table is not None
    rows = [
        {
            **t.model_dump(exclude={"request_id"}),
            "exchange_ts": as_datetime(t.exchange_ts_us),
            "request_id": t.request_id,
        }
        for t in trades
    ]
    append_rows(table, to_arrow(table, rows))


def test_pages_through_the_range_and_skips_what_the_lake_has(lake: LakeIndex) -> None:
    now_ms = time.time_ns() // 1_000_000
    start = (now_ms - 30 * MINUTE_MS) // MINUTE_MS * MINUTE_MS + 1234
    end = start + 2 * MINUTE_MS
    expected = truth("BTC/USDT", start, end)
    assert len(expected) > 300  # several pages of 100

    async def body(ex: LocalExchange, worker: HistoryWorker, sink: RecordingSink) -> None:
        req = request("BTC/USDT", start, end)
        fetch = await worker.handle(req)
        assert isinstance(fetch, HistoryFetch) and fetch.status == "fetched"
        assert keyed(sink.trades) == norm(expected)
        assert {t.request_id for t in sink.trades} == {req.request_id}
        assert fetch.expected_rows == fetch.fetched_rows == fetch.produced_rows == len(expected)
        assert fetch.iceberg_table == f"{NS}.trades" and fetch.served_end_ts_us == end * 1000
        assert sink.other == [fetch]

        # Half of the trades reach the lake (say, from the live stream): not produced again.
        half = sink.trades[: len(sink.trades) // 2]
        to_lake(lake, half)
        sink.trades.clear()
        again = await worker.handle(request("BTC/USDT", start, end))
        assert again.fetched_rows == len(expected) and again.expected_rows == len(expected)
        assert again.produced_rows == len(expected) - len(half)
        assert {t.trade_id for t in sink.trades} == {r[0] for r in expected} - {
            t.trade_id for t in half
        }

        # Once the range is recorded as covered, nothing is fetched at all.
        lake.record(exchange="BINANCE", symbol="BTC/USDT", data_type="trades", timeframe=None,
                    start_us=start * 1000, end_us=end * 1000, row_count=len(half),
                    request_id="r", snapshot_id=None)  # fmt: skip
        served, calls = ex.rest.requests, worker.stats.rest_calls
        covered = await worker.handle(request("BTC/USDT", start, end))
        assert (ex.rest.requests, worker.stats.rest_calls) == (served, calls)
        assert covered.fetched_rows == covered.produced_rows == 0
        assert covered.expected_rows == len(half)  # what the lake holds there

    run(lake, body)


def test_rate_limits_are_retried_and_failures_are_typed(lake: LakeIndex) -> None:
    now_ms = time.time_ns() // 1_000_000
    start = now_ms - 10 * MINUTE_MS
    end = start + MINUTE_MS // 2

    async def body(ex: LocalExchange, worker: HistoryWorker, sink: RecordingSink) -> None:
        ex.inject(FaultRequest(rest_errors=2, rest_error_status=429, retry_after_s=0))
        ok = await worker.handle(request("ETH/USDT", start, end))
        assert ok.status == "fetched"
        assert keyed(sink.trades) == norm(truth("ETH/USDT", start, end))
        assert worker.metrics.rate_limited.labels("BINANCE")._value.get() == 2

        unknown = await worker.handle(request("NOPE/USDT", start, end))
        assert unknown.status == "failed" and unknown.message
        assert unknown.message.startswith("UNKNOWN_MARKET:")

        now = time.time_ns() // 1_000_000
        settling = await worker.handle(request("ETH/USDT", now - 500, now + 60_000))
        assert settling.status == "failed" and settling.message
        assert settling.message.startswith("TIME_RANGE_IN_FUTURE:")

        recent = await worker.handle(request("ETH/USDT", now - 20_000, now + 60_000))
        assert recent.status == "fetched" and recent.served_end_ts_us < recent.end_ts_us
        assert recent.message and "settling" in recent.message

        ex.inject(FaultRequest(rest_errors=10, rest_error_status=503))
        down = await worker.handle(request("ETH/USDT", start - MINUTE_MS, start))
        assert down.status == "failed" and down.message
        assert down.message.startswith("EXCHANGE_UNAVAILABLE:")

    run(lake, body)


async def exchange_klines(url: str, market_id: str, first_ms: int, last_ms: int) -> list[Any]:
    """Klines opening in [first_ms, last_ms], straight from the exchange's REST API."""
    import aiohttp

    query = {"symbol": market_id, "interval": "1m", "startTime": str(first_ms),
             "endTime": str(last_ms), "limit": "1000"}  # fmt: skip
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v3/klines", params=query) as r:
        rows: list[Any] = await r.json()
    return [
        (int(k[0]) * 1000, *(Decimal(v) for v in k[1:6]))
        for k in rows
        if first_ms <= int(k[0]) <= last_ms
    ]


def test_candles_are_the_exchange_klines_of_closed_windows(lake: LakeIndex) -> None:
    now_ms = time.time_ns() // 1_000_000
    start = (now_ms - 40 * MINUTE_MS) // MINUTE_MS * MINUTE_MS + 17_000  # mid-minute
    end = start + 12 * MINUTE_MS
    first = start - 17_000 + MINUTE_MS  # first window starting in the range

    async def body(ex: LocalExchange, worker: HistoryWorker, sink: RecordingSink) -> None:
        fetch = await worker.handle(request("BTC/USDT", start, end, "1m"))
        assert fetch.status == "fetched" and fetch.iceberg_table == f"{NS}.candles"
        candles = [c for c in sink.other if isinstance(c, Candle)]
        truth = await exchange_klines(ex.url, "BTCUSDT", first, end - 1)
        assert len(truth) == 12
        got = sorted((c.window_start_us, c.open, c.high, c.low, c.close, c.volume) for c in candles)
        assert got == truth
        assert fetch.expected_rows == fetch.produced_rows == 12
        assert all(c.final and c.ingestor_id == "w-1" and c.timeframe == "1m" for c in candles)

        now = time.time_ns() // 1_000_000
        open_window = await worker.handle(
            request("BTC/USDT", now - 3 * MINUTE_MS, now + MINUTE_MS, "1m")
        )
        assert open_window.status == "fetched"
        served_ms = open_window.served_end_ts_us // 1000
        assert served_ms % MINUTE_MS == 0 and now - 2000 - MINUTE_MS < served_ms <= now
        weekly = await worker.handle(request("BTC/USDT", start, end, "1w"))
        assert weekly.message and weekly.message.startswith("NOT_SUPPORTED:")

    run(lake, body, page_limit=5)
