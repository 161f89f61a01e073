"""Pre-trade checks on hand-computed cases, boundaries exactly at each limit, the order of
the rules, and the sizing formula against an independent computation with fractions."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from ticklake.jobs.risk_market import CandleView, MarketState, replay
from ticklake.jobs.risk_portfolio import Portfolio, Position
from ticklake.jobs.risk_rules import Decision, decide, floor_to_step, round8
from ticklake.schemas.risk import AccountLimits, OrderProposal, RiskDecision

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MIN = 60_000_000
MARKET = "BINANCE:ABC/USDT"
D = Decimal


def candle(i: int, high: str, low: str, close: str, market: str = MARKET) -> CandleView:
    return CandleView(market, "1m", T0 + i * MIN, T0 + (i + 1) * MIN, D(high), D(low), D(close),
                      D(10), None)  # fmt: skip


def daily(day: int, quote_volume: str, market: str = MARKET) -> CandleView:
    start = T0 - (day + 1) * 1440 * MIN
    return CandleView(market, "1d", start, start + 1440 * MIN, D(1), D(1), D(1), D(1),
                      D(quote_volume))  # fmt: skip


def flat_market(market: str = MARKET, n: int = 14, adv: str = "5000000") -> MarketState:
    """Close 100, high 101, low 99 every minute: TR = 2 each, ATR(14) = 2 exactly."""
    state = replay(market, [candle(i, "101", "99", "100", market) for i in range(n)])
    state.on_candle(daily(0, adv, market), "1m", "1d")
    return state


NOW = T0 + 14 * MIN  # the last flat candle ended exactly now


def proposal(side: str = "buy", **changes: Any) -> OrderProposal:
    values: dict[str, Any] = {
        "proposal_id": "p-1",
        "account": "acct",
        "exchange": "BINANCE",
        "symbol": "ABC/USDT",
        "side": side,
        "source_id": "user-1",
        "signal_ts_us": NOW,
        "created_ts_us": NOW,
    } | changes
    return OrderProposal(**values)


def limits(**changes: Any) -> AccountLimits:
    return AccountLimits.defaults("acct", T0, **changes)


def funded(cash: str = "100000") -> Portfolio:
    p = Portfolio("acct", cash=D(cash))
    p.peak_equity = D(cash)
    p.day_start_equity = D(cash)
    p.day = NOW // (86_400 * 1_000_000)
    return p


def run(
    prop: OrderProposal | None = None,
    portfolio: Portfolio | None = None,
    markets: Mapping[str, MarketState] | None = None,
    lim: AccountLimits | None = None,
    now: int = NOW,
) -> Decision:
    decision = decide(
        prop or proposal(),
        portfolio or funded(),
        {MARKET: flat_market()} if markets is None else markets,
        lim or limits(),
        now,
    )
    as_wire(decision)  # every decision is a valid wire record
    return decision


def as_wire(d: Decision) -> RiskDecision:
    return RiskDecision(
        proposal_id=d.proposal_id,
        account="acct",
        exchange="BINANCE",
        symbol="ABC/USDT",
        side="buy",
        approved=d.approved,
        size=d.size,
        rule_failed=d.rule_failed,
        reason=d.reason,
        observed=round8(d.observed),
        limit=round8(d.limit),
        equity=round8(d.equity),
        cash=round8(d.cash),
        price=d.price,
        atr=round8(d.atr),
        adv_notional=round8(d.adv_notional),
        drawdown=round8(d.drawdown),
        daily_loss=round8(d.daily_loss),
        symbol_exposure=round8(d.symbol_exposure),
        group_exposure=round8(d.group_exposure),
        risk_qty=round8(d.risk_qty),
        cap_qty=round8(d.cap_qty),
        signal_ts_us=T0,
        proposal_ts_us=T0,
        decision_ts_us=T0,
    )


# --- the approved path, by hand


def test_default_limits_size_by_the_5_percent_cap() -> None:
    # equity 100000, ATR 2, price 100: risk qty floor(1000 / 4) = 250; 5% cap 5000/100 = 50.
    d = run()
    assert d.approved and d.rule_failed is None
    assert d.atr == 2 and d.price == 100
    assert d.risk_qty == 250 and d.cap_qty == 50 and d.size == 50


def test_uncapped_size_is_the_formula() -> None:
    lim = limits(max_position=D(1), symbol_cap=D(1), group_cap=D(1))
    assert run(lim=lim).size == 250  # floor(100000 * 0.01 / (2 * 2))
    # Not a whole number: equity 99999 -> 999.99 / 4 = 249.9975 -> 249.
    assert run(portfolio=funded("99999"), lim=lim).size == 249


def test_requested_qty_caps_and_qty_step_floors() -> None:
    assert run(proposal(requested_qty=D(7))).size == 7
    lim = limits(qty_step=D("0.001"), max_position=D(1), symbol_cap=D(1))
    # 99999.5 * 0.01 / 4 = 249.99875 -> 249.998 in steps of 0.001
    assert run(portfolio=funded("99999.5"), lim=lim).size == D("249.998")
    assert run(proposal(requested_qty=D("3.0009")), lim=lim).size == D("3.000")


# --- 1. account viability


def test_halted_account_rejects_everything() -> None:
    p = funded()
    p.halted, p.halt_reason = True, "drawdown"
    d = run(portfolio=p)
    assert d.rule_failed == "ACCOUNT_HALTED" and "circuit breaker" in d.reason
    p.kill_switch = True
    assert "kill switch" in run(portfolio=p).reason
    assert run(proposal("sell"), portfolio=p).rule_failed == "ACCOUNT_HALTED"


def test_drawdown_exactly_at_the_limit_passes() -> None:
    p = funded("90000")
    p.peak_equity = D(100000)  # drawdown 10% exactly
    assert run(portfolio=p).approved
    p.cash = D("89999.99999999")
    d = run(portfolio=p)
    assert d.rule_failed == "MAX_DRAWDOWN"
    assert d.limit == D("0.1") and d.observed is not None and d.observed > D("0.1")


def test_daily_loss_exactly_at_the_limit_passes() -> None:
    p = funded("97000")
    p.day_start_equity = D(100000)  # 3% loss exactly
    assert run(portfolio=p).approved
    p.cash = D("96999.99999999")
    assert run(portfolio=p).rule_failed == "DAILY_LOSS"


def test_no_equity() -> None:
    p = funded("0")
    d = run(portfolio=p)
    assert d.rule_failed == "NO_EQUITY" and d.observed == 0


# --- 2. market regime


def test_missing_market_data_is_a_rejection_not_an_error() -> None:
    assert run(markets={}).rule_failed == "NO_MARKET_DATA"
    not_ready = replay(MARKET, [candle(i, "101", "99", "100") for i in range(13)])
    d = run(markets={MARKET: not_ready})
    assert d.rule_failed == "NO_MARKET_DATA" and "has 13" in d.reason


def test_market_data_staleness_boundary() -> None:
    # The last candle ended at NOW; the limit is 300000 ms.
    assert run(now=NOW + 300_000_000, prop=proposal(signal_ts_us=NOW + 300_000_000)).approved
    d = run(now=NOW + 300_000_001, prop=proposal(signal_ts_us=NOW + 300_000_001))
    assert d.rule_failed == "MARKET_DATA_STALE"
    assert d.observed == D("300000.001") and d.limit == 300000


def test_liquidity_boundary() -> None:
    assert run(markets={MARKET: flat_market(adv="1000000")}).approved  # exactly the minimum
    d = run(markets={MARKET: flat_market(adv="999999.99999999")})
    assert d.rule_failed == "LIQUIDITY" and d.limit == 1000000
    no_daily = replay(MARKET, [candle(i, "101", "99", "100") for i in range(14)])
    assert run(markets={MARKET: no_daily}).rule_failed == "LIQUIDITY"


def test_adv_is_the_mean_of_the_newest_days() -> None:
    state = flat_market(adv="1000000")
    for day, value in [(1, "2000000"), (2, "3000000")]:
        state.on_candle(daily(day, value), "1m", "1d")
    assert state.adv_notional == 2000000
    state.adv_days = 2
    state.on_candle(daily(3, "9000000"), "1m", "1d")  # the oldest day: never counted
    assert state.adv_notional == 1500000  # days 0 and 1, the newest two


def test_volatility_gate_boundary() -> None:
    # ATR 2 / price 100 = 2%: a 2% gate passes, a 1.99999999% gate rejects.
    assert run(lim=limits(max_atr_ratio=D("0.02"))).approved
    d = run(lim=limits(max_atr_ratio=D("0.01999999")))
    assert d.rule_failed == "VOLATILITY_GATE" and d.observed == D("0.02")


# --- 3. concentration


def holding(qty: str, group: str | None = None, cash: str = "100000") -> Portfolio:
    p = funded(cash)
    p.positions[MARKET] = Position(D(qty), D(100), NOW - MIN, group)
    return p


def test_symbol_cap() -> None:
    # cash 90000 + 100 x 100 = equity 100000; held 10000 = 10% cap exactly: no room.
    d = run(portfolio=holding("100", cash="90000"))
    assert d.rule_failed == "SYMBOL_CAP" and d.observed == 10000 and d.limit == 10000
    # held 9800: room 200 -> 2 units, below the 5% cap of 50.
    d = run(portfolio=holding("98", cash="90200"))
    assert d.approved and d.size == 2 and d.cap_qty == 2


def test_group_cap() -> None:
    other = "BINANCE:XYZ/USDT"
    p = funded("75000")
    p.positions[other] = Position(D(250), D(100), NOW, "majors")  # 25000 of 100000
    markets = {MARKET: flat_market(), other: flat_market(other)}
    d = run(proposal(asset_group="majors"), portfolio=p, markets=markets)
    assert d.rule_failed == "GROUP_CAP" and d.observed == 25000 and d.limit == 25000
    assert run(proposal(asset_group="minors"), portfolio=p, markets=markets).approved
    assert run(proposal(), portfolio=p, markets=markets).approved  # no group: no group cap
    p.cash = D("75100")  # equity 100100: cap 25025, room 25 -> 0.25 -> 0 whole units
    d = run(proposal(asset_group="majors"), portfolio=p, markets=markets)
    assert d.rule_failed == "SIZE_ZERO"


# --- 4. sizing limits


def test_buying_power_boundary() -> None:
    # Equity 100000 but only 5000 cash (the rest in another market): 50 x 100 = 5000.
    other = "BINANCE:XYZ/USDT"
    markets = {MARKET: flat_market(), other: flat_market(other)}
    p = funded("5000")
    p.positions[other] = Position(D(950), D(100), NOW, None)
    p.peak_equity = p.day_start_equity = D(100000)
    d = run(portfolio=p, markets=markets, lim=limits(symbol_cap=D(1)))
    assert d.approved and d.size == 50
    p.cash = D("4999.99999999")
    p.positions[other] = Position(D("950.00000001"), D(100), NOW, None)  # same equity
    d = run(portfolio=p, markets=markets, lim=limits(symbol_cap=D(1)))
    assert d.rule_failed == "BUYING_POWER"
    assert d.observed == 5000 and d.limit == D("4999.99999999")


def test_size_zero_when_one_percent_buys_no_whole_unit() -> None:
    expensive = replay(MARKET, [candle(i, "1400", "600", "1000") for i in range(14)])
    expensive.on_candle(daily(0, "1e9"), "1m", "1d")
    # ATR 800 at price 1000 is an 80% ATR: open the gate; 1000 / 1600 = 0.625 -> 0.
    d = run(markets={MARKET: expensive}, lim=limits(max_atr_ratio=D(1)))
    assert d.rule_failed == "SIZE_ZERO" and d.risk_qty == 0


# --- 5. staleness and closing


def test_signal_age_boundary() -> None:
    assert run(proposal(signal_ts_us=NOW - 300_000_000)).approved
    d = run(proposal(signal_ts_us=NOW - 300_000_001))
    assert d.rule_failed == "SIGNAL_STALE" and d.observed == D("300000.001")


def test_closing_needs_a_position() -> None:
    d = run(proposal("sell"))
    assert d.rule_failed == "NO_POSITION"
    d = run(proposal("sell"), portfolio=holding("3.5"))
    assert d.approved and d.size == D("3.5")
    assert run(proposal("sell", requested_qty=D(2)), portfolio=holding("3.5")).size == 2
    assert run(proposal("sell", requested_qty=D(9)), portfolio=holding("3.5")).size == D("3.5")


def test_first_failing_rule_in_the_design_order_wins() -> None:
    late = NOW + 400_000_000  # market data stale AND signal stale
    assert run(now=late).rule_failed == "MARKET_DATA_STALE"
    p = funded()
    p.halted = True
    assert run(portfolio=p, now=late, markets={}).rule_failed == "ACCOUNT_HALTED"
    # stale signal and closing a position that does not exist: the signal comes first
    assert run(proposal("sell", signal_ts_us=NOW - 10**9)).rule_failed == "SIGNAL_STALE"


class Exploding(Mapping[str, MarketState]):
    def __getitem__(self, key: str) -> MarketState:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


def test_an_unevaluable_proposal_is_rejected_never_raised() -> None:
    d = run(markets=Exploding())
    assert d.rule_failed == "EVALUATION_ERROR" and "boom" in d.reason and d.size == 0


# --- the sizing formula against an independent computation


def wilder_atr(rows: list[tuple[Fraction, Fraction, Fraction]], n: int) -> Fraction:
    """Wilder's ATR(n) with exact fractions (high, low, close per candle)."""
    trs: list[Fraction] = []
    prev: Fraction | None = None
    for high, low, close in rows:
        tr = high - low if prev is None else max(high - low, abs(high - prev), abs(low - prev))
        trs.append(tr)
        prev = close
    atr = sum(trs[:n], Fraction(0)) / n
    for tr in trs[n:]:
        atr = (atr * (n - 1) + tr) / n
    return atr


