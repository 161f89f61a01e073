"""Binance spot: URL overrides, aggregate-trade ids, exact strings, and a stream guard.

Quirks handled here:

- **Ids.** REST ``fetch_trades`` reads ``/api/v3/aggTrades`` (aggregate trade ids), while
  ``watch_trades`` defaults to the ``@trade`` stream (trade ids, a different sequence on the
  real exchange). The ingestor watches ``@aggTrade`` so that the live ids and the REST ids are
  the same sequence; those ids are contiguous per market, so a jump is a lost trade and the
  gap is filled from REST with ``fromId`` (exact, no time-window guessing).
- **Exact numbers** are the strings ``p``/``q`` (streams, aggTrades) or ``price``/``qty``
  (``/api/v3/trades``).
- **A guard in front of CCXT.** ccxt.pro 4.5.90 raises inside its receive callback on a NaN
  or infinite price, on an undecodable or binary frame, and then never reads the socket again
  (``watch_trades`` hangs forever). The guarded client checks each trade event before CCXT
  parses it and catches what CCXT raises; bad frames are reported (dead-lettered by the
  ingestor) and the socket keeps being read. The watchdog stays as the second line of defence.
- **Local exchange.** ``url`` points REST at ``<url>/api/v3`` and the stream at
  ``ws://.../ws``, with spot markets only (no futures ``exchangeInfo`` calls), as
  docs/local-exchange.md describes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import ccxt.pro

from ticklake.ingestors.exchanges.base import BadFrame, Cursor, ExchangeAdapter

log = logging.getLogger(__name__)

_TRADE_EVENTS = ("trade", "aggTrade")


def check_trade_event(
    message: Any, market_ids: Mapping[str, str]
) -> tuple[str, str, str | None] | None:
    """(reason code, message, symbol) when a raw trade event must not reach CCXT, else None.

    Only what makes CCXT misbehave is checked here (non-finite numbers wedge it, unknown
    symbols vanish inside it); everything else goes on to the normalizer.
    """
    if not isinstance(message, dict):
        return None
    event = message.get("data", message) if "stream" in message else message
    if not isinstance(event, dict) or event.get("e") not in _TRADE_EVENTS:
        return None
    market_id = event.get("s")
    symbol = market_ids.get(market_id) if isinstance(market_id, str) else None
    if symbol is None:
        return "UNKNOWN_SYMBOL", f"trade event for unknown market {market_id!r}", None
    for key, what in (("p", "PRICE"), ("q", "AMOUNT")):
        value = event.get(key)
        if value is None:
            continue
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return "NOT_A_NUMBER", f"{key}={value!r} is not a number", symbol
        if not number.is_finite():
            return f"NON_FINITE_{what}", f"{key}={value!r} is not finite", symbol
    return None


class GuardedBinance(ccxt.pro.binance):  # type: ignore[misc]
    """``ccxt.pro.binance`` whose websocket callbacks never raise (see module docstring)."""

    ticklake_on_bad: BadFrame | None = None
    ticklake_market_ids: ClassVar[Mapping[str, str]] = {}

    def handle_message(self, client: Any, message: Any) -> Any:
        problem = check_trade_event(message, self.ticklake_market_ids)
        if problem is not None:
            self._ticklake_bad(problem[0], problem[1], message, problem[2])
            return None
        try:
            return super().handle_message(client, message)
        except Exception as exc:  # CCXT's parse errors would stop the receive loop
            self._ticklake_bad("PARSE_ERROR", f"CCXT could not parse: {exc!r}", message, None)
            return None

    def client(self, url: str) -> Any:
        ws = super().client(url)
        if not getattr(ws, "ticklake_guarded", False):
            decode = ws.handle_text_or_binary_message

            def guarded(data: Any) -> None:
                try:
                    decode(data)
                except Exception as exc:  # not JSON, not UTF-8: would stop the receive loop
                    self._ticklake_bad("UNDECODABLE", f"frame is not JSON: {exc!r}", data, None)

            ws.handle_text_or_binary_message = guarded
            ws.ticklake_guarded = True
        return ws

    def _ticklake_bad(self, code: str, message: str, raw: Any, symbol: str | None) -> None:
        if self.ticklake_on_bad is not None:
            self.ticklake_on_bad(code, message, raw, symbol)
        else:  # pragma: no cover - the ingestor always sets it
            log.warning("bad frame (%s): %s", code, message)


class BinanceAdapter(ExchangeAdapter):
    """Binance spot."""

    ccxt_id: ClassVar[str] = "binance"
    contiguous_ids: ClassVar[bool] = True
    ordered_ids: ClassVar[bool] = True

    def config(self) -> dict[str, Any]:
        config = super().config()
        options = config["options"]
        options.setdefault("fetchMarkets", {"types": ["spot"]})
        options.setdefault("fetchMargins", False)
        options.setdefault("fetchCurrencies", False)
        if self.url:
            ws = "ws" + self.url.removeprefix("http") + "/ws"
            config["urls"] = {
                "api": {
                    "public": f"{self.url}/api/v3",
                    "v1": f"{self.url}/api/v1",
                    "ws": {"spot": ws},
                }
            }
        return config

    def stream_client(self, on_bad: BadFrame, symbols: frozenset[str]) -> Any | None:
        if not self.guard_stream:
            return super().stream_client(on_bad, symbols)
        ids = {s.replace("/", ""): s for s in symbols}
        guarded = type(
            "GuardedBinance",
            (GuardedBinance,),
            {"ticklake_on_bad": staticmethod(on_bad), "ticklake_market_ids": ids},
        )
        return guarded(self.config())

    def watch_params(self) -> dict[str, Any]:
        return {"name": "aggTrade"}

    def raw_fields(self, trade: Mapping[str, Any]) -> tuple[str | None, str | None]:
        info = trade.get("info")
        if not isinstance(info, Mapping):
            return None, None
        price = info.get("p", info.get("price"))
        amount = info.get("q", info.get("qty"))
        return (
            price if isinstance(price, str) else None,
            amount if isinstance(amount, str) else None,
        )

    async def fetch_after(
        self, client: Any, symbol: str, cursor: Cursor, limit: int
    ) -> list[dict[str, Any]]:
        """Aggregate trades from the cursor's id on (``fromId``): exact, no time windows."""
        if self.gap_fill == "recent":
            return await self.fetch_recent(client, symbol, limit)
        trades: list[dict[str, Any]] = await client.fetch_trades(
            symbol, None, limit, {"fromId": int(cursor.trade_id)}
        )
        return trades

    async def fetch_recent(self, client: Any, symbol: str, limit: int) -> list[dict[str, Any]]:
        """``/api/v3/trades``: only the most recent trades (at most 1000) can be had."""
        trades: list[dict[str, Any]] = await client.fetch_trades(
            symbol, None, limit, {"fetchTradesMethod": "publicGetTrades"}
        )
        return trades
