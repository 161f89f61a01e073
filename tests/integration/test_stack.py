"""Each part of the local stack and the seams between them, against the real services."""

from __future__ import annotations

import csv
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ticklake.catalog import load_catalog
from ticklake.jobs.runner import run_local_job, submit_cluster_job
from ticklake.settings import Connections
from ticklake.stack.manager import Stack


@pytest.fixture
def topic(conn: Connections) -> Iterator[str]:
    name = f"it.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": conn.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])


def consume_all(conn: Connections, topic: str, expected: int, timeout_s: float = 30) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "group.id": f"it-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(got) < expected:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF
            if msg.error() is None:
                got.append((msg.key(), msg.value()))
        # Give a surplus message (a bug) a moment to show up.
        extra = consumer.poll(1.0)
        if extra is not None and extra.error() is None:
            got.append((extra.key(), extra.value()))
    finally:
        consumer.close()
    return got


def test_status_shows_every_component_healthy(stack: Stack) -> None:
    rows = {r.name: r for r in stack.status()}
    for name in ("postgres", "minio", "kafka"):
        assert rows[name].state == "running", rows[name]
        assert rows[name].pids and rows[name].rss_mib > 0
    assert rows["flink"].state == "ready"
    assert str(stack.ctx.settings.kafka.port) in rows["kafka"].address


def test_up_again_is_idempotent(stack: Stack) -> None:
    before = {r.name: r.pids for r in stack.status()}
    t0 = time.monotonic()
    stack.up()
    elapsed = time.monotonic() - t0
    after = {r.name: r.pids for r in stack.status()}
    assert before == after  # nothing restarted
    print(f"warm `up` of a running stack: {elapsed:.2f}s")


def test_kafka_produce_and_consume_keyed(conn: Connections, topic: str) -> None:
    producer = Producer({"bootstrap.servers": conn.kafka.bootstrap_servers, "acks": "all"})
    sent = [(f"BINANCE:M{i % 3}/USDT".encode(), uuid.uuid4().bytes) for i in range(30)]
    errors: list[object] = []
    for key, value in sent:
        producer.produce(topic, key=key, value=value, on_delivery=lambda e, _m: errors.append(e))
    assert producer.flush(30) == 0
    assert errors == [None] * 30
    got = consume_all(conn, topic, expected=30)
    assert sorted(got) == sorted(sent)
    # Keyed by market: each key's messages keep their order (one partition per key).
    for key in {k for k, _ in sent}:
        assert [v for k, v in got if k == key] == [v for k, v in sent if k == key]


