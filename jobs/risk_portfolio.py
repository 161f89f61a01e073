"""Portfolio state of one account, its monitors, circuit breaker and reconciliation.

Pure Python (no PyFlink): ``jobs/risk.py`` keeps one :class:`Portfolio` per account in
keyed state and calls the ``on_*`` methods; each returns the violations and account events
it caused, as plain :class:`Violation` / :class:`Event` records.

- **Positions and cash from fills**: a buy adds ``qty`` and takes ``qty * price + fee``
  from cash; a sell removes ``qty`` and adds ``qty * price - fee``. Cash comes in with
  ``deposit`` commands (negative amounts withdraw).
- **Equity** = cash + sum of ``qty * mark``; the mark of a market is the last price of the
  market data when it is newer than the account's last fill there, else that fill's price.
- **Peak equity** is the highest equity seen at any account event; **daily P&L** is
  measured against the equity at the first event of each UTC day (by event time).
  Deposits move peak and day start by the same amount (they are not performance).
- **Monitors**, after every account event: ``max_drawdown`` ((peak - equity) / peak above
  the limit) and ``daily_loss`` ((day start - equity) / day start above the limit) fire
  once when the account crosses into breach (again only after it came back or a reset);
  ``max_risk_per_trade`` checks each buy fill (``qty * stop_atr_multiple * ATR / equity``
  above the limit); ``min_trades`` fires at the first event of a new day when the day
  before had fewer fills than ``min_trades_per_day`` (a warning: it does not halt).
- **Circuit breaker**: a halting violation, or a ``halt`` command, halts the account (one
  ``halt`` event); every later proposal is rejected until a ``reset`` command, which also
  restarts drawdown and daily loss from the current equity.
- **Reconciliation**: a broker position snapshot gives
  ``drift = |broker_qty - local_qty| * price / equity``; drift above ``drift_limit`` (or
  any difference when there is no price or no positive equity) trips the kill switch.

Limits are inclusive everywhere: a value exactly at its limit is within it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from ticklake.jobs.risk_market import MATH, MarketState
from ticklake.schemas.risk import AccountCommand, AccountLimits, BrokerPosition, Fill, derived_id

DAY_US = 86_400 * 1_000_000
ZERO = Decimal(0)


@dataclass(frozen=True)
class Violation:
    """A monitor's finding (becomes a RiskViolation)."""

    violation_id: str
    monitor: str
    observed: Decimal
    limit: Decimal
    halts: bool
    detail: str
    cause_id: str
    event_ts_us: int


@dataclass(frozen=True)
class Event:
    """A trading-state change (becomes an AccountEvent)."""

    event_id: str
    event: str
    rule: str | None
    reason: str
    observed: Decimal | None
    limit: Decimal | None
    cause_id: str
    event_ts_us: int


@dataclass
class Position:
    qty: Decimal = ZERO
    #: Price and time of the last fill, the mark when market data is older.
    fill_price: Decimal = ZERO
    fill_ts_us: int = 0
    asset_group: str | None = None