def test_sizing_matches_an_exact_fraction_computation() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(300):
        rows = []
        price = Fraction(rng.randrange(1_000, 50_000), 100)
        for _ in range(rng.randrange(14, 40)):
            price = max(Fraction(1), price + Fraction(rng.randrange(-300, 301), 100))
            spread = Fraction(rng.randrange(1, 200), 100)
            close = price + Fraction(rng.randrange(-50, 51), 100) * spread / 100
            rows.append((price + spread, price - spread, close))
        candles = [
            candle(i, str(Decimal(h.numerator) / h.denominator),
                   str(Decimal(lo.numerator) / lo.denominator),
                   str(Decimal(c.numerator) / c.denominator))
            for i, (h, lo, c) in enumerate(rows)
        ]  # fmt: skip
        rows = [
            (Fraction(str(c.high)), Fraction(str(c.low)), Fraction(str(c.close))) for c in candles
        ]
        state = replay(MARKET, candles)
        state.on_candle(daily(0, "1e12"), "1m", "1d")
        equity = Fraction(rng.randrange(1_000_00, 10_000_000_00), 100)
        atr = wilder_atr(rows, 14)
        last = rows[-1][2]
        exact = equity * Fraction(1, 100) / (2 * atr)
        if abs(exact - round(exact)) < Fraction(1, 10**12):
            continue  # a floor this close to an integer is decided by the 50th digit
        want = min(math.floor(exact), math.floor(equity * Fraction(5, 100) / last))
        p = funded(str(Decimal(equity.numerator) / equity.denominator))
        now = candles[-1].window_end_us
        d = decide(
            proposal(signal_ts_us=now), p, {MARKET: state},
            limits(max_atr_ratio=D(1), symbol_cap=D(1)), now,
        )  # fmt: skip
        assert abs(Fraction(str(state.atr)) - atr) < Fraction(1, 10**40)
        assert d.risk_qty == math.floor(exact)
        if want == 0:
            assert d.rule_failed == "SIZE_ZERO"
        else:
            assert d.approved and d.size == want, (d, want)
        checked += 1
    assert checked > 250


def test_floor_to_step() -> None:
    assert floor_to_step(D("2.999"), D("0.5")) == D("2.5")
    assert floor_to_step(D("3"), D("0.5")) == 3
    assert floor_to_step(D("-0.1"), D(1)) == -1
    assert round8(D("0.123456785")) == D("0.12345678")  # half-even
    assert round8(D("1e30")) is None
    assert round8(None) is None


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_every_decision_is_a_valid_wire_record(side: str) -> None:
    for p in (funded(), holding("5")):
        as_wire(run(proposal(side), portfolio=p))
