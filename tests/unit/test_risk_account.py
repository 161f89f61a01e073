"""AccountState: one value per account, and the migration from the earlier four states.

The states here are plain objects behind the ValueState calls the operator makes; the
real Flink state is exercised by tests/integration/test_risk.py.
"""

from __future__ import annotations

import pickle
from decimal import Decimal
from typing import Any

from tests.unit.test_risk_seen import DictMap
from ticklake.jobs.risk_account import AccountState, Generation, LegacyStates, migrate
from ticklake.jobs.risk_portfolio import Portfolio
from ticklake.jobs.risk_seen import SeenIds


class Value:
    def __init__(self, v: Any = None) -> None:
        self.v = v
        self.reads = 0

    def value(self) -> Any:
        self.reads += 1
        return self.v

    def update(self, value: Any) -> None:
        self.v = value

    def clear(self) -> None:
        self.v = None


def legacy(**values: Any) -> LegacyStates:
    return LegacyStates(
        portfolio=Value(values.get("portfolio")),
        seen_generation=Value(values.get("seen_generation")),
        timer=Value(values.get("timer")),
        limits=Value(values.get("limits")),
    )


def test_a_new_account_reads_one_legacy_value_and_starts_empty() -> None:
    old = legacy()
    state = migrate("acct-1", old)
    assert state == AccountState(Portfolio("acct-1"))
    assert isinstance(old.portfolio, Value) and old.portfolio.reads == 1
    for other in (old.seen_generation, old.timer, old.limits):
        assert isinstance(other, Value) and other.reads == 0


def test_an_account_of_the_old_layout_keeps_everything_and_the_old_states_are_cleared() -> None:
    portfolio = Portfolio("acct-2", cash=Decimal("99000.5"), trades_today=3, halted=True)
    own_limits = object()
    old = legacy(portfolio=portfolio, seen_generation=2931, timer=1_795_000_000_000,
                 limits=own_limits)  # fmt: skip
    state = migrate("acct-2", old)
    assert state.portfolio is portfolio
    assert state.seen_generation == 2931
    assert state.timer_due == 1_795_000_000_000
    assert state.own_limits is True
    assert old.portfolio.value() is None
    assert old.seen_generation.value() is None
    assert old.timer.value() is None
    assert old.limits.value() is own_limits  # the account's own limits stay where they are


def test_an_old_account_without_limits_or_timer_uses_the_defaults() -> None:
    state = migrate("acct-3", legacy(portfolio=Portfolio("acct-3")))
    assert (state.seen_generation, state.timer_due, state.own_limits) == (None, None, False)


def test_the_seen_ids_generation_lives_in_the_account_value() -> None:
    state = AccountState(Portfolio("acct-4"))
    maps = (DictMap(), DictMap())
    generation = Generation(state)
    seen = SeenIds(maps, generation, period_ms=1000)
    assert seen.first_time("proposal:p1", now_ms=5_500)
    assert state.seen_generation == 5 and generation.changed
    assert not seen.first_time("proposal:p1", now_ms=6_200)  # the previous generation
    # the next record of the account: its generation is read back from the value
    again = Generation(state)
    seen.generation = again
    assert not seen.first_time("proposal:p1", now_ms=6_900)
    assert not again.changed  # generation 6 was written by the lookup at 6,200 ms
    assert state.seen_generation == 6
    assert seen.first_time("proposal:p1", now_ms=8_000)  # two periods later: forgotten


def test_the_account_value_pickles_whole() -> None:
    state = AccountState(
        Portfolio("acct-5", cash=Decimal("0.00000001")), seen_generation=7, timer_due=12,
        own_limits=True,
    )  # fmt: skip
    assert pickle.loads(pickle.dumps(state)) == state
