"""The risk job's account inputs, from raw Kafka records to validated models or dead letters.

User containers, the gateway and broker adapters publish proposals, fills, broker snapshots,
commands and limits; nothing guarantees that what they publish is a valid record. The job
therefore reads these topics as raw bytes (``'value.format' = 'raw'``, with the Kafka key,
the ``ticklake-schema`` header and the record's coordinates) and decodes them here, in
Python, with the platform's own decoder (:func:`ticklake.schemas.serde.decode`: the writer's
schema version from the header, Avro schema resolution, pydantic validation):

- a valid record goes on to the rules, keyed by its account (default limits, account ``*``,
  to the broadcast side);
- bytes that are not an Avro record of the topic's schema (or name an unknown schema
  version) become a :class:`~ticklake.schemas.models.DeadLetter` ``UNDECODABLE``;
- a record that decodes but breaks the contract (a quantity <= 0, an unknown side, ...)
  becomes a dead letter ``INVALID_RECORD``; such a proposal is also answered, with an
  ``INVALID_PROPOSAL`` decision, unless the broken field is one the decision repeats (its
  id, account, exchange, symbol, side or times: no valid decision can carry it);
- a tombstone (no value; the limits topic is compacted) is skipped.

Nothing here raises: a record the decoder cannot place is a dead letter. Plain Python (no
PyFlink), unit-tested in ``tests/unit/test_risk_inputs.py``.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ticklake.schemas.models import DeadLetter, WireModel
from ticklake.schemas.risk import (
    AccountCommand,
    AccountLimits,
    BrokerPosition,
    Fill,
    OrderProposal,
)
from ticklake.schemas.serde import (
    SCHEMA_HEADER,
    DecodeError,
    decode,
    parsed_schema,
    writer_version,
)

#: Kinds of the keyed side, and the model each carries.
ACCOUNT_INPUTS: dict[str, type[WireModel]] = {
    "proposal": OrderProposal,
    "fill": Fill,
    "broker_position": BrokerPosition,
    "command": AccountCommand,
    "limits": AccountLimits,
}
DEFAULTS_KEY = "*"
#: ``source_component`` of the job's dead letters.
COMPONENT = "flink:risk"
UNDECODABLE = "UNDECODABLE"
INVALID_RECORD = "INVALID_RECORD"
#: Fields of a proposal its decision repeats: when one of them is invalid, no valid
#: decision can answer it (the dead letter is all there is).
ANSWER_FIELDS = frozenset(
    {"proposal_id", "account", "exchange", "symbol", "side", "signal_ts_us", "created_ts_us"}
)
#: Longest ``reason_message`` kept (the payload is kept whole).
_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class RawRecord:
    """One Kafka record of an account input topic, as the job's source reads it."""

    kind: str
    key: bytes | None
    value: bytes | None
    #: The ``ticklake-schema`` header (``order_proposal.v1``), if the writer set it.
    schema: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


@dataclass(frozen=True)
class InvalidProposal:
    """A proposal that decoded but breaks the contract: answered ``INVALID_PROPOSAL``."""

    values: dict[str, Any]
    #: ``requested_qty: Input should be greater than 0``
    problem: str

    @property
    def proposal_id(self) -> str:
        return str(self.values["proposal_id"])

    @property
    def account(self) -> str:
        return str(self.values["account"])


@dataclass(frozen=True)
class Decoded:
    """What one raw record becomes: an input for the rules, a dead letter, both or neither."""

    #: (kind, account, model or InvalidProposal) for the keyed side; None: nothing to apply.
    record: tuple[str, str, WireModel | InvalidProposal] | None = None
    dead_letter: DeadLetter | None = None

    @property
    def is_default_limits(self) -> bool:
        return self.record is not None and self.record[:2] == ("limits", DEFAULTS_KEY)


def first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(x) for x in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _raw_values(model: type[WireModel], value: bytes, version: int | None) -> dict[str, Any]:
    """The Avro record without validation (only for a record that failed validation)."""
    import fastavro

    reader = parsed_schema(model.avro_name)
    if version is None or version == model.avro_version:
        raw = fastavro.schemaless_reader(io.BytesIO(value), reader, None)
    else:
        raw = fastavro.schemaless_reader(
            io.BytesIO(value), parsed_schema(model.avro_name, version), reader
        )
    if not isinstance(raw, dict):
        raise DecodeError(f"an Avro {model.avro_name} record decoded to {type(raw).__name__}")
    return raw


def decode_input(raw: RawRecord, now_us: int | None = None) -> Decoded:
    """Decode one raw account input (never raises)."""
    if raw.value is None:
        return Decoded()
    model = ACCOUNT_INPUTS.get(raw.kind)
    if model is None:
        message = f"unknown input {raw.kind!r}"
        return Decoded(dead_letter=dead_letter(raw, UNDECODABLE, message, now_us))
    version: int | None = None
    try:
        version = writer_version(model, [(SCHEMA_HEADER, raw.schema)] if raw.schema else None)
        record = decode(model, raw.value, writer_version=version)
    except DecodeError as exc:
        if isinstance(exc.__cause__, ValidationError):
            return _invalid(raw, model, version, exc.__cause__, now_us)
        return Decoded(dead_letter=dead_letter(raw, UNDECODABLE, exc.message, now_us))
    except Exception as exc:  # e.g. a schema header that is not UTF-8; never stop the job
        message = f"{type(exc).__name__}: {exc}"
        return Decoded(dead_letter=dead_letter(raw, UNDECODABLE, message, now_us))
    account: str = record.account  # type: ignore[attr-defined]
    return Decoded(record=(raw.kind, account, record))


def _invalid(
    raw: RawRecord,
    model: type[WireModel],
    version: int | None,
    error: ValidationError,
    now_us: int | None,
) -> Decoded:
    """A record that decoded but failed validation: a dead letter, and for a proposal the
    values its ``INVALID_PROPOSAL`` decision needs."""
    problem = first_problem(error)
    letter = dead_letter(raw, INVALID_RECORD, f"invalid {model.avro_name}: {problem}", now_us)
    broken = {str(e["loc"][0]) for e in error.errors() if e["loc"]}
    if model is not OrderProposal or raw.value is None or broken & ANSWER_FIELDS:
        return Decoded(dead_letter=letter)
    try:
        values = _raw_values(model, raw.value, version)
    except Exception:  # decoded a moment ago; stay total all the same
        return Decoded(dead_letter=letter)
    answer = InvalidProposal(values, problem)
    return Decoded(record=(raw.kind, answer.account, answer), dead_letter=letter)


def dead_letter(raw: RawRecord, code: str, message: str, now_us: int | None = None) -> DeadLetter:
    ts = raw.timestamp_ms
    fields: dict[str, Any] = dict(
        source_component=COMPONENT,
        reason_code=code,
        reason_message=message[:_MESSAGE_CHARS],
        payload=raw.value or b"",
        original_key=raw.key,
        source_topic=raw.topic,
        source_partition=raw.partition,
        source_offset=raw.offset,
        original_ts_us=ts * 1000 if ts is not None and ts > 0 else None,
        dead_lettered_ts_us=now_us if now_us is not None else time.time_ns() // 1000,
    )
    try:
        return DeadLetter(**fields)
    except ValidationError:  # e.g. a topic name the contract's identifiers do not allow
        return DeadLetter.model_construct(**fields)
