"""Input ids the risk job has applied, remembered for a bounded time at O(1) per lookup.

A proposal sent twice must get one decision and a fill must count once, so the risk
operator remembers the ids of proposals, fills and commands per account. Flink's state TTL
on a ``MapState`` would bound that memory, but on the heap backend its background clean-up
is per state entry, and a ``MapState``'s entry is the account's whole map: every cleanup
step copies a whole map to drop its expired ids. The cost of each record then grows with
the ids an account has seen (in a 30 s benchmark run already a quarter of the operator
thread's JVM time, and growing with every second of a 7-day window).

:class:`SeenIds` keeps two generations instead: ids go into the map of the current
generation (``now // period``); a lookup checks the current and the previous one; when
an account's generation moves on, the map two generations old is cleared (one state
call). An id is therefore remembered for at least ``period`` and at most twice that.
The maps are plain Flink keyed state (two ``MapState``), scoped to the current key like
any other; the generation is a field of the account's one value (``jobs/risk_account.py``).
"""

from __future__ import annotations

from typing import Any, Protocol


class MapLike(Protocol):
    def contains(self, key: Any) -> bool: ...
    def put(self, key: Any, value: Any) -> None: ...
    def clear(self) -> None: ...


class ValueLike(Protocol):
    def value(self) -> Any: ...
    def update(self, value: Any) -> None: ...


class SeenIds:
    """Ids seen by the current key, in two generations of ``period_ms`` each."""

    def __init__(self, maps: tuple[MapLike, MapLike], generation: ValueLike, period_ms: int):
        if period_ms <= 0:
            raise ValueError("the period must be positive")
        self.maps = maps
        self.generation = generation
        self.period_ms = period_ms

    def _current(self, now_ms: int) -> int:
        """The key's generation, moved on to ``now_ms``'s (clearing what has expired)."""
        gen = now_ms // self.period_ms
        last = self.generation.value()
        if last is None:
            self.generation.update(gen)
            return gen
        last = int(last)
        if gen <= last:  # same generation, or the clock went back: stay where we were
            return last
        if gen == last + 1:
            self.maps[gen % 2].clear()  # it held generation last - 1
        else:
            self.maps[0].clear()
            self.maps[1].clear()
        self.generation.update(gen)
        return gen

    def first_time(self, ident: str, now_ms: int) -> bool:
        """True (and remembered) the first time ``ident`` is seen within the window."""
        gen = self._current(now_ms)
        current, previous = self.maps[gen % 2], self.maps[(gen + 1) % 2]
        if current.contains(ident) or previous.contains(ident):
            return False
        current.put(ident, True)
        return True
