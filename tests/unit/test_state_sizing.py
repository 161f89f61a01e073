"""The dedup state's heap sizing: keys per heap, the rate a TTL allows, the heap a rate needs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ticklake.jobs.state_sizing import (
    DEDUP_HEAP_SHARE,
    DEDUP_KEY_HEAP_BYTES,
    FINGERPRINT_KEY_BYTES,
    DedupCapacity,
)

GIB = 2**30


def test_keys_fill_the_dedup_share_of_the_heap() -> None:
    cap = DedupCapacity(6 * GIB, timedelta(hours=1))
    assert cap.keys == int(6 * GIB * DEDUP_HEAP_SHARE) // DEDUP_KEY_HEAP_BYTES
    # 3 GiB at 310 B per key: about 10.4M keys, i.e. 2,886 trades/s for an hour.
    assert 10_000_000 < cap.keys < 11_000_000
    assert cap.sustained_rate == pytest.approx(cap.keys / 3600)


def test_heap_for_a_rate_round_trips_to_that_rate() -> None:
    cap = DedupCapacity(6 * GIB, timedelta(hours=1))
    need = cap.heap_for(10_000)
    # 36M keys x 310 B / 0.5: about 22.3 GB.
    assert need == pytest.approx(36_000_000 * DEDUP_KEY_HEAP_BYTES / DEDUP_HEAP_SHARE, rel=1e-9)
    bigger = DedupCapacity(need, timedelta(hours=1)).sustained_rate
    assert bigger == pytest.approx(10_000, rel=1e-6)


def test_no_ttl_has_no_sustained_rate_and_says_so() -> None:
    cap = DedupCapacity(4 * GIB, timedelta(0))
    assert cap.sustained_rate is None
    text = cap.describe()
    assert "no TTL" in text and "4.0 GiB" in text


def test_describe_names_the_ttl_the_rate_and_the_way_out() -> None:
    text = DedupCapacity(6 * GIB, timedelta(hours=1)).describe()
    assert "1h TTL" in text
    assert "2,886 trades/s" in text or "2,885 trades/s" in text
    assert "-Xmx21g" in text  # 10,000 trades/s for an hour
    assert "--dedup-ttl" in text and "RocksDB" in text


def test_fingerprints_hold_more_keys_per_heap() -> None:
    sql = DedupCapacity(6 * GIB, timedelta(hours=1))
    fingerprints = DedupCapacity(6 * GIB, timedelta(hours=1), FINGERPRINT_KEY_BYTES)
    assert fingerprints.keys == int(6 * GIB * DEDUP_HEAP_SHARE) // FINGERPRINT_KEY_BYTES
    assert fingerprints.keys > 3 * sql.keys
    assert f"about {FINGERPRINT_KEY_BYTES} B per trade key" in fingerprints.describe()
