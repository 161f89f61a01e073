"""The risk messages: samples at the edges, round trips, model rules, topics, Flink DDL.

``risk_samples()`` also feeds ``tests/unit/test_schemas.py`` (schema mirroring, history,
evolution and round-trip checks of every model).
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from ticklake.schemas import RISK_MODELS, RISK_TOPICS, TOPICS, WireModel
from ticklake.schemas.flink import flink_columns, kafka_table_ddl
from ticklake.schemas.risk import (
    DEFAULT_LIMITS,
    AccountCommand,
    AccountEvent,
    AccountLimits,
    BrokerPosition,
    Fill,
    OrderProposal,
    RiskDecision,
    RiskViolation,
    derived_id,
)
from ticklake.schemas.serde import decode, encode
from ticklake.schemas.topics import DERIVED_TOPICS, RISK_DECISIONS_LIVE, RISK_LIMITS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MONEY_MAX = Decimal("9" * 20 + "." + "9" * 8)


def _with(record: WireModel, changes: dict[str, Any]) -> WireModel:
    return type(record)(**(dict(record) | changes))


def risk_samples() -> dict[type[WireModel], list[WireModel]]:
    """Valid records of every risk model, with the extremes each field allows."""
    proposal = OrderProposal(
        proposal_id="p-1",
        account="acct-1",
        exchange="BINANCE",
        symbol="BTC/USDT",
        side="buy",
        source_id="user-7",
        signal_ts_us=T0,
        created_ts_us=T0 + 1,
    )
    fill = Fill(
        fill_id="f-1",
        account="acct-1",
        exchange="BINANCE",
        symbol="BTC/USDT",
        side="sell",
        qty=Decimal("0.00000001"),
        price=Decimal("97123.45"),
        fee=Decimal("0"),
        fill_ts_us=T0,
        receipt_ts_us=T0 + 5,
    )
    approved = RiskDecision(
        proposal_id="p-1",
        account="acct-1",
        exchange="BINANCE",
        symbol="BTC/USDT",
        side="buy",
        approved=True,
        size=Decimal("12"),
        reason="approved",
        equity=Decimal("100000"),
        cash=Decimal("-5.5"),
        price=Decimal("100"),
        atr=Decimal("0"),
        adv_notional=MONEY_MAX,
        drawdown=Decimal("-0.5"),
        daily_loss=Decimal("0.02999999"),
        symbol_exposure=Decimal("0"),
        group_exposure=Decimal("1234.5"),
        risk_qty=Decimal("500"),
        cap_qty=Decimal("12"),
        signal_ts_us=T0,
        proposal_ts_us=T0 + 1,
        decision_ts_us=T0 + 2,
    )
    rejected = RiskDecision(
        proposal_id="p-2",
        account="acct-1",
        exchange="BINANCE",
        symbol="BTC/USDT",
        side="sell",
        approved=False,
        size=Decimal("0"),
        rule_failed="NO_POSITION",
        reason="no position to close",
        observed=Decimal("0"),
        limit=-MONEY_MAX,
        signal_ts_us=T0,
        proposal_ts_us=T0,
        decision_ts_us=T0,
    )
    violation = RiskViolation(
        violation_id=derived_id("acct-1", "max_drawdown", "f-1"),
        account="acct-1",
        monitor="max_drawdown",
        observed=Decimal("0.10000001"),
        limit=Decimal("0.1"),
        halts=True,
        detail="drawdown 10.000001% above 10%",
        cause_id="f-1",
        event_ts_us=T0,
        detected_ts_us=T0 + 1,
    )
    command = AccountCommand(
        command_id="c-1",
        account="acct-1",
        command="reset",
        reason="reviewed",
        issued_by="ops",
        issued_ts_us=T0,
    )
    event = AccountEvent(
        event_id=derived_id("acct-1", "halt", "f-1"),
        account="acct-1",
        event="halt",
        rule="max_drawdown",
        reason="drawdown above limit",
        observed=Decimal("0.10000001"),
        limit=Decimal("0.1"),
        cause_id="f-1",
        event_ts_us=T0,
        emitted_ts_us=T0 + 3,
    )
    position = BrokerPosition(
        snapshot_id="s-1",
        account="acct-1",
        exchange="BINANCE",
        symbol="BTC/USDT",
        qty=Decimal("-1.5"),
        snapshot_ts_us=T0,
    )
    limits = AccountLimits.defaults("acct-1", T0)
    return {
        OrderProposal: [
            proposal,
            _with(
                proposal,
                {
                    "side": "sell",
                    "requested_qty": Decimal("9999999999.99999999"),
                    "asset_group": "majors",
                },
            ),
        ],
        Fill: [
            fill,
            _with(
                fill,
                {"side": "buy", "fee": MONEY_MAX, "asset_group": "majors", "proposal_id": "p-1"},
            ),
        ],
        RiskDecision: [approved, rejected],
        RiskViolation: [violation, _with(violation, {"monitor": "min_trades", "halts": False})],
        AccountCommand: [
            command,
            _with(command, {"command": "deposit", "amount": Decimal("-100000.00000001")}),
        ],
        AccountEvent: [
            event,
            _with(event, {"event": "reset", "rule": None, "observed": None, "limit": None}),
        ],
        BrokerPosition: [position, _with(position, {"qty": Decimal("0")})],
        AccountLimits: [
            limits,
            _with(
                limits,
                {
                    "min_trades_per_day": 3,
                    "qty_step": Decimal("0.0001"),
                    "risk_per_trade": Decimal("1"),
                },
            ),
        ],
    }


def _all() -> list[WireModel]:
    return [r for records in risk_samples().values() for r in records]


def test_every_risk_model_has_samples_a_schema_file_and_a_topic() -> None:
    assert set(risk_samples()) == set(RISK_MODELS)
    for model in RISK_MODELS:
        assert (SCHEMA_DIR / f"{model.avro_name}.avsc").is_file()
        assert [t.model for t in TOPICS].count(model) == 1


@pytest.mark.parametrize("record", _all(), ids=lambda r: type(r).__name__)
def test_round_trip(record: WireModel) -> None:
    data = encode(record)
    assert decode(type(record), data) == record
    raw_schema = fastavro.parse_schema(
        json.loads((SCHEMA_DIR / f"{record.avro_name}.avsc").read_text())
    )
    raw = fastavro.schemaless_reader(io.BytesIO(data), raw_schema, None)
    assert raw == dict(record)


def test_decision_consistency_rules() -> None:
    approved, rejected = risk_samples()[RiskDecision]
    with pytest.raises(ValidationError, match="no rule failed"):
        _with(approved, {"rule_failed": "X"})
    with pytest.raises(ValidationError, match="positive size"):
        _with(approved, {"size": Decimal(0)})
    with pytest.raises(ValidationError, match="size 0"):
        _with(rejected, {"size": Decimal(1)})
    with pytest.raises(ValidationError):
        _with(rejected, {"rule_failed": "not a code"})


def test_command_amount_only_for_deposits() -> None:
    reset, deposit = risk_samples()[AccountCommand]
    with pytest.raises(ValidationError, match="amount"):
        _with(reset, {"amount": Decimal(1)})
    with pytest.raises(ValidationError, match="amount"):
        _with(deposit, {"amount": None})


@pytest.mark.parametrize(
    "changes",
    [
        {"max_drawdown": Decimal("0")},
        {"max_drawdown": Decimal("1.00000001")},
        {"qty_step": Decimal("0")},
        {"signal_max_age_ms": 0},
        {"risk_per_trade": 0.01},  # floats never
        {"risk_per_trade": Decimal("0.000000001")},  # would need rounding
    ],
)
def test_limits_reject_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AccountLimits.defaults("a", T0, **changes)


def test_default_limits_are_the_design() -> None:
    limits = AccountLimits.defaults("a", T0)
    assert limits.risk_per_trade == Decimal("0.01")
    assert limits.stop_atr_multiple == 2
    assert limits.max_position == Decimal("0.05")
    assert limits.signal_max_age_ms == 5 * 60 * 1000
    assert limits.drift_limit == Decimal("0.05")
    assert set(DEFAULT_LIMITS) | {"account", "updated_ts_us"} == set(AccountLimits.model_fields)


def test_derived_ids_are_stable() -> None:
    assert derived_id("a", "halt", "f-1") == derived_id("a", "halt", "f-1")
    assert derived_id("a", "halt", "f-1") != derived_id("a", "halt", "f-2")
    assert len(derived_id("x")) == 32


def test_risk_topics_are_keyed_by_account() -> None:
    for spec in (*RISK_TOPICS, RISK_DECISIONS_LIVE):
        assert spec.key_format == "account"
        for record in risk_samples()[spec.model]:
            assert spec.key(record) == b"acct-1"
    assert RISK_LIMITS.config()["cleanup.policy"] == "compact"
    assert RISK_DECISIONS_LIVE in DERIVED_TOPICS and RISK_DECISIONS_LIVE not in TOPICS


@pytest.mark.parametrize("model", RISK_MODELS, ids=lambda m: m.__name__)
def test_flink_reads_every_risk_schema(model: type[WireModel]) -> None:
    ddl = kafka_table_ddl(model, "t", "topic")
    assert len(flink_columns(model)) == len(model.model_fields)
    assert "`limit`" in ddl or "limit" not in model.model_fields  # reserved word, quoted
