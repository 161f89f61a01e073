"""Portfolio state, monitors, circuit breaker and reconciliation on hand-computed cases."""

from __future__ import annotations

from decimal import Decimal

from tests.unit.test_risk_rules import MARKET, MIN, T0, candle, limits
from ticklake.jobs.risk_market import MarketState, replay
from ticklake.jobs.risk_portfolio import Portfolio
from ticklake.schemas.risk import AccountCommand, AccountLimits, BrokerPosition, Fill

D = Decimal
DAY = 86_400_000_000


def fill(n: int, side: str, qty: str, price: str, ts: int, *, fee: str = "0") -> Fill:
    return Fill(
        fill_id=f"f-{n}",
        account="acct",
        exchange="BINANCE",
        symbol="ABC/USDT",
        side=side,
        qty=D(qty),
        price=D(price),
        fee=D(fee),
        fill_ts_us=ts,
        receipt_ts_us=ts,
    )


def command(n: int, kind: str, ts: int, amount: str | None = None) -> AccountCommand:
    return AccountCommand(
        command_id=f"c-{n}",
        account="acct",
        command=kind,
        amount=None if amount is None else D(amount),
        reason="test",
        issued_by="ops",
        issued_ts_us=ts,
    )


def funded(cash: str, lim: AccountLimits, markets: dict[str, MarketState]) -> Portfolio:
    p = Portfolio("acct")
    out = p.on_command(command(0, "deposit", T0, cash), markets, lim)
    assert not out.violations and not out.events
    return p


def test_fills_move_cash_positions_and_equity() -> None:
    lim, markets = limits(), {}
    p = funded("10000", lim, markets)
    assert p.equity(markets) == 10000 and p.peak_equity == 10000
    p.on_fill(fill(1, "buy", "10", "100", T0 + 1, fee="1.5"), markets, lim)
    assert p.cash == D("8998.5") and p.positions[MARKET].qty == 10
    assert p.equity(markets) == D("9998.5")  # marked at the fill price
    p.on_fill(fill(2, "sell", "4", "110", T0 + 2, fee="0.5"), markets, lim)
    assert p.cash == D("9438.0") and p.positions[MARKET].qty == 6
    assert p.equity(markets) == D("9438") + 6 * 110
    # Newer market data marks the position; older market data does not.
    state = replay(MARKET, [candle(0, "121", "119", "120")])  # ends at T0 + 1 min
    assert p.equity({MARKET: state}) == D("9438") + 6 * 120
    p.on_fill(fill(3, "buy", "1", "130", T0 + 2 * MIN), {MARKET: state}, lim)
    assert p.mark(MARKET, {MARKET: state}) == 130


def test_drawdown_breach_halts_once_then_reset_restarts_from_equity() -> None:
    lim, markets = limits(max_risk_per_trade=D(1), daily_loss_limit=D(1)), {}
    p = funded("100000", lim, markets)
    out = p.on_fill(fill(1, "buy", "100", "100", T0 + 1), markets, lim)  # 10000 in ABC
    assert not out.violations
    # Price falls to 0 on paper: equity 90000 + 100 x 0.00000001; exactly 10% -> 0.1 ok at 0.
    out = p.on_fill(fill(2, "buy", "1", "0.00000001", T0 + 2), markets, lim)
    # equity = 90000 - 0.00000001 + 101 x 0.00000001 = 90000.000001: drawdown < 10%.
    assert not out.violations and not p.halted
    out = p.on_fill(fill(3, "sell", "1", "0.00000001", T0 + 3, fee="0.01"), markets, lim)
    # a fee of 0.01 takes equity below 90000: drawdown just above 10%.
    assert [v.monitor for v in out.violations] == ["max_drawdown"]
    v = out.violations[0]
    assert v.halts and v.observed > D("0.1") and v.limit == D("0.1") and v.cause_id == "f-3"
    assert [e.event for e in out.events] == ["halt"] and p.halted
    assert out.events[0].rule == "max_drawdown"
    # Still in breach: no second violation, no second halt.
    out = p.on_fill(fill(4, "sell", "1", "0.00000001", T0 + 4, fee="1"), markets, lim)
    assert not out.violations and not out.events
    out = p.on_command(command(1, "reset", T0 + 5), markets, lim)
    assert [e.event for e in out.events] == ["reset"] and not p.halted
    assert p.peak_equity == p.equity(markets) == p.day_start_equity


