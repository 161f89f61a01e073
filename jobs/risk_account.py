"""One keyed value per account for the risk job: fewer calls into Flink's state per record.

In thread mode every state access of the Python operator is a call into the JVM, and on
the JVM each one looks the current key up in the heap state map; PyFlink keys that map by
a one-field ``Row``, whose ``hashCode`` and ``equals`` are generic (``RowUtils``) and
showed up in every profile of the rules' thread (bench/README.md, sessions 16 and 23).
Until session 23 a proposal read the account's limits, its portfolio, the seen-ids
generation and (with open positions) the pending timer, each a state of its own, and
wrote the portfolio back: 4-5 calls besides the seen-ids lookups.

:class:`AccountState` holds what every record of an account needs, pickled as one value:
the portfolio, the seen-ids generation, the due time of the pending monitor timer, and
whether the account has limits of its own. A record then costs one read and one write of
it, plus the seen-ids map calls (``jobs/risk_seen.py``); the account's own limits (a
separate state, written rarely) are read only when it has some.

Savepoints of the earlier layout (``portfolio``, ``seen_generation``, ``timer`` and
``limits`` states) are read once per account by :func:`migrate` and the old states
cleared, so a job upgraded from such a savepoint keeps every portfolio. Plain Python
(no PyFlink); unit-tested in ``tests/unit/test_risk_account.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ticklake.jobs.risk_portfolio import Portfolio
from ticklake.jobs.risk_seen import ValueLike


class ClearableValue(ValueLike, Protocol):
    def clear(self) -> None: ...


@dataclass
class AccountState:
    """Everything the rules read and write for one account on every record."""

    portfolio: Portfolio
    #: ``(now // period)`` of the seen-ids maps (:class:`ticklake.jobs.risk_seen.SeenIds`).
    seen_generation: int | None = None
    #: Processing time (ms) of the account's pending monitor timer; None: none pending.
    timer_due: int | None = None
    #: The account has limits of its own (in the ``limits`` state); else the defaults.
    own_limits: bool = False


class Generation:
    """The seen-ids generation of an :class:`AccountState`, as the value ``SeenIds`` keeps.

    Reads and writes go to the account's value in memory (no state call); ``changed`` says
    whether it moved, so a record that writes nothing else can still persist it.
    """

    def __init__(self, account: AccountState) -> None:
        self.account = account
        self.changed = False

    def value(self) -> int | None:
        return self.account.seen_generation

    def update(self, value: Any) -> None:
        self.account.seen_generation = int(value)
        self.changed = True


@dataclass(frozen=True)
class LegacyStates:
    """The per-account states of the layout before :class:`AccountState` (session 23)."""

    portfolio: ClearableValue
    seen_generation: ClearableValue
    timer: ClearableValue
    limits: ClearableValue


def migrate(account: str, legacy: LegacyStates) -> AccountState:
    """The state of an account with no :class:`AccountState` yet.

    A new account costs one read (its legacy portfolio, None); an account restored from a
    savepoint of the old layout gets its portfolio, generation and timer back, and the old
    states are cleared so that nothing is kept twice.
    """
    portfolio = legacy.portfolio.value()
    if not isinstance(portfolio, Portfolio):
        return AccountState(Portfolio(account))
    generation = legacy.seen_generation.value()
    timer = legacy.timer.value()
    state = AccountState(
        portfolio,
        seen_generation=None if generation is None else int(generation),
        timer_due=None if timer is None else int(timer),
        own_limits=legacy.limits.value() is not None,
    )
    legacy.portfolio.clear()
    legacy.seen_generation.clear()
    legacy.timer.clear()
    return state