@dataclass
class Outcome:
    violations: list[Violation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    if denominator <= 0:
        return None
    with localcontext(MATH):
        return numerator / denominator


@dataclass
class Portfolio:
    """One account: positions, cash, peak and day-start equity, breaker state."""

    account: str
    cash: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    peak_equity: Decimal | None = None
    day: int | None = None
    day_start_equity: Decimal | None = None
    trades_today: int = 0
    halted: bool = False
    halt_reason: str | None = None
    kill_switch: bool = False
    breached: set[str] = field(default_factory=set)

    # -- valuation -------------------------------------------------------------------------

    def mark(self, market: str, markets: Mapping[str, MarketState]) -> Decimal | None:
        """The price a position in ``market`` is valued at (None: never priced)."""
        state = markets.get(market)
        position = self.positions.get(market)
        fill_ts = position.fill_ts_us if position is not None else -1
        if (
            state is not None
            and state.last_price is not None
            and state.last_ts_us is not None
            and state.last_ts_us >= fill_ts
        ):
            return state.last_price
        if position is not None and position.fill_price > 0:
            return position.fill_price
        return None

    def exposure(self, market: str, markets: Mapping[str, MarketState]) -> Decimal:
        """Absolute market value held in ``market``."""
        position = self.positions.get(market)
        if position is None or position.qty == 0:
            return ZERO
        price = self.mark(market, markets) or ZERO
        with localcontext(MATH):
            return abs(position.qty) * price

    def group_exposure(self, group: str, markets: Mapping[str, MarketState]) -> Decimal:
        with localcontext(MATH):
            return sum(
                (
                    self.exposure(m, markets)
                    for m, p in self.positions.items()
                    if p.asset_group == group
                ),
                ZERO,
            )

    def equity(self, markets: Mapping[str, MarketState]) -> Decimal:
        with localcontext(MATH):
            value = self.cash
            for market, position in self.positions.items():
                if position.qty != 0:
                    value += position.qty * (self.mark(market, markets) or ZERO)
            return value

    def drawdown(self, equity: Decimal) -> Decimal | None:
        if self.peak_equity is None:
            return None
        with localcontext(MATH):
            return _ratio(self.peak_equity - equity, self.peak_equity)

    def daily_loss(self, equity: Decimal) -> Decimal | None:
        if self.day_start_equity is None:
            return None
        with localcontext(MATH):
            return _ratio(self.day_start_equity - equity, self.day_start_equity)

    # -- events ----------------------------------------------------------------------------

    def _roll_day(
        self, ts_us: int, equity: Decimal, limits: AccountLimits, cause_id: str, out: Outcome
    ) -> None:
        day = ts_us // DAY_US
        if self.day is not None and day <= self.day:
            return
        if self.day is not None and self.trades_today < limits.min_trades_per_day:
            observed, limit = Decimal(self.trades_today), Decimal(limits.min_trades_per_day)
            out.violations.append(
                Violation(
                    derived_id(self.account, "min_trades", str(self.day)),
                    "min_trades",
                    observed,
                    limit,
                    False,
                    f"{self.trades_today} fills on UTC day {self.day}, "
                    f"fewer than the minimum {limits.min_trades_per_day}",
                    cause_id,
                    ts_us,
                )
            )
        self.day = day
        self.day_start_equity = equity
        self.trades_today = 0

    def _halt(self, out: Outcome, event: Event) -> None:
        if not self.halted:
            self.halted = True
            self.halt_reason = event.reason
            out.events.append(event)

    def _monitor(
        self,
        equity: Decimal,
        limits: AccountLimits,
        cause_id: str,
        ts_us: int,
        out: Outcome,
    ) -> None:
        if self.peak_equity is None or equity > self.peak_equity:
            self.peak_equity = equity
        checks = (
            ("max_drawdown", self.drawdown(equity), limits.max_drawdown, "drawdown from peak"),
            ("daily_loss", self.daily_loss(equity), limits.daily_loss_limit, "loss today"),
        )
        for monitor, observed, limit, what in checks:
            if observed is None or observed <= limit:
                self.breached.discard(monitor)
                continue
            if monitor in self.breached:
                continue
            self.breached.add(monitor)
            detail = f"{what} {observed:.6%} above the limit {limit:.6%} (equity {equity:.8f})"
            vid = derived_id(self.account, monitor, cause_id)
            self._violate(
                out, Violation(vid, monitor, observed, limit, True, detail, cause_id, ts_us)
            )

    def _violate(self, out: Outcome, v: Violation) -> None:
        """Record a halting violation and trip the breaker (once)."""
        out.violations.append(v)
        halt = Event(
            derived_id(self.account, "halt", v.cause_id),
            "halt",
            v.monitor,
            f"circuit breaker: {v.detail}",
            v.observed,
            v.limit,
            v.cause_id,
            v.event_ts_us,
        )
        self._halt(out, halt)

    def refresh(
        self,
        markets: Mapping[str, MarketState],
        limits: AccountLimits,
        cause_id: str,
        ts_us: int,
    ) -> Outcome:
        """Mark to market and run the monitors (proposals and timers call this)."""
        out = Outcome()
        equity = self.equity(markets)
        self._roll_day(ts_us, equity, limits, cause_id, out)
        self._monitor(equity, limits, cause_id, ts_us, out)
        return out

    def on_fill(
        self, fill: Fill, markets: Mapping[str, MarketState], limits: AccountLimits
    ) -> Outcome:
        out = Outcome()
        before = self.equity(markets)
        self._roll_day(fill.fill_ts_us, before, limits, fill.fill_id, out)
        position = self.positions.setdefault(fill.market, Position())
        with localcontext(MATH):
            notional = fill.qty * fill.price
            if fill.side == "buy":
                position.qty += fill.qty
                self.cash -= notional + fill.fee
            else:
                position.qty -= fill.qty
                self.cash += notional - fill.fee
        if fill.fill_ts_us >= position.fill_ts_us:
            position.fill_price = fill.price
            position.fill_ts_us = fill.fill_ts_us
        if fill.asset_group is not None:
            position.asset_group = fill.asset_group
        self.trades_today += 1
        if fill.side == "buy":
            self._check_trade_risk(fill, markets, limits, before, out)
        self._monitor(self.equity(markets), limits, fill.fill_id, fill.fill_ts_us, out)
        return out

    def _check_trade_risk(
        self,
        fill: Fill,
        markets: Mapping[str, MarketState],
        limits: AccountLimits,
        equity: Decimal,
        out: Outcome,
    ) -> None:
        state = markets.get(fill.market)
        atr = state.atr if state is not None else None
        if atr is None:
            return  # no ATR yet: the trade's risk cannot be measured
        with localcontext(MATH):
            risk = _ratio(fill.qty * limits.stop_atr_multiple * atr, equity)
        if risk is None or risk > limits.max_risk_per_trade:
            observed = risk if risk is not None else Decimal(-1)
            stake = f"qty {fill.qty} x {limits.stop_atr_multiple} x ATR {atr:.8f}"
            if risk is None:
                detail = (
                    f"fill {fill.fill_id} puts {stake} at risk while the account's equity "
                    f"before it is {equity:.8f} (not positive): the risk per trade is "
                    f"unbounded, the limit is {limits.max_risk_per_trade:.6%}"
                )
            else:
                detail = (
                    f"fill {fill.fill_id} risks {risk:.6%} of equity ({stake}), "
                    f"above the limit {limits.max_risk_per_trade:.6%}"
                )
            self._violate(
                out,
                Violation(
                    derived_id(self.account, "max_risk_per_trade", fill.fill_id),
                    "max_risk_per_trade",
                    observed,
                    limits.max_risk_per_trade,
                    True,
                    detail,
                    fill.fill_id,
                    fill.fill_ts_us,
                ),
            )

    def on_command(
        self, command: AccountCommand, markets: Mapping[str, MarketState], limits: AccountLimits
    ) -> Outcome:
        out = Outcome()
        cid, ts = command.command_id, command.issued_ts_us
        if command.command == "deposit":
            amount = command.amount or ZERO
            with localcontext(MATH):
                self.cash += amount
                if self.peak_equity is not None:
                    self.peak_equity += amount
                if self.day_start_equity is not None:
                    self.day_start_equity += amount
            out = self.refresh(markets, limits, cid, ts)
        elif command.command == "halt":
            reason = f"halted by {command.issued_by}: {command.reason}"
            event = Event(
                derived_id(self.account, "halt", cid),
                "halt",
                "command",
                reason,
                None,
                None,
                cid,
                ts,
            )
            self._halt(out, event)
        else:
            equity = self.equity(markets)
            self.halted = False
            self.halt_reason = None
            self.kill_switch = False
            self.breached.clear()
            self.peak_equity = equity
            self.day_start_equity = equity
            reason = f"reset by {command.issued_by}: {command.reason}"
            out.events.append(
                Event(
                    derived_id(self.account, "reset", cid),
                    "reset",
                    "command",
                    reason,
                    None,
                    None,
                    cid,
                    ts,
                )
            )
        return out

    def on_broker_position(
        self,
        snapshot: BrokerPosition,
        markets: Mapping[str, MarketState],
        limits: AccountLimits,
    ) -> Outcome:
        out = self.refresh(markets, limits, snapshot.snapshot_id, snapshot.snapshot_ts_us)
        position = self.positions.get(snapshot.market)
        local = position.qty if position is not None else ZERO
        if snapshot.qty == local:
            return out
        equity = self.equity(markets)
        price = self.mark(snapshot.market, markets)
        with localcontext(MATH):
            diff = abs(snapshot.qty - local)
            drift = _ratio(diff * price, equity) if price is not None else None
        if drift is not None and drift <= limits.drift_limit:
            return out
        observed = drift if drift is not None else Decimal(-1)
        reason = (
            f"reconciliation: broker holds {snapshot.qty} {snapshot.symbol}, "
            f"local {local}; drift "
            + (f"{drift:.6%}" if drift is not None else "unmeasurable (no price or equity)")
            + f" above {limits.drift_limit:.6%}"
        )
        if not self.kill_switch:
            self.kill_switch = True
            self.halted = True
            self.halt_reason = reason
            out.events.append(
                Event(
                    derived_id(self.account, "kill_switch", snapshot.snapshot_id),
                    "kill_switch",
                    "reconciliation",
                    reason,
                    observed,
                    limits.drift_limit,
                    snapshot.snapshot_id,
                    snapshot.snapshot_ts_us,
                )
            )
        return out
