"""Maintenance while a writer keeps appending: no row lost, none duplicated.

A thread appends candles with pyiceberg in a loop (one commit per "checkpoint", the way a
streaming job commits) to the same partitions and to new ones, while the main thread runs
compaction, snapshot expiry and orphan removal on the shared catalog (PostgreSQL + MinIO).
Afterwards the table must hold exactly the union of everything written.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

from tests.unit.test_catalog_query import MARKETS, candle_rows, to_arrow
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.maintenance import (
    append_rows,
    compact_table,
    expire_snapshots,
    remove_orphan_files,
)
from ticklake.catalog.tables import ensure_market_tables
from ticklake.settings import Connections

KEY = ("exchange", "symbol", "timeframe", "window_start_us", "open", "close", "volume")


def _keys(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[k] for k in KEY) for r in rows)


def test_compaction_and_expiry_while_a_writer_appends(conn: Connections) -> None:
    ns = f"it_maint_{uuid.uuid4().hex[:8]}"
    catalog = load_catalog(conn)
    ensure_market_tables(catalog, ns)
    table = catalog.load_table(f"{ns}.candles")
    written: list[dict[str, Any]] = []
    # Day 0: many small commits of two markets (what compaction is for).
    day0 = {m: candle_rows(m, 0, 24) for m in MARKETS[:2]}
    for i in range(0, 24, 3):
        batch = [r for m in MARKETS[:2] for r in day0[m][i : i + 3]]
        append_rows(table, to_arrow(table, batch))
        written += batch

    # The concurrent writer: more minutes of day 0 (same partitions) and day 1 (new ones).
    stop = threading.Event()
    errors: list[BaseException] = []
    extra = [r for m in MARKETS for r in candle_rows(m, 1, 40)] + [
        r for r in candle_rows(MARKETS[2], 0, 40)
    ]

    def writer() -> None:
        wtable = load_catalog(conn).load_table(f"{ns}.candles")
        try:
            for i in range(0, len(extra), 6):
                if stop.is_set():
                    break
                batch = extra[i : i + 6]
                append_rows(wtable, to_arrow(wtable, batch))
                written.extend(batch)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer, name="appender")
    thread.start()
    try:
        results = []
        for _ in range(3):
            results.append(compact_table(table, target_file_size=1 << 20, partitions_per_commit=1))
            expire_snapshots(table, older_than=timedelta(0), retain_last=2)
            # in-flight files of the writer are young: the safety age protects them
            remove_orphan_files(table, older_than=timedelta(minutes=10))
    finally:
        thread.join(timeout=600)
        stop.set()
    assert not thread.is_alive()
    assert errors == []
    assert sum(r.commits for r in results) >= 1

    # Once the writer is done, a final pass must converge: one file per partition.
    compact_table(table, target_file_size=1 << 20)
    expire_snapshots(table, older_than=timedelta(0), retain_last=1)
    orphans = remove_orphan_files(table, older_than=timedelta(0))
    table = load_catalog(conn).load_table(f"{ns}.candles")
    got = table.scan().to_arrow().to_pylist()
    assert len(got) == len(written) == 48 + len(extra)
    assert _keys(got) == _keys(written)  # same multiset: nothing lost, nothing duplicated
    partitions = {(t.file.partition[0], t.file.partition[2]) for t in table.scan().plan_files()}
    assert len(list(table.scan().plan_files())) == len(partitions)
    assert orphans.deleted == 0  # expiry already deleted what it unreferenced
