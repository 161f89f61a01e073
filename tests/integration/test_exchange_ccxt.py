"""Real CCXT (sync, async and pro) against the real local exchange on loopback.

No Kafka or other stack component is needed. Every answer is compared with the exchange's
ground truth (an independent ``Tape`` built from the same settings) or with pandas klines
computed from it; faults are requested through the HTTP control API.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import ccxt.pro
import pandas as pd
import pytest

from tests.unit.test_exchange_market import pandas_klines
from ticklake.exchange import BackgroundExchange, ExchangeSettings, LocalExchange, Tape, Trade
from ticklake.exchange.settings import default_genesis_ms

pytestmark = pytest.mark.timeout(180)

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
GENESIS = default_genesis_ms()
SETTINGS = ExchangeSettings(seed=42, genesis_ms=GENESIS)


@pytest.fixture(scope="module")
def exchange() -> Iterator[LocalExchange]:
    with BackgroundExchange(SETTINGS) as ex:
        yield ex


@pytest.fixture(scope="module")
def truth() -> Tape:
    """Ground truth, built separately from the server's own tape."""
    return Tape(SETTINGS)


@pytest.fixture
def binance(exchange: LocalExchange) -> ccxt.binance:
    return ccxt.binance(exchange.ccxt_config())


def run(coro: Coroutine[Any, Any, None], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def control(exchange: LocalExchange, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST /_control/faults (or GET /_control/state without a body)."""
    if body is None:
        request = urllib.request.Request(f"{exchange.url}/_control/state")
    else:
        request = urllib.request.Request(
            f"{exchange.url}/_control/faults",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def rows(trades: list[Trade]) -> list[tuple[str, int, str, str, str]]:
    return [(str(t.id), t.timestamp, f"{t.price:.8f}", f"{t.amount:.8f}", t.side) for t in trades]


def ccxt_rows(trades: list[dict[str, Any]]) -> list[tuple[str, int, str, str, str]]:
    out = []
    for t in trades:
        info = t["info"]
        price, qty = info.get("p", info.get("price")), info.get("q", info.get("qty"))
        assert t["price"] == float(price) and t["amount"] == float(qty)
        out.append((t["id"], t["timestamp"], price, qty, t["side"]))
    return out


# -- REST ----------------------------------------------------------------------------------


def test_load_markets_computes_precision_from_filters(binance: ccxt.binance) -> None:
    markets = binance.load_markets()
    assert set(markets) == {s.symbol for s in SETTINGS.markets}
    for spec in SETTINGS.markets:
        market = markets[spec.symbol]
        assert market["spot"] and market["active"] and market["id"] == spec.market_id
        assert market["precision"]["price"] == float(spec.tick_size)
        assert market["precision"]["amount"] == float(spec.step_size)
    assert binance.fetch_time() is not None


def test_fetch_trades_since_paging_reproduces_the_ground_truth(
    binance: ccxt.binance, truth: Tape
) -> None:
    start, end = GENESIS + 6 * HOUR, GENESIS + 6 * HOUR + 15 * MIN
    got: dict[str, dict[str, Any]] = {}
    since, requests = start, 0
    while since <= end:
        window_end = min(end, since + HOUR)
        page = binance.fetch_trades("BTC/USDT", since, 1000, {"until": window_end})
        requests += 1
        for t in page:
            got.setdefault(t["id"], t)
        # a full page may end inside a millisecond: ask again from that millisecond
        since = page[-1]["timestamp"] if len(page) == 1000 else window_end + 1
    expected = truth.trades("BTC/USDT", start, end)
    assert len(expected) > 3000 and requests > 3
    assert ccxt_rows(list(got.values())) == rows(expected)


def test_fetch_trades_by_id_and_recent(binance: ccxt.binance, truth: Tape) -> None:
    binance.load_markets()
    start = GENESIS + 7 * HOUR
    expected = truth.trades("ETH/USDT", start, start + 2 * MIN)
    first = expected[0].id
    by_agg_id = binance.fetch_trades("ETH/USDT", None, 200, {"fromId": first})
    assert ccxt_rows(by_agg_id) == rows(expected[:200])
    binance.apiKey = "unused"  # CCXT insists on a key for historicalTrades; we ignore it
    historical = binance.fetch_trades(
        "ETH/USDT", None, 150, {"fetchTradesMethod": "publicGetHistoricalTrades", "fromId": first}
    )
    assert ccxt_rows(historical) == rows(expected[:150])
    recent = binance.fetch_trades("ETH/USDT", None, 20, {"fetchTradesMethod": "publicGetTrades"})
    now = binance.milliseconds()
    assert len(recent) == 20 and now - recent[-1]["timestamp"] < 60_000
    assert ccxt_rows(recent) == rows(
        truth.trades("ETH/USDT", recent[0]["timestamp"], recent[-1]["timestamp"])
    )


@pytest.mark.parametrize(
    "case",
    [
        ("BTC/USDT", "1m", MIN, 240),
        ("ETH/USDT", "5m", 5 * MIN, 144),
        ("SOL/USDT", "15m", 15 * MIN, 96),
        ("DOGE/USDT", "1h", HOUR, 24),
        ("ETH/BTC", "1d", DAY, 2),
        ("QUIET/USDT", "1m", MIN, 300),
    ],
    ids=lambda case: f"{case[0]}-{case[1]}",
)
def test_fetch_ohlcv_equals_pandas_klines_of_the_ground_truth(
    binance: ccxt.binance, truth: Tape, case: tuple[str, str, int, int]
) -> None:
    symbol, timeframe, length, count = case
    start = GENESIS + (0 if length >= HOUR else 3 * HOUR)
    end = start + count * length  # whole, closed candles only
    candles = binance.fetch_ohlcv(symbol, timeframe, start, count)
    # From genesis: an empty first interval repeats the close of the trade before it.
    expected = pandas_klines(truth.trades(symbol, GENESIS, end - 1), length, start, end)
    assert [c[0] for c in candles] == list(expected.index)
    for (_, o, h, lo, c, v), (_, row) in zip(candles, expected.iterrows(), strict=True):
        assert (o, h, lo, c, v) == tuple(
            float(row[k]) for k in ("open", "high", "low", "close", "volume")
        )
    raw = binance.publicGetKlines(
        {
            "symbol": binance.market_id(symbol),
            "interval": timeframe,
            "startTime": start,
            "limit": count,
        }
    )
    assert [int(r[8]) for r in raw] == list(expected["count"])
    assert [Decimal(r[7]) for r in raw] == [
        q.quantize(Decimal("0.00000001")) for q in expected["quote"]
    ]
    assert all(Decimal(r[5]) == v for r, v in zip(raw, expected["volume"], strict=True))
    if symbol == "QUIET/USDT":
        assert (expected["count"] == 0).any()


def test_rate_limit_fault_answers_429_with_retry_after(
    binance: ccxt.binance, exchange: LocalExchange
) -> None:
    control(exchange, {"rest_errors": 3, "rest_error_status": 429, "retry_after_s": 7})
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{exchange.url}/api/v3/ping", timeout=10)
    assert raw.value.code == 429 and raw.value.headers["Retry-After"] == "7"
    assert json.loads(raw.value.read())["code"] == -1003
    for _ in range(2):
        with pytest.raises(ccxt.DDoSProtection):
            binance.fetch_time()
    assert binance.fetch_time() > 0
    control(exchange, {"rest_errors": 1, "rest_error_status": 418})
    with pytest.raises(ccxt.DDoSProtection):
        binance.fetch_time()
    assert control(exchange)["faults"]["rest_errors"] == 0


def test_bad_symbol_and_bad_parameters_are_binance_errors(
    binance: ccxt.binance, exchange: LocalExchange
) -> None:
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{exchange.url}/api/v3/aggTrades?symbol=NOPEUSDT", timeout=10)
    assert raw.value.code == 400
    assert json.loads(raw.value.read()) == {"code": -1121, "msg": "Invalid symbol."}
    with pytest.raises(ccxt.BadSymbol):
        binance.publicGetAggTrades({"symbol": "NOPEUSDT"})
    with pytest.raises(ccxt.BadRequest):
        binance.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})
    with pytest.raises(ccxt.BadRequest):
        binance.publicGetAggTrades(
            {"symbol": "BTCUSDT", "startTime": GENESIS, "endTime": GENESIS + HOUR + 1}
        )


# -- websocket -----------------------------------------------------------------------------


async def collect(pro: Any, symbols: list[str], per_symbol: int, **params: Any) -> list[dict]:
    got: list[dict[str, Any]] = []
    while any(sum(t["symbol"] == s for t in got) < per_symbol for s in symbols):
        got += await asyncio.wait_for(pro.watch_trades_for_symbols(symbols, params=params), 10)
    return got


@pytest.mark.parametrize("stream", ["trade", "aggTrade"])
def test_watch_trades_receives_live_trades_matching_the_ground_truth(
    exchange: LocalExchange, truth: Tape, stream: str
) -> None:
    async def body() -> None:
        pro = ccxt.pro.binance(exchange.ccxt_config())
        try:
            got = await collect(pro, ["BTC/USDT", "ETH/USDT"], 15, name=stream)
        finally:
            await pro.close()
        for symbol in ("BTC/USDT", "ETH/USDT"):
            mine = [t for t in got if t["symbol"] == symbol]
            expected = truth.trades(symbol, mine[0]["timestamp"], mine[-1]["timestamp"])
            # every trade exactly once, in order, no gaps: the first one's millisecond may
            # hold earlier trades that were pushed before the subscription, and the last
            # one's later trades that ccxt had not handed out yet (one event per trade)
            first, last = int(mine[0]["id"]), int(mine[-1]["id"])
            expected = [t for t in expected if first <= t.id <= last]
            assert ccxt_rows(mine) == rows(expected)
            assert all(t["info"]["e"] == stream for t in mine)

    run(body())


@pytest.mark.parametrize("mode", ["close", "abort"])
def test_a_dropped_connection_is_seen_by_ccxt(exchange: LocalExchange, mode: str) -> None:
    async def body() -> None:
        pro = ccxt.pro.binance(exchange.ccxt_config())
        try:
            await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 10)
            # No trade may reach the pending watch before the drop (a trade that wins that
            # race completes it normally): stall the feed, let frames in flight arrive first.
            await asyncio.to_thread(control, exchange, {"stall_ws_s": 60.0, "stall_skip": True})
            await asyncio.sleep(0.5)
            pending = asyncio.ensure_future(pro.watch_trades("BTC/USDT"))
            assert (await asyncio.to_thread(control, exchange, {"drop_ws": mode}))["dropped"] >= 1
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(pending, 10)
            await asyncio.to_thread(control, exchange, {"stall_ws_s": 0.0})
            after = await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 10)  # reconnects
            assert after
        finally:
            await asyncio.to_thread(control, exchange, {"stall_ws_s": 0.0})
            await pro.close()

    run(body())


def test_periodic_drops(exchange: LocalExchange) -> None:
    async def body() -> None:
        pro = ccxt.pro.binance(exchange.ccxt_config())
        errors = 0
        await asyncio.to_thread(control, exchange, {"drop_ws_every_s": 0.5})
        try:
            while errors < 2:
                try:
                    await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 10)
                except ccxt.NetworkError:
                    errors += 1
        finally:
            await asyncio.to_thread(control, exchange, {"drop_ws_every_s": 0})
            await pro.close()

    run(body())


async def subscribe(session: aiohttp.ClientSession, url: str, stream: str) -> Any:
    ws = await session.ws_connect(url)
    await ws.send_json({"method": "SUBSCRIBE", "params": [stream], "id": 1})
    assert json.loads(await asyncio.wait_for(ws.receive_str(), 5)) == {"result": None, "id": 1}
    return ws


async def post(session: aiohttp.ClientSession, exchange: LocalExchange, body: dict) -> dict:
    async with session.post(f"{exchange.url}/_control/faults", json=body) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def test_malformed_records_are_delivered_as_injected(exchange: LocalExchange) -> None:
    kinds = [
        "missing_id",
        "missing_price",
        "zero_price",
        "negative_price",
        "nan_price",
        "infinite_price",
        "zero_amount",
        "negative_amount",
        "nan_amount",
        "unknown_symbol",
        "undecodable",
        "binary",
    ]

    async def body() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await subscribe(session, f"{exchange.ws_url}/0", "solusdt@trade")
            for kind in kinds:
                record = {"kind": kind, "symbol": "SOL/USDT"}
                injected = (await post(session, exchange, {"malformed": [record]}))["injected"][0]
                assert injected["subscribers"] == 1
                wanted = injected.get("text") or bytes.fromhex(injected["binary_hex"])
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    if msg.data == wanted:
                        break
                    assert json.loads(msg.data)["e"] == "trade"  # real trades in between
            await ws.close()

    run(body())


def test_ccxt_passes_parseable_malformed_records_through(exchange: LocalExchange) -> None:
    async def body() -> None:
        pro = ccxt.pro.binance(exchange.ccxt_config())
        try:
            await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 10)
            for kind, check in [
                ("missing_id", lambda t: t["id"] is None),
                ("zero_price", lambda t: t["price"] == 0.0),
                ("negative_amount", lambda t: t["amount"] < 0),
            ]:
                await asyncio.to_thread(
                    control, exchange, {"malformed": [{"kind": kind, "symbol": "BTCUSDT"}]}
                )
                seen = False
                while not seen:
                    got = await asyncio.wait_for(pro.watch_trades("BTC/USDT"), 10)
                    seen = any(check(t) for t in got)
        finally:
            await pro.close()

    run(body())


def test_duplicates_replays_and_stalls_on_the_raw_stream(exchange: LocalExchange) -> None:
    async def ids(ws: Any, count: int) -> list[int]:
        return [
            json.loads((await asyncio.wait_for(ws.receive(), 10)).data)["t"] for _ in range(count)
        ]

    async def body() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await subscribe(session, f"{exchange.ws_url}/0", "btcusdt@trade")
            got = await ids(ws, 3)
            await post(session, exchange, {"replay_last": 2, "duplicate_next": 2})
            got += await ids(ws, 12)
            # frames queued before the request, then the replay of the last two events,
            # then the next two events twice each, then the stream goes on
            i = next(i for i in range(1, len(got)) if got[i] <= got[i - 1])
            assert got[i : i + 2] == got[i - 2 : i]
            assert got[i + 2 : i + 6] == [got[i - 1] + 1] * 2 + [got[i - 1] + 2] * 2
            assert got[i + 6] == got[i - 1] + 3
            # a stall that skips: the stream jumps, and REST still has exactly the gap
            await post(session, exchange, {"stall_ws_s": 2.0, "stall_skip": True})
            last = got[-1]
            for _ in range(10_000):
                resumed = (await ids(ws, 1))[0]
                if resumed != last + 1:
                    break
                last = resumed
            assert resumed > last + 1
            url = f"{exchange.url}/api/v3/aggTrades?symbol=BTCUSDT&fromId={last + 1}&limit=1000"
            async with session.get(url) as response:
                gap = [t["a"] for t in await response.json() if t["a"] < resumed]
            assert gap == list(range(last + 1, resumed))
            await ws.close()

    run(body())


def test_combined_stream_and_subscription_protocol(exchange: LocalExchange) -> None:
    async def body() -> None:
        async with aiohttp.ClientSession() as session:
            url = exchange.url.replace("http", "ws") + "/stream?streams=ethusdt@aggTrade"
            ws = await session.ws_connect(url)
            event = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
            assert event["stream"] == "ethusdt@aggTrade" and event["data"]["e"] == "aggTrade"
            assert event["data"]["a"] == event["data"]["f"] == event["data"]["l"]
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 7})
            await ws.send_json({"method": "SUBSCRIBE", "params": ["BTCUSDT@nope"], "id": 8})
            replies: dict[int, Any] = {}
            while len(replies) < 2:
                message = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
                if "id" in message:
                    replies[message["id"]] = message
            assert replies[7] == {"result": ["ethusdt@aggTrade"], "id": 7}
            assert replies[8]["error"]["code"] == 2
            await ws.close()

    run(body())


# -- as a process --------------------------------------------------------------------------


def test_process_prints_its_address_serves_the_same_tape_and_stops_on_sigterm(
    exchange: LocalExchange,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLAKE_EXCHANGE__")}
    argv = [
        sys.executable,
        "-m",
        "ticklake.exchange",
        "--port",
        "0",
        "--seed",
        "42",
        "--genesis",
        str(GENESIS),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # bounded by the test timeout
        assert url.startswith("http://127.0.0.1:")
        query = f"/api/v3/aggTrades?symbol=DOGEUSDT&startTime={GENESIS + HOUR}&limit=1000"
        with urllib.request.urlopen(url + query, timeout=10) as theirs:
            other = json.loads(theirs.read())
        with urllib.request.urlopen(exchange.url + query, timeout=10) as ours:
            assert json.loads(ours.read()) == other and len(other) == 1000
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_state_reports_connections_and_faults(exchange: LocalExchange) -> None:
    state = control(exchange)
    assert state["seed"] == 42 and state["genesis_ms"] == GENESIS
    assert state["faults"]["duplicate_next"] == 0
    assert pd.Timestamp(state["server_time"], unit="ms") > pd.Timestamp(GENESIS, unit="ms")
    assert time.time() * 1000 - state["server_time"] < 60_000


def test_in_process_async_api_weight_limit_and_standing_faults() -> None:
    """``async with LocalExchange(...)`` in the test's own loop, with ccxt.async_support."""
    import ccxt.async_support

    from ticklake.exchange import FaultRequest

    async def body() -> None:
        settings = ExchangeSettings(seed=42, genesis_ms=GENESIS, weight_limit_per_minute=45)
        now = int(time.time() * 1000)  # a frozen clock: the weight minute cannot roll over
        standing = FaultRequest(rest_errors=1)
        async with LocalExchange(settings, faults=standing, clock=lambda: now) as ex:
            client = ccxt.async_support.binance(ex.ccxt_config())
            try:
                with pytest.raises(ccxt.DDoSProtection):  # the standing fault: one 429
                    await client.fetch_time()
                await client.load_markets()  # weight so far: 1 + 20 (exchangeInfo)
                trades = await client.fetch_trades("BTC/USDT", GENESIS, 5)  # + 4 (aggTrades)
                truth = Tape(settings).trades("BTC/USDT", GENESIS, GENESIS + HOUR)[:5]
                assert [t["id"] for t in trades] == [str(t.id) for t in truth]
                await client.publicGetExchangeInfo()  # 45: at the limit, not above
                with pytest.raises(ccxt.DDoSProtection):  # 65 > 45
                    await client.publicGetExchangeInfo()
            finally:
                await client.close()

    run(body())