def test_kafka_transactions_read_committed(conn: Connections, topic: str) -> None:
    """The broker supports what Flink's exactly-once sink needs (a single-node txn log)."""
    producer = Producer(
        {
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "transactional.id": f"it-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": 3_600_000,  # Flink's default sink transaction timeout
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed")
    producer.commit_transaction(30)
    assert consume_all(conn, topic, expected=1) == [(b"k", b"committed")]


def test_s3_put_and_get(stack: Stack, conn: Connections) -> None:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=conn.s3.endpoint,
        aws_access_key_id=conn.s3.access_key,
        aws_secret_access_key=conn.s3.secret_key.get_secret_value(),
        region_name=conn.s3.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    body = random.randbytes(3 * 1024 * 1024 + 17)
    key = f"it/{uuid.uuid4().hex}"
    s3.put_object(Bucket=conn.s3.bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=conn.s3.bucket, Key=key)["Body"].read() == body
    assert s3.head_object(Bucket=conn.s3.bucket, Key=key)["ContentLength"] == len(body)


def make_trades(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, 22, 0)
    rows = []
    for i in range(n):
        rows.append(
            {
                "symbol": rng.choice(["BTC/USDT", "ETH/USDT", "SOL/USDT"]),
                "ts": start + timedelta(microseconds=rng.randrange(0, 4 * 3600 * 10**6)),
                "trade_id": f"{seed}-{i}",
                "price": Decimal(rng.randrange(1, 10**15)).scaleb(-8),
                "amount": Decimal(rng.randrange(1, 10**9)).scaleb(-8),
            }
        )
    return pd.DataFrame(rows)


def create_table(conn: Connections, identifier: str) -> None:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform, IdentityTransform
    from pyiceberg.types import DecimalType, NestedField, StringType, TimestampType

    catalog = load_catalog(conn)
    catalog.create_namespace_if_not_exists(identifier.split(".", maxsplit=1)[0])
    catalog.create_table(
        identifier,
        schema=Schema(
            NestedField(1, "symbol", StringType()),
            NestedField(2, "ts", TimestampType()),
            NestedField(3, "trade_id", StringType()),
            NestedField(4, "price", DecimalType(18, 8)),
            NestedField(5, "amount", DecimalType(18, 8)),
        ),
        partition_spec=PartitionSpec(
            PartitionField(2, 1000, DayTransform(), "ts_day"),
            PartitionField(1, 1001, IdentityTransform(), "symbol"),
        ),
    )


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        for r in df.itertuples():
            ts = r.ts.strftime("%Y-%m-%d %H:%M:%S.%f")
            writer.writerow([r.symbol, ts, r.trade_id, f"{r.price:f}", f"{r.amount:f}"])


def assert_table_equals(conn: Connections, identifier: str, want: pd.DataFrame) -> None:
    table = load_catalog(conn).load_table(identifier)
    got = table.scan().to_pandas().sort_values("trade_id").reset_index(drop=True)
    want = want.sort_values("trade_id").reset_index(drop=True)
    assert len(got) == len(want)
    assert list(got["trade_id"]) == list(want["trade_id"])
    assert list(got["symbol"]) == list(want["symbol"])
    # Exact decimals, microsecond timestamps: compared value by value.
    assert list(got["price"]) == list(want["price"])
    assert list(got["amount"]) == list(want["amount"])
    assert [t.to_pydatetime() for t in got["ts"]] == [t.to_pydatetime() for t in want["ts"]]
    # Hidden partitioning by day and market: one partition per (day, symbol) in the input.
    want_parts = {(t.date(), s) for t, s in zip(want["ts"], want["symbol"], strict=True)}
    parts = table.inspect.partitions().to_pylist()
    assert len(parts) == len(want_parts)
    assert sum(p["record_count"] for p in parts) == len(want)


def test_flink_sql_insert_into_iceberg_read_back_with_pyiceberg(
    conn: Connections, tmp_path: Path
) -> None:
    identifier = f"it_{uuid.uuid4().hex[:8]}.trades"
    create_table(conn, identifier)
    trades = make_trades(2000, seed=11)
    write_csv(trades, tmp_path / "trades.csv")
    run_local_job(
        "ticklake.jobs.catalog_roundtrip",
        ["--table", identifier, "--csv", str(tmp_path / "trades.csv")],
    )
    assert_table_equals(conn, identifier, trades)


def test_same_job_runs_on_the_standalone_cluster(
    flink_cluster: Stack, conn: Connections, tmp_path: Path
) -> None:
    rows = {r.name: r for r in flink_cluster.status()}
    assert rows["flink-cluster"].state == "running", rows["flink-cluster"]
    identifier = f"itc_{uuid.uuid4().hex[:8]}.trades"
    create_table(conn, identifier)
    trades = make_trades(700, seed=12)
    write_csv(trades, tmp_path / "trades.csv")
    out = submit_cluster_job(
        "ticklake.jobs.catalog_roundtrip",
        ["--table", identifier, "--csv", str(tmp_path / "trades.csv")],
        rest_url=conn.flink.rest_url,
    )
    assert "Job has been submitted with JobID" in out
    assert_table_equals(conn, identifier, trades)


def test_cluster_checkpoints_and_savepoints_land_on_minio(
    flink_cluster: Stack, conn: Connections, tmp_path: Path
) -> None:
    """The standalone cluster loads the S3 plugin: state goes to MinIO, not the local disk."""
    import re

    from ticklake.jobs.rest import FlinkRestClient

    script = tmp_path / "checkpointed.sql"
    script.write_text(
        "CREATE TEMPORARY TABLE gen (id BIGINT) WITH "
        "('connector' = 'datagen', 'rows-per-second' = '200');\n"
        "CREATE TEMPORARY TABLE sink (id BIGINT) WITH ('connector' = 'blackhole');\n"
        "INSERT INTO sink SELECT id FROM gen;\n"
    )
    out = submit_cluster_job(
        "ticklake.jobs.sql_script",
        ["--file", str(script), "--checkpoint-interval", "1s", "--no-catalog"],
        rest_url=conn.flink.rest_url,
        detached=True,
        timeout_s=180,
    )
    match = re.search(r"JobID ([0-9a-f]{32})", out)
    assert match, out
    job_id = match.group(1)
    rest = FlinkRestClient(conn.flink.rest_url)
    try:
        rest.wait_for_state(job_id, {"RUNNING"}, timeout_s=60)
        latest = rest.wait_for_checkpoint(job_id, timeout_s=90)
        bucket = conn.s3.bucket
        prefix = f"s3://{bucket}/flink/checkpoints/{job_id}/chk-"
        assert latest["external_path"].startswith(prefix), latest
        savepoint = rest.savepoint(job_id, cancel_job=True)
        assert savepoint.startswith(f"s3://{bucket}/flink/savepoints/savepoint-")
        assert rest.wait_for_state(job_id, {"CANCELED"}, timeout_s=60) == "CANCELED"
    finally:
        if rest.job(job_id)["state"] == "RUNNING":
            rest.cancel(job_id)
    s3 = flink_cluster.minio.s3_client()
    key = savepoint.removeprefix(f"s3://{bucket}/") + "/_metadata"
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0


def test_ensure_topics_racing_another_process_sees_the_partitions(conn: Connections) -> None:
    """Several processes start at once and each ensures the same fresh topics: whoever loses
    the create gets "already exists" while the broker's metadata may not list the
    partitions yet. Every caller must come back with the contract's count, never an error."""
    import threading

    from ticklake.schemas import RAW_TRADES
    from ticklake.schemas.topics import ensure_topics

    bootstrap = conn.kafka.bootstrap_servers
    run = uuid.uuid4().hex[:8]
    for round_ in range(10):
        specs = [RAW_TRADES.renamed(f"it.race.{run}.{round_}.{i}") for i in range(3)]
        barrier = threading.Barrier(4)
        results: list[object] = []

        def ensure(barrier: threading.Barrier, specs: list[Any], results: list[object]) -> None:
            barrier.wait()
            try:
                results.append(ensure_topics(bootstrap, specs))
            except Exception as exc:  # collected: the test fails on any
                results.append(exc)

        threads = [
            threading.Thread(target=ensure, args=(barrier, specs, results)) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors
        created = [r for r in results if isinstance(r, dict)]
        assert len(created) == 4
        for spec in specs:  # exactly one caller created each topic
            assert sum(bool(r[spec.name]) for r in created) == 1, created


def test_kafka_storage_formats_with_any_cluster_id(tmp_path: Path) -> None:
    """The real storage tool formats a directory whose cluster id starts with ``-`` (about
    one random id in 64 did; the tool took it for an option), and new ids never do."""
    from ticklake.stack.components.kafka import KafkaComponent, new_cluster_id
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings(home=tmp_path, cache=StackSettings().cache))
    kafka = KafkaComponent(ctx)
    ctx.data_dir("kafka").mkdir(parents=True)
    (ctx.data_dir("kafka") / "cluster.id").write_text("-E7S3QFHTnmNNo1DWJb-xw\n")
    kafka.configure()
    meta = (kafka.log_dirs / "meta.properties").read_text()
    assert "cluster.id=-E7S3QFHTnmNNo1DWJb-xw" in meta
    assert not [c for c in (new_cluster_id() for _ in range(5000)) if c.startswith("-")]
