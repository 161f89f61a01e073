"""The dedup + OHLC job without Flink: settings, generated SQL, and the market tables."""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from ticklake.catalog.tables import (
    CANDLE_COLUMNS,
    TABLE_PROPERTIES,
    TABLES,
    ensure_market_tables,
)
from ticklake.jobs import dedup_ohlc, ohlc_sql
from ticklake.jobs.dedup_ohlc import DedupOhlcSettings, main, parse_duration, plan
from ticklake.jobs.functions import FUNCTIONS
from ticklake.schemas import Candle, Trade, WireModel
from ticklake.schemas.flink import flink_columns
from ticklake.settings import Connections

CONN = Connections(
    catalog={"password": "pg-secret-xyz"},  # type: ignore[arg-type]
    s3={"secret_key": "s3-secret-xyz"},  # type: ignore[arg-type]
)


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = DedupOhlcSettings()
    assert s.timeframes == ("1m", "5m", "15m", "1h", "1d")
    assert s.out_of_orderness == timedelta(seconds=5)
    monkeypatch.setenv("TICKLAKE_DEDUP_OHLC_TIMEFRAMES", "1h,1m")
    monkeypatch.setenv("TICKLAKE_DEDUP_OHLC_DEDUP_TTL", "6h")
    s = DedupOhlcSettings()
    assert s.timeframes == ("1m", "1h")  # sorted by length
    assert s.dedup_ttl == timedelta(hours=6)


@pytest.mark.parametrize(
    ("text", "want"),
    [("500ms", timedelta(milliseconds=500)), ("5s", timedelta(seconds=5)),
     ("2min", timedelta(minutes=2)), ("2m", timedelta(minutes=2)), ("1d", timedelta(days=1))],
)  # fmt: skip
def test_parse_duration(text: str, want: timedelta) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize(
    "bad",
    [
        {"timeframes": "1w"},
        {"timeframes": "7m"},  # does not divide a day
        {"timeframes": "2d"},
        {"timeframes": "1m,1m"},
        {"timeframes": ""},
        {"dedup_ttl": "5s", "out_of_orderness": "10s"},
        {"transaction_timeout": "3h"},
        {"checkpoint_interval": "20min"},
        {"parallelism": 0},
    ],
)
def test_settings_reject(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DedupOhlcSettings(**bad)  # type: ignore[arg-type]


def test_timeframes_and_intervals() -> None:
    assert ohlc_sql.timeframe_seconds("15m") == 900
    assert ohlc_sql.interval_sql("1d") == "INTERVAL '1' DAY"
    assert ohlc_sql.millis_interval_sql(5_000) == "INTERVAL '0 00:00:05.000' DAY TO SECOND(3)"
    assert ohlc_sql.millis_interval_sql(90_061_001) == (
        "INTERVAL '1 01:01:01.001' DAY TO SECOND(3)"
    )


def test_order_key_layout_matches_the_documented_positions() -> None:
    key = ohlc_sql.order_key_sql()
    assert key == "TICKLAKE_OHLC_KEY(`exchange_ts_us`, `trade_id`, `price`)"
    assert "TICKLAKE_OHLC_KEY" in FUNCTIONS
    assert (ohlc_sql.TS_WIDTH, ohlc_sql.ID_WIDTH) == (20, 32)  # OhlcOrderKey.java's widths
    assert ohlc_sql.PRICE_POS == 53
    assert "SUBSTRING(k FROM 53)" in ohlc_sql.key_price_sql("k")
    assert "SUBSTRING(k FROM 1 FOR 20)" in ohlc_sql.key_ts_sql("k")


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql)


