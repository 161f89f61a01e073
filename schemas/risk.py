"""Pydantic models of the risk messages (``schemas/<name>.avsc``), one per file.

Inputs of the risk job (``jobs/risk.py``): :class:`OrderProposal`, :class:`Fill`,
:class:`BrokerPosition`, :class:`AccountCommand` and :class:`AccountLimits` (its
configuration, one compacted record per account). Outputs: :class:`RiskDecision` (exactly
one per proposal), :class:`RiskViolation` and :class:`AccountEvent` (halt, kill switch,
reset). Every risk topic is keyed by account. ``docs/risk.md`` has the rules.

Mirrors the ``.avsc`` files like ``ticklake.schemas.models`` does (same names, order,
nullability, decimal precision and scale; ``tests/unit/test_schemas.py`` proves it).
Money and quantities are exact decimals; fractions of equity are ``DECIMAL(18, 8)``
(``0.01`` is 1%). Needs only pydantic and the standard library, so Flink jobs may import it.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from ticklake.schemas.models import (
    DecimalSpec,
    Exchange,
    Identifier,
    Symbol,
    TimestampUs,
    WireModel,
    market_key,
)

QTY = DecimalSpec(18, 8)
MONEY = DecimalSpec(28, 8)
RATIO = DecimalSpec(18, 8)
PRICE = DecimalSpec(18, 8)

#: Characters of the SHA-256 hex digest kept in derived ids (128 bits).
ID_LENGTH = 32

Account = Annotated[str, Field(min_length=1, max_length=128)]
Qty = Annotated[Decimal, Field(gt=0), AfterValidator(QTY)]
SignedQty = Annotated[Decimal, AfterValidator(QTY)]
NonNegQty = Annotated[Decimal, Field(ge=0), AfterValidator(QTY)]
Price = Annotated[Decimal, Field(gt=0), AfterValidator(PRICE)]
Money = Annotated[Decimal, AfterValidator(MONEY)]
NonNegMoney = Annotated[Decimal, Field(ge=0), AfterValidator(MONEY)]
Ratio = Annotated[Decimal, AfterValidator(RATIO)]
#: A limit given as a fraction of equity: 0 < f <= 1.
Fraction = Annotated[Decimal, Field(gt=0, le=1), AfterValidator(RATIO)]
PositiveRatio = Annotated[Decimal, Field(gt=0), AfterValidator(RATIO)]
Millis = Annotated[int, Field(gt=0, le=2**63 - 1)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
RuleCode = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]

OrderSide = Literal["buy", "sell"]
Monitor = Literal["max_drawdown", "daily_loss", "min_trades", "max_risk_per_trade"]
CommandKind = Literal["halt", "reset", "deposit"]
EventKind = Literal["halt", "kill_switch", "reset"]


def derived_id(*parts: str) -> str:
    """First 32 hex digits of SHA-256 of the ``|``-joined parts: the same cause always
    gives the same id (replays, restarts), so consumers can deduplicate by it."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:ID_LENGTH]


class OrderProposal(WireModel):
    """An order proposed for an account; answered by exactly one :class:`RiskDecision`."""

    avro_name: ClassVar[str] = "order_proposal"
    avro_version: ClassVar[int] = 1

    proposal_id: Identifier
    account: Account
    exchange: Exchange
    symbol: Symbol
    side: OrderSide
    requested_qty: Qty | None = None
    asset_group: Identifier | None = None
    source_id: Identifier
    signal_ts_us: TimestampUs
    created_ts_us: TimestampUs

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)


class Fill(WireModel):
    """An execution at the broker: moves the account's position and cash."""

    avro_name: ClassVar[str] = "fill"
    avro_version: ClassVar[int] = 1

    fill_id: Identifier
    account: Account
    exchange: Exchange
    symbol: Symbol
    side: OrderSide
    qty: Qty
    price: Price
    fee: NonNegMoney
    asset_group: Identifier | None = None
    proposal_id: Identifier | None = None
    fill_ts_us: TimestampUs
    receipt_ts_us: TimestampUs

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)


class RiskDecision(WireModel):
    """Approved with a size, or rejected with the first failed rule and its numbers."""

    avro_name: ClassVar[str] = "risk_decision"
    avro_version: ClassVar[int] = 1

    proposal_id: Identifier
    account: Account
    exchange: Exchange
    symbol: Symbol
    side: OrderSide
    approved: bool
    size: NonNegQty
    rule_failed: RuleCode | None = None
    reason: str
    observed: Money | None = None
    limit: Money | None = None
    equity: Money | None = None
    cash: Money | None = None
    price: Price | None = None
    atr: Annotated[Decimal, Field(ge=0), AfterValidator(PRICE)] | None = None
    adv_notional: NonNegMoney | None = None
    drawdown: Ratio | None = None
    daily_loss: Ratio | None = None
    symbol_exposure: Money | None = None
    group_exposure: Money | None = None
    risk_qty: NonNegQty | None = None
    cap_qty: NonNegQty | None = None
    signal_ts_us: TimestampUs
    proposal_ts_us: TimestampUs
    decision_ts_us: TimestampUs

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.approved != (self.rule_failed is None):
            raise ValueError("a decision is approved exactly when no rule failed")
        if self.approved and self.size <= 0:
            raise ValueError("an approved decision has a positive size")
        if not self.approved and self.size != 0:
            raise ValueError("a rejected decision has size 0")
        return self


class RiskViolation(WireModel):
    """A portfolio monitor's finding: an account over one of its limits."""

    avro_name: ClassVar[str] = "risk_violation"
    avro_version: ClassVar[int] = 1

    violation_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    account: Account
    monitor: Monitor
    observed: Money
    limit: Money
    halts: bool
    detail: str
    cause_id: Identifier
    event_ts_us: TimestampUs
    detected_ts_us: TimestampUs


class AccountCommand(WireModel):
    """An operator's command: halt, reset the breaker and kill switch, or move cash."""

    avro_name: ClassVar[str] = "account_command"
    avro_version: ClassVar[int] = 1

    command_id: Identifier
    account: Account
    command: CommandKind
    amount: Money | None = None
    reason: str
    issued_by: Identifier
    issued_ts_us: TimestampUs

    @model_validator(mode="after")
    def _amount(self) -> Self:
        if (self.command == "deposit") != (self.amount is not None):
            raise ValueError("amount is required for deposit and must be null otherwise")
        return self


class AccountEvent(WireModel):
    """A trading-state change made by the risk job: halt, kill_switch or reset."""

    avro_name: ClassVar[str] = "account_event"
    avro_version: ClassVar[int] = 1

    event_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    account: Account
    event: EventKind
    rule: Identifier | None = None
    reason: str
    observed: Money | None = None
    limit: Money | None = None
    cause_id: Identifier
    event_ts_us: TimestampUs
    emitted_ts_us: TimestampUs

    @property
    def critical(self) -> bool:
        """Halt and kill switch reach the user container over the critical channel."""
        return self.event in ("halt", "kill_switch")


class BrokerPosition(WireModel):
    """The broker's quantity of one position (reconciliation input)."""

    avro_name: ClassVar[str] = "broker_position"
    avro_version: ClassVar[int] = 1

    snapshot_id: Identifier
    account: Account
    exchange: Exchange
    symbol: Symbol
    qty: SignedQty
    snapshot_ts_us: TimestampUs

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)


class AccountLimits(WireModel):
    """An account's risk limits; defaults are the design's (``docs/risk.md``)."""

    avro_name: ClassVar[str] = "account_limits"
    avro_version: ClassVar[int] = 1

    account: Account
    risk_per_trade: Fraction
    stop_atr_multiple: PositiveRatio
    max_position: Fraction
    symbol_cap: Fraction
    group_cap: Fraction
    max_drawdown: Fraction
    daily_loss_limit: Fraction
    max_risk_per_trade: Fraction
    min_trades_per_day: Count
    min_adv_notional: NonNegMoney
    max_atr_ratio: PositiveRatio
    market_data_max_age_ms: Millis
    signal_max_age_ms: Millis
    qty_step: Qty
    drift_limit: Fraction
    updated_ts_us: TimestampUs

    @classmethod
    def defaults(cls, account: str, updated_ts_us: int, **changes: object) -> AccountLimits:
        """The design's limits for ``account`` (:data:`DEFAULT_LIMITS`), with ``changes``."""
        values: dict[str, object] = {
            **DEFAULT_LIMITS,
            "account": account,
            "updated_ts_us": updated_ts_us,
            **changes,
        }
        return cls(**values)  # type: ignore[arg-type]


#: The design's limits: 1% risk per trade, stop at 2 x ATR, orders at most 5% of equity;
#: the other values are this project's defaults (``docs/risk.md``).
DEFAULT_LIMITS: dict[str, object] = {
    "risk_per_trade": Decimal("0.01"),
    "stop_atr_multiple": Decimal("2"),
    "max_position": Decimal("0.05"),
    "symbol_cap": Decimal("0.10"),
    "group_cap": Decimal("0.25"),
    "max_drawdown": Decimal("0.10"),
    "daily_loss_limit": Decimal("0.03"),
    "max_risk_per_trade": Decimal("0.02"),
    "min_trades_per_day": 0,
    "min_adv_notional": Decimal("1000000"),
    "max_atr_ratio": Decimal("0.05"),
    "market_data_max_age_ms": 300_000,
    "signal_max_age_ms": 300_000,
    "qty_step": Decimal("1"),
    "drift_limit": Decimal("0.05"),
}


#: The risk messages, in the order of ``docs/risk.md``.
RISK_MODELS: tuple[type[WireModel], ...] = (
    OrderProposal,
    Fill,
    RiskDecision,
    RiskViolation,
    AccountCommand,
    AccountEvent,
    BrokerPosition,
    AccountLimits,
)
