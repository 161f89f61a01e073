"""Normalization of CCXT unified trades: exact decimals, and a reason for every rejection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ticklake.ingestors.exchanges import BinanceAdapter, adapter_for
from ticklake.ingestors.exchanges.binance import check_trade_event
from ticklake.ingestors.normalize import RejectedError, TradeNormalizer, parse_decimal
from ticklake.schemas import DeadLetter, Trade
from ticklake.schemas.serde import decode, encode

TS = 1_760_000_000_123


def unified(**over: Any) -> dict[str, Any]:
    """A CCXT unified trade as ccxt.pro.binance builds it from an aggTrade event."""
    info = {"e": "aggTrade", "s": "BTCUSDT", "a": 42, "p": "60000.12", "q": "0.00012345",
            "T": TS, "m": True}  # fmt: skip
    info.update(over.pop("info", {}))
    trade = {
        "id": "42",
        "symbol": "BTC/USDT",
        "timestamp": TS,
        "side": "sell",
        "price": 60000.12,
        "amount": 0.00012345,
        "info": info,
    }
    trade.update(over)
    return trade


@pytest.fixture
def normalizer() -> TradeNormalizer:
    return TradeNormalizer("binance", "ing-1", ["BTC/USDT"], BinanceAdapter().raw_fields)


def test_a_good_trade_is_exact_and_complete(normalizer: TradeNormalizer) -> None:
    record = normalizer.normalize(unified(), receipt_us=TS * 1000 + 5)
    assert isinstance(record, Trade)
    assert record.exchange == "BINANCE" and record.symbol == "BTC/USDT"
    assert record.price == Decimal("60000.12") and str(record.price) == "60000.12000000"
    assert record.amount == Decimal("0.00012345")
    assert (record.exchange_ts_us, record.receipt_ts_us) == (TS * 1000, TS * 1000 + 5)
    assert (record.trade_id, record.side, record.ingestor_id) == ("42", "sell", "ing-1")
    assert decode(Trade, encode(record)) == record


def test_price_comes_from_the_raw_string_not_the_float(normalizer: TradeNormalizer) -> None:
    # 0.1 + 0.2 style: the float is wrong in the last place, the exchange string is exact
    record = normalizer.normalize(unified(price=0.30000000000000004, info={"p": "0.3"}))
    assert isinstance(record, Trade) and record.price == Decimal("0.3")


def test_rest_trades_use_price_and_qty(normalizer: TradeNormalizer) -> None:
    info = {"id": 7, "price": "1.50000000", "qty": "2.00000000", "time": TS}
    record = normalizer.normalize(unified(id="7", info=info) | {"info": info})
    assert isinstance(record, Trade) and (record.price, record.amount) == (1.5, 2)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"id": None}, "MISSING_TRADE_ID"),
        ({"id": ""}, "MISSING_TRADE_ID"),
        ({"timestamp": None}, "MISSING_TIMESTAMP"),
        ({"timestamp": TS * 1000}, "MISSING_TIMESTAMP"),  # microseconds passed as ms
        ({"symbol": "ETH/USDT"}, "UNKNOWN_SYMBOL"),
        ({"symbol": None}, "UNKNOWN_SYMBOL"),
        ({"info": {"p": None}}, "MISSING_PRICE"),
        ({"info": {"q": ""}}, "MISSING_AMOUNT"),
        ({"info": {"p": "0"}}, "NON_POSITIVE_PRICE"),
        ({"info": {"p": "-1.5"}}, "NON_POSITIVE_PRICE"),
        ({"info": {"q": "0.00000000"}}, "NON_POSITIVE_AMOUNT"),
        ({"info": {"p": "NaN"}}, "NON_FINITE_PRICE"),
        ({"info": {"p": "Infinity"}}, "NON_FINITE_PRICE"),
        ({"info": {"q": "-Infinity"}}, "NON_FINITE_AMOUNT"),
        ({"info": {"q": "sNaN"}}, "NON_FINITE_AMOUNT"),
        ({"info": {"p": "12abc"}}, "NOT_A_NUMBER"),
        ({"info": {"p": "0.000000001"}}, "OUT_OF_SCHEMA"),  # 9 places: never rounded
        ({"info": {"q": "10000000000"}}, "OUT_OF_SCHEMA"),  # 11 integer digits
        ({"info": {"p": 60000.12}}, "MISSING_PRICE"),  # a float is not an exact string
    ],
)
def test_bad_trades_become_dead_letters_with_a_reason(
    normalizer: TradeNormalizer, change: dict[str, Any], code: str
) -> None:
    trade = unified(**change)
    record = normalizer.normalize(trade)
    assert isinstance(record, DeadLetter), record
    assert record.reason_code == code
    assert record.source_component == "ingestor:ing-1" and record.exchange == "BINANCE"
    assert record.payload.startswith(b"{") and b'"e":"aggTrade"' in record.payload
    assert decode(DeadLetter, encode(record)) == record


def test_unknown_sides_are_kept_as_unknown(normalizer: TradeNormalizer) -> None:
    record = normalizer.normalize(unified(side=None))
    assert isinstance(record, Trade) and record.side == "unknown"


def test_dead_letter_keeps_raw_bytes_and_drops_unusable_context(
    normalizer: TradeNormalizer,
) -> None:
    raw = b"\xff\xfe not utf-8"
    letter = normalizer.dead_letter("UNDECODABLE", "x", raw, symbol="BTCUSDT", original_ts_us=5)
    assert letter.payload == raw and letter.symbol is None and letter.original_ts_us is None
    text = normalizer.dead_letter("UNDECODABLE", "x", '{"e":"aggTr')
    assert text.payload == b'{"e":"aggTr'


def test_parse_decimal_edges() -> None:
    assert parse_decimal("0.00000001", "price") == Decimal("0.00000001")
    assert parse_decimal(" 9999999999.99999999 ", "amount") == Decimal("9999999999.99999999")
    assert parse_decimal("1E+2", "price") == 100
    with pytest.raises(RejectedError) as bad:
        parse_decimal("1e-9", "price")
    assert bad.value.code == "OUT_OF_SCHEMA"


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"e": "aggTrade", "s": "BTCUSDT", "p": "NaN", "q": "1"}, "NON_FINITE_PRICE"),
        ({"e": "trade", "s": "BTCUSDT", "p": "1", "q": "Infinity"}, "NON_FINITE_AMOUNT"),
        ({"e": "trade", "s": "NOSUCHCOINUSDT", "p": "1", "q": "1"}, "UNKNOWN_SYMBOL"),
        ({"e": "trade", "s": "BTCUSDT", "p": "x", "q": "1"}, "NOT_A_NUMBER"),
        ({"stream": "btcusdt@trade", "data": {"e": "trade", "s": "X", "p": "1"}}, "UNKNOWN_SYMBOL"),
    ],
)
def test_the_binance_stream_guard_stops_what_wedges_ccxt(event: dict[str, Any], code: str) -> None:
    problem = check_trade_event(event, {"BTCUSDT": "BTC/USDT"})
    assert problem is not None and problem[0] == code


def test_the_binance_stream_guard_lets_the_rest_through() -> None:
    ids = {"BTCUSDT": "BTC/USDT"}
    assert check_trade_event({"e": "aggTrade", "s": "BTCUSDT", "p": "0", "q": "1"}, ids) is None
    assert check_trade_event({"e": "aggTrade", "s": "BTCUSDT", "q": "1"}, ids) is None
    assert check_trade_event({"result": None, "id": 1}, ids) is None
    assert check_trade_event("pong", ids) is None


def test_adapter_registry_and_url_override() -> None:
    adapter = adapter_for("Binance", url="http://127.0.0.1:9999/")
    assert isinstance(adapter, BinanceAdapter) and adapter.name == "BINANCE"
    config = adapter.config()
    assert config["enableRateLimit"] is True
    assert config["urls"]["api"]["public"] == "http://127.0.0.1:9999/api/v3"
    assert config["urls"]["api"]["ws"]["spot"] == "ws://127.0.0.1:9999/ws"
    assert config["options"]["fetchMarkets"] == {"types": ["spot"]}
    generic = adapter_for("kraken")
    assert generic.name == "KRAKEN" and not generic.contiguous_ids
    assert generic.raw_fields({"info": {"price": "1.5", "volume": "2"}}) == ("1.5", "2")
