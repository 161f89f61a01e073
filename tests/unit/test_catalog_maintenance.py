"""Compaction, snapshot expiry and orphan removal on a SQLite catalog with a local warehouse."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pyiceberg.catalog.sql import SqlCatalog

from tests.unit.test_catalog_query import MARKETS, candle_rows, to_arrow
from ticklake.catalog import maintenance, query
from ticklake.catalog.cli import maintain_command
from ticklake.catalog.maintenance import (
    MaintenanceError,
    append_rows,
    compact_table,
    expire_snapshots,
    parse_duration,
    parse_size,
    remove_orphan_files,
)
from ticklake.catalog.tables import ensure_market_tables

NS = "mnt"
KEY = ("exchange", "symbol", "timeframe", "window_start_us")


def _rows(table: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in table.scan().to_arrow().to_pylist())


@pytest.fixture
def table(tmp_path: Path) -> Any:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    ensure_market_tables(cat, NS)
    tbl = cat.load_table(f"{NS}.candles")
    # Streaming-like: every "checkpoint" appends 5 minutes of two markets over two days.
    for day in range(2):
        rows = {m: candle_rows(m, day, 30) for m in MARKETS[:2]}
        for i in range(0, 30, 5):
            batch = [r for m in MARKETS[:2] for r in rows[m][i : i + 5]]
            append_rows(tbl, to_arrow(tbl, batch))
    tbl.refresh()
    return tbl


def test_compaction_rewrites_small_files_and_keeps_every_row(table: Any) -> None:
    before = _rows(table)
    assert len(list(table.scan().plan_files())) == 24  # 2 days x 2 markets x 6 appends
    plan = compact_table(table, target_file_size=1 << 20, dry_run=True)
    assert (plan.partitions, plan.files_before, plan.commits) == (4, 24, 0)
    assert len(list(table.scan().plan_files())) == 24
    res = compact_table(table, target_file_size=1 << 20, partitions_per_commit=3)
    assert (res.partitions, res.files_before, res.files_after, res.commits) == (4, 24, 4, 2)
    assert res.rows == len(before) == 120
    table.refresh()
    tasks = list(table.scan().plan_files())
    assert len(tasks) == 4
    assert _rows(table) == before
    # compacted files are sorted by the table's sort order (time)
    data = table.scan(row_filter="symbol == 'BTC/USDT'").to_arrow()
    assert data.column("window_start_us").to_pylist() == sorted(
        data.column("window_start_us").to_pylist()
    )
    # nothing left to do
    assert compact_table(table, target_file_size=1 << 20).partitions == 0


def test_expiry_and_orphans_keep_the_table_readable(table: Any, tmp_path: Path) -> None:
    before = _rows(table)
    compact_table(table, target_file_size=1 << 20)
    table.refresh()
    n_snapshots = len(table.metadata.snapshots)
    old_snapshot = table.metadata.snapshots[0].snapshot_id
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    files_before = sum(len(f) for _, _, f in os.walk(data_dir))
    assert files_before == 28

    kept = expire_snapshots(table, older_than=timedelta(days=7))
    assert kept.snapshots_expired == 0
    res = expire_snapshots(table, older_than=timedelta(0), retain_last=1)
    assert res.snapshots_expired == n_snapshots - 1 and res.files_deleted > 24
    table.refresh()
    assert _rows(table) == before
    assert sum(len(f) for _, _, f in os.walk(data_dir)) == 4  # the 24 small files are gone
    with pytest.raises(query.NoDataError, match="no snapshot"):
        query.read_candles(MARKETS[0], "1m", *_range(), snapshot_id=old_snapshot,
                           namespace=NS, catalog=table.catalog)  # fmt: skip

    stray = data_dir / "stray-from-a-crashed-writer.parquet"
    stray.write_bytes(b"PAR1junk")
    young = remove_orphan_files(table, older_than=timedelta(hours=1))
    assert young.orphans == [] and stray.exists()
    old = time.time() - 7200
    os.utime(stray, (old, old))
    dry = remove_orphan_files(table, older_than=timedelta(hours=1), dry_run=True)
    assert [p.rsplit("/", 1)[-1] for p in dry.orphans] == [stray.name] and stray.exists()
    done = remove_orphan_files(table, older_than=timedelta(hours=1))
    assert done.deleted == 1 and not stray.exists()
    assert _rows(table) == before


def _range() -> tuple[Any, Any]:
    from tests.unit.test_catalog_query import T0

    return T0, T0 + timedelta(days=2)


def test_maintain_command_dry_run(table: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(query, "open_catalog", lambda conn=None: table.catalog)
    res = CliRunner().invoke(
        maintain_command,
        ["--namespace", NS, "--table", "candles", "--dry-run", "--target-file-size", "1MiB"],
    )
    assert res.exit_code == 0, res.output
    assert "mnt.candles: would compact 4 partitions, 24 -> 0 files" in res.output
    res = CliRunner().invoke(maintain_command, ["--namespace", NS, "--table", "nope"])
    assert res.exit_code == query.UnknownTableError.exit_code
    res = CliRunner().invoke(maintain_command, ["--namespace", NS, "--retention", "7 days"])
    assert res.exit_code == MaintenanceError.exit_code and "malformed duration" in res.output


def test_parsing() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_size("128MiB") == parse_size("128m") == 128 << 20
    assert parse_size("1048576") == 1 << 20
    with pytest.raises(MaintenanceError):
        parse_size("lots")
    assert maintenance.market_table_names() == ["trades", "candles", "late_trades"]
