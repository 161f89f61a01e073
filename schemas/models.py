"""Pydantic models of the wire contract, one per ``schemas/<name>.avsc``.

The ``.avsc`` files are the single source of truth; these models mirror them field by field
(same names, same order, same nullability, same decimal precision and scale) and add the
rules Avro cannot express: positive prices, ``BASE/QUOTE`` symbols, timestamps that are
epoch microseconds, candle invariants. ``tests/unit/test_schemas.py`` proves they cannot drift.

Money is ``Decimal`` and only ``Decimal`` (the models are strict: no floats, no strings).
A decimal is stored at exactly the schema's scale: ``Decimal("1.5")`` becomes
``Decimal("1.50000000")``; a value that would need rounding, or that does not fit the
precision, is a validation error. Nothing is ever rounded silently.

This module needs only pydantic and the standard library, so Flink jobs may import it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal, localcontext
from importlib import resources
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

#: Bounds of every ``*_ts_us`` field: 2000-01-01 and 2100-01-01 UTC in epoch microseconds.
#: They catch the classic unit mistakes: milliseconds (1.7e12) or nanoseconds (1.7e18)
#: passed where microseconds (1.7e15) belong.
MIN_TS_US = 946_684_800_000_000
MAX_TS_US = 4_102_444_800_000_000

_UNIT_US = {"s": 10**6, "m": 60 * 10**6, "h": 3600 * 10**6, "d": 86400 * 10**6}
_UNIT_US["w"] = 7 * _UNIT_US["d"]


@dataclass(frozen=True)
class DecimalSpec:
    """An Avro ``decimal(precision, scale)``: validates and normalizes a ``Decimal`` to it."""

    precision: int
    scale: int

    @property
    def max_value(self) -> Decimal:
        """The largest representable value, e.g. 9999999999.99999999 for (18, 8)."""
        return (Decimal(10) ** self.precision - 1).scaleb(-self.scale)

    @property
    def min_step(self) -> Decimal:
        """The smallest positive value, e.g. 0.00000001 for scale 8."""
        return Decimal(1).scaleb(-self.scale)

    def __call__(self, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite decimal")
        quantum = self.min_step
        if value.is_zero():
            return Decimal(0).quantize(quantum)
        if value.adjusted() >= self.precision - self.scale:
            raise ValueError(
                f"{value} does not fit DECIMAL({self.precision}, {self.scale}): "
                f"at most {self.precision - self.scale} digits before the point"
            )
        with localcontext() as ctx:
            ctx.prec = self.precision + 2
            exact = value.quantize(quantum)
        if exact != value:
            raise ValueError(
                f"{value} has more than {self.scale} decimal places; refusing to round"
            )
        return exact


PRICE = DecimalSpec(18, 8)
AMOUNT = DecimalSpec(18, 8)
VOLUME = DecimalSpec(38, 8)
QUOTE_VOLUME = DecimalSpec(38, 16)

Price = Annotated[Decimal, Field(gt=0), AfterValidator(PRICE)]
Amount = Annotated[Decimal, Field(gt=0), AfterValidator(AMOUNT)]
Volume = Annotated[Decimal, Field(ge=0), AfterValidator(VOLUME)]
QuoteVolume = Annotated[Decimal, Field(ge=0), AfterValidator(QUOTE_VOLUME)]

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
TimestampUs = Annotated[int, Field(ge=MIN_TS_US, le=MAX_TS_US)]

Exchange = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_-]*$", max_length=64)]
Symbol = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$", max_length=64)]
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
ReasonCode = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]
Timeframe = Annotated[str, Field(pattern=r"^[1-9][0-9]*[smhdwM]$", max_length=8)]

Side = Literal["buy", "sell", "unknown"]
DataType = Literal["trades", "candles"]
HistoryStatus = Literal["complete", "partial", "failed"]
FeedState = Literal["live", "polling", "reconnecting", "down"]


@functools.cache
def _avsc_text(name: str, version: int | None) -> str:
    base = resources.files("ticklake.schemas")
    path = (
        base / f"{name}.avsc" if version is None else base / "history" / f"{name}.v{version}.avsc"
    )
    return path.read_text(encoding="utf-8")


def load_avsc(name: str, version: int | None = None) -> dict[str, Any]:
    """The JSON of ``schemas/<name>.avsc``, or of ``schemas/history/<name>.v<version>.avsc``.

    Raises ``FileNotFoundError`` for an unknown name or version. Each call returns a fresh
    dict (the file is read once).
    """
    schema: dict[str, Any] = json.loads(_avsc_text(name, version))
    return schema


def timeframe_us(timeframe: str) -> int | None:
    """Length of a fixed timeframe in microseconds (``"5m"`` -> 300000000); None for months."""
    unit = _UNIT_US.get(timeframe[-1])
    return None if unit is None else int(timeframe[:-1]) * unit


def market_key(exchange: str, symbol: str) -> str:
    """The market's Kafka key and relay ticker: ``BINANCE:BTC/USDT``."""
    return f"{exchange}:{symbol}"


