"""The wire contract: schemas parse, models mirror them, records round-trip, schemas evolve."""

from __future__ import annotations

import copy
import io
import json
import os
import random
import re
import subprocess
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from annotated_types import Le
from pydantic import AfterValidator, ValidationError
from pydantic.fields import FieldInfo

from tests.unit.test_schemas_alerts import alert_samples
from tests.unit.test_schemas_risk import risk_samples
from ticklake.errors import TickLakeError
from ticklake.schemas import (
    DEAD_LETTERS,
    MODELS,
    RAW_TRADES,
    TOPICS,
    Candle,
    DeadLetter,
    DecimalSpec,
    FeedGap,
    FeedHeartbeat,
    HistoryFetch,
    HistoryReady,
    HistoryRequest,
    Trade,
    WireModel,
)
from ticklake.schemas.flink import (
    WIRE_FORMAT_ENV,
    flink_columns,
    kafka_sink_ddl,
    kafka_table_ddl,
)
from ticklake.schemas.models import INT32_MAX, INT64_MAX, MAX_TS_US, MIN_TS_US
from ticklake.schemas.serde import (
    SCHEMA_HEADER,
    DecodeError,
    EncodeError,
    decode,
    encode,
    schema_header,
    writer_version,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
HISTORY_DIR = SCHEMA_DIR / "history"
WIRE_DOC = ROOT / "docs" / "wire-format.md"
FLINK_PYTHON = Path(
    os.environ.get("TICKLAKE_FLINK_PYTHON")
    or (ROOT / ".ticklake" / "venvs" / "flink" / "bin" / "python")
)

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
P_MIN = Decimal("0.00000001")
P_MAX = Decimal("9999999999.99999999")
VOL_MAX = Decimal("9" * 30 + "." + "9" * 8)
QVOL_MAX = Decimal("9" * 22 + "." + "9" * 16)


# --- samples: edge values of every field, shared with tests/integration/test_wire_format.py


def _with(record: WireModel, changes: dict[str, Any]) -> WireModel:
    """A validated copy (``model_copy(update=...)`` would skip validation)."""
    return type(record)(**(dict(record) | changes))


def sample_records() -> dict[type[WireModel], list[WireModel]]:
    """Valid records of every model with the extremes each field allows."""
    trade = Trade(
        exchange="BINANCE",
        symbol="BTC/USDT",
        exchange_ts_us=T0,
        receipt_ts_us=T0 + 1,
        ingestor_id="binance-1",
        trade_id="1",
        side="buy",
        price=Decimal("97123.45"),
        amount=Decimal("0.001"),
    )
    candle = Candle(
        exchange="BINANCE",
        symbol="ETH/USDT",
        exchange_ts_us=T0 + 59_999_999,
        receipt_ts_us=T0 + 60_000_123,
        ingestor_id="flink:ohlc",
        timeframe="1m",
        window_start_us=T0,
        window_end_us=T0 + 60_000_000,
        open=Decimal("3000.1"),
        high=Decimal("3010"),
        low=Decimal("2990.00000001"),
        close=Decimal("3005.5"),
        volume=Decimal("12.5"),
        quote_volume=Decimal("37531.2500000000000001"),
        trade_count=42,
        vwap=Decimal("3002.5"),
        final=True,
        version=3,
    )
    dead = DeadLetter(
        source_component="ingestor:binance-1",
        reason_code="NON_POSITIVE_PRICE",
        reason_message="price -1 is not positive",
        payload=b'{"id": 7, "price": "-1"}',
        dead_lettered_ts_us=T0,
    )
    request = HistoryRequest(
        request_id="req-1",
        client_id="client-1",
        exchange="BINANCE",
        symbol="BTC/USDT",
        data_type="trades",
        start_ts_us=T0,
        end_ts_us=T0 + 3_600_000_000,
        requested_ts_us=T0 + 5,
    )
    ready = HistoryReady(
        **request.model_dump(exclude={"requested_ts_us"}),
        status="complete",
        row_count=1234,
        iceberg_table="market.trades",
        snapshot_id=8_123_456_789_012_345_678,
        ready_ts_us=T0 + 9_000_000,
    )
    fetch = HistoryFetch(
        **request.model_dump(exclude={"requested_ts_us"}),
        served_end_ts_us=request.end_ts_us,
        ingestor_id="binance-1",
        status="fetched",
        expected_rows=1234,
        fetched_rows=1234,
        produced_rows=1200,
        iceberg_table="market.trades",
        fetched_ts_us=T0 + 8_000_000,
    )
    beat = FeedHeartbeat(
        exchange="KRAKEN",
        symbol="XBT/EUR",
        receipt_ts_us=T0,
        ingestor_id="kraken-1",
        state="live",
        interval_ms=1000,
        trades_since_last=0,
    )
    gap = FeedGap(
        exchange="BINANCE",
        symbol="SOL/USDT",
        gap_start_ts_us=T0,
        gap_end_ts_us=T0 + 30_000_000,
        receipt_ts_us=T0 + 30_000_500,
        ingestor_id="binance-2",
        reason_code="HISTORY_LIMIT",
        reason_message="REST history ends before the last trade seen",
    )
    return {
        Trade: [
            trade,
            _with(
                trade,
                {
                    "exchange": "COINBASE-PRO",
                    "symbol": "1000SATS/USDT",
                    "exchange_ts_us": MIN_TS_US,
                    "receipt_ts_us": MAX_TS_US,
                    "trade_id": 'ünïcode, "quoted" ;-- id',
                    "side": "unknown",
                    "price": P_MIN,
                    "amount": P_MAX,
                    "request_id": "req-1",
                },
            ),
            _with(trade, {"side": "sell", "price": P_MAX, "amount": P_MIN}),
        ],
        Candle: [
            candle,
            _with(
                candle,
                {
                    "timeframe": "1M",
                    "window_end_us": T0 + 31 * 86_400_000_000,
                    "open": P_MIN,
                    "high": P_MAX,
                    "low": P_MIN,
                    "close": P_MAX,
                    "volume": VOL_MAX,
                    "quote_volume": QVOL_MAX,
                    "trade_count": INT64_MAX,
                    "vwap": P_MAX,
                    "final": False,
                    "version": INT64_MAX,
                },
            ),
            _with(
                candle,
                {
                    "volume": Decimal(0),
                    "quote_volume": None,
                    "trade_count": None,
                    "vwap": None,
                    "version": 0,
                },
            ),
        ],
        DeadLetter: [
            dead,
            _with(
                dead,
                {
                    "reason_code": "UNDECODABLE",
                    "reason_message": "",
                    "payload": bytes(range(256)),
                    "original_key": b"BINANCE:BTC/USDT",
                    "source_topic": "ticklake.trades.raw",
                    "source_partition": INT32_MAX,
                    "source_offset": INT64_MAX,
                    "source_file": "tapes/2026-01-01.csv.gz",
                    "source_line": 1,
                    "exchange": "BINANCE",
                    "symbol": "BTC/USDT",
                    "original_ts_us": MAX_TS_US,
                    "dead_lettered_ts_us": MIN_TS_US,
                },
            ),
            _with(dead, {"payload": b""}),
        ],
        HistoryRequest: [
            request,
            _with(request, {"data_type": "candles", "timeframe": "1d"}),
        ],
        HistoryReady: [
            ready,
            _with(
                ready,
                {
                    "status": "failed",
                    "row_count": 0,
                    "iceberg_table": None,
                    "snapshot_id": None,
                    "message": "exchange answered 451",
                },
            ),
            _with(ready, {"status": "partial", "snapshot_id": -(2**63)}),
        ],
        HistoryFetch: [
            fetch,
            _with(
                fetch,
                {
                    "status": "failed",
                    "served_end_ts_us": fetch.start_ts_us,
                    "expected_rows": 0,
                    "fetched_rows": 0,
                    "produced_rows": 0,
                    "iceberg_table": None,
                    "message": "UNKNOWN_MARKET: binance lists no NOPE/USDT",
                },
            ),
            _with(fetch, {"expected_rows": INT64_MAX}),
        ],
        FeedHeartbeat: [
            beat,
            _with(
                beat,
                {
                    "exchange_ts_us": T0 - 1,
                    "state": "reconnecting",
                    "interval_ms": INT32_MAX,
                    "trades_since_last": INT64_MAX,
                    "last_trade_id": "9",
                    "last_receipt_ts_us": T0 - 1,
                },
            ),
        ],
        FeedGap: [
            gap,
            _with(
                gap,
                {
                    "gap_end_ts_us": T0,
                    "last_trade_id_before": "100",
                    "first_trade_id_after": "250",
                },
            ),
        ],
        **risk_samples(),
        **alert_samples(),
    }


def doc_raw_trades_ddl() -> str:
    """The raw-trades ``CREATE TABLE`` of docs/wire-format.md (the one the Flink test runs)."""
    text = WIRE_DOC.read_text()
    match = re.search(r"<!-- flink-ddl:raw-trades -->\s*```sql\n(.*?)```", text, re.S)
    assert match, "docs/wire-format.md lost its raw-trades DDL block"
    return match.group(1)


def all_samples() -> list[WireModel]:
    return [r for records in sample_records().values() for r in records]


# --- the .avsc files


def test_every_model_has_one_schema_file_and_every_file_a_model() -> None:
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")) == sorted(m.avro_name for m in MODELS)
    assert {type(r) for r in all_samples()} == set(MODELS)


@pytest.mark.parametrize("path", sorted([*SCHEMA_DIR.glob("*.avsc"), *HISTORY_DIR.glob("*.avsc")]))
def test_avsc_parses(path: Path) -> None:
    schema = json.loads(path.read_text())
    fastavro.parse_schema(schema)
    assert schema["type"] == "record"
    assert schema["namespace"] == "ticklake.schemas"


def _avro_type_of(annotation: Any, metadata: list[Any]) -> Any:
    """The Avro type a model field must have, from its Python annotation."""
    # Inside a union, Annotated keeps pydantic's FieldInfo whole: flatten its constraints.
    metadata = [c for m in metadata for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        assert len(args) == 2 and args[1] is type(None), annotation
        inner = args[0]
        inner_meta = list(getattr(inner, "__metadata__", ()))
        return [
            "null",
            _avro_type_of(typing.get_args(inner)[0] if inner_meta else inner, inner_meta),
        ]
    if typing.get_origin(annotation) is typing.Literal:
        assert all(isinstance(a, str) for a in args)
        return "string"
    if annotation is Decimal:
        specs = [m.func for m in metadata if isinstance(m, AfterValidator)]
        assert len(specs) == 1 and isinstance(specs[0], DecimalSpec), metadata
        spec = specs[0]
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": spec.precision,
            "scale": spec.scale,
        }
    if annotation is int:
        bounds = [m.le for m in metadata if isinstance(m, Le)]
        return "int" if bounds and bounds[0] <= INT32_MAX else "long"
    return {str: "string", bool: "boolean", bytes: "bytes"}[annotation]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_model_mirrors_its_schema(model: type[WireModel]) -> None:
    fields = model.avro_schema()["fields"]
    # Same names in the same order: field order is the binary layout.
    assert [f["name"] for f in fields] == list(model.model_fields)
    for avro_field, (name, info) in zip(fields, model.model_fields.items(), strict=True):
        want = _avro_type_of(info.annotation, list(info.metadata))
        assert avro_field["type"] == want, name
        # Optional exactly where the schema has a default (null for ["null", T]).
        assert ("default" in avro_field) == (not info.is_required()), name
        if "default" in avro_field:
            assert avro_field["default"] is None and info.default is None, name


# --- round trips


@pytest.mark.parametrize("record", all_samples(), ids=lambda r: type(r).__name__)
def test_round_trip_through_the_schema(record: WireModel) -> None:
    data = encode(record)
    assert decode(type(record), data) == record
    # An independent reader of the raw .avsc (not the package loader) sees the same values,
    # decimals at exactly the schema's scale.
    raw_schema = fastavro.parse_schema(
        json.loads((SCHEMA_DIR / f"{record.avro_name}.avsc").read_text())
    )
    raw = fastavro.schemaless_reader(io.BytesIO(data), raw_schema, None)
    assert raw == dict(record)
    for name, value in raw.items():
        if isinstance(value, Decimal):
            assert str(value) == str(getattr(record, name)), name
    # And an independent writer produces the same bytes.
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, raw_schema, dict(record))
    assert buf.getvalue() == data