def test_plan_deduplicates_in_the_source_by_default_or_with_sql() -> None:
    ttl = "3600000 ms"
    default = _squash(plan(DedupOhlcSettings(namespace="ns1"), CONN).script())
    assert "'connector' = 'ticklake-kafka-dedup'" in default
    assert "'dedup.key' = 'exchange;symbol;trade_id'" in default
    assert f"'dedup.ttl' = '{ttl}'" in default
    assert "ROW_NUMBER" not in default
    assert "CREATE TEMPORARY VIEW trades_dedup AS SELECT `exchange`," in default
    assert "FROM raw_trades" in default
    bounded = _squash(plan(DedupOhlcSettings(bounded=True), CONN).script())
    assert "'dedup.ttl' = '0 ms'" in bounded  # the whole run

    sql = _squash(plan(DedupOhlcSettings(namespace="ns1", dedup="sql"), CONN).script())
    assert "ticklake-kafka-dedup" not in sql and "dedup." not in sql
    assert "'connector' = 'kafka'" in sql
    assert "ROW_NUMBER() OVER" in sql
    args = dedup_ohlc.parser().parse_args(["--dedup", "sql"])
    assert DedupOhlcSettings(**dedup_ohlc._overrides(args)).dedup == "sql"
    assert DedupOhlcSettings().dedup == "fingerprints"
    options = dataclasses.replace(DedupOhlcSettings().sql_options(CONN), dedup="bloom")
    with pytest.raises(ValueError, match="dedup 'bloom' is not one of fingerprints, sql"):
        ohlc_sql.source_options(options)


def test_plan_has_the_dedup_pattern_one_statement_set_and_no_python_udfs() -> None:
    sql = plan(DedupOhlcSettings(namespace="ns1", bounded=True, live=False, dedup="sql"), CONN)
    text = _squash(sql.script())
    assert (
        "ROW_NUMBER() OVER ( PARTITION BY `exchange`, `symbol`, `trade_id` "
        "ORDER BY `proc_time` ASC) AS row_num" in text
    )
    assert "WHERE row_num = 1" in text
    assert "CURRENT_WATERMARK(`event_time`)" in text
    assert "FIRST_VALUE" not in text and "LAST_VALUE" not in text
    assert "TEMPORARY FUNCTION" not in text.upper()
    assert len(sql.inserts) == 5
    targets = [re.match(r"INSERT INTO (\S+)", i).group(1) for i in sql.inserts]  # type: ignore[union-attr]
    assert targets == [
        "candles_kafka",
        "`ticklake`.`ns1`.`candles`",
        "`ticklake`.`ns1`.`trades`",
        "late_trades_kafka",
        "`ticklake`.`ns1`.`late_trades`",
    ]
    assert "'scan.bounded.mode' = 'latest-offset'" in text
    assert sql.config["table.local-time-zone"] == "UTC"
    assert sql.config["table.exec.state.ttl"] == "0 ms"  # bounded: keys kept for the run
    for tf in ("5m", "15m", "1h", "1d"):
        assert f"'{tf}' AS `timeframe`" in text
    assert "DESCRIPTOR(bar_time), INTERVAL '15' MINUTE" in text


def test_kafka_sinks_are_exactly_once_keyed_and_in_the_schema_layout() -> None:
    sql = plan(DedupOhlcSettings(transactional_id_prefix="p1"), CONN)
    ddl = {re.search(r"CREATE TEMPORARY TABLE (\w+)", s).group(1): s  # type: ignore[union-attr]
           for s in sql.setup if "CREATE TEMPORARY TABLE" in s}  # fmt: skip
    sinks: list[tuple[str, type[WireModel], str]] = [
        ("candles_kafka", Candle, "candles"), ("late_trades_kafka", Trade, "late")]  # fmt: skip
    for table, model, suffix in sinks:
        text = ddl[table]
        # Physical columns in schema order, then the key column (excluded from the value).
        for column in flink_columns(model):
            assert column in text
        assert "'value.fields-include' = 'EXCEPT_KEY'" in text
        assert "'key.fields' = 'market'" in text
        assert "'sink.delivery-guarantee' = 'exactly-once'" in text
        assert f"'sink.transactional-id-prefix' = 'p1-{suffix}'" in text
        assert "'properties.transaction.timeout.ms' = '900000'" in text
        assert "'format'" not in text
    assert "'scan.watermark.emit.strategy' = 'on-periodic'" in ddl["raw_trades"]


def test_print_sql_masks_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKLAKE_CATALOG__PASSWORD", "pg-secret-xyz")
    monkeypatch.setenv("TICKLAKE_S3__SECRET_KEY", "s3-secret-xyz")
    main(["--print-sql", "--timeframes", "1m,1h"])
    out = capsys.readouterr().out
    assert "secret-xyz" not in out
    assert "'jdbc.password' = '**********'" in out
    assert "INSERT INTO candles_kafka" in out


