"""The local exchange's simulated tape: determinism, exactness, and klines against pandas.

No server here: the tape is a pure function, and the klines the server computes are checked
against an independent pandas aggregation of the tape's own trades.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest

from ticklake.exchange import ExchangeSettings, Tape, Trade
from ticklake.exchange.klines import Interval, klines, parse_time_zone
from ticklake.exchange.wire import e8, e16_to_e8, kline_rows

pytestmark = pytest.mark.timeout(120)

GENESIS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000


def tape(seed: int = 42, rate: float = 1.0) -> Tape:
    """A fresh tape with cold caches: what a restarted server would build."""
    return Tape(ExchangeSettings(seed=seed, genesis_ms=GENESIS, rate_multiplier=rate))


# -- determinism ---------------------------------------------------------------------------


def test_same_seed_and_range_give_identical_tapes_after_restart() -> None:
    start, end = GENESIS + 5 * HOUR, GENESIS + 5 * HOUR + 10 * MIN
    first = tape().trades("BTC/USDT", start, end)
    # a "restarted" tape that generated something else first, and the range in pieces
    other = tape()
    other.trades("BTC/USDT", GENESIS + DAY, GENESIS + DAY + MIN)
    pieces = other.trades("BTC/USDT", start + 7 * MIN, end)
    assert other.trades("BTC/USDT", start, start + 7 * MIN - 1) + pieces == first
    assert len(first) > 1000


def test_tape_is_pinned_across_versions() -> None:
    """Golden values: a change here changes every recorded tape; do it on purpose only."""
    first = tape().trades("BTC/USDT", GENESIS, GENESIS + MIN)[0]
    assert first == GOLDEN_FIRST_BTC_TRADE
    quiet = tape().trades("QUIET/USDT", GENESIS, GENESIS + HOUR)
    assert (len(quiet), quiet[0].id) == GOLDEN_QUIET_HOUR


GOLDEN_FIRST_BTC_TRADE = Trade(
    "BTC/USDT", 3293046137, 1772323200125, Decimal("64285.20"), Decimal("0.02119"), False
)
GOLDEN_QUIET_HOUR = (189, 2184073)


def test_overlapping_ranges_agree_and_ids_are_contiguous_across_midnight() -> None:
    t = tape()
    midnight = GENESIS + DAY
    a = t.trades("ETH/USDT", midnight - 3 * MIN, midnight + 2 * MIN)
    b = t.trades("ETH/USDT", midnight - MIN, midnight + 5 * MIN)
    overlap_a = [x for x in a if x.timestamp >= midnight - MIN]
    overlap_b = [x for x in b if x.timestamp <= midnight + 2 * MIN]
    assert overlap_a == overlap_b and overlap_a
    ids = [x.id for x in a]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    stamps = [x.timestamp for x in a]
    assert stamps == sorted(stamps)
    assert any(x.timestamp < midnight for x in a) and any(x.timestamp >= midnight for x in a)


def test_different_seeds_give_different_tapes() -> None:
    start = GENESIS + HOUR
    assert tape(1).trades("BTC/USDT", start, start + MIN) != tape(2).trades(
        "BTC/USDT", start, start + MIN
    )


def test_nothing_before_genesis_and_ids_do_not_depend_on_genesis() -> None:
    t = tape()
    assert t.trades("BTC/USDT", GENESIS - HOUR, GENESIS - 1) == []
    later = Tape(ExchangeSettings(seed=42, genesis_ms=GENESIS + DAY))
    day2 = GENESIS + DAY + HOUR
    assert later.trades("SOL/USDT", day2, day2 + MIN) == t.trades("SOL/USDT", day2, day2 + MIN)


# -- exactness and shape -------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTC/USDT", "DOGE/USDT", "ETH/BTC", "QUIET/USDT"])
def test_prices_and_amounts_are_positive_multiples_of_tick_and_step(symbol: str) -> None:
    t = tape()
    spec = t.market(symbol).spec
    trades = t.trades(symbol, GENESIS + 2 * HOUR, GENESIS + 3 * HOUR)
    assert trades
    for x in trades:
        assert x.price > 0 and x.price % spec.tick_size == 0
        assert x.amount > 0 and x.amount % spec.step_size == 0
    assert {x.side for x in trades} == {"buy", "sell"}


def test_several_trades_share_a_millisecond() -> None:
    trades = tape().trades("BTC/USDT", GENESIS + HOUR, GENESIS + HOUR + 10 * MIN)
    stamps = [x.timestamp for x in trades]
    assert len(set(stamps)) < len(stamps)


def test_quiet_market_has_silent_stretches_of_minutes() -> None:
    trades = tape().trades("QUIET/USDT", GENESIS, GENESIS + 6 * HOUR)
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(trades)]
    assert trades and max(gaps) >= 10 * MIN


def test_rate_multiplier_scales_the_arrival_rate() -> None:
    market = tape(rate=10.0).market("DOGE/USDT")
    first_minute = GENESIS // MIN
    per_day = sum(market.count_in_minute(first_minute + i) for i in range(1440))
    expected = 2.0 * 10 * 86_400  # DOGE/USDT: 2 trades/s; the daily cycle averages out
    assert abs(per_day - expected) < 0.01 * expected


def test_lookups_by_id_and_latest_agree_with_the_range() -> None:
    market = tape().market("SOL/USDT")
    start = GENESIS + 4 * HOUR
    run = market.trades(start, start + 3 * MIN)
    from_id = market.trades_from_id(int(run.ids[10]), start + 3 * MIN, 50)
    assert from_id.ids.tolist() == run.ids[10:60].tolist()
    latest = market.latest_trades(start, start + 3 * MIN, 25)
    assert latest.ids.tolist() == run.ids[-25:].tolist()
    assert market.trades(start, start + 3 * MIN, limit=7).ids.tolist() == run.ids[:7].tolist()


# -- klines against pandas -----------------------------------------------------------------


def pandas_klines(trades: list[Trade], length_ms: int, start: int, end: int) -> pd.DataFrame:
    """Binance-style klines from raw trades, computed independently with pandas.

    Intervals without trades repeat the previous close with zero volume; intervals before
    the first trade are absent. Pass the market's trades from its first one (not only from
    ``start``) so that empty intervals at ``start`` know the close before them."""
    df = pd.DataFrame(
        {
            "ts": [t.timestamp for t in trades],
            "id": [t.id for t in trades],
            "price": [t.price for t in trades],
            "qty": [t.amount for t in trades],
        }
    ).sort_values(["ts", "id"])
    df["quote"] = [p * q for p, q in zip(df["price"], df["qty"], strict=True)]
    df["open_time"] = df["ts"] // length_ms * length_ms
    g = df.groupby("open_time")
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].agg(max),
            "low": g["price"].agg(min),
            "close": g["price"].last(),
            "volume": g["qty"].agg(lambda s: sum(s, Decimal(0))),
            "quote": g["quote"].agg(lambda s: sum(s, Decimal(0))),
            "count": g.size(),
        }
    )
    first_open = int(out.index.min())
    out = out.reindex(range(first_open, end, length_ms))
    out["count"] = out["count"].fillna(0).astype(int)
    out["close"] = out["close"].ffill()
    for col in ("open", "high", "low"):
        out[col] = out[col].fillna(out["close"])
    for col in ("volume", "quote"):
        out[col] = out[col].apply(lambda v: Decimal(0) if pd.isna(v) else v)
    return out.loc[out.index >= start]


def server_klines(t: Tape, symbol: str, name: str, start: int, end: int) -> pd.DataFrame:
    market = t.market(symbol)
    rows = kline_rows(
        market,
        klines(
            market, Interval(name), now_ms=end + DAY, start_ms=start, end_ms=end - 1, limit=1000
        ),
    )
    return pd.DataFrame(
        {
            "open": [Decimal(r[1]) for r in rows],
            "high": [Decimal(r[2]) for r in rows],
            "low": [Decimal(r[3]) for r in rows],
            "close": [Decimal(r[4]) for r in rows],
            "volume": [Decimal(r[5]) for r in rows],
            "quote": [Decimal(r[7]) for r in rows],
            "count": [r[8] for r in rows],
        },
        index=pd.Index([r[0] for r in rows], name="open_time"),
    )


@pytest.mark.parametrize(
    ("symbol", "name", "length", "span"),
    [
        ("BTC/USDT", "1m", MIN, 2 * HOUR),
        ("ETH/USDT", "5m", 5 * MIN, 6 * HOUR),
        ("SOL/USDT", "15m", 15 * MIN, 12 * HOUR),
        ("DOGE/USDT", "1h", HOUR, DAY),
        ("QUIET/USDT", "1m", MIN, 3 * HOUR),
        ("QUIET/USDT", "1d", DAY, 2 * DAY),
    ],
)
def test_klines_equal_pandas_aggregation_of_the_trades(
    symbol: str, name: str, length: int, span: int
) -> None:
    t = tape(rate=0.5)
    start = GENESIS
    expected = pandas_klines(t.trades(symbol, start, start + span - 1), length, start, start + span)
    got = server_klines(tape(rate=0.5), symbol, name, start, start + span)
    quote_scale = Decimal("0.00000001")
    expected["quote"] = [q.quantize(quote_scale) for q in expected["quote"]]
    got.index.name = None
    expected.index.name = None
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    if symbol.startswith("QUIET") and name == "1m":
        assert (got["count"] == 0).any(), "the quiet market has empty minutes"


def test_kline_window_rules() -> None:
    market = tape().market("BTC/USDT")
    start = GENESIS + HOUR + 30 * 1000  # not aligned: the first kline opens at the next minute
    rows = klines(
        market, Interval("1m"), now_ms=GENESIS + DAY, start_ms=start, end_ms=None, limit=5
    )
    assert [k.open_time for k in rows] == [GENESIS + HOUR + i * MIN for i in range(1, 6)]
    latest = klines(
        market, Interval("1h"), now_ms=GENESIS + 5 * HOUR + 5, start_ms=None, end_ms=None, limit=3
    )
    assert [k.open_time for k in latest] == [GENESIS + h * HOUR for h in (3, 4, 5)]
    assert latest[-1].candle.count == len(market.trades(GENESIS + 5 * HOUR, GENESIS + 5 * HOUR + 5))
    before_genesis = klines(
        market, Interval("1m"), now_ms=GENESIS + DAY, start_ms=None, end_ms=GENESIS - 1, limit=10
    )
    assert before_genesis == []


def test_interval_alignment() -> None:
    thursday = int(datetime(2026, 3, 5, 13, 7, tzinfo=UTC).timestamp() * 1000)
    monday = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)
    assert Interval("1w").open_of(thursday) == monday
    assert Interval("1M").open_of(thursday) == GENESIS
    assert Interval("1M").next_open(GENESIS) == int(
        datetime(2026, 4, 1, tzinfo=UTC).timestamp() * 1000
    )
    eight = parse_time_zone("8")
    assert Interval("1d", eight).open_of(thursday) == int(
        datetime(2026, 3, 5, tzinfo=UTC).timestamp() * 1000 - eight
    )
    assert parse_time_zone("-1:30") == -90 * MIN
    with pytest.raises(ValueError):
        parse_time_zone("15")


def test_binance_decimal_strings() -> None:
    assert e8(6_000_001_000_000) == "60000.01000000"
    assert e8(1) == "0.00000001"
    assert e8(-150) == "-0.00000150"
    assert e16_to_e8(150_000_000) == "0.00000002"  # 1.5e-8 -> half to even: 2e-8
    assert e16_to_e8(250_000_000) == "0.00000002"  # 2.5e-8 -> 2e-8
    assert e16_to_e8(250_000_001) == "0.00000003"
