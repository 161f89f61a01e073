"""The ingestor's producer settings: the linger is configuration, bounded, from the env."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticklake.ingestors.kafka_sink import INGEST_PRODUCER_CONFIG
from ticklake.ingestors.service import IngestorSettings


def test_the_default_linger_is_the_ingest_producers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TICKLAKE_INGESTOR__PRODUCER_LINGER_MS", raising=False)
    assert IngestorSettings().producer_linger_ms == INGEST_PRODUCER_CONFIG["linger.ms"]


def test_the_linger_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKLAKE_INGESTOR__PRODUCER_LINGER_MS", "20")
    assert IngestorSettings().producer_linger_ms == 20


@pytest.mark.parametrize("bad", [-1, 1001])
def test_a_linger_out_of_bounds_is_refused(bad: int) -> None:
    with pytest.raises(ValidationError, match="producer_linger_ms"):
        IngestorSettings(producer_linger_ms=bad)
