"""`maintain` while the Flink job keeps appending: no row lost, none duplicated."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from tests.integration.test_dedup_ohlc import produce
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.maintenance import compact_table, expire_snapshots
from ticklake.catalog.tables import ensure_market_tables
from ticklake.schemas import CANDLES, RAW_TRADES, Trade
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections
from ticklake.stack.components.flink import flink_python, job_environment
from ticklake.stack.manager import Stack

T0 = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z in microseconds


def batch(b: int, size: int) -> list[Trade]:
    """Trades of batch ``b``: distinct ids, exact prices, one market per parity."""
    out = []
    for i in range(size):
        n = b * size + i
        out.append(
            Trade(
                exchange="BINANCE",
                symbol="BTC/USDT" if n % 2 else "ETH/USDT",
                exchange_ts_us=T0 + n * 250_000,
                receipt_ts_us=T0 + n * 250_000 + 900,
                ingestor_id="it-maintain",
                trade_id=str(10_000 + n),
                side="buy" if n % 3 else "sell",
                price=Decimal(100_000 + n * 7).scaleb(-2),
                amount=Decimal(n % 97 + 1).scaleb(-4),
            )
        )
    return out


def wait_for(what: str, check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_maintain_while_the_flink_job_appends(
    stack: Stack, conn: Connections, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_TRADES, name=f"it.maint.raw.{run}", partitions=1)
    candles = CANDLES.renamed(f"it.maint.candles.{run}")
    late = RAW_TRADES.renamed(f"it.maint.late.{run}")
    ensure_topics(conn.kafka.bootstrap_servers, [raw, candles, late])
    namespace = f"it_maint_{run}"
    catalog = load_catalog(conn)
    ensure_market_tables(catalog, namespace)
    ident = f"{namespace}.trades"

    args = [
        "--raw-topic", raw.name, "--candles-topic", candles.name, "--late-topic", late.name,
        "--namespace", namespace, "--checkpoint-interval", "2s",
        "--checkpoint-dir", f"file://{tmp_path}/chk", "--out-of-orderness", "30s",
        "--transactional-id-prefix", f"it-maint-{run}", "--group-id", f"it-maint-{run}",
    ]  # fmt: skip
    env = dict(os.environ) | job_environment(stack.ctx)
    log = (tmp_path / "job.log").open("w")
    job = subprocess.Popen(
        [str(flink_python(stack.ctx)), "-m", "ticklake.jobs.dedup_ohlc", *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        sent: list[Trade] = []

        def iceberg_rows() -> int:
            return len(catalog.load_table(ident).scan(selected_fields=("trade_id",)).to_arrow())

        # Batches arrive while the job commits every checkpoint: many small files.
        for b in range(6):
            trades = batch(b, 150)
            produce(conn, raw.name, trades)
            sent += trades
            expected = len(sent)
            wait_for(f"batch {b} in Iceberg", lambda n=expected: iceberg_rows() >= n, 240)
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            if b in (2, 4):
                # Maintenance runs while the job keeps appending (the next batch is already
                # being produced by then for b=4 below).
                table = catalog.load_table(ident)
                result = compact_table(table)
                assert result.files_after <= result.files_before
                expire_snapshots(catalog.load_table(ident), older_than=timedelta(0))
        # One more batch produced and maintenance at once: compaction races the job's commit.
        trades = batch(6, 150)
        produce(conn, raw.name, trades)
        sent += trades
        compact_table(catalog.load_table(ident))
        wait_for("last batch in Iceberg", lambda: iceberg_rows() >= len(sent), 240)
        time.sleep(5)  # a duplicate, if any, would be committed by the next checkpoint
        got = catalog.load_table(ident).scan().to_arrow().to_pylist()
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(10)
        log.close()

    assert sorted(r["trade_id"] for r in got) == sorted(t.trade_id for t in sent)
    by_id = {t.trade_id: t for t in sent}
    for row in got:
        want = by_id[row["trade_id"]]
        assert (row["price"], row["amount"], row["symbol"]) == (
            want.price,
            want.amount,
            want.symbol,
        )
    files = len(list(catalog.load_table(ident).scan().plan_files()))
    print(f"\n{len(sent)} trades in 7 batches, maintained twice mid-stream; {files} files now")
