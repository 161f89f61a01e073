"""A local exchange that speaks Binance spot public market-data APIs (REST + websocket), so
unmodified CCXT runs end to end without internet. See docs/local-exchange.md."""

from ticklake.exchange.faults import FaultRequest, MalformedRecord
from ticklake.exchange.market import Tape, Trade
from ticklake.exchange.server import BackgroundExchange, LocalExchange, ccxt_config
from ticklake.exchange.settings import ExchangeSettings, MarketSpec

__all__ = [
    "BackgroundExchange",
    "ExchangeSettings",
    "FaultRequest",
    "LocalExchange",
    "MalformedRecord",
    "MarketSpec",
    "Tape",
    "Trade",
    "ccxt_config",
]