def test_round_trip_of_random_trades() -> None:
    rng = random.Random(3)
    for i in range(2000):
        scale = rng.randrange(0, 9)
        trade = Trade(
            exchange="BINANCE",
            symbol="BTC/USDT",
            exchange_ts_us=rng.randrange(MIN_TS_US, MAX_TS_US + 1),
            receipt_ts_us=rng.randrange(MIN_TS_US, MAX_TS_US + 1),
            ingestor_id="x",
            trade_id=str(i),
            side=rng.choice(["buy", "sell", "unknown"]),
            price=Decimal(rng.randrange(1, 10 ** (10 + scale))).scaleb(-scale),
            amount=Decimal(rng.randrange(1, 10**18)).scaleb(-8),
        )
        assert decode(Trade, encode(trade)) == trade


def test_decimal_extremes_encode_exactly() -> None:
    trade = sample_records()[Trade][1]
    assert trade.price == P_MIN and str(trade.price) == "1E-8"
    back = decode(Trade, encode(trade))
    assert f"{back.price:f}" == "0.00000001"
    assert f"{back.amount:f}" == "9999999999.99999999"


# --- validation: exact decimals, never rounded


def _trade(**changes: Any) -> Trade:
    return Trade(**(dict(sample_records()[Trade][0]) | changes))


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0.000000001"),  # 9 decimal places: would need rounding
        Decimal("1.123456785"),
        Decimal("10000000000"),  # 11 integer digits
        Decimal("9999999999.999999999"),  # rounds up past the precision
        Decimal("1E+10"),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal(0),
        Decimal("-0.00000001"),
        1.5,  # floats are never money
        "1.5",  # no coercion either
        1,
    ],
    ids=str,
)
def test_price_rejects_what_it_cannot_hold_exactly(value: Any) -> None:
    with pytest.raises(ValidationError):
        _trade(price=value)


