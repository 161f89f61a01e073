"""The alert contract: ``alert.avsc``, its model, its id, its topic and its Flink columns."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from ticklake.schemas import ALERTS, MODELS, TOPICS, Alert, WireModel, alert_id
from ticklake.schemas.flink import flink_columns
from ticklake.schemas.serde import decode, encode

ROOT = Path(__file__).resolve().parents[2]
T = 1_709_251_200_000_000  # 2024-03-01 00:00 UTC


def sample(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "pattern": "price_spike",
        "severity": "warning",
        "exchange": "BINANCE",
        "symbol": "BTC/USDT",
        "ingestor_id": None,
        "window_start_us": T + 180_000_000,
        "window_end_us": T + 480_000_000,
        "exchange_ts_us": T + 479_000_000,
        "receipt_ts_us": T + 482_000_000,
        "observed": "105.00000001",
        "threshold": "5.000000000000",
        "reference": "100.00000000",
        "unit": "price",
        "message": "BINANCE:BTC/USDT moved from 100 to 105.00000001 within 5m",
    } | changes
    fields.setdefault(
        "alert_id",
        alert_id(
            fields["pattern"],
            fields["exchange"],
            fields["symbol"],
            fields["ingestor_id"],
            fields["window_start_us"],
            fields["window_end_us"],
        ),
    )
    return Alert(**fields)


def feed_sample() -> Alert:
    return sample(
        pattern="dead_feed",
        severity="critical",
        ingestor_id="binance-1",
        window_start_us=T,
        window_end_us=T + 10_000_000,
        observed=None,
        threshold="10",
        reference=None,
        unit="s",
        message="BINANCE:BTC/USDT feed binance-1 sent no heartbeat within 10 s",
    )


def alert_samples() -> dict[type[WireModel], list[WireModel]]:
    """Samples for the contract-wide tests of ``test_schemas.py`` (every model, every topic)."""
    return {Alert: [sample(), feed_sample()]}


def test_schema_file_and_history_copy() -> None:
    current = json.loads((ROOT / "schemas" / "alert.avsc").read_text())
    fastavro.parse_schema(current)
    assert current == json.loads((ROOT / "schemas" / "history" / "alert.v1.avsc").read_text())
    assert Alert.avro_schema() == current
    assert Alert in MODELS


def test_model_mirrors_the_schema_field_by_field() -> None:
    fields = Alert.avro_schema()["fields"]
    assert [f["name"] for f in fields] == list(Alert.model_fields)
    for f in fields:
        nullable = isinstance(f["type"], list)
        assert nullable == (not Alert.model_fields[f["name"]].is_required()), f["name"]
        if nullable:
            assert f["type"][0] == "null" and f["default"] is None


@pytest.mark.parametrize("alert", [sample(), feed_sample()], ids=["market", "feed"])
def test_round_trip_through_the_schema(alert: Alert) -> None:
    assert decode(Alert, encode(alert)) == alert
    assert alert.market == "BINANCE:BTC/USDT"


def test_alert_id_is_the_documented_hash() -> None:
    identity = f"price_spike|BINANCE:BTC/USDT||{T + 180_000_000}|{T + 480_000_000}"
    assert sample().alert_id == hashlib.sha256(identity.encode()).hexdigest()[:32]
    feed = f"dead_feed|BINANCE:BTC/USDT|binance-1|{T}|{T + 10_000_000}"
    assert feed_sample().alert_id == hashlib.sha256(feed.encode()).hexdigest()[:32]
    # Same identity, same id (a replay); another window or feed, another id.
    assert sample(message="other words").alert_id == sample().alert_id
    assert sample(window_end_us=T + 540_000_000).alert_id != sample().alert_id


@pytest.mark.parametrize(
    "changes",
    [
        {"alert_id": "0" * 32},  # not the derived id
        {"observed": "1e5"},  # exponent
        {"observed": "1.5.1"},
        {"threshold": "0x10"},
        {"severity": "fatal"},
        {"unit": "percent"},
        {"pattern": "Price-Spike"},
        {"window_end_us": T},  # before the start
        {"message": ""},
        {"exchange_ts_us": T // 1000},  # milliseconds, not micros
    ],
)
def test_rejects_malformed_alerts(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        sample(**changes)


def test_decimal_texts_are_exact() -> None:
    a = sample(observed="-0.00000001", reference="123456789012345678.12345678")
    assert a.observed_value == Decimal("-0.00000001")
    assert a.reference_value == Decimal("123456789012345678.12345678")  # no float rounding
    assert a.threshold_value == Decimal(5)


def test_alerts_topic_is_keyed_by_market() -> None:
    assert ALERTS in TOPICS
    assert ALERTS.name == "ticklake.alerts"
    assert ALERTS.key(sample()) == b"BINANCE:BTC/USDT"
    assert ALERTS.retention_ms == 30 * 86_400_000


def test_flink_columns_of_the_alert() -> None:
    cols = flink_columns(Alert)
    assert cols[0] == "`alert_id` STRING NOT NULL"
    assert "`ingestor_id` STRING" in cols
    assert "`observed` STRING" in cols
    assert "`window_start_us` BIGINT NOT NULL" in cols
