"""Schema evolution of the market tables: a column added later, old data still reads."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.types import StringType

from tests.unit.test_catalog_query import NS, candle_rows, to_arrow
from ticklake.catalog.maintenance import append_rows
from ticklake.catalog.tables import ensure_market_tables


def test_added_column_reads_null_for_old_rows_and_values_for_new(tmp_path: Path) -> None:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    ensure_market_tables(catalog, NS)
    table = catalog.load_table(f"{NS}.candles")
    old = candle_rows("BINANCE:BTC/USDT", 0, 20)
    append_rows(table, to_arrow(table, old))
    schema_before = table.schema().schema_id

    with table.update_schema() as update:
        update.add_column("venue_session", StringType(), doc="added in a later release")
    table = catalog.load_table(f"{NS}.candles")
    assert table.schema().schema_id != schema_before
    assert ensure_market_tables(catalog, NS) == {
        f"{NS}.trades": False, f"{NS}.candles": False, f"{NS}.late_trades": False,
    }  # fmt: skip

    new = [dict(r, venue_session="regular") for r in candle_rows("BINANCE:BTC/USDT", 1, 10)]
    append_rows(table, to_arrow(table, new))

    got = catalog.load_table(f"{NS}.candles").scan().to_pandas().sort_values("window_start_us")
    assert len(got) == len(old) + len(new)
    # Old files were written before the column existed: they read it as null, not an error.
    assert got["venue_session"].iloc[: len(old)].isna().all()
    assert (got["venue_session"].iloc[len(old) :] == "regular").all()
    # And the old rows' values are intact, decimal for decimal.
    assert list(got["open"].iloc[: len(old)]) == [r["open"] for r in old]
    # Time travel to the snapshot before the change still reads the old schema.
    first = table.history()[0].snapshot_id
    past = catalog.load_table(f"{NS}.candles").scan(snapshot_id=first).to_arrow()
    assert "venue_session" not in past.column_names
    assert past.num_rows == len(old)