def test_decimals_are_quantized_to_the_schema_scale_only_when_exact() -> None:
    trade = _trade(price=Decimal("97000"), amount=Decimal("1.10000000000000"))
    assert str(trade.price) == "97000.00000000"
    assert str(trade.amount) == "1.10000000"
    assert DecimalSpec(18, 8).max_value == P_MAX
    assert DecimalSpec(18, 8).min_step == P_MIN


def test_zero_where_allowed() -> None:
    candle = sample_records()[Candle][2]
    assert candle.volume == 0 and str(candle.volume) == "0E-8"
    assert decode(Candle, encode(candle)).volume == 0
    with pytest.raises(ValidationError):
        _trade(amount=Decimal(0))


@pytest.mark.parametrize(
    "changes",
    [
        {"exchange_ts_us": 1_767_225_600_000},  # milliseconds
        {"exchange_ts_us": 1_767_225_600_000_000_000},  # nanoseconds
        {"exchange_ts_us": float(T0)},
        {"exchange": "binance"},  # exchange ids are upper case
        {"symbol": "BTCUSDT"},
        {"symbol": "BTC/USDT:USDT"},
        {"side": "BUY"},
        {"trade_id": ""},
        {"unknown_field": 1},
    ],
    ids=str,
)
def test_trade_rejects_malformed_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _trade(**changes)


