"""Binance's JSON shapes for trades, aggregate trades, klines and stream events.

Prices and quantities are strings with 8 decimals, made from integer ticks and lot steps, so
they are exact. Every simulated trade is its own aggregate trade: the aggregate id equals the
trade id and ``f == l == id``, so ``/aggTrades``, ``/trades``, ``@trade`` and ``@aggTrade``
all report the same ids.
"""

from __future__ import annotations

from typing import Any

from ticklake.exchange.klines import Kline
from ticklake.exchange.market import E8, MarketTape, Trades

E16 = E8 * E8


def e8(value: int) -> str:
    """An integer count of 1e-8 units as Binance prints it: ``"60000.01000000"``."""
    whole, frac = divmod(abs(value), E8)
    return f"{'-' if value < 0 else ''}{whole}.{frac:08d}"


def e16_to_e8(value: int) -> str:
    """A count of 1e-16 units rounded half-even to 8 decimals (quote volumes)."""
    quotient, remainder = divmod(value, E8)
    if remainder * 2 > E8 or (remainder * 2 == E8 and quotient % 2):
        quotient += 1
    return e8(quotient)


def _columns(market: MarketTape, t: Trades) -> list[tuple[int, int, str, str, str, bool]]:
    tick, step = market.tick_e8, market.step_e8
    rows = []
    for i, ts, p, q, m in zip(
        t.ids.tolist(),
        t.ts.tolist(),
        t.ticks.tolist(),
        t.steps.tolist(),
        t.maker.tolist(),
        strict=True,
    ):
        rows.append((i, ts, e8(p * tick), e8(q * step), e16_to_e8(p * q * tick * step), m))
    return rows


def agg_trades(market: MarketTape, t: Trades) -> list[dict[str, Any]]:
    """``GET /api/v3/aggTrades`` rows."""
    return [
        {"a": i, "p": p, "q": q, "f": i, "l": i, "T": ts, "m": m, "M": True}
        for i, ts, p, q, _, m in _columns(market, t)
    ]


def trades(market: MarketTape, t: Trades) -> list[dict[str, Any]]:
    """``GET /api/v3/trades`` and ``/api/v3/historicalTrades`` rows."""
    return [
        {
            "id": i,
            "price": p,
            "qty": q,
            "quoteQty": qq,
            "time": ts,
            "isBuyerMaker": m,
            "isBestMatch": True,
        }
        for i, ts, p, q, qq, m in _columns(market, t)
    ]


def stream_events(market: MarketTape, t: Trades, name: str, event_ms: int) -> list[dict[str, Any]]:
    """``<symbol>@trade`` or ``<symbol>@aggTrade`` events for a run of trades."""
    symbol = market.spec.market_id
    if name == "trade":
        return [
            {
                "e": "trade",
                "E": event_ms,
                "s": symbol,
                "t": i,
                "p": p,
                "q": q,
                "T": ts,
                "m": m,
                "M": True,
            }
            for i, ts, p, q, _, m in _columns(market, t)
        ]
    return [
        {
            "e": "aggTrade",
            "E": event_ms,
            "s": symbol,
            "a": i,
            "p": p,
            "q": q,
            "f": i,
            "l": i,
            "T": ts,
            "m": m,
            "M": True,
        }
        for i, ts, p, q, _, m in _columns(market, t)
    ]


def kline_rows(market: MarketTape, rows: list[Kline]) -> list[list[Any]]:
    """``GET /api/v3/klines`` rows."""
    tick, step = market.tick_e8, market.step_e8
    out: list[list[Any]] = []
    for k in rows:
        c = k.candle
        out.append(
            [
                k.open_time,
                e8(c.open * tick),
                e8(c.high * tick),
                e8(c.low * tick),
                e8(c.close * tick),
                e8(c.volume * step),
                k.close_time,
                e16_to_e8(c.quote * tick * step),
                c.count,
                e8(c.taker_buy_volume * step),
                e16_to_e8(c.taker_buy_quote * tick * step),
                "0",
            ]
        )
    return out


def symbol_info(market: MarketTape) -> dict[str, Any]:
    """One entry of ``exchangeInfo.symbols`` with the filters CCXT reads for precision."""
    spec = market.spec
    return {
        "symbol": spec.market_id,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": e8(market.tick_e8),
                "maxPrice": "1000000.00000000",
                "tickSize": e8(market.tick_e8),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": e8(market.step_e8),
                "maxQty": "9000000.00000000",
                "stepSize": e8(market.step_e8),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "9000000.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }
