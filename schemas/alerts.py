"""Pydantic model of ``schemas/alert.avsc``: one pattern match of the CEP job.

Mirrors the ``.avsc`` field by field like ``ticklake.schemas.models`` does for the market
messages, and adds what Avro cannot say: the numbers are exact decimals (as text, because
their unit differs per pattern), the window is ordered, and ``alert_id`` is the one derived
from pattern, market, feed and window (:func:`alert_id`), so the same match always carries
the same id, whether it comes from a replay, a restart from a checkpoint or a second run.

Needs only pydantic and the standard library, so Flink jobs may import it.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, model_validator

from ticklake.schemas.models import (
    Exchange,
    Identifier,
    Symbol,
    TimestampUs,
    WireModel,
    market_key,
)

#: Characters of the SHA-256 hex digest kept as the alert id (128 bits).
ALERT_ID_LENGTH = 32

Severity = Literal["info", "warning", "critical"]
PatternName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
#: An exact decimal written as text: ``-12.5``, ``105.00000001``; no exponent, no float.
DecimalText = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", max_length=80)]
Unit = Literal["price", "volume", "s"]


def alert_id(  # noqa: PLR0917 (the identity, in the order it is hashed)
    pattern: str,
    exchange: str,
    symbol: str,
    ingestor_id: str | None,
    window_start_us: int,
    window_end_us: int,
) -> str:
    """The deterministic id of a match: SHA-256 of its identity, first 32 hex digits.

    ``<pattern>|<EXCHANGE>:<SYMBOL>|<ingestor_id or ''>|<window_start_us>|<window_end_us>``;
    the CEP job computes the same string and hash in Flink SQL (``jobs/cep_sql.py``).
    """
    identity = "|".join(
        [
            pattern,
            market_key(exchange, symbol),
            ingestor_id or "",
            str(window_start_us),
            str(window_end_us),
        ]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:ALERT_ID_LENGTH]


class Alert(WireModel):
    """A pattern match: what fired, on which market (and feed), when, and the numbers."""

    avro_name: ClassVar[str] = "alert"
    avro_version: ClassVar[int] = 1

    alert_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    pattern: PatternName
    severity: Severity
    exchange: Exchange
    symbol: Symbol
    ingestor_id: Identifier | None = None
    window_start_us: TimestampUs
    window_end_us: TimestampUs
    exchange_ts_us: TimestampUs
    receipt_ts_us: TimestampUs
    observed: DecimalText | None = None
    threshold: DecimalText
    reference: DecimalText | None = None
    unit: Unit
    message: Annotated[str, Field(min_length=1, max_length=1000)]

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)

    @property
    def observed_value(self) -> Decimal | None:
        return None if self.observed is None else Decimal(self.observed)

    @property
    def threshold_value(self) -> Decimal:
        return Decimal(self.threshold)

    @property
    def reference_value(self) -> Decimal | None:
        return None if self.reference is None else Decimal(self.reference)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.window_end_us < self.window_start_us:
            raise ValueError("window_end_us must not be before window_start_us")
        want = alert_id(
            self.pattern,
            self.exchange,
            self.symbol,
            self.ingestor_id,
            self.window_start_us,
            self.window_end_us,
        )
        if self.alert_id != want:
            raise ValueError(f"alert_id must be {want} (derived from pattern, market, window)")
        return self