def test_records_are_frozen_and_hashable() -> None:
    trade = sample_records()[Trade][0]
    with pytest.raises(ValidationError):
        trade.price = Decimal(1)  # type: ignore[misc]
    assert len({trade, trade.model_copy()}) == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"window_end_us": T0},  # empty window
        {"window_end_us": T0 + 61_000_000},  # not 1m long
        {"high": Decimal("3000")},  # below close
        {"low": Decimal("3005.6")},  # above open
        {"vwap": Decimal("3010.00000001")},  # outside [low, high]
        {"volume": Decimal(0)},  # vwap with zero volume
        {"version": -1},
        {"timeframe": "5x"},
    ],
    ids=str,
)
def test_candle_invariants(changes: dict[str, Any]) -> None:
    base = dict(sample_records()[Candle][0])
    with pytest.raises(ValidationError):
        Candle(**(base | changes))


def test_history_scope_rules() -> None:
    base = dict(sample_records()[HistoryRequest][0])
    with pytest.raises(ValidationError):
        HistoryRequest(**(base | {"end_ts_us": base["start_ts_us"]}))
    with pytest.raises(ValidationError):
        HistoryRequest(**(base | {"data_type": "candles"}))  # no timeframe
    with pytest.raises(ValidationError):
        HistoryRequest(**(base | {"timeframe": "1m"}))  # timeframe on trades