def test_print_sql_masks_only_the_secret_values(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password equal to names in the SQL (the local stack's is ``ticklake``) masks the
    option value only: the catalog and the relay connector stay readable."""
    monkeypatch.setenv("TICKLAKE_CATALOG__PASSWORD", "ticklake")
    monkeypatch.setenv("TICKLAKE_S3__SECRET_KEY", "it's-s3")
    main(["--print-sql", "--live-relay", "tcp://127.0.0.1:5557"])
    out = capsys.readouterr().out
    assert "'jdbc.password' = '**********'" in out
    assert "'s3.secret-access-key' = '**********'" in out and "it''s-s3" not in out
    assert "'connector' = 'ticklake-relay'" in out and "INSERT INTO `ticklake`." in out


def test_iceberg_candle_columns_match_the_insert() -> None:
    assert [n for n, _ in CANDLE_COLUMNS] == ohlc_sql.ICEBERG_CANDLE_COLUMNS
    trades = next(t for t in TABLES if t.name == "trades")
    assert trades.column_names() == ohlc_sql.ICEBERG_TRADE_COLUMNS


def test_market_tables_created_once_with_partitioning_and_sort(tmp_path: Path) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "ticklake", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=tmp_path.as_uri()
    )
    assert ensure_market_tables(catalog, "mkt") == {
        "mkt.trades": True,
        "mkt.candles": True,
        "mkt.late_trades": True,
    }
    assert set(ensure_market_tables(catalog, "mkt").values()) == {False}
    # An older table: one managed property missing, one set by hand. The next ensure adds
    # the missing one and keeps the hand-set value.
    trades = catalog.load_table("mkt.trades")
    with trades.transaction() as tx:
        tx.remove_properties("write.parquet.dict-size-bytes")
        tx.set_properties({"write.target-file-size-bytes": "1048576"})
    assert "write.parquet.dict-size-bytes" not in catalog.load_table("mkt.trades").properties
    assert set(ensure_market_tables(catalog, "mkt").values()) == {False}
    props = catalog.load_table("mkt.trades").properties
    assert (
        props["write.parquet.dict-size-bytes"] == TABLE_PROPERTIES["write.parquet.dict-size-bytes"]
    )
    assert props["write.target-file-size-bytes"] == "1048576"
    candles = catalog.load_table("mkt.candles")
    fields = [(f.name, str(f.transform)) for f in candles.spec().fields]
    assert fields == [
        ("window_start_day", "day"),
        ("exchange", "identity"),
        ("symbol", "identity"),
    ]
    schema = candles.schema()
    sort = [schema.find_field(f.source_id).name for f in candles.sort_order().fields]
    assert sort == ["window_start", "timeframe"]
    for key, value in TABLE_PROPERTIES.items():
        assert candles.properties[key] == value
    assert str(schema.find_field("quote_volume").field_type) == "decimal(38, 16)"
    assert str(catalog.load_table("mkt.trades").schema().find_field("exchange_ts").field_type) == (
        "timestamptz"
    )


def _ddls(settings: DedupOhlcSettings) -> dict[str, str]:
    sql = plan(settings, CONN)
    return {re.search(r"CREATE TEMPORARY TABLE (\w+)", s).group(1): s  # type: ignore[union-attr]
            for s in sql.setup if "CREATE TEMPORARY TABLE" in s}  # fmt: skip


def test_live_outputs_are_at_least_once_and_upsert_keyed_per_candle() -> None:
    settings = DedupOhlcSettings(
        timeframes="1m,1h",  # type: ignore[arg-type]
        live_trades_topic="lt",
        live_candles_topic="lc",
        live_linger="3ms",  # type: ignore[arg-type]
    )
    sql = plan(settings, CONN)
    ddl = _ddls(settings)
    trades, candles = ddl["live_trades_kafka"], ddl["live_candles_kafka"]
    for text in (trades, candles):
        assert "'sink.delivery-guarantee' = 'at-least-once'" in text
        assert "transactional-id-prefix" not in text and "transaction.timeout" not in text
        assert "'properties.linger.ms' = '3'" in text
        assert "'key.format' = 'raw'" in text and "'value.format' = 'ticklake-avro'" in text
        assert "'format'" not in text and "scan.startup.mode" not in text
    assert "'connector' = 'kafka'" in trades and "'topic' = 'lt'" in trades
    assert "'key.fields' = 'market'" in trades
    assert "'connector' = 'upsert-kafka'" in candles and "'topic' = 'lc'" in candles
    assert "PRIMARY KEY (`candle_key`) NOT ENFORCED" in candles
    assert "key.fields" not in candles  # upsert-kafka keys by the primary key
    for column in flink_columns(Candle):
        assert column in candles
    targets = [re.match(r"INSERT INTO (\S+)", i).group(1) for i in sql.inserts]  # type: ignore[union-attr]
    assert targets[5:] == ["live_trades_kafka"] + ["live_candles_kafka"] * 3
    assert "table.exec.sink.upsert-materialize" not in sql.config  # none needed (docs)
    assert sql.config["execution.buffer-timeout.interval"] == "10 ms"


def test_live_candles_sql_forming_per_timeframe_then_final() -> None:
    settings = DedupOhlcSettings(timeframes="1m,1h", live_conflation="0ms")  # type: ignore[arg-type]
    sql = plan(settings, CONN)
    assert not any("live_slices" in s for s in sql.setup)
    live = [_squash(i) for i in sql.inserts if i.startswith("INSERT INTO live_candles_kafka")]
    assert len(live) == 3  # one per timeframe (a UNION ALL would lose the upsert key), finals
    m1, h1, final = live
    for text, size, ttl in [(m1, 60000000, 120), (h1, 3600000000, 7200)]:
        # Grouped by the sink's primary key alone: update-afters only, no tombstones.
        assert text.count("GROUP BY candle_key") == 1
        assert f"/*+ STATE_TTL('t' = '{ttl}s') */" in text
        assert f"MOD(`exchange_ts_us`, CAST({size} AS BIGINT))" in text
        assert f"w_start_us + {size} AS `window_end_us`" in text
        assert "FALSE AS `final`" in text and "trade_count - 1 AS `version`" in text
        assert "FROM trades_checked WHERE NOT `late`" in text
        assert "FIRST_VALUE" not in text and "LAST_VALUE" not in text
    assert "CONCAT(`exchange`, ':', `symbol`, '|', '1h', '|', CAST(w_start_us AS STRING))" in h1
    assert final.endswith("FROM candles") and "UNION" not in final
    # Live trades and the late outputs leave history backfills out.
    script = _squash(sql.script())
    assert "FROM trades_checked WHERE NOT `late` AND `request_id` IS NULL" in script
    assert script.count("WHERE `late` AND `request_id` IS NULL") == 2


def test_live_candles_sql_conflated_per_processing_time_slice() -> None:
    sql = plan(DedupOhlcSettings(timeframes="1m,1h"), CONN)  # type: ignore[arg-type]
    assert DedupOhlcSettings().live_conflation == timedelta(milliseconds=50)
    slices = [_squash(s) for s in sql.setup if "VIEW live_slice" in s]
    assert len(slices) == 2
    view = " ".join(slices)
    # Partial 1m bars per market and 50 ms of processing time, from the on-time trades.
    assert "PROCTIME() AS slice_time" in view and "FROM trades_checked WHERE NOT `late`" in view
    slice_50ms = "INTERVAL '0 00:00:00.050' DAY TO SECOND(3)"
    assert f"TUMBLE(TABLE live_slice_input, DESCRIPTOR(slice_time), {slice_50ms})" in view
    assert "MOD(`exchange_ts_us`, CAST(60000000 AS BIGINT)) AS w1m_start_us" in view
    assert "GROUP BY `exchange`, `symbol`, w1m_start_us, window_start, window_end" in view
    live = [_squash(i) for i in sql.inserts if i.startswith("INSERT INTO live_candles_kafka")]
    m1, h1, final = live
    for text, size in [(m1, 60000000), (h1, 3600000000)]:
        assert "FROM live_slices" in text and "trades_checked" not in text
        assert f"w1m_start_us - MOD(w1m_start_us, CAST({size} AS BIGINT))" in text
        assert "SUM(trade_count) AS trade_count" in text and "MIN(open_key) AS open_key" in text
        assert text.count("GROUP BY candle_key") == 1
    assert final.endswith("FROM candles")
    with pytest.raises(ValueError, match="live_conflation"):
        DedupOhlcSettings(live_conflation="2h")  # type: ignore[arg-type]


def test_iceberg_writers_hash_distributed_unless_chained() -> None:
    hint = "/*+ OPTIONS('distribution-mode'='hash') */"
    iceberg = [i for i in plan(DedupOhlcSettings(), CONN).inserts if "`ticklake`" in i]
    assert len(iceberg) == 3 and all(hint in i.splitlines()[0] for i in iceberg)
    chained = plan(DedupOhlcSettings(iceberg_distribution="none"), CONN).inserts
    assert not any("distribution-mode" in i for i in chained)


def test_no_live_and_live_topics() -> None:
    off = DedupOhlcSettings(live=False)
    assert off.live_topics() == []
    sql = plan(off, CONN)
    assert not any("live" in i for i in sql.inserts)
    assert "live_trades_kafka" not in _ddls(off)
    on = DedupOhlcSettings(live_candles_topic="x.lc")
    names = [t.name for t in on.live_topics()]
    assert names == ["ticklake.trades.live", "x.lc"]
    assert on.live_topics()[1].config()["cleanup.policy"] == "compact,delete"


def test_live_flags() -> None:
    from ticklake.jobs.dedup_ohlc import _overrides, parser

    args = parser().parse_args(["--no-live", "--buffer-timeout", "20ms", "--live-linger", "0ms"])
    s = DedupOhlcSettings(**_overrides(args))
    assert not s.live
    assert s.buffer_timeout == timedelta(milliseconds=20) and s.live_linger == timedelta(0)
    assert DedupOhlcSettings(**_overrides(parser().parse_args([]))).live


def test_live_relay_tables_route_like_the_bridge_beside_or_instead_of_kafka() -> None:
    from ticklake.jobs.dedup_ohlc import _overrides, parser
    from ticklake.relay.bridge import DEFAULT_ROUTES

    endpoint = "tcp://127.0.0.1:5557"
    args = parser().parse_args(["--live-relay", endpoint, "--timeframes", "1m,1h"])
    both = DedupOhlcSettings(**_overrides(args))
    ddl = _ddls(both)
    trades, candles = ddl["live_trades_relay"], ddl["live_candles_relay"]
    for text in (trades, candles):
        assert "'connector' = 'ticklake-relay'" in text
        assert "'format' = 'ticklake-avro'" in text
        assert f"'endpoint' = '{endpoint}'" in text and "bootstrap" not in text
    # The same routes, keys and payload columns as the Kafka live topics through the bridge.
    assert "'data-type' = 'tick'" in trades and "'key.field' = 'market'" in trades
    assert "'data-type' = 'ohlc:{1}'" in candles and "'key.field' = 'candle_key'" in candles
    assert sorted(DEFAULT_ROUTES.values()) == sorted(
        [ohlc_sql.RELAY_TRADES_DATA_TYPE, ohlc_sql.RELAY_CANDLES_DATA_TYPE]
    )
    assert "PRIMARY KEY (`candle_key`) NOT ENFORCED" in candles and "PRIMARY KEY" not in trades
    for model, text in ((Trade, trades), (Candle, candles)):
        for column in flink_columns(model):
            assert column in text
    targets = [re.match(r"INSERT INTO (\S+)", i).group(1) for i in plan(both, CONN).inserts]  # type: ignore[union-attr]
    assert targets[5:] == ["live_trades_kafka", *["live_candles_kafka"] * 3,
                           "live_trades_relay", *["live_candles_relay"] * 3]  # fmt: skip
    assert [t.name for t in both.live_topics()] == ["ticklake.trades.live", "ticklake.candles.live"]
    # The relay only: no Kafka live tables, no live topics to create.
    only = DedupOhlcSettings(**_overrides(parser().parse_args(
        ["--live-relay", endpoint, "--no-live-kafka"])))  # fmt: skip
    assert "live_trades_kafka" not in _ddls(only) and "live_trades_relay" in _ddls(only)
    assert only.live_topics() == []
    assert not any("_kafka" in i.split()[2] for i in plan(only, CONN).inserts[5:])
    # --no-live wins over both.
    off = DedupOhlcSettings(live=False, live_relay=endpoint)
    assert not any("live" in i for i in plan(off, CONN).inserts)
    with pytest.raises(ValidationError, match="ZeroMQ endpoint"):
        DedupOhlcSettings(live_relay="127.0.0.1:5557")
    with pytest.raises(ValidationError, match="needs --live-relay"):
        DedupOhlcSettings(live_kafka=False)


def test_flink_conf_flags_are_applied_last() -> None:
    from ticklake.jobs.dedup_ohlc import _overrides, parser

    args = parser().parse_args(
        [
            "--flink-conf",
            "taskmanager.network.memory.floating-buffers-per-gate=64",
            "--flink-conf",
            "execution.buffer-timeout.interval = 3 ms",
            "--flink-conf",
            "metrics.reporters=a=b",
        ]
    )
    config = DedupOhlcSettings(**_overrides(args)).table_config()
    assert config["taskmanager.network.memory.floating-buffers-per-gate"] == "64"
    # applied last: it overrides the job's own setting of the same key (default 10 ms)
    assert config["execution.buffer-timeout.interval"] == "3 ms"
    assert config["metrics.reporters"] == "a=b"  # split at the first '='
    assert "flink_conf" not in _overrides(parser().parse_args([]))


def test_flink_conf_flag_without_a_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from ticklake.jobs.dedup_ohlc import parser

    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--flink-conf", "just-a-key"])
    assert exit_info.value.code == 2
    assert "expected KEY=VALUE, got 'just-a-key'" in capsys.readouterr().err


def test_channel_buffers_and_network_memory_reach_the_flink_config() -> None:
    from ticklake.jobs.dedup_ohlc import _overrides, parser

    config = DedupOhlcSettings().table_config()
    assert config["taskmanager.network.memory.max-buffers-per-channel"] == "500"
    assert config["taskmanager.network.memory.floating-buffers-per-gate"] == "500"
    assert config["taskmanager.memory.network.min"] == "256mb"
    assert config["taskmanager.memory.network.max"] == "256mb"
    args = parser().parse_args(["--channel-buffers", "64", "--network-memory", "128mb"])
    config = DedupOhlcSettings(**_overrides(args)).table_config()
    assert config["taskmanager.network.memory.max-buffers-per-channel"] == "64"
    assert config["taskmanager.memory.network.max"] == "128mb"
    with pytest.raises(ValueError, match="greater than or equal to 10"):
        DedupOhlcSettings(channel_buffers=2)


def test_dedup_ttl_defaults_to_one_hour_live_and_the_whole_run_when_bounded() -> None:
    live, bounded = DedupOhlcSettings(), DedupOhlcSettings(bounded=True)
    assert live.resolved_dedup_ttl() == timedelta(hours=1)
    assert live.table_config()["table.exec.state.ttl"] == "3600000 ms"
    assert bounded.resolved_dedup_ttl() == timedelta(0)
    assert bounded.table_config()["table.exec.state.ttl"] == "0 ms"  # Flink: no TTL
    given = DedupOhlcSettings(bounded=True, dedup_ttl="6h")  # type: ignore[arg-type]
    assert given.table_config()["table.exec.state.ttl"] == "21600000 ms"
    forever = DedupOhlcSettings(dedup_ttl="0s")  # type: ignore[arg-type]
    assert forever.table_config()["table.exec.state.ttl"] == "0 ms"
    with pytest.raises(ValidationError, match="out_of_orderness"):
        DedupOhlcSettings(bounded=True, dedup_ttl="3s")  # type: ignore[arg-type]


def test_changelog_state_backend_on_by_default_off_by_flag() -> None:
    from ticklake.jobs.dedup_ohlc import _overrides, parser

    live = DedupOhlcSettings(checkpoint_dir="s3://b/flink/checkpoints/")
    config = live.table_config()
    assert config["state.changelog.enabled"] == "true"
    assert config["state.changelog.storage"] == "filesystem"
    assert config["dstl.dfs.base-path"] == "s3://b/flink/checkpoints/changelog"
    assert config["state.changelog.periodic-materialize.interval"] == "600000 ms"
    # NO_CLAIM restores demand a full first snapshot, which the changelog backend refuses.
    assert config["execution.state-recovery.claim-mode"] == "CLAIM"
    assert DedupOhlcSettings(bounded=True).table_config()["state.changelog.enabled"] == "true"
    args = parser().parse_args(["--bounded", "--state-materialize", "2min"])
    forced = DedupOhlcSettings(**_overrides(args)).table_config()
    assert forced["state.changelog.enabled"] == "true"
    assert forced["state.changelog.periodic-materialize.interval"] == "120000 ms"
    off = DedupOhlcSettings(**_overrides(parser().parse_args(["--no-state-changelog"])))
    assert "state.changelog.enabled" not in off.table_config()
    # --flink-conf is applied last: it can still turn the backend off.
    over = DedupOhlcSettings(flink_conf={"state.changelog.enabled": "false"}).table_config()
    assert over["state.changelog.enabled"] == "false"
    with pytest.raises(ValidationError, match="state_materialize"):
        DedupOhlcSettings(state_materialize="0s")  # type: ignore[arg-type]


def test_embedded_jvm_options_go_before_the_users_jvm_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from ticklake.jobs.dedup_ohlc import _overrides, add_embedded_jvm_options, parser

    assert DedupOhlcSettings().embedded_jvm_options == ""
    monkeypatch.delenv("JVM_ARGS", raising=False)
    add_embedded_jvm_options("-XX:MaxTenuringThreshold=1")
    assert os.environ["JVM_ARGS"] == "-XX:MaxTenuringThreshold=1"
    add_embedded_jvm_options("-XX:MaxTenuringThreshold=1")  # a second job in the process
    assert os.environ["JVM_ARGS"] == "-XX:MaxTenuringThreshold=1"
    # HotSpot takes the last occurrence of a flag: the user's own JVM_ARGS win.
    monkeypatch.setenv("JVM_ARGS", "-Xmx24g -XX:MaxTenuringThreshold=4")
    add_embedded_jvm_options("-XX:MaxTenuringThreshold=1")
    assert os.environ["JVM_ARGS"] == (
        "-XX:MaxTenuringThreshold=1 -Xmx24g -XX:MaxTenuringThreshold=4"
    )
    monkeypatch.setenv("JVM_ARGS", "-Xmx8g")
    add_embedded_jvm_options("")
    assert os.environ["JVM_ARGS"] == "-Xmx8g"
    args = parser().parse_args(["--embedded-jvm-options=-XX:+UseParallelGC"])
    assert DedupOhlcSettings(**_overrides(args)).embedded_jvm_options == "-XX:+UseParallelGC"
    none = parser().parse_args(["--embedded-jvm-options="])
    assert DedupOhlcSettings(**_overrides(none)).embedded_jvm_options == ""


def test_embedded_jvm_defaults_come_first_and_the_users_options_override_them() -> None:
    from ticklake.jobs.dedup_ohlc import EMBEDDED_JVM_DEFAULTS

    # A heap that starts large and pre-touched: it does not grow under a running job.
    assert "-XX:InitialRAMPercentage=12.5" in EMBEDDED_JVM_DEFAULTS.split()
    assert "-XX:+AlwaysPreTouch" in EMBEDDED_JVM_DEFAULTS.split()
    assert DedupOhlcSettings().resolved_embedded_jvm_options() == EMBEDDED_JVM_DEFAULTS
    own = DedupOhlcSettings(embedded_jvm_options="-XX:-AlwaysPreTouch -Xms1g")
    options = own.resolved_embedded_jvm_options().split()
    assert options.index("-XX:-AlwaysPreTouch") > options.index("-XX:+AlwaysPreTouch")
    assert options[-1] == "-Xms1g"
