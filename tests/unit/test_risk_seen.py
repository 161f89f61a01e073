"""SeenIds: two generations of ids, each lookup O(1), memory bounded by two periods.

The state objects here are dicts behind the MapState/ValueState calls the operator makes;
the real Flink state is exercised by tests/integration/test_risk.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from ticklake.jobs.risk_seen import SeenIds


class DictMap:
    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.clears = 0

    def contains(self, key: Any) -> bool:
        return key in self.data

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def clear(self) -> None:
        self.data.clear()
        self.clears += 1


class Value:
    def __init__(self) -> None:
        self.v: Any = None

    def value(self) -> Any:
        return self.v

    def update(self, value: Any) -> None:
        self.v = value


def seen(period_ms: int = 1000) -> tuple[SeenIds, DictMap, DictMap]:
    a, b = DictMap(), DictMap()
    return SeenIds((a, b), Value(), period_ms), a, b


def test_a_repeat_within_the_period_is_not_first() -> None:
    s, _, _ = seen()
    assert s.first_time("p:1", 10)
    assert not s.first_time("p:1", 20)
    assert s.first_time("p:2", 20)
    assert not s.first_time("p:2", 999)


def test_ids_are_remembered_at_least_one_period_at_most_two() -> None:
    period = 1000
    # Seen at the very end of a generation: still known a full period later.
    s, _, _ = seen(period)
    assert s.first_time("late", 999)
    assert not s.first_time("late", 999 + period)
    assert s.first_time("late", 2000)  # generation 2: generation 0 is gone
    # Seen at the start of a generation: known until two periods have passed.
    s, _, _ = seen(period)
    assert s.first_time("early", 0)
    assert not s.first_time("early", 1999)
    assert s.first_time("early", 2000)


def test_each_id_is_held_once_and_old_generations_are_cleared() -> None:
    s, a, b = seen(1000)
    for i in range(100):
        assert s.first_time(f"g0:{i}", 500)
    assert len(a.data) == 100 and not b.data  # generation 0 -> map 0
    for i in range(50):
        assert s.first_time(f"g1:{i}", 1500)
    assert len(a.data) == 100 and len(b.data) == 50
    assert s.first_time("g2:0", 2500)  # generation 2 reuses map 0: generation 0 dropped
    assert a.data == {"g2:0": True} and len(b.data) == 50
    assert not s.first_time("g1:7", 2600)  # generation 1 is still the previous one


def test_a_gap_of_two_periods_forgets_everything() -> None:
    s, a, b = seen(1000)
    s.first_time("x", 100)
    s.first_time("y", 1100)
    assert s.first_time("x", 3100) and s.first_time("y", 3100)
    assert a.clears >= 1 and b.clears >= 1


def test_a_clock_going_back_keeps_the_newer_generation() -> None:
    s, a, b = seen(1000)
    assert s.first_time("x", 5500)
    assert not s.first_time("x", 4200)  # e.g. restored on a host whose clock is behind
    assert s.first_time("y", 4200)
    assert not s.first_time("y", 5600)
    assert a.clears == 0 and b.clears == 0


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        seen(0)