class WireModel(BaseModel):
    """Base of every wire message: frozen, strict (no coercion), no unknown fields."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    #: ``schemas/<avro_name>.avsc`` is the schema of this model.
    avro_name: ClassVar[str]
    #: The released version of that schema; ``schemas/history/<name>.v<N>.avsc`` keeps it.
    avro_version: ClassVar[int]

    @classmethod
    def avro_schema(cls) -> dict[str, Any]:
        """The model's current Avro schema (JSON)."""
        return load_avsc(cls.avro_name)

    @classmethod
    def schema_ref(cls) -> str:
        """Name and version of the writer schema, e.g. ``trade.v1`` (sent as a Kafka header)."""
        return f"{cls.avro_name}.v{cls.avro_version}"


class Trade(WireModel):
    """One executed trade, as an ingestor received it (``trade.avsc``)."""

    avro_name: ClassVar[str] = "trade"
    avro_version: ClassVar[int] = 1

    exchange: Exchange
    symbol: Symbol
    exchange_ts_us: TimestampUs
    receipt_ts_us: TimestampUs
    ingestor_id: Identifier
    trade_id: Identifier
    side: Side
    price: Price
    amount: Amount
    request_id: Identifier | None = None

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)


class Candle(WireModel):
    """OHLCV candle; live updates carry increasing ``version``, the last one ``final``."""

    avro_name: ClassVar[str] = "candle"
    avro_version: ClassVar[int] = 1

    exchange: Exchange
    symbol: Symbol
    exchange_ts_us: TimestampUs
    receipt_ts_us: TimestampUs
    ingestor_id: Identifier
    timeframe: Timeframe
    window_start_us: TimestampUs
    window_end_us: TimestampUs
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume
    quote_volume: QuoteVolume | None = None
    trade_count: Count | None = None
    vwap: Price | None = None
    final: bool
    version: Count

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.window_end_us <= self.window_start_us:
            raise ValueError("window_end_us must be after window_start_us")
        length = timeframe_us(self.timeframe)
        if length is not None and self.window_end_us - self.window_start_us != length:
            raise ValueError(f"window is not {self.timeframe} long")
        if not self.low <= min(self.open, self.close) <= max(self.open, self.close) <= self.high:
            raise ValueError("need low <= open, close <= high")
        if self.vwap is not None:
            if self.volume == 0:
                raise ValueError("vwap must be null when volume is 0")
            if not self.low <= self.vwap <= self.high:
                raise ValueError("vwap must lie within [low, high]")
        return self


class DeadLetter(WireModel):
    """Input that could not be processed, with the reason and the raw bytes."""

    avro_name: ClassVar[str] = "dead_letter"
    avro_version: ClassVar[int] = 1

    source_component: Identifier
    reason_code: ReasonCode
    reason_message: str
    payload: bytes
    original_key: bytes | None = None
    source_topic: Identifier | None = None
    source_partition: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None
    source_offset: Count | None = None
    source_file: Identifier | None = None
    source_line: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = None
    exchange: Exchange | None = None
    symbol: Symbol | None = None
    original_ts_us: TimestampUs | None = None
    dead_lettered_ts_us: TimestampUs


