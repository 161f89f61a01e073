"""What the ingestor needs from an exchange, and the generic CCXT behaviour.

An ``ExchangeAdapter`` knows one exchange's quirks: how to point CCXT at another URL, where
the exact price and amount strings sit in the raw payload, how to fetch "the trades after
this one" from REST, whether trade ids are contiguous (so a jump in ids is a lost trade), and
how to keep a bad websocket frame from wedging CCXT. The generic behaviour here works for any
CCXT exchange; ``binance.py`` refines it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import ccxt.async_support
import ccxt.pro

log = logging.getLogger(__name__)

#: Called with (reason code, message, raw payload, symbol or None) for a frame that never
#: reaches CCXT's trade parsing (undecodable, non-finite numbers, unknown symbol, ...).
BadFrame = Callable[[str, str, Any, str | None], None]

GapFill = Literal["history", "recent"]

_PRICE_KEYS = ("p", "price", "px")
_AMOUNT_KEYS = ("q", "qty", "amount", "size", "sz", "quantity", "volume")


@dataclass(frozen=True)
class Cursor:
    """The last trade of a market this ingestor has sent: exchange time (ms) and id."""

    ts_ms: int
    trade_id: str


class ExchangeAdapter:
    """Generic CCXT exchange; subclasses override the quirks of one exchange."""

    #: CCXT's exchange id (``binance``).
    ccxt_id: ClassVar[str] = ""
    #: Trade ids are integers that count up by exactly one per trade of a market.
    contiguous_ids: ClassVar[bool] = False
    #: Trade ids are integers increasing with (time, id) order.
    ordered_ids: ClassVar[bool] = False

    def __init__(
        self,
        *,
        url: str | None = None,
        gap_fill: GapFill = "history",
        guard_stream: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        self.gap_fill = gap_fill
        self.guard_stream = guard_stream
        self.options = dict(options or {})

    @property
    def name(self) -> str:
        """The exchange as the wire contract spells it: upper case (``BINANCE``)."""
        return self.ccxt_id.upper()

    # -- clients ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """CCXT constructor config: rate limiter on, plus URL overrides (subclasses)."""
        return {"enableRateLimit": True, "options": dict(self.options)}

    def rest_client(self) -> Any:
        """A ``ccxt.async_support`` client for REST (polling, gap fills, probes)."""
        return getattr(ccxt.async_support, self.ccxt_id)(self.config())

    def stream_class(self) -> Any | None:
        """The ``ccxt.pro`` class, or None when CCXT has no websocket client for it."""
        return getattr(ccxt.pro, self.ccxt_id, None)

    def stream_client(self, on_bad: BadFrame, symbols: frozenset[str]) -> Any | None:
        """A ``ccxt.pro`` client if it can ``watch_trades``, else None (then: REST polling)."""
        cls = self.stream_class()
        if cls is None:
            return None
        client = cls(self.config())
        return client if client.has.get("watchTrades") else None

    def watch_params(self) -> dict[str, Any]:
        """Extra ``params`` for ``watch_trades``."""
        return {}

    # -- payloads --------------------------------------------------------------------------

    def raw_fields(self, trade: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The price and amount strings exactly as the exchange sent them."""
        info = trade.get("info")
        if not isinstance(info, Mapping):
            return None, None
        price = next((info[k] for k in _PRICE_KEYS if k in info), None)
        amount = next((info[k] for k in _AMOUNT_KEYS if k in info), None)
        return _text(price), _text(amount)

    def id_number(self, trade_id: str) -> int | None:
        """The id as an integer when ids are ordered integers, else None."""
        if not self.ordered_ids:
            return None
        try:
            return int(trade_id)
        except ValueError:
            return None

    # -- REST history ----------------------------------------------------------------------

    async def fetch_after(
        self, client: Any, symbol: str, cursor: Cursor, limit: int
    ) -> list[dict[str, Any]]:
        """Trades from ``cursor`` on (the cursor's own millisecond included), oldest first."""
        if self.gap_fill == "recent":
            return await self.fetch_recent(client, symbol, limit)
        trades: list[dict[str, Any]] = await client.fetch_trades(symbol, cursor.ts_ms, limit)
        return trades

    async def fetch_recent(self, client: Any, symbol: str, limit: int) -> list[dict[str, Any]]:
        """The most recent trades, oldest first."""
        trades: list[dict[str, Any]] = await client.fetch_trades(symbol, None, limit)
        return trades

    def retry_after_s(self, client: Any) -> str | None:
        """The ``Retry-After`` header of the client's last response, if any."""
        headers = getattr(client, "last_response_headers", None) or {}
        for key, value in dict(headers).items():
            if str(key).lower() == "retry-after":
                return str(value)
        return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    # a float (or anything else) would not be exact: report it, do not convert it
    return repr(value) if isinstance(value, float) else None