def test_daily_loss_uses_the_equity_at_the_start_of_the_utc_day() -> None:
    lim, markets = limits(max_risk_per_trade=D(1)), {}
    p = funded("100000", lim, markets)
    p.on_fill(fill(1, "buy", "1000", "50", T0 + DAY + 10), markets, lim)  # new day
    assert p.day_start_equity == 100000 and p.day == (T0 + DAY) // DAY
    # Loss of exactly 3%: 1000 x 47 -> equity 97000; then one more cent through a fee.
    out = p.on_fill(fill(2, "buy", "1", "47", T0 + DAY + 20), markets, lim)
    assert p.equity(markets) == 97000 and not out.violations
    out = p.on_fill(fill(3, "buy", "1", "47", T0 + DAY + 30, fee="0.01"), markets, lim)
    assert [v.monitor for v in out.violations] == ["daily_loss"] and p.halted
    # The next day starts from the equity before its first event: no daily loss.
    p.on_command(command(1, "reset", T0 + DAY + 40), markets, lim)
    out = p.refresh(markets, lim, "t", T0 + 2 * DAY)
    assert p.daily_loss(p.equity(markets)) == 0 and not out.violations


def test_min_trades_is_a_warning_at_the_day_roll() -> None:
    lim, markets = limits(min_trades_per_day=2, max_risk_per_trade=D(1)), {}
    p = funded("100000", lim, markets)
    p.on_fill(fill(1, "buy", "1", "10", T0 + 1), markets, lim)
    out = p.refresh(markets, lim, "tick", T0 + DAY)
    assert [(v.monitor, v.observed, v.limit, v.halts) for v in out.violations] == [
        ("min_trades", 1, 2, False)
    ]
    assert not p.halted and p.trades_today == 0


def test_max_risk_per_trade_on_buy_fills() -> None:
    # ATR 2 (flat market), stop 2 ATR: a buy of q risks 4q; equity 100000; limit 2% = 2000.
    state = replay(MARKET, [candle(i, "101", "99", "100") for i in range(14)])
    markets, lim = {MARKET: state}, limits()
    p = funded("100000", lim, markets)
    out = p.on_fill(fill(1, "buy", "500", "100", T0 + 15 * MIN), markets, lim)  # exactly 2%
    assert not out.violations
    out = p.on_fill(fill(2, "buy", "500.00000001", "100", T0 + 16 * MIN), markets, lim)
    assert [v.monitor for v in out.violations] == ["max_risk_per_trade"] and p.halted
    assert out.violations[0].observed > D("0.02")


def test_a_buy_fill_on_an_unfunded_account_trips_the_breaker_with_a_clear_reason() -> None:
    # Equity 0 before the fill: the risk per trade is unbounded, not a negative percentage.
    state = replay(MARKET, [candle(i, "101", "99", "100") for i in range(14)])
    markets, lim = {MARKET: state}, limits()
    p = Portfolio("acct")
    out = p.on_fill(fill(1, "buy", "30", "100", T0 + 15 * MIN), markets, lim)
    assert [v.monitor for v in out.violations] == ["max_risk_per_trade"] and p.halted
    assert out.violations[0].observed == -1
    assert "0.00000000 (not positive)" in out.violations[0].detail
    assert "risks -" not in out.violations[0].detail


def test_halt_command_and_deposit() -> None:
    lim, markets = limits(), {}
    p = funded("1000", lim, markets)
    out = p.on_command(command(1, "halt", T0 + 1), markets, lim)
    assert [e.event for e in out.events] == ["halt"] and p.halted
    assert not p.on_command(command(2, "halt", T0 + 2), markets, lim).events  # already
    p.on_command(command(3, "deposit", T0 + 3, "-250"), markets, lim)
    assert p.cash == 750 and p.peak_equity == 750


def test_reconciliation_drift_boundary_trips_the_kill_switch() -> None:
    state = replay(MARKET, [candle(0, "101", "99", "100")])
    markets, lim = {MARKET: state}, limits(max_risk_per_trade=D(1))
    p = funded("90000", lim, markets)
    p.on_fill(fill(1, "buy", "100", "100", T0), markets, lim)  # equity 90000
    snap = BrokerPosition(snapshot_id="s-1", account="acct", exchange="BINANCE",
                          symbol="ABC/USDT", qty=D(145), snapshot_ts_us=T0 + MIN)  # fmt: skip
    # drift = |145 - 100| x 100 / 90000 = 5% exactly: fine.
    out = p.on_broker_position(snap, markets, lim)
    assert not out.events and not p.kill_switch
    snap2 = snap.model_copy(update={"snapshot_id": "s-2", "qty": D("145.00000001")})
    out = p.on_broker_position(snap2, markets, lim)
    assert [e.event for e in out.events] == ["kill_switch"]
    assert p.kill_switch and p.halted and out.events[0].observed > D("0.05")
    # A position the job has never priced: any difference trips it.
    q = funded("1000", lim, {})
    other = snap.model_copy(update={"symbol": "NOPE/USDT", "snapshot_id": "s-3"})
    assert [e.event for e in q.on_broker_position(other, {}, lim).events] == ["kill_switch"]
