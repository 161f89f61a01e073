"""The Kafka -> relay bridge without servers: routes, key -> relay topic, settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticklake.relay import topics as t
from ticklake.relay.bridge import DEFAULT_ROUTES, BridgeSettings, Route, RouteError
from ticklake.schemas.topics import LIVE_CANDLES, LIVE_TRADES

T = 1_709_251_200_000_000  # 2024-03-01 00:00 UTC


def test_default_routes_are_the_live_topics() -> None:
    assert {LIVE_TRADES.name: "tick", LIVE_CANDLES.name: "ohlc:{1}"} == DEFAULT_ROUTES
    assert BridgeSettings().routes == DEFAULT_ROUTES


@pytest.mark.parametrize(
    ("data_type", "key", "want"),
    [
        ("tick", b"BINANCE:BTC/USDT", "BINANCE:BTC/USDT|tick"),
        ("ohlc:{1}", b"BINANCE:BTC/USDT|1m|1709251200000000", "BINANCE:BTC/USDT|ohlc:1m"),
        ("ohlc:{1}", b"KRAKEN:XBT/EUR|1d|0", "KRAKEN:XBT/EUR|ohlc:1d"),
        ("alert", b"COINBASE:BTC/USD", "COINBASE:BTC/USD|alert"),
        ("tick", b"BINANCE:BTC/USDT|extra", "BINANCE:BTC/USDT|tick"),  # extra parts ignored
    ],
)
def test_key_to_relay_topic(data_type: str, key: bytes, want: str) -> None:
    got = Route("k", data_type).relay_topic(key)
    assert got == want
    # The relay topic is a valid market topic whose exact filter ends in the terminator.
    market, _, dt = got.rpartition("|")
    assert t.parse_market(market) and t.data_type_of(got) == dt
    assert t.exact_filter(got) == want.encode() + b"\x00"


@pytest.mark.parametrize(
    ("data_type", "key", "reason"),
    [
        ("tick", None, "no key"),
        ("tick", b"", "no key"),
        ("tick", b"\xff\xfe", "not UTF-8"),
        ("tick", b"btc-usdt", "must be EXCHANGE"),
        ("tick", b"binance:BTC/USDT", "upper case"),
        ("tick", b"BINANCE:BTCUSDT", "BASE/QUOTE"),
        ("ohlc:{1}", b"BINANCE:BTC/USDT", "needs more"),
        ("ohlc:{1}", b"BINANCE:BTC/USDT||0", "timeframe"),
    ],
)
def test_unroutable_keys_raise_route_error(data_type: str, key: bytes | None, reason: str) -> None:
    with pytest.raises(RouteError, match=reason):
        Route("k", data_type).relay_topic(key)


def test_route_parse_and_validation() -> None:
    assert Route.parse("ticklake.alerts = alert") == Route("ticklake.alerts", "alert")
    assert Route.parse("a.b=ohlc:{1}") == Route("a.b", "ohlc:{1}")
    for bad in ["no-equals", "=tick", "t=", "t=ohlc:{0}", "t=ohlc:{x}", "t=a|b"]:
        with pytest.raises(ValueError):
            Route.parse(bad)


def test_settings_routes_from_env_and_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKLAKE_BRIDGE__ROUTES", "x.trades=tick, x.alerts=alert")
    assert BridgeSettings().routes == {"x.trades": "tick", "x.alerts": "alert"}
    s = BridgeSettings(routes=["c=ohlc:{1}"])  # type: ignore[arg-type]
    assert s.route_list() == [Route("c", "ohlc:{1}")]
    with pytest.raises(ValidationError):
        BridgeSettings(routes=["c=ohlc:{0}"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BridgeSettings(routes=[])  # type: ignore[arg-type]


def test_live_candle_key_matches_the_job_key() -> None:
    """The job writes CONCAT(exchange, ':', symbol, '|', tf, '|', window_start_us)."""
    from decimal import Decimal

    from ticklake.schemas import Candle

    c = Candle(
        exchange="BINANCE", symbol="BTC/USDT", exchange_ts_us=T + 5, receipt_ts_us=T + 6,
        ingestor_id="flink:dedup_ohlc", timeframe="5m", window_start_us=T,
        window_end_us=T + 300_000_000, open=Decimal(1), high=Decimal(1), low=Decimal(1),
        close=Decimal(1), volume=Decimal(1), final=False, version=0,
    )  # fmt: skip
    key = LIVE_CANDLES.key(c)
    assert key == b"BINANCE:BTC/USDT|5m|1709251200000000"
    assert Route("c", "ohlc:{1}").relay_topic(key) == "BINANCE:BTC/USDT|ohlc:5m"
