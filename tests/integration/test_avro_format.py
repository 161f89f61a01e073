"""``'format' = 'ticklake-avro'`` (jobs/java/.../format) against Flink's own ``'avro'``.

The jobs read and write the wire contract with ticklake's Avro format, which works on the
bytes directly. Here Flink writes the same rows with both formats and the bytes must be equal;
fastavro, with a schema written by hand, decodes them to the values put in; both formats read
the bytes back to equal rows; and a message that does not hold the columns fails the job with
the column's name. ``test_wire_format.py`` reads fastavro's bytes of every message type with
the jobs' DDL (ticklake's format) and the documented raw-trades DDL (Flink's format).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import uuid
from base64 import b64decode
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Producer

from tests.integration.test_stack import consume_all
from ticklake.schemas import RAW_TRADES, Trade
from ticklake.schemas.serde import encode
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections

COLUMNS = """`k` STRING NOT NULL,
  `s` STRING NOT NULL, `sn` STRING,
  `l` BIGINT NOT NULL, `ln` BIGINT,
  `i` INT NOT NULL, `b` BOOLEAN NOT NULL, `bn` BOOLEAN, `by` BYTES,
  `d` DOUBLE NOT NULL, `f` FLOAT,
  `p` DECIMAL(18, 8) NOT NULL, `pn` DECIMAL(18, 8), `w` DECIMAL(38, 10),
  `c` DECIMAL(5, 0) NOT NULL"""


def _decimal(precision: int, scale: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}


#: The value (all columns but the key ``k``) as Avro, written out by hand: what Flink's
#: format derives from the columns (nullable = ``["null", T]``, decimals as bytes).
SCHEMA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Row",
        "fields": [
            {"name": "s", "type": "string"},
            {"name": "sn", "type": ["null", "string"]},
            {"name": "l", "type": "long"},
            {"name": "ln", "type": ["null", "long"]},
            {"name": "i", "type": "int"},
            {"name": "b", "type": "boolean"},
            {"name": "bn", "type": ["null", "boolean"]},
            {"name": "by", "type": ["null", "bytes"]},
            {"name": "d", "type": "double"},
            {"name": "f", "type": ["null", "float"]},
            {"name": "p", "type": _decimal(18, 8)},
            {"name": "pn", "type": ["null", _decimal(18, 8)]},
            {"name": "w", "type": ["null", _decimal(38, 10)]},
            {"name": "c", "type": _decimal(5, 0)},
        ],
    }
)  # fmt: skip

#: Unscaled decimals at the edges of their two's complement length (1, 2, 3, ... bytes).
UNSCALED = [
    0, 1, -1, 127, 128, -128, -129, 255, 256, 32767, 32768, -32768, -32769,
    2**31, -(2**31), 2**55, -(2**55), 2**56 - 1, 10**18 - 1, -(10**18 - 1),
]  # fmt: skip
#: Longs at the edges of the zig-zag varint's lengths, and the extremes.
LONGS = [0, 1, -1, 63, 64, -64, -65, 2**31, -(2**31) - 1, 2**62, 2**63 - 1, -(2**63)]
STRINGS = ["", "a", "ünï-code €", "𝄞 clef", "x" * 200, "quote ' and \\ backslash"]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for n, unscaled in enumerate(UNSCALED):
        long_ = LONGS[n % len(LONGS)]
        rows.append(
            {
                "k": f"r{n:02d}",
                "s": STRINGS[n % len(STRINGS)],
                "sn": None if n % 3 == 0 else STRINGS[(n + 1) % len(STRINGS)],
                "l": long_,
                "ln": None if n % 4 == 1 else -long_ if long_ != -(2**63) else 0,
                "i": [0, 2**31 - 1, -(2**31), -7, 64][n % 5],
                "b": n % 2 == 0,
                "bn": None if n % 5 == 2 else n % 3 == 0,
                "by": None if n % 4 == 0 else bytes([0, 255, 128, n]),
                "d": [0.0, -1.5, 1e300, -2.5e-300, 0.1][n % 5],
                "f": None if n % 6 == 5 else [3.25, -0.125, 1.5e30, -7.0, 0.5][n % 5],
                "p": Decimal(unscaled).scaleb(-8),
                "pn": None if n % 7 == 3 else Decimal(-unscaled).scaleb(-8),
                "w": None if n % 2 else Decimal(unscaled * 10**19 + n).scaleb(-10),
                "c": Decimal([0, 99999, -99999, 128, -129][n % 5]),
            }
        )
    return rows


def _sql(value: Any, sql_type: str) -> str:
    """A SQL literal of ``value`` as ``sql_type``."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if value is None:
        text = "NULL"
    elif isinstance(value, bytes):
        text = f"X'{value.hex().upper()}'"
    elif isinstance(value, float):
        text = repr(value).upper().replace("E+", "E")
    else:
        # A string: Calcite refuses exact literals whose unscaled value exceeds a long.
        text = f"'{value:f}'" if isinstance(value, Decimal) else str(value)
    return f"CAST({text} AS {sql_type})"


