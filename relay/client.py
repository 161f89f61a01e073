"""The client SDK: live subscriptions and history on request, typed and bounded.

client = RelayClient()                        # TICKLAKE_RELAY__* settings
with client.subscribe(["BINANCE:BTC/USDT"], timeframes=["1m"]) as sub:
    for model in sub:                         # Trade and Candle models
        ...
result = client.request_history("BINANCE", "BTC/USDT", "1m", start, end, timeout=60)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import datetime

from ticklake.relay import topics
from ticklake.relay.errors import InvalidRequestError
from ticklake.relay.history import HistoryReader, HistoryResult, build_request, request_history
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context
from ticklake.relay.subscription import Subscription


def market_topics(markets: Iterable[str], *, ticks: bool, timeframes: Iterable[str]) -> list[str]:
    """The exact topics of markets x (tick, ohlc:<tf>)."""
    kinds = ([topics.TICK] if ticks else []) + [topics.ohlc(tf) for tf in timeframes]
    if not kinds:
        raise InvalidRequestError("nothing to subscribe to: ask for ticks or a timeframe")
    out: list[str] = []
    for market in markets:
        try:
            out.extend(topics.topic(market, kind) for kind in kinds)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
    if not out:
        raise InvalidRequestError("no market given (EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT)")
    return out


class RelayClient:
    """Entry point of the SDK for the gateway, user containers and bots."""

    def __init__(
        self,
        settings: RelaySettings | None = None,
        *,
        client_id: str | None = None,
        context: Context | None = None,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
        self.context = context

    def subscribe(
        self,
        markets: Iterable[str],
        *,
        ticks: bool = True,
        timeframes: Iterable[str] = (),
        confirm_timeout: float = 10.0,
        rcvhwm: int = 100_000,
    ) -> Subscription:
        """Subscribe to live ticks and candles; returns once the relay confirmed it.

        The last value of each topic (the current candle) arrives first.
        """
        wanted = market_topics(markets, ticks=ticks, timeframes=timeframes)
        return self.subscribe_topics(wanted, confirm_timeout=confirm_timeout, rcvhwm=rcvhwm)

    def subscribe_topics(
        self, names: Iterable[str], *, confirm_timeout: float = 10.0, rcvhwm: int = 100_000
    ) -> Subscription:
        """Subscribe to exact topics (market or notification topics)."""
        sub = Subscription(
            self.settings,
            [topics.exact_filter(name) for name in names],
            context=self.context,
            rcvhwm=rcvhwm,
        )
        try:
            sub.wait_confirmed(confirm_timeout)
        except BaseException:
            sub.close()
            raise
        return sub

    def notifications(self, *, confirm_timeout: float = 10.0) -> Subscription:
        """This client's ``RESPONSE:{client_id}`` topic."""
        return self.subscribe_topics(
            [topics.response_topic(self.client_id)], confirm_timeout=confirm_timeout
        )

    def request_history(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        start: datetime | int,
        end: datetime | int,
        *,
        timeout: float = 60.0,
        reader: HistoryReader | None = None,
    ) -> HistoryResult:
        """Historical ``trades`` or candles of ``timeframe`` for [start, end).

        Raises InvalidRequestError, TimeRangeInFutureError, UnknownMarketError,
        ExchangeUnavailableError, HistoryFailedError or RelayTimeoutError.
        """
        request = build_request(
            self.client_id,
            exchange,
            symbol,
            timeframe=timeframe,
            start=start,
            end=end,
            now_us=time.time_ns() // 1000,
        )
        return request_history(
            self.settings, request, timeout=timeout, reader=reader, context=self.context
        )