class _HistoryScope(WireModel):
    """What a history request asks for; ``HistoryReady`` repeats it (same leading fields)."""

    request_id: Identifier
    client_id: Identifier
    exchange: Exchange
    symbol: Symbol
    data_type: DataType
    timeframe: Timeframe | None = None
    start_ts_us: TimestampUs
    end_ts_us: TimestampUs

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)

    @model_validator(mode="after")
    def _scope(self) -> Self:
        if self.end_ts_us <= self.start_ts_us:
            raise ValueError("end_ts_us must be after start_ts_us")
        if (self.data_type == "candles") != (self.timeframe is not None):
            raise ValueError("timeframe is required for candles and must be null for trades")
        return self


class HistoryRequest(_HistoryScope):
    """A client's request for historical data of one market."""

    avro_name: ClassVar[str] = "history_request"
    avro_version: ClassVar[int] = 1

    requested_ts_us: TimestampUs


class HistoryReady(_HistoryScope):
    """The answer to a ``HistoryRequest``: where the data is, or why it is not."""

    avro_name: ClassVar[str] = "history_ready"
    avro_version: ClassVar[int] = 1

    status: HistoryStatus
    row_count: Count
    iceberg_table: Identifier | None = None
    snapshot_id: Int64 | None = None
    message: str | None = None
    ready_ts_us: TimestampUs


class HistoryFetch(_HistoryScope):
    """An ingestor's report on a history request: rows the lake must hold, or why not."""

    avro_name: ClassVar[str] = "history_fetch"
    avro_version: ClassVar[int] = 1

    served_end_ts_us: TimestampUs
    ingestor_id: Identifier
    status: Literal["fetched", "failed"]
    expected_rows: Count
    fetched_rows: Count
    produced_rows: Count
    iceberg_table: Identifier | None = None
    message: str | None = None
    fetched_ts_us: TimestampUs

    @model_validator(mode="after")
    def _served(self) -> Self:
        if not self.start_ts_us <= self.served_end_ts_us <= self.end_ts_us:
            raise ValueError("served_end_ts_us must lie within [start_ts_us, end_ts_us]")
        return self


class FeedHeartbeat(WireModel):
    """Ingestor liveness for one market: tells a quiet market from a dead feed."""

    avro_name: ClassVar[str] = "feed_heartbeat"
    avro_version: ClassVar[int] = 1

    exchange: Exchange
    symbol: Symbol
    exchange_ts_us: TimestampUs | None = None
    receipt_ts_us: TimestampUs
    ingestor_id: Identifier
    state: FeedState
    interval_ms: Annotated[int, Field(gt=0, le=INT32_MAX)]
    trades_since_last: Count
    last_trade_id: Identifier | None = None
    last_receipt_ts_us: TimestampUs | None = None

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)


class FeedGap(WireModel):
    """Trades of a market that were missed and could not be filled from history."""

    avro_name: ClassVar[str] = "feed_gap"
    avro_version: ClassVar[int] = 1

    exchange: Exchange
    symbol: Symbol
    gap_start_ts_us: TimestampUs
    gap_end_ts_us: TimestampUs
    receipt_ts_us: TimestampUs
    ingestor_id: Identifier
    last_trade_id_before: Identifier | None = None
    first_trade_id_after: Identifier | None = None
    reason_code: ReasonCode
    reason_message: str

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.symbol)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.gap_end_ts_us < self.gap_start_ts_us:
            raise ValueError("gap_end_ts_us must not be before gap_start_ts_us")
        return self


#: Every wire message, in the order of ``docs/wire-format.md``.
MODELS: tuple[type[WireModel], ...] = (
    Trade,
    Candle,
    DeadLetter,
    HistoryRequest,
    HistoryReady,
    HistoryFetch,
    FeedHeartbeat,
    FeedGap,
)
