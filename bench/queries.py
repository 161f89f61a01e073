"""Query figures of the candles table, before and after ``maintain``, vs plain Parquet.

A month of 1m candles for 50 markets is written with pyiceberg into the candles table of a
namespace of its own, in many small appends (one commit per ``--hours-per-append`` hours of
all markets, like a streaming job's checkpoints). Then, before and after maintenance
(compaction + snapshot expiry), it times: one market for one day, all markets for one hour,
a full scan, and counts the data files each query plans (opens). The same rows as plain
Parquet files (one per day, local disk) read by DuckDB are the practical limit. Each figure
is the median of ``--runs`` runs with min and max. Starts its own stack (free ports).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table

DAY_US = 86_400_000_000
MIN_US = 60_000_000
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _markets(n: int) -> list[tuple[str, str]]:
    return [("BENCH", f"C{i:03d}/USDT") for i in range(n)]


def _chunk(schema: Any, markets: list[tuple[str, str]], start_min: int, minutes: int) -> Any:
    """Candles of every market for ``minutes`` minutes from minute ``start_min`` of T0."""
    import numpy as np
    import pyarrow as pa

    t0_us = int(T0.timestamp()) * 1_000_000
    n_m = len(markets)
    mins = np.arange(start_min, start_min + minutes, dtype=np.int64)
    ws = np.tile(t0_us + mins * MIN_US, n_m)
    idx = np.repeat(np.arange(n_m), minutes)
    price = 1000 + (np.tile(mins, n_m) * 7 + idx * 131) % 997  # deterministic, integer

    def dec(values: Any, scale: int, precision: int) -> Any:
        return (
            pa.array(values.astype(np.int64), pa.int64())
            .cast(pa.decimal128(38, 0))
            .cast(pa.decimal128(precision, scale))
        )

    n = len(ws)
    cols = {
        "exchange": pa.array([markets[i][0] for i in idx]),
        "symbol": pa.array([markets[i][1] for i in idx]),
        "timeframe": pa.array(["1m"] * n),
        "window_start": pa.array(ws, pa.timestamp("us", tz="UTC")),
        "window_start_us": pa.array(ws),
        "window_end_us": pa.array(ws + MIN_US),
        "open": dec(price, 8, 18),
        "high": dec(price + 3, 8, 18),
        "low": dec(price - 3, 8, 18),
        "close": dec(price + 1, 8, 18),
        "volume": dec(idx + 1, 8, 38),
        "quote_volume": dec(price * (idx + 1), 16, 38),
        "trade_count": pa.array(idx + 1),
        "vwap": dec(price, 8, 18),
        "exchange_ts_us": pa.array(ws + MIN_US - 1),
        "receipt_ts_us": pa.array(ws + MIN_US),
        "ingestor_id": pa.array(["bench"] * n),
        "final": pa.array([True] * n),
        "version": pa.array(idx + 1),
    }
    return pa.table(cols).cast(schema)


def _timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def _fmt(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} ({min(times):.3f}, {max(times):.3f})"


def measure(  # noqa: PLR0917
    catalog: Any, ns: str, parquet_dir: Path, markets: list[tuple[str, str]], days: int, runs: int
) -> dict[str, tuple[str, str]]:
    """{query: (median (min, max) seconds, files planned)} for Iceberg and plain Parquet."""
    import duckdb

    from ticklake.catalog.query import market_scan

    table = catalog.load_table(f"{ns}.candles")
    mid = T0 + timedelta(days=days // 2)
    one = f"{markets[len(markets) // 2][0]}:{markets[len(markets) // 2][1]}"
    every = [f"{e}:{s}" for e, s in markets]
    out: dict[str, tuple[str, str]] = {}

    def iceberg(name: str, make_scan: Callable[[], Any]) -> None:
        files = len(list(make_scan().plan_files()))
        times, res = _timed(lambda: make_scan().to_arrow(), runs)
        out[f"iceberg: {name}"] = (_fmt(times), f"{files} files, {res.num_rows} rows")

    iceberg(
        "one market, one day",
        lambda: market_scan(table, one, mid, mid + timedelta(days=1), timeframe="1m"),
    )
    iceberg(
        "all markets, one hour",
        lambda: market_scan(table, every, mid, mid + timedelta(hours=1), timeframe="1m"),
    )
    iceberg("full scan", table.scan)

    db = duckdb.connect()
    glob = str(parquet_dir / "*.parquet")
    lo = int(mid.timestamp()) * 1_000_000
    symbol = markets[len(markets) // 2][1]
    sqls = {
        "one market, one day": f"symbol = '{symbol}' AND window_start_us >= {lo} "
        f"AND window_start_us < {lo + DAY_US}",
        "all markets, one hour": f"window_start_us >= {lo} "
        f"AND window_start_us < {lo + 3_600_000_000}",
        "full scan": "TRUE",
    }
    n_files = len(list(parquet_dir.glob("*.parquet")))
    for name, where in sqls.items():
        q = f"SELECT * FROM read_parquet('{glob}') WHERE {where}"

        def duck(q: str = q) -> Any:
            return db.sql(q).to_arrow_table()

        times, res = _timed(duck, runs)
        out[f"plain Parquet + DuckDB: {name}"] = (
            _fmt(times), f"{n_files} in glob, {res.num_rows} rows"
        )  # fmt: skip
    return out


def run(markets_n: int = 50, days: int = 30, hours_per_append: int = 6, runs: int = 3) -> Table:
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    from ticklake.bench.stack_up import scratch_stack
    from ticklake.catalog.connection import load_catalog
    from ticklake.catalog.maintenance import append_rows, compact_table, expire_snapshots
    from ticklake.catalog.tables import ensure_market_tables
    from ticklake.settings import Connections
    from ticklake.stack.manager import Stack

    markets = _markets(markets_n)
    result = Table(title=f"candles: {days} days x {markets_n} markets of 1m, median (min, max) s")
    for col in ("measure", "seconds", "files / rows"):
        result.add_column(col)
    with scratch_stack(), tempfile.TemporaryDirectory() as tmp:
        stack = Stack()
        stack.up()
        try:
            catalog = load_catalog(Connections.load())
            ns = f"bench_{uuid.uuid4().hex[:8]}"
            ensure_market_tables(catalog, ns)
            table = catalog.load_table(f"{ns}.candles")
            schema = schema_to_pyarrow(table.schema(), include_field_ids=False)
            parquet_dir = Path(tmp)
            t = time.perf_counter()
            step = hours_per_append * 60
            appends = 0
            for day in range(days):
                for start in range(day * 1440, (day + 1) * 1440, step):
                    append_rows(table, _chunk(schema, markets, start, step))
                    appends += 1
                day_file = parquet_dir / f"day-{day:02d}.parquet"
                pq.write_table(_chunk(schema, markets, day * 1440, 1440), day_file,
                               compression="zstd")  # fmt: skip
            result.add_row(
                "write (appends)", f"{time.perf_counter() - t:.1f}", f"{appends} commits"
            )
            for k, (s, f) in measure(catalog, ns, parquet_dir, markets, days, runs).items():
                result.add_row(f"before maintain, {k}", s, f)
            table = catalog.load_table(f"{ns}.candles")
            t = time.perf_counter()
            comp = compact_table(table, partitions_per_commit=64)
            exp = expire_snapshots(table, older_than=timedelta(0))
            result.add_row("maintain (compact + expire)", f"{time.perf_counter() - t:.1f}",
                           f"{comp.files_before} -> {comp.files_after} files, {comp.commits} "
                           f"commits, {exp.snapshots_expired} snapshots expired")  # fmt: skip
            for k, (s, f) in measure(catalog, ns, parquet_dir, markets, days, runs).items():
                if k.startswith("iceberg"):
                    result.add_row(f"after maintain, {k}", s, f)
        finally:
            stack.down()
    return result
