"""Payloads on the relay: the models of ``schemas/`` and the relay's own two messages.

Market data and notifications use the wire contract of ``ticklake.schemas`` (raw Avro,
:mod:`ticklake.schemas.serde`). The critical-event messages (``CriticalEvent``, ``EventAck``)
are new: their schemas live in ``relay/schemas/*.avsc`` until they move to ``schemas/``, and
this module encodes them the same way (raw Avro, no framing, strict models).
"""

from __future__ import annotations

import functools
import io
import json
from importlib import resources
from typing import Any, ClassVar, TypeVar

import fastavro
from pydantic import BaseModel, ConfigDict, Field

from ticklake.relay import topics
from ticklake.schemas import Candle, HistoryReady, HistoryRequest, Trade, WireModel
from ticklake.schemas.serde import DecodeError, EncodeError, decode

Identifier = str
E = TypeVar("E", bound="RelayMessage")


class RelayMessage(BaseModel):
    """Base of the relay's own messages: frozen, strict, schema in ``relay/schemas``."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    avro_name: ClassVar[str]


class CriticalEvent(RelayMessage):
    avro_name: ClassVar[str] = "critical_event"

    event_id: str = Field(min_length=1, max_length=256)
    source_id: str = Field(min_length=1, max_length=256)
    event_type: str = Field(min_length=1, max_length=128)
    payload: bytes
    created_ts_us: int = Field(ge=0)
    attempt: int = Field(default=1, ge=1, le=2**31 - 1)


class EventAck(RelayMessage):
    avro_name: ClassVar[str] = "event_ack"

    event_id: str = Field(min_length=1, max_length=256)
    receiver_id: str = Field(min_length=1, max_length=256)
    duplicate: bool
    acked_ts_us: int = Field(ge=0)


@functools.cache
def _parsed(name: str) -> Any:
    text = (resources.files("ticklake.relay") / "schemas" / f"{name}.avsc").read_text("utf-8")
    return fastavro.parse_schema(json.loads(text))


def encode_message(record: RelayMessage) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, _parsed(record.avro_name), record.model_dump())
    except Exception as exc:  # fastavro raises many types; all mean "does not fit"
        raise EncodeError(f"{type(record).__name__} does not fit its schema: {exc}") from exc
    return buf.getvalue()


def decode_message(model: type[E], data: bytes) -> E:
    buf = io.BytesIO(data)
    try:
        raw = fastavro.schemaless_reader(buf, _parsed(model.avro_name), None)
        if buf.tell() != len(data):
            raise ValueError(f"{len(data) - buf.tell()} bytes left over")
        return model.model_validate(raw)
    except Exception as exc:
        raise DecodeError(f"{len(data)} bytes are not a {model.__name__}: {exc}") from exc


def model_for_topic(topic: str) -> type[WireModel]:
    """The schema model carried by a topic (``tick`` -> Trade, ``ohlc:*`` -> Candle, ...)."""
    kind = topics.data_type_of(topic)
    if kind == topics.TICK:
        return Trade
    if kind.startswith(topics.OHLC_PREFIX):
        return Candle
    if kind == topics.HISTORY:
        return HistoryRequest
    if kind in (topics.RESPONSE_PREFIX[:-1], topics.HISTORY_READY_PREFIX[:-1]):
        return HistoryReady
    raise DecodeError(f"no model is known for topic {topic!r} (data type {kind!r})")


def decode_payload(topic: str, payload: bytes) -> WireModel:
    return decode(model_for_topic(topic), payload)
