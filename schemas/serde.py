"""Models <-> bytes on the wire: raw (schemaless) Avro binary, nothing before or after it.

The bytes of a message are exactly the Avro binary encoding of one record of the model's
schema: no magic byte, no schema-registry id, no container header. That is what Flink SQL's
``'format' = 'avro'`` reads (it decodes with a schema derived from the table DDL), and what
``docs/wire-format.md`` specifies. The writer's schema version travels in the Kafka header
``ticklake-schema`` (``trade.v1``), so Python readers can resolve old data into the current
model with Avro schema resolution.

Platform environment only (fastavro). Schemas are read from the package files once.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable
from typing import Any, TypeVar

import fastavro
from pydantic import ValidationError

from ticklake.errors import TickLakeError
from ticklake.schemas.models import WireModel, load_avsc

M = TypeVar("M", bound=WireModel)

#: Kafka header naming the writer schema of a message's value, e.g. ``trade.v1``.
SCHEMA_HEADER = "ticklake-schema"


class WireFormatError(TickLakeError):
    """A message could not be encoded to, or decoded from, the wire format."""


class EncodeError(WireFormatError):
    """A record does not fit its Avro schema (only possible for unvalidated models)."""


class DecodeError(WireFormatError):
    """Bytes are not a valid message of the expected schema; dead-letter them."""


@functools.cache
def parsed_schema(name: str, version: int | None = None) -> Any:
    """fastavro's parsed form of ``<name>.avsc`` (or of a historical version), parsed once."""
    return fastavro.parse_schema(load_avsc(name, version))


def encode(record: WireModel) -> bytes:
    """The record's Avro binary encoding (schemaless: the bytes Kafka carries)."""
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, parsed_schema(record.avro_name), dict(record))
    except Exception as exc:  # fastavro raises many types; all mean "does not fit"
        raise EncodeError(
            f"{type(record).__name__} does not fit schema {record.schema_ref()}: {exc}",
            hint="build records through the model's constructor, which validates them",
        ) from exc
    return buf.getvalue()


def decode(
    model: type[M],
    data: bytes,
    *,
    writer_version: int | None = None,
    allow_trailing: bool = False,
) -> M:
    """Decode one message into ``model``, validating it.

    ``writer_version`` is the version of the schema the bytes were written with (from the
    ``ticklake-schema`` header, see :func:`writer_version`); when it is older than the
    model's, Avro schema resolution fills fields added since with their defaults. Bytes left
    over after the record are an error unless ``allow_trailing``: a reader that is older than
    the writer can read the fields it knows, because fields are only ever appended.

    Raises :class:`DecodeError` for bytes that are not a valid record.
    """
    name = model.avro_name
    buf = io.BytesIO(data)
    try:
        reader = parsed_schema(name)
        if writer_version is None or writer_version == model.avro_version:
            raw = fastavro.schemaless_reader(buf, reader, None)
        else:
            writer = parsed_schema(name, writer_version)
            raw = fastavro.schemaless_reader(buf, writer, reader)
    except FileNotFoundError as exc:
        raise DecodeError(
            f"unknown writer schema {name}.v{writer_version}",
            hint="the message was written by a newer producer; upgrade this consumer",
        ) from exc
    except Exception as exc:  # garbage input makes fastavro raise almost anything
        raise DecodeError(
            f"{len(data)} bytes are not an Avro {name} record: {type(exc).__name__}: {exc}"
        ) from exc
    if not allow_trailing and buf.tell() != len(data):
        raise DecodeError(
            f"{len(data) - buf.tell()} bytes left over after an Avro {name} record",
            hint="wrong topic or schema, or a newer writer (then pass allow_trailing=True)",
        )
    if not isinstance(raw, dict):
        raise DecodeError(f"an Avro {name} record decoded to {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise DecodeError(f"decoded {name} record is invalid: {exc}") from exc


def schema_header(model: type[WireModel]) -> tuple[str, bytes]:
    """The Kafka header to send with every message of ``model``: (``ticklake-schema``, ref)."""
    return SCHEMA_HEADER, model.schema_ref().encode()


def writer_version(
    model: type[WireModel], headers: Iterable[tuple[str, bytes | str | None]] | None
) -> int | None:
    """The writer schema version from a message's headers; None if the header is absent.

    Raises :class:`DecodeError` if the header names another schema (a message on the
    wrong topic) or cannot be parsed.
    """
    for key, value in headers or ():
        if key != SCHEMA_HEADER or value is None:
            continue
        ref = value.decode() if isinstance(value, bytes) else value
        name, _, version = ref.rpartition(".v")
        if name != model.avro_name or not version.isdigit():
            raise DecodeError(
                f"message header {SCHEMA_HEADER}={ref!r} does not name a {model.avro_name} schema"
            )
        return int(version)
    return None
