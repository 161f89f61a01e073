"""Flink reads the wire format: records produced with our serde, read by Flink SQL.

Trades go to a fresh Kafka topic through ``ticklake.schemas.serde``; a bounded Flink SQL job on
the embedded MiniCluster reads the topic with ``'format' = 'avro'`` (the DDL of
docs/wire-format.md) and writes CSV; the CSV must equal the produced trades exactly. The
other message types make the same trip through DDL generated from their schemas.
"""

from __future__ import annotations

import base64
import csv
import json
import random
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tests.unit.test_schemas import P_MAX, P_MIN, T0, doc_raw_trades_ddl, sample_records
from ticklake.jobs.runner import run_local_job
from ticklake.schemas import MODELS, PRODUCER_CONFIG, RAW_TRADES, TOPICS, Trade, WireModel
from ticklake.schemas.flink import flink_columns, kafka_table_ddl
from ticklake.schemas.models import MAX_TS_US, MIN_TS_US
from ticklake.schemas.serde import encode, schema_header
from ticklake.schemas.topics import TopicSpec, ensure_topics
from ticklake.settings import Connections

EPOCH = datetime(1970, 1, 1)
NULL = r"\N"


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's Java default partitioner (murmur2), written from its source, independently."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    for i in range(len(key) // 4):
        k = int.from_bytes(key[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[len(key) & ~3 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def make_trades(n: int, seed: int) -> list[Trade]:
    """Random exact trades: every decimal scale, the extremes, shared timestamps, many markets."""
    rng = random.Random(seed)
    markets = [
        ("BINANCE", "BTC/USDT"),
        ("BINANCE", "ETH/USDT"),
        ("BINANCE", "1000SATS/USDT"),
        ("COINBASE", "BTC/USD"),
        ("KRAKEN", "XBT/EUR"),
        ("OKX", "SOL/USDT"),
    ]

    def decimal() -> Decimal:
        scale = rng.randrange(0, 9)
        return Decimal(rng.randrange(1, 10 ** (10 + scale))).scaleb(-scale)

    extremes = [(P_MIN, P_MIN), (P_MIN, P_MAX), (P_MAX, P_MIN), (P_MAX, P_MAX)]
    odd_ids = ["a,b", 'quote"d', "semi;colon", "ünï-code", "  spaced  ", "--dash"]
    trades: list[Trade] = []
    ts = T0
    while len(trades) < n:
        ts += rng.randrange(0, 2_000_000)
        for _ in range(rng.randrange(1, 5)):  # several trades share one timestamp
            i = len(trades)
            exchange, symbol = rng.choice(markets)
            price, amount = extremes[i] if i < len(extremes) else (decimal(), decimal())
            exchange_ts = {4: MIN_TS_US, 5: MAX_TS_US}.get(i, ts)
            trades.append(
                Trade(
                    exchange=exchange,
                    symbol=symbol,
                    exchange_ts_us=exchange_ts,
                    receipt_ts_us=min(exchange_ts + rng.randrange(0, 500_000), MAX_TS_US),
                    ingestor_id=rng.choice(["it-ingestor-1", "it-ingestor-2"]),
                    trade_id=odd_ids[i % len(odd_ids)] if i % 50 == 7 else f"{seed}-{i}",
                    side=rng.choice(["buy", "sell", "unknown"]),
                    price=price,
                    amount=amount,
                    request_id=f"req-{i}" if rng.random() < 0.2 else None,
                )
            )
    trades = trades[:n]
    return trades + rng.sample(trades, 10)  # the same trade twice, as from two ingestors


def produce(conn: Connections, topic: str, records: list[WireModel], spec: TopicSpec[Any]) -> dict:
    """Produce through the serde; returns the partition of each record's key."""
    producer = Producer(
        {"bootstrap.servers": conn.kafka.bootstrap_servers, "acks": "all"} | PRODUCER_CONFIG
    )
    errors: list[object] = []
    partitions: dict[bytes, set[int]] = {}

    def delivered(err: object, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            partitions.setdefault(msg.key(), set()).add(msg.partition())

    for record in records:
        producer.produce(
            topic,
            key=spec.key(record),
            value=encode(record),
            headers=[schema_header(type(record))],
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []
    return partitions


def read_csv(directory: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            with path.open(newline="", encoding="utf-8") as fh:
                rows.extend(csv.reader(fh))
    return rows


def _dec(text: str, scale: int) -> Decimal:
    value = Decimal(text)
    with localcontext() as ctx:
        ctx.prec = 60
        assert value == value.quantize(Decimal(1).scaleb(-scale)), text
    return value


def utc(us: int, digits: int) -> str:
    text = (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[: len(text) - 6 + digits]


def test_flink_sql_reads_trades_exactly(conn: Connections, tmp_path: Path) -> None:
    topic = f"it.wire.trades.{uuid.uuid4().hex[:10]}"
    spec = RAW_TRADES.renamed(topic)
    bootstrap = conn.kafka.bootstrap_servers
    assert ensure_topics(bootstrap, [spec]) == {topic: True}
    assert ensure_topics(bootstrap, [spec]) == {topic: False}  # idempotent

    trades = make_trades(400, seed=21)
    t0 = time.monotonic()
    partitions = produce(conn, topic, list(trades), spec)
    produce_s = time.monotonic() - t0
    # Keyed by market: one partition per market, the one a Java producer would pick.
    for key, parts in partitions.items():
        assert parts == {murmur2_partition(key, spec.partitions)}, key

    ddl = doc_raw_trades_ddl()
    assert f"'topic' = '{RAW_TRADES.name}'" in ddl
    ddl = ddl.replace(f"'topic' = '{RAW_TRADES.name}'", f"'topic' = '{topic}'")
    out = tmp_path / "trades-csv"
    script = tmp_path / "trades.sql"
    script.write_text(
        f"""
-- the raw-trades table of docs/wire-format.md, read in batch mode
SET 'table.local-time-zone' = 'UTC';
{ddl}
CREATE TEMPORARY TABLE trades_csv (
  exchange STRING, symbol STRING, exchange_ts_us BIGINT, receipt_ts_us BIGINT,
  ingestor_id STRING, trade_id STRING, side STRING, price DECIMAL(18, 8),
  amount DECIMAL(18, 8), request_id STRING, kafka_partition INT,
  event_time STRING, exchange_time STRING, notional DECIMAL(36, 16)
) WITH (
  'connector' = 'filesystem',
  'path' = '${{OUT}}',
  'format' = 'csv',
  'csv.null-literal' = '{NULL}',
  'csv.write-bigdecimal-in-scientific-notation' = 'false'
);
INSERT INTO trades_csv
SELECT exchange, symbol, exchange_ts_us, receipt_ts_us, ingestor_id, trade_id, side,
       price, amount, request_id, kafka_partition,
       CAST(event_time AS STRING),
       CAST(TICKLAKE_MICROS_TO_LTZ(exchange_ts_us) AS STRING),  -- ticklake's Java function
       price * amount  -- DECIMAL(18, 8) x DECIMAL(18, 8) = DECIMAL(36, 16), exact
FROM raw_trades;
"""
    )
    t0 = time.monotonic()
    run_local_job(
        "ticklake.jobs.sql_script",
        ["--file", str(script), "--mode", "batch", "--parallelism", "1", "--var", f"OUT={out}"],
    )
    job_s = time.monotonic() - t0

    with localcontext() as ctx:
        ctx.prec = 60  # Python's default 28 digits would round the 36-digit products
        want = Counter(
            (
                t.exchange,
                t.symbol,
                str(t.exchange_ts_us),
                str(t.receipt_ts_us),
                t.ingestor_id,
                t.trade_id,
                t.side,
                t.price,
                t.amount,
                NULL if t.request_id is None else t.request_id,
                str(murmur2_partition(spec.key(t), spec.partitions)),
                utc(t.exchange_ts_us // 1000 * 1000, 3),
                utc(t.exchange_ts_us, 6),
                t.price * t.amount,
            )
            for t in trades
        )
    rows = read_csv(out)
    # Flink's CSV writer strips trailing zeros (1.50000000 -> 1.5): compare decimals as
    # exact Decimal values, and check they never need more places than the column has.
    got = Counter((*r[:7], _dec(r[7], 8), _dec(r[8], 8), *r[9:13], _dec(r[13], 16)) for r in rows)
    assert len(rows) == len(trades)
    missing, extra = want - got, got - want
    for label, rows_ in (("missing", missing), ("unexpected", extra)):
        for row in list(rows_)[:3]:
            print(f"{label}: {row!r}")
    assert not missing and not extra, f"{len(missing)} rows missing, {len(extra)} unexpected"
    print(
        f"\n{len(trades)} trades ({len({t.market for t in trades})} markets, "
        f"{sum(len(encode(t)) for t in trades)} bytes) produced in {produce_s:.2f}s; "
        f"Flink SQL job read them back exactly in {job_s:.1f}s"
    )


def _from_json(model: type[WireModel], obj: dict[str, Any]) -> WireModel:
    """A record from Flink's JSON output (parsed with ``parse_float=Decimal``).

    BYTES come base64-encoded; decimals as plain numbers with trailing zeros stripped, so
    ``3010.00000000`` arrives as the JSON integer ``3010``.
    """
    for field in model.avro_schema()["fields"]:
        name, value = field["name"], obj[field["name"]]
        avro = field["type"][1] if isinstance(field["type"], list) else field["type"]
        if value is None:
            continue
        if isinstance(avro, dict) and avro.get("logicalType") == "decimal":
            assert isinstance(value, int | Decimal), (name, value)
            obj[name] = Decimal(value)
        elif avro == "bytes":
            obj[name] = base64.b64decode(value)
    return model.model_validate(obj)


def test_flink_sql_reads_every_other_message_type(conn: Connections, tmp_path: Path) -> None:
    """Nullable unions, booleans, ints, bytes and wide decimals, as Flink derives them."""
    samples = sample_records()
    specs = {spec.model: spec for spec in TOPICS}
    statements = ["SET 'table.local-time-zone' = 'UTC';"]
    outputs: dict[type[WireModel], Path] = {}
    for model in MODELS:
        if model is Trade:
            continue
        name = model.avro_name
        spec = specs[model].renamed(f"it.wire.{name}.{uuid.uuid4().hex[:8]}")
        ensure_topics(conn.kafka.bootstrap_servers, [spec])
        produce(conn, spec.name, samples[model], spec)
        outputs[model] = tmp_path / name
        columns = ",\n  ".join(flink_columns(model))
        statements += [
            kafka_table_ddl(
                model,
                f"src_{name}",
                spec.name,
                options={"scan.bounded.mode": "latest-offset"},
            )
            + ";",
            f"CREATE TEMPORARY TABLE out_{name} (\n  {columns}\n) WITH (\n"
            f"  'connector' = 'filesystem', 'path' = '{outputs[model]}', 'format' = 'json',\n"
            "  'json.encode.decimal-as-plain-number' = 'true'\n);",
            f"INSERT INTO out_{name} SELECT * FROM src_{name};",
        ]
    script = tmp_path / "all.sql"
    script.write_text("\n".join(statements) + "\n")
    t0 = time.monotonic()
    run_local_job(
        "ticklake.jobs.sql_script",
        ["--file", str(script), "--mode", "batch", "--parallelism", "1"],
    )
    job_s = time.monotonic() - t0
    total = 0
    for model, directory in outputs.items():
        lines = [
            line
            for path in sorted(directory.rglob("*"))
            if path.is_file() and not path.name.startswith(".")
            for line in path.read_text(encoding="utf-8").splitlines()
        ]
        got = [_from_json(model, json.loads(line, parse_float=Decimal)) for line in lines]
        want = samples[model]
        assert Counter(map(repr, got)) == Counter(map(repr, want)), model.__name__
        total += len(got)
    print(f"\n{total} records of {len(outputs)} message types read back by Flink in {job_s:.1f}s")
