"""Bounded exponential backoff with full jitter, shared by the Kafka sink and REST calls.

``Backoff(base_s, cap_s, max_attempts)`` yields how long to wait before retry ``n``: a random
value in ``[0, min(cap, base * 2**n)]`` ("full jitter", so that many ingestors hitting the
same 429 do not retry in lockstep). A ``Retry-After`` from the server wins when it is longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Retry policy: delays grow exponentially up to ``cap_s``, at most ``max_attempts`` tries."""

    base_s: float = 0.1
    cap_s: float = 10.0
    max_attempts: int = 8
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or self.max_attempts < 1:
            raise ValueError("need 0 < base_s <= cap_s and max_attempts >= 1")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry ``attempt`` (0-based)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 62))

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry ``attempt``: jittered, at least ``retry_after_s``."""
        jittered = self.rng.uniform(0, self.ceiling(attempt))
        if retry_after_s is not None and retry_after_s > 0:
            # honour the server, plus a little jitter so that waiters spread out
            return min(max(retry_after_s, jittered), max(self.cap_s, retry_after_s)) + (
                self.rng.uniform(0, self.base_s)
            )
        return jittered

    def exhausted(self, attempt: int) -> bool:
        """True when ``attempt`` (0-based count of failures so far) used up the budget."""
        return attempt >= self.max_attempts - 1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` header (delta-seconds form); None if absent/odd."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
