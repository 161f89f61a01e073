"""Flink SQL table definitions derived from the Avro schemas, so DDL never drifts from them.

Flink's ``'format' = 'avro'`` (flink-sql-avro 1.20) has no schema option and no registry: it
derives the Avro schema from the table's columns and decodes every message with it, without
schema resolution. The bytes are only readable if that derived schema has the same layout as
the writer's: same field order, ``T NOT NULL`` for a plain Avro ``T``, a nullable column for
``["null", T]`` (null first), ``DECIMAL(p, s)`` for ``bytes``/``decimal(p, s)``. The columns
below are generated from the ``.avsc`` files by exactly those rules.

The jobs' tables use ticklake's own format, ``'ticklake-avro'`` (:data:`WIRE_FORMAT`), which
reads and writes exactly the bytes of Flink's ``'avro'`` for these columns, straight from and
to Flink's rows (``docs/wire-format.md`` section 3); ``TICKLAKE_WIRE_FORMAT=avro`` switches
them back to Flink's.

Needs only the standard library and pydantic, so Flink jobs use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ticklake.schemas.models import WireModel

#: The Flink format of the wire contract: ticklake's own (``jobs/java/.../format``), which
#: reads and writes the same bytes as Flink's ``'avro'`` without Avro's generic records.
WIRE_FORMAT = "ticklake-avro"
#: Set to ``avro`` to make every job's tables use Flink's own format instead (A/B benchmarks,
#: or to rule ticklake's format out when chasing a bug).
WIRE_FORMAT_ENV = "TICKLAKE_WIRE_FORMAT"


def wire_format() -> str:
    """The ``format`` of the wire contract's tables: ``ticklake-avro`` unless
    ``TICKLAKE_WIRE_FORMAT=avro`` (Flink's own; the same bytes)."""
    value = os.environ.get(WIRE_FORMAT_ENV, WIRE_FORMAT)
    if value not in (WIRE_FORMAT, "avro"):
        raise ValueError(f"{WIRE_FORMAT_ENV}={value!r}: use {WIRE_FORMAT!r} or 'avro'")
    return value


_PRIMITIVES = {
    "string": "STRING",
    "long": "BIGINT",
    "int": "INT",
    "boolean": "BOOLEAN",
    "bytes": "BYTES",
    "double": "DOUBLE",
    "float": "FLOAT",
}


def flink_type(avro_type: Any) -> str:
    """The Flink SQL type whose derived Avro schema has the layout of ``avro_type``."""
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or avro_type[0] != "null":
            raise ValueError(f"only ['null', T] unions map to Flink columns, not {avro_type}")
        return _base_type(avro_type[1])
    return f"{_base_type(avro_type)} NOT NULL"


def _base_type(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "decimal" and avro_type.get("type") == "bytes":
            return f"DECIMAL({avro_type['precision']}, {avro_type.get('scale', 0)})"
        if "logicalType" not in avro_type:
            return _base_type(avro_type["type"])
    if isinstance(avro_type, str) and avro_type in _PRIMITIVES:
        return _PRIMITIVES[avro_type]
    raise ValueError(f"no Flink column type reads Avro {avro_type!r} (enums are unreadable)")


def flink_columns(model: type[WireModel]) -> list[str]:
    """Column definitions (``\\`price\\` DECIMAL(18, 8) NOT NULL``) in schema field order."""
    return [
        f"`{field['name']}` {flink_type(field['type'])}" for field in model.avro_schema()["fields"]
    ]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def kafka_table_ddl(
    model: type[WireModel],
    table: str,
    topic: str,
    *,
    bootstrap_servers: str = "${KAFKA_BOOTSTRAP}",
    options: Mapping[str, str] | None = None,
    extra_columns: Sequence[str] = (),
    temporary: bool = True,
) -> str:
    """``CREATE TABLE`` of a Kafka topic carrying ``model`` in the wire format.

    ``extra_columns`` (metadata and computed columns, watermarks) follow the physical ones;
    ``options`` add to or override the connector options (startup and bounded modes, ...).
    """
    opts = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": bootstrap_servers,
        "format": wire_format(),
        "scan.startup.mode": "earliest-offset",
    } | dict(options or {})
    return model_table_ddl(model, table, opts, extra_columns=extra_columns, temporary=temporary)


def kafka_sink_ddl(
    model: type[WireModel],
    table: str,
    topic: str,
    *,
    bootstrap_servers: str = "${KAFKA_BOOTSTRAP}",
    options: Mapping[str, str] | None = None,
    extra_columns: Sequence[str] = (),
) -> str:
    """``CREATE TABLE`` of a Kafka topic that a job writes ``model``'s records to.

    The value is the wire format (``'value.format'``, so that ``options`` can add a
    ``key.format`` and ``key.fields``); ``options`` add the connector's sink options
    (delivery guarantee, transactional id prefix, producer properties) or override these.
    """
    opts = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": bootstrap_servers,
        "value.format": wire_format(),
    } | dict(options or {})
    return model_table_ddl(model, table, opts, extra_columns=extra_columns)


def model_table_ddl(
    model: type[WireModel],
    table: str,
    options: Mapping[str, str],
    *,
    extra_columns: Sequence[str] = (),
    temporary: bool = True,
) -> str:
    """``CREATE TABLE`` with ``model``'s columns (then ``extra_columns``) and ``options``."""
    columns = ",\n  ".join([*flink_columns(model), *extra_columns])
    with_ = ",\n  ".join(f"{_quote(k)} = {_quote(v)}" for k, v in options.items())
    kind = "TEMPORARY TABLE" if temporary else "TABLE"
    return f"CREATE {kind} {table} (\n  {columns}\n) WITH (\n  {with_}\n)"