TYPES = {
    "k": "STRING", "s": "STRING", "sn": "STRING", "l": "BIGINT", "ln": "BIGINT", "i": "INT",
    "b": "BOOLEAN", "bn": "BOOLEAN", "by": "BYTES", "d": "DOUBLE", "f": "FLOAT",
    "p": "DECIMAL(18, 8)", "pn": "DECIMAL(18, 8)", "w": "DECIMAL(38, 10)", "c": "DECIMAL(5, 0)",
}  # fmt: skip


def _kafka_table(name: str, topic: str, fmt: str, conn: Connections, *, source: bool) -> str:
    scan = (
        "  'scan.startup.mode' = 'earliest-offset',\n  'scan.bounded.mode' = 'latest-offset',\n"
        if source
        else ""
    )
    return f"""CREATE TEMPORARY TABLE {name} (
  {COLUMNS}
) WITH (
  'connector' = 'kafka', 'topic' = '{topic}',
  'properties.bootstrap.servers' = '{conn.kafka.bootstrap_servers}',
{scan}  'key.format' = 'raw', 'key.fields' = 'k',
  'value.format' = '{fmt}', 'value.fields-include' = 'EXCEPT_KEY'
);"""


def _float(value: float | None) -> float | None:
    """The value as a FLOAT (32-bit) holds it."""
    if value is None:
        return None
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


def test_ticklake_avro_writes_flink_avros_bytes_and_reads_them_back(
    conn: Connections, tmp_path: Path
) -> None:
    rows = _rows()
    run = uuid.uuid4().hex[:8]
    topics = {fmt: f"it.format.{fmt}.{run}" for fmt in ("avro", "ticklake-avro")}
    ensure_topics(
        conn.kafka.bootstrap_servers,
        [replace(RAW_TRADES.renamed(t), partitions=1) for t in topics.values()],
    )
    values = ",\n  ".join(
        "(" + ", ".join(_sql(row[c], TYPES[c]) for c in TYPES) + ")" for row in rows
    )
    names = ", ".join(f"`{c}`" for c in TYPES)
    write = tmp_path / "write.sql"
    write.write_text(
        "\n".join(
            [
                _kafka_table("out_avro", topics["avro"], "avro", conn, source=False),
                _kafka_table(
                    "out_tl", topics["ticklake-avro"], "ticklake-avro", conn, source=False
                ),
                f"CREATE TEMPORARY VIEW v AS SELECT * FROM (VALUES\n  {values}\n) AS t({names});",
                "INSERT INTO out_avro SELECT * FROM v;",
                "INSERT INTO out_tl SELECT * FROM v;",
            ]
        )
    )
    _run_ok(write)
    written = {
        fmt: {k.decode(): v for k, v in consume_all(conn, topic, len(rows))}
        for fmt, topic in topics.items()
    }
    assert set(written["avro"]) == set(written["ticklake-avro"]) == {r["k"] for r in rows}

    # 1. The same bytes as Flink's own format, row by row.
    for row in rows:
        assert written["ticklake-avro"][row["k"]] == written["avro"][row["k"]], row

    # 2. fastavro, with the schema written by hand, decodes them to the values put in.
    for row in rows:
        buf = io.BytesIO(written["ticklake-avro"][row["k"]])
        got = fastavro.schemaless_reader(buf, SCHEMA, None)
        assert buf.read() == b"", row["k"]  # nothing after the record
        want = {c: (_float(v) if c == "f" else v) for c, v in row.items() if c != "k"}
        for column, value in want.items():
            assert _same(got[column], value), (row["k"], column, got[column], value)

    # 3. Both formats read the bytes back to equal rows.
    outputs = {fmt: tmp_path / f"read-{fmt}" for fmt in topics}
    read = tmp_path / "read.sql"
    statements = []
    for n, (fmt, topic) in enumerate(topics.items()):
        statements += [
            _kafka_table(f"src_{n}", topic, fmt, conn, source=True),
            f"CREATE TEMPORARY TABLE sink_{n} (\n  {COLUMNS}\n) WITH ('connector' = 'filesystem',"
            f" 'path' = '{outputs[fmt]}', 'format' = 'json',"
            " 'json.encode.decimal-as-plain-number' = 'true');",
        ]
    # sql_script runs all INSERTs as one statement set (one job).
    statements += [f"INSERT INTO sink_{n} SELECT * FROM src_{n};" for n in range(len(topics))]
    read.write_text("\n".join(statements))
    _run_ok(read)
    parsed = {fmt: _json_rows(directory) for fmt, directory in outputs.items()}
    assert parsed["ticklake-avro"] == parsed["avro"]
    for row in rows:
        got = parsed["ticklake-avro"][row["k"]]
        assert got["s"] == row["s"] and got["sn"] == row["sn"]
        assert got["l"] == row["l"] and got["ln"] == row["ln"] and got["i"] == row["i"]
        assert got["b"] == row["b"] and got["bn"] == row["bn"]
        assert (None if got["by"] is None else b64decode(got["by"])) == row["by"]
        for column in ("p", "pn", "w", "c"):
            want = row[column]
            assert (None if got[column] is None else Decimal(got[column])) == want, column


