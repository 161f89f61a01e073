"""Binance's spot public market-data REST API, ``/api/v3/...``, over the simulated tape.

Errors are Binance's: HTTP 400 with ``{"code": -1121, "msg": "Invalid symbol."}`` and the like,
429 (or 418) with ``Retry-After`` and code -1003 when rate-limited (by fault injection or by
the optional weight limit). Every answer carries ``X-MBX-USED-WEIGHT-1M``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ticklake.exchange import wire
from ticklake.exchange.faults import Faults
from ticklake.exchange.klines import INTERVALS, Interval, klines, parse_time_zone
from ticklake.exchange.market import MarketTape, Tape
from ticklake.exchange.settings import ExchangeSettings

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/aggTrades": 4,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/klines": 2,
    "/api/v3/uiKlines": 2,
    "/api/v3/ticker/price": 2,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BinanceError(Exception):
    """An error answer in Binance's format."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}

    def response(self) -> web.Response:
        body = json.dumps({"code": self.code, "msg": self.msg})
        return web.Response(
            status=self.status, text=body, content_type="application/json", headers=self.headers
        )


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 20:
        msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise BinanceError(400, -1100, msg)
    return int(raw)


def _limit(request: web.Request) -> int:
    limit = _int(request, "limit", DEFAULT_LIMIT)
    assert limit is not None
    if limit < 1:
        raise BinanceError(400, -1100, "Illegal characters found in parameter 'limit'.")
    return min(limit, MAX_LIMIT)


