"""ticklake's patched Iceberg ``PartitionKeySelector`` (``jobs/java/patches``) on a real JVM.

The Flink job environment's interpreter starts a real gateway JVM with the jobs' classpath
(``job_environment``) and, through py4j, checks which jar the class loads from and what its
keys are. The truth is Iceberg's own partition path (``PartitionKey.toPath()``, what the
original selector returns), computed in the same JVM: two rows must get the same key
exactly when Iceberg puts them in the same partition. ``TICKLAKE_JAVA_PATCHES=off`` must
give Iceberg's own class back.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ticklake.catalog.tables import TABLES, TRADES
from ticklake.stack.components.flink import PATCHES_ENV, flink_python, job_environment
from ticklake.stack.context import StackContext
from ticklake.stack.settings import StackSettings

#: (exchange, symbol, exchange_ts_us): one day's edges (the last microsecond before
#: midnight, midnight), before 1970, markets with '/', '=', '%', spaces, non-ASCII, an empty
#: symbol, a symbol that is another's prefix, and NULLs in every partition source column.
DAY_US = 86_400_000_000
T0 = 20_000 * DAY_US  # 2024-10-04 00:00 UTC
CASES: list[tuple[str | None, str | None, int | None]] = [
    ("BINANCE", "BTC/USDT", T0),
    ("BINANCE", "BTC/USDT", T0 + 1),
    ("BINANCE", "BTC/USDT", T0 + DAY_US - 1),
    ("BINANCE", "BTC/USDT", T0 + DAY_US),
    ("BINANCE", "BTC/USDT", T0 - 1),
    ("BINANCE", "BTC/USDTX", T0),
    ("BINANCE", "BTC/USD", T0),
    ("BINANCEX", "BTC/USDT", T0),
    ("KRAKEN", "BTC/USDT", T0 + 5),
    ("KRAKEN", "a=b/c%2F d", T0),
    ("KRAKEN", "a=b/c%2F d", T0 + 7),
    ("KRAKEN", "été/¥", T0),
    ("KRAKEN", "", T0),
    ("KRAKEN", "s1:x", T0),
    ("", "s1:x", T0),
    ("BINANCE", "ETH/USDT", -1),
    ("BINANCE", "ETH/USDT", -DAY_US),
    ("BINANCE", "ETH/USDT", -DAY_US - 1),
    ("BINANCE", "ETH/USDT", 0),
    (None, "BTC/USDT", T0),
    ("BINANCE", None, T0),
    ("BINANCE", "BTC/USDT", None),
    (None, None, None),
    (None, None, None),
]

SCRIPT = r"""
import json, sys
from pyflink.java_gateway import get_gateway

jvm = get_gateway().jvm
ice = jvm.org.apache.iceberg
spec_in = json.loads(sys.argv[1])
cls = jvm.java.lang.Class.forName("org.apache.iceberg.flink.sink.PartitionKeySelector")
location = cls.getProtectionDomain().getCodeSource().getLocation().toString()
schema = ice.SchemaParser.fromJson(spec_in["schema"])
spec = ice.PartitionSpecParser.fromJson(schema, spec_in["spec"])
row_type = ice.flink.FlinkSchemaUtil.convert(schema)
selector = ice.flink.sink.PartitionKeySelector(spec, schema, row_type)
truth = ice.PartitionKey(spec, schema)
wrapper = ice.flink.RowDataWrapper(row_type, schema.asStruct())
names = [f["name"] for f in json.loads(spec_in["schema"])["fields"]]
data = jvm.org.apache.flink.table.data
out = []
for case in spec_in["rows"]:
    row = data.GenericRowData(len(names))
    for name, value in case.items():
        if value is None:
            continue
        pos = names.index(name)
        if name.endswith("_us"):
            row.setField(pos, jvm.java.lang.Long(value))
        elif name == "exchange_ts":
            millis, micros = divmod(value, 1000)
            row.setField(pos, data.TimestampData.fromEpochMillis(millis, micros * 1000))
        else:
            row.setField(pos, data.StringData.fromString(value))
    key = selector.getKey(row)
    truth.partition(wrapper.wrap(row))
    out.append([key, truth.toPath()])
print(json.dumps({"location": location, "pairs": out}))
"""


def _iceberg_json() -> tuple[str, str]:
    """The trades table's schema and partition spec as Iceberg's JSON (pyiceberg's models)."""
    table = next(t for t in TABLES if t.name == TRADES)
    schema = table.schema()
    return schema.model_dump_json(), table.partition_spec().model_dump_json()


def _run(tmp_path: Path) -> dict[str, object]:
    schema, spec = _iceberg_json()
    rows = [
        {"exchange": e, "symbol": s, "exchange_ts": us, "exchange_ts_us": us} for e, s, us in CASES
    ]
    script = tmp_path / "partition_keys.py"
    script.write_text(SCRIPT)
    ctx = StackContext(StackSettings())
    env = dict(os.environ) | job_environment(ctx)  # reads PATCHES_ENV from os.environ
    proc = subprocess.run(
        [str(flink_python(ctx)), str(script),
         json.dumps({"schema": schema, "spec": spec, "rows": rows})],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _same_partition_same_key(pairs: list[list[str]]) -> None:
    for i, (key_i, path_i) in enumerate(pairs):
        for key_j, path_j in pairs[i + 1 :]:
            assert (key_i == key_j) == (path_i == path_j), (key_i, path_i, key_j, path_j)


def test_the_patched_selector_loads_and_keys_rows_by_their_iceberg_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PATCHES_ENV, "on")
    got = _run(tmp_path)
    assert str(got["location"]).endswith("/ticklake-patches.jar"), got["location"]
    pairs = got["pairs"]
    assert isinstance(pairs, list)
    assert len(pairs) == len(CASES)
    _same_partition_same_key(pairs)
    # Not Iceberg's paths: the patch's own keys (no URL encoding, no formatted day).
    assert all(key != path for key, path in pairs)
    # The cases cover several partitions that differ only in one column each.
    assert len({path for _key, path in pairs}) >= 15


def test_patches_off_gives_icebergs_own_selector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PATCHES_ENV, "off")
    got = _run(tmp_path)
    assert "iceberg-flink-runtime" in str(got["location"]), got["location"]
    pairs = got["pairs"]
    assert isinstance(pairs, list)
    assert all(key == path for key, path in pairs)