# --- undecodable bytes


def test_undecodable_bytes_raise_a_typed_error() -> None:
    data = encode(sample_records()[Trade][0])
    bad_inputs = [
        b"",
        data[:-3],  # truncated
        data + b"\x00",  # trailing garbage
        b"\xff" * 40,
        b"\x00\x00\x00\x00\x01" + data,  # Confluent framing (magic byte + id) is not ours
    ]
    rng = random.Random(5)
    bad_inputs += [rng.randbytes(rng.randrange(1, 80)) for _ in range(300)]
    for bad in bad_inputs:
        try:
            decode(Trade, bad)
        except DecodeError as exc:
            assert isinstance(exc, TickLakeError)
            assert exc.message
        # Random bytes occasionally form a valid record; then it must be a valid Trade.
    for bad in bad_inputs[:5]:
        with pytest.raises(DecodeError):
            decode(Trade, bad)


def test_bytes_of_another_schema_are_rejected() -> None:
    candle = encode(sample_records()[Candle][0])
    with pytest.raises(DecodeError):
        decode(Trade, candle)


def test_decoded_but_invalid_record_is_a_decode_error() -> None:
    record = dict(sample_records()[Trade][0]) | {"price": Decimal("-1.00000000")}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(Trade.avro_schema()), record)
    with pytest.raises(DecodeError, match="invalid"):
        decode(Trade, buf.getvalue())


def test_unvalidated_record_is_an_encode_error() -> None:
    bogus = Trade.model_construct(**(dict(sample_records()[Trade][0]) | {"price": 1.5}))
    with pytest.raises(EncodeError):
        encode(bogus)


# --- schema evolution


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_released_version_is_kept_in_history(model: type[WireModel]) -> None:
    """The current schema is frozen as history/<name>.v<avro_version>.avsc once released."""
    released = HISTORY_DIR / f"{model.avro_name}.v{model.avro_version}.avsc"
    assert released.is_file(), f"copy schemas/{model.avro_name}.avsc to {released}"
    assert json.loads(released.read_text()) == model.avro_schema()


def _history(model: type[WireModel]) -> list[int]:
    versions = sorted(
        int(p.name.rsplit(".v", 1)[1].removesuffix(".avsc"))
        for p in HISTORY_DIR.glob(f"{model.avro_name}.v*.avsc")
    )
    assert versions == list(range(1, model.avro_version + 1))
    return versions


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_current_schema_reads_every_previous_version(model: type[WireModel]) -> None:
    current = model.avro_schema()
    for version in _history(model):
        old = json.loads((HISTORY_DIR / f"{model.avro_name}.v{version}.avsc").read_text())
        old_names = [f["name"] for f in old["fields"]]
        new_fields = current["fields"][len(old_names) :]
        # Fields are only appended, with defaults: Flink's DDL-derived reader of an older
        # version still reads the prefix of newer bytes, and Avro resolution fills the rest.
        assert [f["name"] for f in current["fields"][: len(old_names)]] == old_names
        assert all("default" in f for f in new_fields)
        writer = fastavro.parse_schema(old)
        for record in sample_records()[model]:
            old_record = {k: v for k, v in dict(record).items() if k in old_names}
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, writer, old_record)
            # Through fastavro's schema resolution, and through our decoder.
            resolved = fastavro.schemaless_reader(
                io.BytesIO(buf.getvalue()), writer, fastavro.parse_schema(current)
            )
            assert {k: resolved[k] for k in old_names} == old_record
            back = decode(model, buf.getvalue(), writer_version=version)
            assert dict(back) == dict(record) | {f["name"]: f["default"] for f in new_fields}