def _json_rows(directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            for line in path.read_text(encoding="utf-8").splitlines():
                obj = json.loads(line, parse_float=Decimal)
                out[obj["k"]] = obj
    return out


def _run_sql_capturing(script: Path) -> subprocess.CompletedProcess[str]:
    """The SQL script job with its whole output (``run_local_job`` keeps only the end)."""
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    cmd = [str(flink_python(ctx)), "-m", "ticklake.jobs.sql_script", "--file", str(script),
           "--mode", "batch", "--parallelism", "1", "--no-catalog"]  # fmt: skip
    env = dict(os.environ) | job_environment(ctx)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _run_ok(script: Path) -> None:
    proc = _run_sql_capturing(script)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


def test_a_message_without_the_columns_fails_the_job_naming_the_column(
    conn: Connections, tmp_path: Path
) -> None:
    """A union branch the column does not have: the job fails and says which column, where."""
    topic = f"it.format.bad.{uuid.uuid4().hex[:8]}"
    ensure_topics(
        conn.kafka.bootstrap_servers,
        [replace(RAW_TRADES.renamed(topic), partitions=1)],
    )
    trade = Trade(
        exchange="BINANCE", symbol="BTC/USDT", exchange_ts_us=1_700_000_000_000_000,
        receipt_ts_us=1_700_000_000_000_100, ingestor_id="it", trade_id="1", side="buy",
        price=Decimal("1.5"), amount=Decimal("2"), request_id=None,
    )  # fmt: skip
    good = encode(trade)
    assert good[-1] == 0  # request_id: union branch 0, null
    bad = good[:-1] + b"\x04"  # zig-zag 2: a third branch, which ["null", string] has not
    producer = Producer({"bootstrap.servers": conn.kafka.bootstrap_servers})
    producer.produce(topic, key=b"BINANCE:BTC/USDT", value=bad)
    assert producer.flush(30) == 0
    from ticklake.schemas.flink import kafka_table_ddl

    src = kafka_table_ddl(Trade, "src", topic, bootstrap_servers=conn.kafka.bootstrap_servers,
                          options={"scan.bounded.mode": "latest-offset"})  # fmt: skip
    assert "'format' = 'ticklake-avro'" in src
    script = tmp_path / "bad.sql"
    script.write_text(
        src + ";\nCREATE TEMPORARY TABLE counted (n BIGINT) WITH ('connector' = 'blackhole');\n"
        "INSERT INTO counted SELECT COUNT(*) FROM src;\n"
    )
    proc = _run_sql_capturing(script)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        f"'ticklake-avro' could not decode column `request_id` at byte {len(good)} of a "
        f"{len(good)}-byte message: union branch 2" in output
    ), output[-3000:]


def test_a_column_the_format_cannot_encode_is_refused_when_planned(tmp_path: Path) -> None:
    script = tmp_path / "unsupported.sql"
    script.write_text(
        """CREATE TEMPORARY TABLE src (t TIMESTAMP(3)) WITH (
  'connector' = 'kafka', 'topic' = 'never-read', 'properties.bootstrap.servers' = 'unused:9',
  'scan.startup.mode' = 'earliest-offset', 'format' = 'ticklake-avro');
CREATE TEMPORARY TABLE counted (t TIMESTAMP(3)) WITH ('connector' = 'blackhole');
INSERT INTO counted SELECT * FROM src;
"""
    )
    proc = _run_sql_capturing(script)
    assert proc.returncode != 0
    assert "'ticklake-avro' has no encoding for column `t` TIMESTAMP(3)" in (
        proc.stdout + proc.stderr
    )
