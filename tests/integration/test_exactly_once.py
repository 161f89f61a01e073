"""Exactly-once across an abrupt cancel and a savepoint: no loss, no duplicate.

The dedup + OHLC job runs unbounded (streaming, 2 s checkpoints on MinIO) on the standalone
cluster. The tape (the end-to-end test's tape without its far-late trades, so that lateness
does not depend on where a restart lands: a restored job starts without a watermark) goes
in five parts:

1. part 1, then wait until a checkpoint covers it (the source commits its offsets on
   checkpoint completion);
2. part 2, and as soon as candles of it are in an open Kafka transaction, **cancel without
   a savepoint**; the retained checkpoint must be on MinIO;
3. part 3 while the job is down; **restart from the retained checkpoint** (``flink run -s``);
4. part 4, then **stop with a savepoint** (``cancel-job``); part 5 while the job is down;
   **restart from the savepoint**;
5. a far-future flush trade closes every window; wait until the expected candle count is
   committed.

Then Iceberg candles and read_committed Kafka candles must equal the pandas truth of the
whole tape, exactly (``tests/integration/test_dedup_ohlc.py`` computes it), and Iceberg
trades must hold each trade once. The read_uncommitted view shows what the transactions
kept out: records of aborted transactions, re-emitted after the restart.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tests.integration.test_dedup_ohlc import (
    BOUND_S,
    CANDLE_COLS,
    DAY,
    TIMEFRAMES,
    Tape,
    consume_to_end,
    first_arrivals_and_late,
    key,
    make_tape,
    produce,
    rows,
    truth_candles,
)
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.jobs.rest import FlinkRestClient
from ticklake.jobs.runner import submit_cluster_job
from ticklake.schemas import CANDLES, RAW_TRADES, Candle, Trade
from ticklake.schemas.serde import decode
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections
from ticklake.stack.manager import Stack

pytestmark = pytest.mark.timeout(1500)  # 2 shared cores: submissions take 1-2 min

MODULE = "ticklake.jobs.dedup_ohlc"
JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


def on_time_tape(seed: int) -> Tape:
    """The end-to-end tape without the trades it sends far behind the bound (every copy)."""
    tape = make_tape(seed)
    _, late, _ = first_arrivals_and_late(tape, BOUND_S * 1000)
    return Tape([t for t in tape.records if key(t) not in late], set())


def wait_until(
    what: str, condition: Callable[[], Any], timeout_s: float, every_s: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(every_s)


def read_all(conn: Connections, topic: str, isolation: str) -> list[Any]:
    """Every message of the topic visible at ``isolation`` (all partitions, to their ends)."""
    return consume_to_end(conn, topic, isolation)


def committed_offset(conn: Connections, group: str, topic: str) -> int:
    """The group's committed offset of partition 0 (-1 if none, or the broker is busy)."""
    consumer = Consumer({"bootstrap.servers": conn.kafka.bootstrap_servers, "group.id": group})
    try:
        return int(consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    except KafkaException:  # e.g. NOT_COORDINATOR while the group coordinator moves
        return -1
    finally:
        consumer.close()


def end_offset(conn: Connections, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": conn.kafka.bootstrap_servers, "group.id": "it-x"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


@dataclasses.dataclass
class Run:
    """One test run's topics, namespace, job arguments, the job running now, and timings."""

    conn: Connections
    stack: Stack
    raw: str
    candles: str
    namespace: str
    group: str
    args: list[str]
    job_id: str = ""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def rest(self) -> FlinkRestClient:
        return FlinkRestClient(self.conn.flink.rest_url)

    def produce(self, records: list[Trade]) -> None:
        produce(self.conn, self.raw, records)

    def running(self, output: str, t0: float, what: str) -> dict[str, Any]:
        """The job of ``flink run``'s output is RUNNING; returns its checkpoint overview."""
        match = JOB_ID.search(output)
        assert match, output[-4000:]
        self.job_id = match.group(1)
        self.rest.wait_for_state(self.job_id, {"RUNNING"}, timeout_s=180)
        self.timings[what] = time.monotonic() - t0
        return self.rest.checkpoints(self.job_id)

    def checkpointed_everything(self, timeout_s: float = 120) -> None:
        """Wait until a completed checkpoint covers every record produced so far (the
        source commits its offsets to the group when a checkpoint completes)."""
        end = end_offset(self.conn, self.raw)
        wait_until(
            f"source offsets committed up to {end}",
            lambda: committed_offset(self.conn, self.group, self.raw) >= end,
            timeout_s,
        )

    def iceberg_candles(self) -> pd.DataFrame:
        return load_catalog(self.conn).load_table(f"{self.namespace}.candles").scan().to_pandas()

    # -- the stages ----------------------------------------------------------------------

    def start(self) -> None:
        t0 = time.monotonic()
        out = submit_cluster_job(
            MODULE, self.args, rest_url=self.conn.flink.rest_url, detached=True, timeout_s=420
        )
        self.running(out, t0, "submit")
        config = self.rest._call("GET", f"/jobs/{self.job_id}/checkpoints/config")
        assert config["externalization"] == {"enabled": True, "delete_on_cancellation": False}

    def cancel_mid_stream(self, part: list[Trade]) -> str:
        """Produce ``part``; once its candles are in an open transaction, cancel (no
        savepoint). Returns the retained checkpoint, checked on MinIO."""
        before = len(read_all(self.conn, self.candles, "read_uncommitted"))
        self.produce(part)
        wait_until(
            "candles of the part written",
            lambda: len(read_all(self.conn, self.candles, "read_uncommitted")) > before,
            60,
            every_s=0.1,
        )
        self.rest.cancel(self.job_id)
        assert self.rest.wait_for_state(self.job_id, {"CANCELED"}, timeout_s=60) == "CANCELED"
        checkpoint = self.rest.checkpoints(self.job_id)["latest"]["completed"]
        path = str(checkpoint["external_path"])
        bucket = self.conn.s3.bucket
        prefix = f"s3://{bucket}/flink/checkpoints/{self.namespace}/{self.job_id}/chk-"
        assert path.startswith(prefix), checkpoint
        meta = path.removeprefix(f"s3://{bucket}/") + "/_metadata"
        s3 = self.stack.minio.s3_client()
        assert s3.head_object(Bucket=bucket, Key=meta)["ContentLength"] > 0  # retained
        return path

    def restart_from(self, path: str, what: str) -> None:
        t0 = time.monotonic()
        out = submit_cluster_job(
            MODULE,
            self.args,
            rest_url=self.conn.flink.rest_url,
            detached=True,
            savepoint=path,
            timeout_s=420,
        )
        self.running(out, t0, what)
        restored = wait_until(
            "restore reported",
            lambda: self.rest.checkpoints(self.job_id)["latest"]["restored"],
            60,
        )
        # Flink reports any restore given with ``-s`` as a savepoint restore: check the path.
        assert restored["external_path"] == path, restored

    def stop_with_savepoint(self) -> str:
        t0 = time.monotonic()
        path = self.rest.savepoint(self.job_id, cancel_job=True)
        assert self.rest.wait_for_state(self.job_id, {"CANCELED"}, timeout_s=60) == "CANCELED"
        assert path.startswith(f"s3://{self.conn.s3.bucket}/flink/savepoints/savepoint-")
        self.timings["savepoint"] = time.monotonic() - t0
        return path

    def flush(self, last: Trade, expected: int) -> Trade:
        """A trade three days after ``last`` closes every window; wait for the candles."""
        ts = last.exchange_ts_us + 3 * DAY
        flush = last.model_copy(
            update={"exchange_ts_us": ts, "receipt_ts_us": ts, "trade_id": "flush-1"}
        )
        self.produce([flush])
        t0 = time.monotonic()
        wait_until(
            f"{expected} candles committed to Iceberg",
            lambda: len(self.iceberg_candles()) >= expected,
            180,
            every_s=2,
        )
        self.timings["flush to last candle"] = time.monotonic() - t0
        return flush


@pytest.fixture
def run(flink_cluster: Stack, conn: Connections) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_TRADES, name=f"it.eo.raw.{tag}", partitions=1)
    candles = CANDLES.renamed(f"it.eo.candles.{tag}")
    late = RAW_TRADES.renamed(f"it.eo.late.{tag}")
    ensure_topics(conn.kafka.bootstrap_servers, [raw, candles, late])
    namespace = f"it_eo_{tag}"
    assert all(ensure_market_tables(load_catalog(conn), namespace).values())
    group = f"it-eo-{tag}"
    args = [
        "--raw-topic", raw.name,
        "--candles-topic", candles.name,
        "--late-topic", late.name,
        "--namespace", namespace,
        "--out-of-orderness", f"{BOUND_S}s",
        "--watermark-emit", "on-event",
        "--checkpoint-interval", "2s",
        "--checkpoint-dir", f"s3://{conn.s3.bucket}/flink/checkpoints/{namespace}",
        "--transactional-id-prefix", group,
        "--group-id", group,
    ]  # fmt: skip
    the_run = Run(conn, flink_cluster, raw.name, candles.name, namespace, group, args)
    try:
        yield the_run
    finally:
        rest = the_run.rest
        if the_run.job_id and rest.job(the_run.job_id)["state"] == "RUNNING":
            rest.cancel(the_run.job_id)
            rest.wait_for_state(the_run.job_id, {"CANCELED"}, timeout_s=60)


def test_cancel_and_savepoint_restarts_lose_and_duplicate_nothing(run: Run) -> None:
    conn = run.conn
    tape = on_time_tape(seed=7)
    firsts, late, margin_ms = first_arrivals_and_late(tape, BOUND_S * 1000)
    assert not late and margin_ms >= 1000  # nothing near the lateness edge
    want = truth_candles(firsts)
    n = len(tape.records)
    cuts = [0, n * 35 // 100, n * 50 // 100, n * 70 // 100, n * 80 // 100, n]
    parts = [tape.records[a:b] for a, b in itertools.pairwise(cuts)]

    run.start()
    run.produce(parts[0])
    run.checkpointed_everything()
    wait_until("first candles in Iceberg", lambda: len(run.iceberg_candles()) > 0, 60)
    checkpoint = run.cancel_mid_stream(parts[1])
    run.produce(parts[2])  # while the job is down
    run.restart_from(checkpoint, "restart from checkpoint")
    run.checkpointed_everything()
    run.produce(parts[3])
    savepoint = run.stop_with_savepoint()
    run.produce(parts[4])  # while the job is down
    run.restart_from(savepoint, "restart from savepoint")
    flush = run.flush(max(firsts, key=lambda t: t.exchange_ts_us), len(want))

    # Iceberg candles: the truth of the whole tape, no loss, no duplicate.
    want_rows = rows(want, CANDLE_COLS)
    got = rows(run.iceberg_candles(), CANDLE_COLS)
    missing, extra = want_rows - got, got - want_rows
    assert not missing and not extra, (
        f"iceberg: {len(missing)} missing {sorted(missing)[:3]}, "
        f"{len(extra)} unexpected {sorted(extra)[:3]}"
    )
    assert set(want["timeframe"]) == set(TIMEFRAMES)

    # Kafka candles as a read_committed consumer sees them: the same.
    committed = [decode(Candle, m.value()) for m in read_all(conn, run.candles, "read_committed")]
    got_kafka = rows(pd.DataFrame([c.model_dump() for c in committed]), CANDLE_COLS)
    assert got_kafka == want_rows, (
        f"kafka: {len(want_rows - got_kafka)} missing, {len(got_kafka - want_rows)} unexpected"
    )

    # Trades: each distinct trade once, as first received (the flush trade too).
    trades = load_catalog(conn).load_table(f"{run.namespace}.trades").scan().to_pandas()
    trade_cols = ["exchange", "symbol", "trade_id", "side", "price", "amount",
                  "exchange_ts_us", "receipt_ts_us", "ingestor_id"]  # fmt: skip
    want_trades = pd.DataFrame([t.model_dump() for t in [*firsts, flush]])
    assert rows(trades, trade_cols) == rows(want_trades, trade_cols)

    # What read_committed kept out: records of aborted transactions (copies of true candles).
    uncommitted = [decode(Candle, m.value())
                   for m in read_all(conn, run.candles, "read_uncommitted")]  # fmt: skip
    got_raw = rows(pd.DataFrame([c.model_dump() for c in uncommitted]), CANDLE_COLS)
    assert set(got_raw) == set(want_rows)
    aborted = sum((got_raw - want_rows).values())
    print(
        f"\n{n} records ({n - len(firsts)} duplicates), {len(want)} candles equal in Iceberg "
        f"and Kafka after a cancel and a savepoint; {aborted} aborted candle records in the "
        "read_uncommitted view; " + ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items())
    )