def _evolved_trade_schema() -> dict[str, Any]:
    """trade v2 as the contract allows it: one optional field appended, with a default."""
    schema = copy.deepcopy(Trade.avro_schema())
    schema["fields"].append({"name": "venue_seq", "type": ["null", "long"], "default": None})
    return schema


def test_evolution_mechanism_backward_compatible() -> None:
    """A v2 reader reads v1 data: the new field takes its default."""
    v1 = fastavro.parse_schema(Trade.avro_schema())
    v2 = fastavro.parse_schema(_evolved_trade_schema())
    for trade in sample_records()[Trade]:
        old_bytes = encode(trade)
        got = fastavro.schemaless_reader(io.BytesIO(old_bytes), v1, v2)
        assert got == dict(trade) | {"venue_seq": None}


def test_evolution_mechanism_forward_compatible_prefix() -> None:
    """A v1 reader (an old Flink job's DDL) reads v2 data: the appended field is ignored."""
    v1 = fastavro.parse_schema(Trade.avro_schema())
    v2 = fastavro.parse_schema(_evolved_trade_schema())
    trade = sample_records()[Trade][1]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v2, dict(trade) | {"venue_seq": 123456789})
    new_bytes = buf.getvalue()
    assert fastavro.schemaless_reader(io.BytesIO(new_bytes), v1, None) == dict(trade)
    with pytest.raises(DecodeError, match="left over"):
        decode(Trade, new_bytes)
    assert decode(Trade, new_bytes, allow_trailing=True) == trade


def test_evolution_without_default_is_caught() -> None:
    """The check has teeth: a required field added without default cannot read old data."""
    schema = copy.deepcopy(Trade.avro_schema())
    schema["fields"].append({"name": "venue_seq", "type": "long"})
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(
            io.BytesIO(encode(sample_records()[Trade][0])),
            fastavro.parse_schema(Trade.avro_schema()),
            fastavro.parse_schema(schema),
        )


def test_schema_header() -> None:
    assert schema_header(Trade) == (SCHEMA_HEADER, b"trade.v1")
    assert writer_version(Trade, [("x", b"1"), (SCHEMA_HEADER, b"trade.v1")]) == 1
    assert writer_version(Trade, None) is None
    assert writer_version(Trade, []) is None
    with pytest.raises(DecodeError):
        writer_version(Trade, [(SCHEMA_HEADER, b"candle.v1")])
    with pytest.raises(DecodeError, match=r"unknown writer schema trade\.v99") as info:
        decode(Trade, encode(sample_records()[Trade][0]), writer_version=99)
    assert info.value.hint and "upgrade" in info.value.hint


# --- topics


def test_every_model_has_exactly_one_topic() -> None:
    assert sorted(t.model.__name__ for t in TOPICS) == sorted(m.__name__ for m in MODELS)
    assert len({t.name for t in TOPICS}) == len(TOPICS)


def test_topic_keys_and_retention() -> None:
    day_ms = 86_400_000
    trade = sample_records()[Trade][0]
    assert RAW_TRADES.key(trade) == b"BINANCE:BTC/USDT"
    assert RAW_TRADES.retention_ms == 7 * day_ms
    assert all(t.retention_ms > RAW_TRADES.retention_ms for t in TOPICS if t.model is Candle)
    assert RAW_TRADES.config() == {"retention.ms": str(7 * day_ms), "cleanup.policy": "delete"}
    assert DEAD_LETTERS.key(sample_records()[DeadLetter][0]) == b"ingestor:binance-1"
    for spec in TOPICS:
        for record in sample_records()[spec.model]:
            assert spec.key(record)
    renamed = RAW_TRADES.renamed("it.x")
    assert renamed.name == "it.x" and renamed.partitions == RAW_TRADES.partitions


