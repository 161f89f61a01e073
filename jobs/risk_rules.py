"""Pre-trade checks: one order proposal in, exactly one decision out, never an exception.

Pure Python (no PyFlink); ``jobs/risk.py`` calls :func:`decide` with the account's
:class:`~ticklake.jobs.risk_portfolio.Portfolio`, the market states and the limits in force.
The checks run in the design's order and the first failure names the decision's rule:

1. account viability: ``ACCOUNT_HALTED`` (breaker or kill switch), ``NO_EQUITY``,
   ``MAX_DRAWDOWN``, ``DAILY_LOSS``;
2. market regime: ``NO_MARKET_DATA`` (no price, or ATR not ready), ``MARKET_DATA_STALE``,
   ``LIQUIDITY`` (average daily traded value below ``min_adv_notional``, or unknown),
   ``VOLATILITY_GATE`` (ATR / price above ``max_atr_ratio``);
3. concentration (buys): ``SYMBOL_CAP``, ``GROUP_CAP`` - the value already held in the
   symbol (its asset group) has reached ``symbol_cap`` (``group_cap``) x equity;
4. volatility sizing (buys): ``risk_qty = floor(equity * risk_per_trade /
   (stop_atr_multiple * ATR))`` in whole ``qty_step``s, capped by ``max_position`` x equity
   / price, by the room left under both caps and by the requested qty; ``SIZE_ZERO`` when
   that is 0, ``BUYING_POWER`` when size x price exceeds cash;
5. staleness and closing: ``SIGNAL_STALE`` (signal older than ``signal_max_age_ms``),
   ``NO_POSITION`` (a sell without a long position). A sell is sized to the position
   (or the requested qty, if smaller).

A proposal that cannot be evaluated is rejected as ``EVALUATION_ERROR`` with the reason.
Limits are inclusive: a value exactly at its limit passes. Comparisons use exact values;
the numbers in the decision are rounded to 8 places (half-even).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, localcontext

from ticklake.jobs.risk_market import MATH, MarketState
from ticklake.jobs.risk_portfolio import Portfolio
from ticklake.schemas.risk import AccountLimits, OrderProposal

ZERO = Decimal(0)
EIGHT = Decimal("0.00000001")
#: The largest value a DECIMAL(28, 8) field holds; bigger numbers are reported as null.
MONEY_MAX = Decimal("9" * 20 + "." + "9" * 8)
QTY_MAX = Decimal("9999999999.99999999")


@dataclass(slots=True)
class Decision:
    """The answer to one proposal (becomes a RiskDecision); the steps fill it in."""

    proposal_id: str
    approved: bool
    size: Decimal
    rule_failed: str | None
    reason: str
    observed: Decimal | None = None
    limit: Decimal | None = None
    equity: Decimal | None = None
    cash: Decimal | None = None
    price: Decimal | None = None
    atr: Decimal | None = None
    adv_notional: Decimal | None = None
    drawdown: Decimal | None = None
    daily_loss: Decimal | None = None
    symbol_exposure: Decimal | None = None
    group_exposure: Decimal | None = None
    risk_qty: Decimal | None = None
    cap_qty: Decimal | None = None


def round8(value: Decimal | None, bound: Decimal = MONEY_MAX) -> Decimal | None:
    """``value`` at 8 decimal places (half-even), None when absent or out of range."""
    if value is None or not value.is_finite():
        return None
    rounded = value.quantize(EIGHT, rounding=ROUND_HALF_EVEN, context=MATH)
    return rounded if abs(rounded) <= bound else None


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """The largest whole multiple of ``step`` not above ``value`` (``step`` > 0)."""
    with localcontext(MATH):
        return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def _reject(
    d: Decision,
    rule: str,
    reason: str,
    observed: Decimal | None = None,
    limit: Decimal | None = None,
) -> Decision:
    d.approved, d.size, d.rule_failed, d.reason = False, ZERO, rule, reason
    d.observed, d.limit = observed, limit
    return d


@dataclass(frozen=True)
class Case:
    """Everything one decision looks at."""

    proposal: OrderProposal
    portfolio: Portfolio
    markets: Mapping[str, MarketState]
    limits: AccountLimits
    now_us: int

    @property
    def market(self) -> MarketState | None:
        return self.markets.get(self.proposal.market)


def decide(
    proposal: OrderProposal,
    portfolio: Portfolio,
    markets: Mapping[str, MarketState],
    limits: AccountLimits,
    now_us: int,
) -> Decision:
    """The decision on ``proposal`` at wall-clock time ``now_us``; never raises."""
    try:
        case = Case(proposal, portfolio, markets, limits, now_us)
        equity = portfolio.equity(markets)
        d = Decision(
            proposal.proposal_id,
            False,
            ZERO,
            None,
            "",
            equity=equity,
            cash=portfolio.cash,
            drawdown=portfolio.drawdown(equity),
            daily_loss=portfolio.daily_loss(equity),
        )
        for step in STEPS:
            d = step(case, d)
            if d.rule_failed is not None:
                return d
        d.approved = True
        return d
    except Exception as exc:  # the contract: every proposal gets a decision
        return Decision(
            proposal.proposal_id,
            False,
            ZERO,
            "EVALUATION_ERROR",
            f"the proposal could not be evaluated: {type(exc).__name__}: {exc}",
        )


def account_viability(case: Case, d: Decision) -> Decision:
    """1. Halt flag, equity, drawdown from peak, loss today."""
    portfolio, limits = case.portfolio, case.limits
    assert d.equity is not None
    if portfolio.halted:
        what = "kill switch" if portfolio.kill_switch else "circuit breaker"
        return _reject(d, "ACCOUNT_HALTED", f"account halted ({what}): {portfolio.halt_reason}")
    if d.equity <= 0:
        return _reject(d, "NO_EQUITY", f"equity {d.equity} is not positive", d.equity, ZERO)
    if d.drawdown is not None and d.drawdown > limits.max_drawdown:
        return _reject(
            d,
            "MAX_DRAWDOWN",
            f"drawdown {d.drawdown:.6%} above the limit {limits.max_drawdown:.6%}",
            d.drawdown,
            limits.max_drawdown,
        )
    if d.daily_loss is not None and d.daily_loss > limits.daily_loss_limit:
        return _reject(
            d,
            "DAILY_LOSS",
            f"loss today {d.daily_loss:.6%} above the limit {limits.daily_loss_limit:.6%}",
            d.daily_loss,
            limits.daily_loss_limit,
        )
    return d


def market_data(case: Case, d: Decision) -> Decision:
    """2a. A price, fresh enough, and an ATR."""
    state, market = case.market, case.proposal.market
    if state is None or state.last_price is None or state.last_ts_us is None:
        return _reject(d, "NO_MARKET_DATA", f"no market data for {market}")
    d.price, d.atr, d.adv_notional = state.last_price, state.atr, state.adv_notional
    age_ms = Decimal(case.now_us - state.last_ts_us) / 1000
    max_age = Decimal(case.limits.market_data_max_age_ms)
    if age_ms > max_age:
        return _reject(
            d,
            "MARKET_DATA_STALE",
            f"last candle of {market} ended {age_ms} ms ago, more than {max_age} ms",
            age_ms,
            max_age,
        )
    if state.atr is None:
        return _reject(
            d,
            "NO_MARKET_DATA",
            f"ATR({state.atr_period}) of {market} needs {state.atr_period} candles, "
            f"has {len(state.seed_ranges)}",
        )
    return d


def market_regime(case: Case, d: Decision) -> Decision:
    """2b. Liquidity (ADV) and the volatility gate."""
    limits, market = case.limits, case.proposal.market
    adv, atr, price = d.adv_notional, d.atr, d.price
    assert atr is not None and price is not None
    if adv is None:
        return _reject(d, "LIQUIDITY", f"no daily volume known for {market}")
    if adv < limits.min_adv_notional:
        return _reject(
            d,
            "LIQUIDITY",
            f"average daily traded value {adv:.2f} below the minimum {limits.min_adv_notional}",
            adv,
            limits.min_adv_notional,
        )
    with localcontext(MATH):
        atr_ratio = atr / price
    if atr_ratio > limits.max_atr_ratio:
        return _reject(
            d,
            "VOLATILITY_GATE",
            f"ATR / price {atr_ratio:.6%} above the gate {limits.max_atr_ratio:.6%}",
            atr_ratio,
            limits.max_atr_ratio,
        )
    return d


def concentration(case: Case, d: Decision) -> Decision:
    """3. Room left under the symbol and group caps (buys)."""
    portfolio, markets, proposal = case.portfolio, case.markets, case.proposal
    symbol_exposure = portfolio.exposure(proposal.market, markets)
    group = proposal.asset_group
    group_exposure = portfolio.group_exposure(group, markets) if group is not None else None
    d.symbol_exposure, d.group_exposure = symbol_exposure, group_exposure
    if proposal.side != "buy":
        return d
    assert d.equity is not None
    with localcontext(MATH):
        symbol_cap = case.limits.symbol_cap * d.equity
        group_cap = case.limits.group_cap * d.equity
    if symbol_exposure >= symbol_cap:
        return _reject(
            d,
            "SYMBOL_CAP",
            f"{proposal.market} already holds {symbol_exposure}, the cap is {symbol_cap}",
            symbol_exposure,
            symbol_cap,
        )
    if group_exposure is not None and group_exposure >= group_cap:
        return _reject(
            d,
            "GROUP_CAP",
            f"group {group} already holds {group_exposure}, the cap is {group_cap}",
            group_exposure,
            group_cap,
        )
    return d


def volatility_sizing(case: Case, d: Decision) -> Decision:
    """4. ``floor(equity * risk / (k * ATR))`` in steps, capped; within buying power (buys)."""
    proposal, limits = case.proposal, case.limits
    if proposal.side != "buy":
        return d
    equity, price, atr, symbol_exposure = d.equity, d.price, d.atr, d.symbol_exposure
    assert equity is not None and price is not None and atr is not None
    assert symbol_exposure is not None
    step = limits.qty_step
    with localcontext(MATH):
        stop = limits.stop_atr_multiple * atr
        risk_qty = floor_to_step(equity * limits.risk_per_trade / stop, step) if stop > 0 else None
        caps = [
            floor_to_step(equity * limits.max_position / price, step),
            floor_to_step((limits.symbol_cap * equity - symbol_exposure) / price, step),
        ]
        if d.group_exposure is not None:
            caps.append(floor_to_step((limits.group_cap * equity - d.group_exposure) / price, step))
        if proposal.requested_qty is not None:
            caps.append(floor_to_step(proposal.requested_qty, step))
        cap_qty = min(caps)
        size = cap_qty if risk_qty is None else min(risk_qty, cap_qty)
        cost = size * price
    d.risk_qty, d.cap_qty, d.size = risk_qty, cap_qty, size
    if size <= 0:
        return _reject(
            d,
            "SIZE_ZERO",
            f"sizing gives no whole step of {step}: risk qty {risk_qty}, cap {cap_qty}",
            size,
            step,
        )
    cash = d.cash if d.cash is not None else ZERO
    if cost > cash:
        return _reject(
            d, "BUYING_POWER", f"{size} x {price} = {cost} exceeds the cash {cash}", cost, cash
        )
    d.reason = f"approved: buy {size} at {price}"
    return d


def staleness_and_closing(case: Case, d: Decision) -> Decision:
    """5. Signal age; a sell needs a long position and is sized to it."""
    proposal, limits, portfolio = case.proposal, case.limits, case.portfolio
    age_ms = Decimal(case.now_us - proposal.signal_ts_us) / 1000
    max_age = Decimal(limits.signal_max_age_ms)
    if age_ms > max_age:
        return _reject(
            d, "SIGNAL_STALE", f"signal is {age_ms} ms old, more than {max_age} ms", age_ms, max_age
        )
    if proposal.side == "buy":
        return d
    held = portfolio.positions.get(proposal.market)
    held_qty = held.qty if held is not None else ZERO
    if held_qty <= 0:
        return _reject(
            d, "NO_POSITION", f"no long position in {proposal.market} to close", held_qty, ZERO
        )
    size = held_qty if proposal.requested_qty is None else min(proposal.requested_qty, held_qty)
    d.size, d.cap_qty, d.reason = size, held_qty, f"approved: sell {size} of {held_qty}"
    return d


STEPS = (
    account_viability,
    market_data,
    market_regime,
    concentration,
    volatility_sizing,
    staleness_and_closing,
)
