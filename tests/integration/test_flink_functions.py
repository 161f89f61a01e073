"""ticklake's Java Flink SQL functions (jobs/java/) on the MiniCluster, against Python.

The jar is built by the stack's set-up and reaches the job through the same classpath as
the connectors; ``ticklake.jobs.sql_script`` registers the functions like every job does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tests.integration.test_wire_format import read_csv
from ticklake.jobs.functions import FUNCTIONS
from ticklake.jobs.runner import run_local_job

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Epoch microseconds around the edges: 0, before 1970 (floor division), whole seconds,
#: the last microsecond of a second and of a millisecond, far past and far future.
MICROS = [
    0, 1, -1, 999, 1_000, -999, -1_000, -1_001, 999_999, 1_000_000, -1_000_000, -1_000_001,
    1_700_000_000_123_456, 1_700_000_000_999_999, 1_700_000_001_000_000, 946_684_800_000_000,
    4_102_444_799_999_999, -2_208_988_800_000_001,
]  # fmt: skip


def _utc(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _run_batch(tmp_path: Path, columns: str, select: str) -> list[list[str]]:
    """Run ``INSERT INTO out_csv <select>`` in batch on the MiniCluster; the CSV rows."""
    out = tmp_path / "out"
    script = tmp_path / "functions.sql"
    script.write_text(
        f"""
SET 'table.local-time-zone' = 'UTC';
CREATE TEMPORARY TABLE out_csv ({columns}) WITH (
  'connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv'
);
INSERT INTO out_csv
{select};
"""
    )
    run_local_job(
        "ticklake.jobs.sql_script",
        ["--file", str(script), "--mode", "batch", "--parallelism", "1", "--no-catalog"],
        timeout_s=300,
    )
    return read_csv(out)


def test_micros_to_ltz_is_exact_to_the_microsecond(tmp_path: Path) -> None:
    assert "TICKLAKE_MICROS_TO_LTZ" in FUNCTIONS
    values = ", ".join(f"({us}, CAST({us} AS BIGINT))" for us in MICROS)
    got = _run_batch(
        tmp_path,
        "us BIGINT, ts STRING, is_null BOOLEAN",
        "SELECT id, CAST(TICKLAKE_MICROS_TO_LTZ(us) AS STRING),\n"
        "  TICKLAKE_MICROS_TO_LTZ(us) IS NULL\n"
        f"FROM (VALUES {values}, (-7, CAST(NULL AS BIGINT))) AS v(id, us)",
    )
    rows = {int(us): (ts, is_null) for us, ts, is_null in got}
    want = {us: (_utc(us), "false") for us in MICROS} | {-7: ("", "true")}
    assert rows == want


#: (exchange_ts_us, trade_id, price): short, exact-width and over-long ids and times,
#: non-ASCII ids (LPAD counts characters), zero, negative, tiny and the largest prices.
KEY_CASES = [
    (1_700_000_000_123_456, "1", "1000.00000000"),
    (1_700_000_000_123_456, "", "0.00000001"),
    (0, "a" * 32, "0"),
    (1, "b" * 40, "-12.5"),
    (-5, "x-1", "-0.00000001"),
    (99_999_999_999_999_999, "id with spaces", "9999999999.99999999"),
    (1_700_000_000_000_000, "été-7", "42.10000000"),
    (1_700_000_000_000_000, "é" * 33, "-9999999999.99999999"),
    (123, "0" * 31 + "9", "100"),
]


def test_ohlc_key_equals_the_sql_it_replaces(tmp_path: Path) -> None:
    """TICKLAKE_OHLC_KEY against CONCAT/LPAD/CAST, both evaluated by Flink on the same rows."""
    assert "TICKLAKE_OHLC_KEY" in FUNCTIONS

    def lit(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    values = ", ".join(
        f"({i}, CAST({ts} AS BIGINT), {lit(tid)}, CAST({price} AS DECIMAL(18, 8)))"
        for i, (ts, tid, price) in enumerate(KEY_CASES)
    )
    got = _run_batch(
        tmp_path,
        "i INT, java STRING, builtin STRING",
        f"""SELECT i, TICKLAKE_OHLC_KEY(ts, tid, price),
  CONCAT(LPAD(CAST(ts AS STRING), 20, '0'), LPAD(tid, 32, '0'), CAST(price AS STRING))
FROM (VALUES {values}, (-1, CAST(NULL AS BIGINT), 'n', CAST(1 AS DECIMAL(18, 8))))
  AS v(i, ts, tid, price)""",
    )
    rows = {int(i): (java, builtin) for i, java, builtin in got}
    assert set(rows) == {*range(len(KEY_CASES)), -1}
    assert rows[-1] == ("", "")  # NULL in, NULL out (the CSV writes NULL as empty)
    for i, (ts, tid, price) in enumerate(KEY_CASES):
        java, builtin = rows[i]
        assert java == builtin, (ts, tid, price)
        # and the layout the jobs parse back: 20 + 32 characters, then the price
        assert java[20:52] == (tid[:32] if len(tid) >= 32 else tid.rjust(32, "0"))
        assert Decimal(java[52:]) == Decimal(price)