def test_doc_names_every_topic() -> None:
    text = WIRE_DOC.read_text()
    for spec in TOPICS:
        assert f"`{spec.name}`" in text, spec.name


# --- the Flink side of the contract


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_schema_has_a_flink_table(model: type[WireModel]) -> None:
    ddl = kafka_table_ddl(model, "t", "topic")
    assert "'format' = 'ticklake-avro'" in ddl
    assert len(flink_columns(model)) == len(model.model_fields)
    sink = kafka_sink_ddl(model, "t", "topic", options={"key.format": "raw"})
    assert "'value.format' = 'ticklake-avro'" in sink and "'key.format' = 'raw'" in sink
    assert "'format'" not in sink and "scan.startup.mode" not in sink


def test_the_wire_format_can_be_switched_back_to_flinks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WIRE_FORMAT_ENV, "avro")
    assert "'format' = 'avro'" in kafka_table_ddl(Trade, "t", "topic")
    assert "'value.format' = 'avro'" in kafka_sink_ddl(Trade, "t", "topic")
    monkeypatch.setenv(WIRE_FORMAT_ENV, "json")
    with pytest.raises(ValueError, match="TICKLAKE_WIRE_FORMAT='json'"):
        kafka_table_ddl(Trade, "t", "topic")


def test_doc_ddl_columns_are_the_trade_schema() -> None:
    ddl = doc_raw_trades_ddl()
    physical = [
        line.strip().rstrip(",")
        for line in ddl.splitlines()
        if re.match(r"\s*`\w+` [A-Z]", line) and " AS " not in line and "METADATA" not in line
    ]
    assert physical == flink_columns(Trade)
    assert f"'topic' = '{RAW_TRADES.name}'" in ddl
    assert "'format' = 'avro'" in ddl


@pytest.mark.skipif(not FLINK_PYTHON.exists(), reason="Flink env not created (bin/ticklake does)")
def test_contract_imports_in_the_flink_environment() -> None:
    check = (
        "import sys, ticklake.schemas, ticklake.schemas.flink as f;"
        "from ticklake.schemas import Trade;"
        "print(f.flink_columns(Trade)[0]);"
        "assert 'fastavro' not in sys.modules and 'confluent_kafka' not in sys.modules"
    )
    proc = subprocess.run(
        [str(FLINK_PYTHON), "-c", check], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "`exchange` STRING NOT NULL"


# --- the SQL script runner that reads the wire in Flink (jobs/sql_script.py, parsing only)


def test_sql_script_splits_statements_at_line_ends() -> None:
    from ticklake.jobs.sql_script import split_statements

    script = """
    -- a comment; with a semicolon
    SET 'table.local-time-zone' = 'UTC';
    CREATE TABLE t (a STRING) WITH ('k' = 'a;b', 'x' = 'it''s -- not a comment;');  -- trailing
    /* block; comment */
    INSERT INTO t /*+ OPTIONS('k'='v') */ SELECT 'x;' FROM s; SELECT 1;
    INSERT INTO t
    SELECT `we;ird` FROM s
    """
    assert split_statements(script) == [
        "SET 'table.local-time-zone' = 'UTC'",
        "CREATE TABLE t (a STRING) WITH ('k' = 'a;b', 'x' = 'it''s -- not a comment;')",
        "INSERT INTO t /*+ OPTIONS('k'='v') */ SELECT 'x;' FROM s; SELECT 1",
        "INSERT INTO t\n    SELECT `we;ird` FROM s",
    ]


def test_sql_script_placeholders() -> None:
    from ticklake.jobs.sql_script import placeholders, substitute
    from ticklake.settings import Connections

    values = placeholders(Connections(), {"OUT": "/tmp/o'k"})
    assert values["KAFKA_BOOTSTRAP"] == Connections().kafka.bootstrap_servers
    assert substitute("'${KAFKA_BOOTSTRAP}' '${OUT}'", values) == (
        f"'{values['KAFKA_BOOTSTRAP']}' '/tmp/o''k'"
    )
    with pytest.raises(TickLakeError, match="NOPE"):
        substitute("${NOPE}", values)
