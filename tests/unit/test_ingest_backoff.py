"""The retry policy: exponential, capped, jittered, bounded, and Retry-After honoured."""

from __future__ import annotations

import random

import pytest

from ticklake.ingestors.backoff import Backoff, parse_retry_after


def test_delays_are_jittered_below_an_exponential_capped_ceiling() -> None:
    policy = Backoff(base_s=0.1, cap_s=2.0, max_attempts=6, rng=random.Random(1))
    assert [policy.ceiling(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    for attempt in range(50):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= policy.ceiling(attempt) for d in delays)
        assert len(set(delays)) > 150  # jitter: retries do not line up
    assert policy.ceiling(10_000) == 2.0  # no overflow


def test_the_budget_is_bounded() -> None:
    policy = Backoff(max_attempts=3)
    assert [policy.exhausted(n) for n in range(4)] == [False, False, True, True]


def test_retry_after_wins_when_longer() -> None:
    policy = Backoff(base_s=0.1, cap_s=1.0, rng=random.Random(2))
    for _ in range(100):
        assert 7.0 <= policy.delay(0, retry_after_s=7.0) <= 7.1
        assert 0 <= policy.delay(5, retry_after_s=0.0) <= 1.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), (" 1.5 ", 1.5), (None, None), ("soon", None), ("-3", None)],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=2, cap_s=1)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)
