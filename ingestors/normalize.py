"""CCXT unified trades -> ``Trade`` records, or ``DeadLetter`` records with a reason.

Money never passes through a float: the price and amount are taken from the exchange's own
strings (``trade["info"]``, through the exchange adapter) and parsed with ``Decimal``; CCXT's
float ``price``/``amount`` are used only to tell "missing" from "present". Anything that does
not make a valid ``Trade`` becomes a ``DeadLetter`` keeping the raw payload, so the ingestor
keeps going and the bad input can be inspected.

Reason codes (``DeadLetter.reason_code``):

=====================  ====================================================================
MISSING_TRADE_ID       no trade id
MISSING_TIMESTAMP      no exchange timestamp, or one outside 2000-2100
MISSING_PRICE          no price string
MISSING_AMOUNT         no amount string
NON_FINITE_PRICE       NaN or infinite price
NON_FINITE_AMOUNT      NaN or infinite amount
NON_POSITIVE_PRICE     price <= 0
NON_POSITIVE_AMOUNT    amount <= 0
NOT_A_NUMBER           price or amount is not a decimal number at all
OUT_OF_SCHEMA          value does not fit DECIMAL(18, 8) (too many places or digits)
UNKNOWN_SYMBOL         the market is not one this ingestor was asked to ingest
UNDECODABLE            the raw frame is not JSON (or not UTF-8)
PARSE_ERROR            CCXT could not parse a decodable record
INVALID_TRADE          any other rule of the ``Trade`` model
=====================  ====================================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from ticklake.schemas import DeadLetter, Trade
from ticklake.schemas.models import MAX_TS_US, MIN_TS_US, PRICE

#: (price string, amount string) of a unified trade, from the exchange's raw payload.
RawFields = Callable[[Mapping[str, Any]], tuple[str | None, str | None]]


def now_us() -> int:
    return time.time_ns() // 1000


def raw_payload(raw: Any) -> bytes:
    """The input as bytes, for ``DeadLetter.payload``: bytes as is, text UTF-8, objects JSON."""
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return json.dumps(raw, default=str, separators=(",", ":")).encode()


class RejectedError(ValueError):
    """A record that cannot become a ``Trade``: ``code`` says why (UPPER_SNAKE_CASE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_decimal(value: str | None, what: str) -> Decimal:
    """An exact, positive, finite ``Decimal`` in DECIMAL(18, 8), else :class:`RejectedError`."""
    name = what.upper()
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RejectedError(f"MISSING_{name}", f"trade has no {what}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise RejectedError("NOT_A_NUMBER", f"{what} {value!r} is not a number") from exc
    if not number.is_finite():
        raise RejectedError(f"NON_FINITE_{name}", f"{what} {value!r} is not finite")
    if number <= 0:
        raise RejectedError(f"NON_POSITIVE_{name}", f"{what} {value!r} is not positive")
    try:
        return PRICE(number)  # same (18, 8) spec for prices and amounts
    except ValueError as exc:
        raise RejectedError("OUT_OF_SCHEMA", f"{what} {value!r}: {exc}") from exc


class TradeNormalizer:
    """Turns one exchange's CCXT trades into wire records for one ingestor."""

    def __init__(
        self,
        exchange: str,
        ingestor_id: str,
        symbols: Collection[str],
        raw_fields: RawFields,
    ) -> None:
        self.exchange = exchange.upper()
        self.ingestor_id = ingestor_id
        self.symbols = frozenset(symbols)
        self.raw_fields = raw_fields
        self.source = f"ingestor:{ingestor_id}"

    def trade(self, unified: Mapping[str, Any], receipt_us: int | None = None) -> Trade:
        """The ``Trade`` of a CCXT unified trade; raises :class:`RejectedError` if there is none."""
        symbol = unified.get("symbol")
        if not isinstance(symbol, str) or symbol not in self.symbols:
            raise RejectedError("UNKNOWN_SYMBOL", f"symbol {symbol!r} is not ingested here")
        trade_id = unified.get("id")
        if trade_id is None or str(trade_id) == "":
            raise RejectedError("MISSING_TRADE_ID", "trade has no id")
        ts_ms = unified.get("timestamp")
        if not isinstance(ts_ms, int) or not MIN_TS_US <= ts_ms * 1000 <= MAX_TS_US:
            raise RejectedError(
                "MISSING_TIMESTAMP", f"trade timestamp {ts_ms!r} is missing or absurd"
            )
        price_text, amount_text = self.raw_fields(unified)
        price = parse_decimal(price_text, "price")
        amount = parse_decimal(amount_text, "amount")
        side = unified.get("side")
        try:
            return Trade(
                exchange=self.exchange,
                symbol=symbol,
                exchange_ts_us=ts_ms * 1000,
                receipt_ts_us=receipt_us if receipt_us is not None else now_us(),
                ingestor_id=self.ingestor_id,
                trade_id=str(trade_id),
                side=side if side in ("buy", "sell") else "unknown",
                price=price,
                amount=amount,
            )
        except ValidationError as exc:
            raise RejectedError("INVALID_TRADE", str(exc)) from exc

    def normalize(
        self, unified: Mapping[str, Any], receipt_us: int | None = None
    ) -> Trade | DeadLetter:
        """``Trade`` when valid, else the ``DeadLetter`` to send instead."""
        try:
            return self.trade(unified, receipt_us)
        except RejectedError as bad:
            symbol = unified.get("symbol")
            ts = unified.get("timestamp")
            return self.dead_letter(
                bad.code,
                bad.message,
                unified.get("info", unified),
                symbol=symbol if isinstance(symbol, str) else None,
                original_ts_us=ts * 1000 if isinstance(ts, int) else None,
            )

    def dead_letter(
        self,
        code: str,
        message: str,
        raw: Any,
        *,
        symbol: str | None = None,
        original_ts_us: int | None = None,
    ) -> DeadLetter:
        """A ``DeadLetter`` for ``raw`` (kept exactly; fields that do not validate are left out)."""
        if symbol is not None and "/" not in symbol:
            symbol = None
        if original_ts_us is not None and not MIN_TS_US <= original_ts_us <= MAX_TS_US:
            original_ts_us = None
        return DeadLetter(
            source_component=self.source,
            reason_code=code,
            reason_message=message[:2000],
            payload=raw_payload(raw),
            exchange=self.exchange,
            symbol=symbol,
            original_ts_us=original_ts_us,
            dead_lettered_ts_us=now_us(),
        )
