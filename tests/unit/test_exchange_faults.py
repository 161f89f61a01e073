"""The local exchange's fault requests and settings validation (no server)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from ticklake.exchange import ExchangeSettings, FaultRequest, MarketSpec
from ticklake.exchange.faults import MALFORMED_KINDS, UNKNOWN_SYMBOL, Faults, malformed_payload

EVENT = {
    "e": "trade",
    "E": 2,
    "s": "BTCUSDT",
    "t": 9,
    "p": "1.50000000",
    "q": "2.00000000",
    "T": 1,
    "m": False,
    "M": True,
}


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("zero_price", "p", "0.00000000"),
        ("negative_price", "p", "-1.50000000"),
        ("nan_price", "p", "NaN"),
        ("infinite_price", "p", "Infinity"),
        ("zero_amount", "q", "0.00000000"),
        ("negative_amount", "q", "-2.00000000"),
        ("nan_amount", "q", "NaN"),
        ("unknown_symbol", "s", UNKNOWN_SYMBOL),
    ],
)
def test_malformed_records_corrupt_one_field(kind: str, key: str, value: str) -> None:
    bad = json.loads(malformed_payload(kind, EVENT))
    assert bad == {**EVENT, key: value}


def test_malformed_records_that_are_not_records() -> None:
    assert "t" not in json.loads(malformed_payload("missing_id", EVENT))
    assert "p" not in json.loads(malformed_payload("missing_price", EVENT))
    cut = malformed_payload("undecodable", EVENT)
    assert isinstance(cut, str)
    with pytest.raises(ValueError):
        json.loads(cut)
    raw = malformed_payload("binary", EVENT)
    assert isinstance(raw, bytes)
    with pytest.raises(UnicodeDecodeError):
        raw.decode()
    assert len(MALFORMED_KINDS) == 12


def test_fault_requests_are_strict_and_rest_errors_count_down() -> None:
    with pytest.raises(ValidationError):
        FaultRequest.model_validate({"drop_everything": True})
    with pytest.raises(ValidationError):
        FaultRequest.model_validate({"malformed": [{"kind": "bogus", "symbol": "BTCUSDT"}]})
    faults = Faults()
    faults.update(FaultRequest(rest_errors=2, rest_error_status=418, retry_after_s=5), now_ms=0)
    first = faults.take_rest_error()
    assert first is not None and (first.status, first.retry_after_s) == (418, 5)
    assert faults.take_rest_error() is not None
    assert faults.take_rest_error() is None
    faults.update(FaultRequest(duplicate_next=1, stall_ws_s=1.5), now_ms=1000)
    assert faults.stall_until_ms == 2500
    assert faults.take_duplicate() and not faults.take_duplicate()


def test_settings_reject_what_binance_could_not_show() -> None:
    spec = {
        "base": "ABC",
        "quote": "USDT",
        "tick_size": "0.01",
        "step_size": "0.1",
        "start_price": "10",
        "trades_per_second": 1,
        "median_qty": "1",
    }
    assert MarketSpec.model_validate(spec).market_id == "ABCUSDT"
    with pytest.raises(ValidationError):  # 9 decimals cannot be printed with Binance's 8
        MarketSpec.model_validate({**spec, "tick_size": "0.000000001"})
    with pytest.raises(ValidationError):
        MarketSpec.model_validate({**spec, "base": "abc"})
    market = MarketSpec.model_validate(spec)
    with pytest.raises(ValidationError):
        ExchangeSettings(markets=(market, market))
    with pytest.raises(ValidationError):
        ExchangeSettings(genesis_ms=0)
    genesis = ExchangeSettings(genesis_ms=1_780_000_012_345).resolved_genesis_ms()
    assert genesis % 60_000 == 0 and genesis <= 1_780_000_012_345
    assert Decimal(str(market.tick_size)) == Decimal("0.01")