class BinanceRest:
    """The REST routes and their middleware (faults, weights)."""

    def __init__(
        self, tape: Tape, faults: Faults, settings: ExchangeSettings, clock: Callable[[], int]
    ):
        self.tape, self.faults, self.settings, self.clock = tape, faults, settings, clock
        self.requests = 0
        #: Requests per path (``/api/v3/aggTrades`` ...): what a client asked for.
        self.by_path: Counter[str] = Counter()
        self._weight_minute = 0
        self._weight = 0

    def routes(self) -> list[web.RouteDef]:
        get = web.get
        return [
            get("/api/v3/ping", self.ping),
            get("/api/v3/time", self.time),
            get("/api/v3/exchangeInfo", self.exchange_info),
            get("/api/v3/aggTrades", self.agg_trades),
            get("/api/v3/trades", self.trades),
            get("/api/v3/historicalTrades", self.historical_trades),
            get("/api/v3/klines", self.klines),
            get("/api/v3/uiKlines", self.klines),
            get("/api/v3/ticker/price", self.ticker_price),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        self.requests += 1
        self.by_path[request.path] += 1
        if self.faults.rest_latency_ms:
            await asyncio.sleep(self.faults.rest_latency_ms / 1000)
        weight = self._charge(WEIGHTS.get(request.path, 1))
        headers = {"X-MBX-USED-WEIGHT-1M": str(weight)}
        try:
            fault = self.faults.take_rest_error()
            limit = self.settings.weight_limit_per_minute
            if fault is not None:
                raise self._rate_limited(fault.status, fault.retry_after_s, limit or 6000)
            if limit is not None and weight > limit:
                raise self._rate_limited(429, 60 - (self.clock() // 1000) % 60, limit)
            response = await handler(request)
        except BinanceError as exc:
            response = exc.response()
        except web.HTTPNotFound:
            response = BinanceError(404, -1000, f"Unknown path {request.path}.").response()
        response.headers.update(headers)
        return response

    def _charge(self, weight: int) -> int:
        minute = self.clock() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight = minute, 0
        self._weight += weight
        return self._weight

    @staticmethod
    def _rate_limited(status: int, retry_after_s: int, limit: int) -> BinanceError:
        msg = (
            f"Too much request weight used; current limit is {limit} request weight per 1 "
            "MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
        )
        if status == 418:
            msg = "Way too much request weight used; IP banned. Please use WebSocket Streams."
        elif status not in (418, 429):
            return BinanceError(
                status, -1000, "An unknown error occurred while processing the request."
            )
        code = -1003
        headers = {"Retry-After": str(retry_after_s)}
        return BinanceError(status, code, msg, headers)

    def _market(self, request: web.Request) -> MarketTape:
        symbol = request.query.get("symbol")
        if not symbol:
            raise BinanceError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        market = self.tape.markets.get(symbol)
        if market is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return market

    # -- handlers --------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.clock()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        markets = list(self.tape.markets.values())
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                wanted = json.loads(request.query["symbols"])
            except ValueError:
                raise BinanceError(
                    400, -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
        if wanted is not None:
            if not isinstance(wanted, list) or any(w not in self.tape.markets for w in wanted):
                raise BinanceError(400, -1121, "Invalid symbol.")
            markets = [self.tape.markets[w] for w in wanted]
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": self.clock(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": self.settings.weight_limit_per_minute or 6000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "DAY",
                        "intervalNum": 1,
                        "limit": 200000,
                    },
                    {
                        "rateLimitType": "RAW_REQUESTS",
                        "interval": "MINUTE",
                        "intervalNum": 5,
                        "limit": 61000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": [wire.symbol_info(m) for m in markets],
            }
        )

    async def agg_trades(self, request: web.Request) -> web.Response:
        """Ascending by id. ``fromId``: from that id. ``startTime``/``endTime`` (inclusive, at
        most an hour apart): the first ``limit`` of the window; only ``endTime``: the last
        ``limit`` of the hour before it. Nothing given: the most recent ``limit``."""
        market = self._market(request)
        limit = _limit(request)
        from_id = _int(request, "fromId")
        start, end = _int(request, "startTime"), _int(request, "endTime")
        now = self.clock()
        if from_id is not None:
            if start is not None or end is not None:
                raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
            found = market.trades_from_id(from_id, now, limit)
        elif start is not None and end is not None:
            if end < start:
                raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
            if end - start > HOUR_MS:
                raise BinanceError(400, -1127, "More than 1 hours between startTime and endTime.")
            found = market.trades(start, min(end, now), limit)
        elif start is not None:
            found = market.trades(start, min(start + HOUR_MS, now), limit)
        elif end is not None:
            found = market.latest_trades(end - HOUR_MS, min(end, now), limit)
        else:
            found = market.latest_trades(market.genesis_ms, now, limit)
        return web.json_response(wire.agg_trades(market, found))

    async def trades(self, request: web.Request) -> web.Response:
        market = self._market(request)
        found = market.latest_trades(market.genesis_ms, self.clock(), _limit(request))
        return web.json_response(wire.trades(market, found))

    async def historical_trades(self, request: web.Request) -> web.Response:
        market = self._market(request)
        limit, from_id, now = _limit(request), _int(request, "fromId"), self.clock()
        if from_id is None:
            found = market.latest_trades(market.genesis_ms, now, limit)
        else:
            found = market.trades_from_id(from_id, now, limit)
        return web.json_response(wire.trades(market, found))

    async def klines(self, request: web.Request) -> web.Response:
        market = self._market(request)
        name = request.query.get("interval")
        if not name:
            raise BinanceError(
                400,
                -1102,
                "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
            )
        if name not in INTERVALS:
            raise BinanceError(400, -1120, "Invalid interval.")
        try:
            offset = parse_time_zone(request.query.get("timeZone", "0"))
        except ValueError:
            raise BinanceError(
                400, -1100, "Illegal characters found in parameter 'timeZone'."
            ) from None
        start, end = _int(request, "startTime"), _int(request, "endTime")
        rows = klines(
            market,
            Interval(name, offset),
            now_ms=self.clock(),
            start_ms=start,
            end_ms=end,
            limit=_limit(request),
        )
        return web.json_response(wire.kline_rows(market, rows))

    async def ticker_price(self, request: web.Request) -> web.Response:
        now = self.clock()

        def price(market: MarketTape) -> dict[str, Any]:
            last = market.last_price_before(now + 1)
            value = wire.e8((last or 0) * market.tick_e8)
            return {"symbol": market.spec.market_id, "price": value}

        if "symbol" in request.query:
            return web.json_response(price(self._market(request)))
        return web.json_response([price(m) for m in self.tape.markets.values()])
