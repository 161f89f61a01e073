"""The stack's end-to-end round trip: every part and every seam between them, for real.

1. Kafka: produce a keyed message and consume it back (confluent-kafka).
2. MinIO: put an S3 object and get it back (boto3).
3. Iceberg: create a partitioned table with pyiceberg in the shared catalog, write rows into it
   with a Flink SQL INSERT on the embedded MiniCluster through the same catalog (Flink jars,
   JDBC catalog, S3FileIO), read them back with pyiceberg and compare them with the rows that
   were generated here, decimal for decimal.
"""

from __future__ import annotations

import csv
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from ticklake.errors import StackError
from ticklake.jobs.runner import run_local_job
from ticklake.settings import Connections

if TYPE_CHECKING:
    from collections.abc import Callable

    from ticklake.stack.manager import Stack


@dataclass(frozen=True)
class SmokeRow:
    symbol: str
    ts: datetime
    trade_id: str
    price: Decimal
    amount: Decimal


@dataclass
class SmokeReport:
    checks: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, name: str, detail: str, seconds: float) -> None:
        self.checks.append((name, detail, seconds))

    def table(self) -> Table:
        table = Table(title="ticklake round trip")
        table.add_column("check")
        table.add_column("result")
        table.add_column("seconds", justify="right")
        for name, detail, secs in self.checks:
            table.add_row(name, detail, f"{secs:.2f}")
        return table


def generate_rows(n: int, seed: int = 7) -> list[SmokeRow]:
    """Random trades with exact decimals across two markets and two days."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, 23, 30, tzinfo=UTC)
    rows = []
    for i in range(n):
        symbol = rng.choice(["BTC/USDT", "ETH/USDT"])
        ts = start + timedelta(microseconds=rng.randrange(0, 3_600_000_000))
        price = Decimal(rng.randrange(1, 10**13)).scaleb(-8)  # up to 99999.99999999
        amount = Decimal(rng.randrange(1, 10**10)).scaleb(-8)
        rows.append(SmokeRow(symbol, ts, f"t{i}", price, amount))
    return rows


def check_kafka(conn: Connections) -> str:
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"ticklake.smoke.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": conn.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )
    try:
        delivered: list[str] = []
        producer = Producer(
            {"bootstrap.servers": conn.kafka.bootstrap_servers, "enable.idempotence": True}
        )
        payload = uuid.uuid4().hex.encode()

        def on_delivery(error: object, _msg: object) -> None:
            delivered.append("ok" if error is None else str(error))

        producer.produce(topic, key=b"BINANCE:BTC/USDT", value=payload, on_delivery=on_delivery)
        if producer.flush(30) != 0 or delivered != ["ok"]:
            raise StackError(f"Kafka did not acknowledge the smoke message: {delivered}")
        consumer = Consumer(
            {
                "bootstrap.servers": conn.kafka.bootstrap_servers,
                "group.id": f"smoke-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    raise KafkaException(msg.error())
                if msg.value() == payload and msg.key() == b"BINANCE:BTC/USDT":
                    return f"produced and consumed 1 message on {topic}"
            raise StackError("the smoke message did not come back from Kafka within 30 s")
        finally:
            consumer.close()
    finally:
        admin.delete_topics([topic])


def check_s3(stack: Stack) -> str:
    client = stack.minio.s3_client()
    bucket = stack.ctx.settings.minio.buckets[0]
    key = f"smoke/{uuid.uuid4().hex}.bin"
    body = random.randbytes(256 * 1024)
    client.put_object(Bucket=bucket, Key=key, Body=body)
    got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.delete_object(Bucket=bucket, Key=key)
    if got != body:
        raise StackError("MinIO returned different bytes than were put")
    return f"put and got 256 KiB at s3://{bucket}/{key}"


def create_smoke_table(conn: Connections, identifier: str) -> None:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform, IdentityTransform
    from pyiceberg.types import DecimalType, NestedField, StringType, TimestampType

    from ticklake.catalog import load_catalog

    catalog = load_catalog(conn)
    namespace = identifier.split(".", maxsplit=1)[0]
    catalog.create_namespace_if_not_exists(namespace)
    schema = Schema(
        NestedField(1, "symbol", StringType(), required=False),
        NestedField(2, "ts", TimestampType(), required=False),
        NestedField(3, "trade_id", StringType(), required=False),
        NestedField(4, "price", DecimalType(18, 8), required=False),
        NestedField(5, "amount", DecimalType(18, 8), required=False),
    )
    spec = PartitionSpec(
        PartitionField(2, 1000, DayTransform(), "ts_day"),
        PartitionField(1, 1001, IdentityTransform(), "symbol"),
    )
    catalog.create_table(identifier, schema=schema, partition_spec=spec)


def read_back(conn: Connections, identifier: str) -> list[SmokeRow]:
    from ticklake.catalog import load_catalog

    table = load_catalog(conn).load_table(identifier).scan().to_arrow()
    return [
        SmokeRow(r["symbol"], r["ts"].replace(tzinfo=UTC), r["trade_id"], r["price"], r["amount"])
        for r in table.to_pylist()
    ]


def check_iceberg_via_flink(conn: Connections, rows: list[SmokeRow], workdir: Path) -> str:
    namespace = f"smoke_{uuid.uuid4().hex[:8]}"
    identifier = f"{namespace}.trades"
    create_smoke_table(conn, identifier)
    csv_path = workdir / "rows.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        for r in rows:
            ts = r.ts.strftime("%Y-%m-%d %H:%M:%S.%f")
            writer.writerow([r.symbol, ts, r.trade_id, f"{r.price:f}", f"{r.amount:f}"])
    run_local_job(
        "ticklake.jobs.catalog_roundtrip", ["--table", identifier, "--csv", str(csv_path)]
    )
    got = sorted(read_back(conn, identifier), key=lambda r: r.trade_id)
    want = sorted(rows, key=lambda r: r.trade_id)
    if got != want:
        missing = len({r.trade_id for r in want} - {r.trade_id for r in got})
        raise StackError(
            f"Iceberg rows written by Flink differ from the input ({len(got)} read, "
            f"{len(want)} written, {missing} missing)"
        )
    from ticklake.catalog import load_catalog

    catalog = load_catalog(conn)
    files = len(list(catalog.load_table(identifier).scan().plan_files()))
    catalog.drop_table(identifier)
    catalog.drop_namespace(namespace)
    return (
        f"Flink wrote {len(got)} rows into {files} files of {identifier}; "
        "pyiceberg read all back exactly"
    )


def run_smoke(
    stack: Stack, rows: int = 1000, progress: Callable[[str], None] | None = None
) -> SmokeReport:
    say = progress or (lambda _m: None)
    conn = Connections.load()
    report = SmokeReport()
    t0 = time.monotonic()
    say("kafka: produce and consume")
    report.add("Kafka (KRaft)", check_kafka(conn), time.monotonic() - t0)
    t0 = time.monotonic()
    say("minio: put and get an object")
    report.add("MinIO (S3)", check_s3(stack), time.monotonic() - t0)
    t0 = time.monotonic()
    say(f"iceberg: Flink SQL INSERT of {rows} rows on the MiniCluster, read with pyiceberg")
    with tempfile.TemporaryDirectory(prefix="ticklake-smoke-") as tmp:
        detail = check_iceberg_via_flink(conn, generate_rows(rows), Path(tmp))
    report.add("Flink -> Iceberg -> pyiceberg", detail, time.monotonic() - t0)
    return report
