"""The CEP job's SQL generation and settings, without PyFlink: pattern files, parameters per
market, query groups, the alert layout, and the job's tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ticklake.jobs.cep import BUILTIN_PATTERNS, CepSettings, read_pattern_configs
from ticklake.jobs.cep_sql import (
    MATCH_COLUMNS,
    PatternConfig,
    PatternError,
    alert_id_sql,
    alert_select,
    load_patterns,
    normalize,
    num_text_sql,
    parse_pattern,
    query_groups,
    render,
)
from ticklake.settings import Connections

#: The example of docs/cep.md: a new pattern is this one file (plus this test).
GAP_UP = """\
-- pattern: gap_up
-- input: candles
-- severity: info
-- param: pct decimal 1 open above the previous close by more than this percent
--
-- A candle that opens more than pct % above the previous candle's close.
SELECT `exchange`, `symbol`, CAST(NULL AS STRING) AS `ingestor_id`,
  window_start_us AS `window_start_us`, window_end_us AS `window_end_us`,
  exchange_ts_us AS `exchange_ts_us`, receipt_ts_us AS `receipt_ts_us`,
  CAST(`open` AS STRING) AS `observed`,
  CAST(prev_close * (1 + p_pct * 0.01) AS STRING) AS `threshold`,
  CAST(prev_close AS STRING) AS `reference`,
  'price' AS `unit`,
  CONCAT(`exchange`, ':', `symbol`, ' gapped up to ', ${num:`open`}) AS `message`
FROM ${candles}
MATCH_RECOGNIZE (
  PARTITION BY `exchange`, `symbol` ORDER BY event_time
  MEASURES A.`close` AS prev_close, B.`open` AS `open`, B.p_pct AS p_pct,
    B.window_start_us AS window_start_us, B.window_end_us AS window_end_us,
    B.exchange_ts_us AS exchange_ts_us, B.receipt_ts_us AS receipt_ts_us
  ONE ROW PER MATCH AFTER MATCH SKIP TO LAST B
  PATTERN (A B) WITHIN INTERVAL '2' MINUTE
  DEFINE B AS B.`open` * 100 > A.`close` * (100 + B.p_pct)
)
"""


def test_builtin_patterns_load_with_their_headers() -> None:
    patterns = load_patterns()
    assert set(BUILTIN_PATTERNS) <= set(patterns)
    spike = patterns["price_spike"]
    assert (spike.input, spike.severity) == ("candles", "warning")
    assert [(p.name, p.kind, p.default) for p in spike.params] == [
        ("pct", "decimal", "5"),
        ("atr_k", "decimal", "0"),
        ("window", "interval", "5m"),
    ]
    assert "MATCH_RECOGNIZE" in spike.body and "WITHIN ${window}" in spike.body
    assert patterns["volume_surge"].param("trailing").kind == "rows"
    assert patterns["stale_feed"].input == "heartbeats"
    assert patterns["dead_feed"].severity == "critical"
    assert "Strictly more" in spike.doc


def test_a_new_pattern_is_one_file(tmp_path: Path) -> None:
    (tmp_path / "gap_up.sql").write_text(GAP_UP)
    patterns = load_patterns([tmp_path])
    assert patterns["gap_up"].params[0].name == "pct"
    settings = CepSettings(patterns=("gap_up",), patterns_dir=(tmp_path,))
    sql = settings.sql_options(Connections())
    assert [p.name for p in sql.patterns] == ["gap_up"]
    select = alert_select(sql.patterns[0], PatternConfig())
    assert "'gap_up' AS `pattern`" in select and "'info' AS `severity`" in select
    assert "CAST('1' AS DECIMAL(10, 4)) AS p_pct FROM candles" in select


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("-- input: candles\n-- severity: info\nSELECT 1 FROM ${candles}", "pattern: ..."),
        (
            "-- pattern: x\n-- input: trades\n-- severity: info\nSELECT 1",
            "not candles or heartbeats",
        ),
        ("-- pattern: x\n-- input: candles\n-- severity: loud\nSELECT 1", "severity"),
        ("-- pattern: X-1\n-- input: candles\n-- severity: info\nSELECT 1", "lower_snake"),
        ("-- pattern: x\n-- input: candles\n-- severity: info\nDELETE FROM t", "one SELECT"),
        ("-- pattern: x\n-- input: candles\n-- severity: info\nSELECT 1", "never reads"),
        (
            "-- pattern: x\n-- input: candles\n-- severity: info\n-- param: k float 1\n"
            "SELECT 1 FROM ${candles}",
            "kind 'float'",
        ),
        (
            "-- pattern: x\n-- input: candles\n-- severity: info\n-- param: k decimal 1\n"
            "SELECT ${k} FROM ${candles}",
            "columns p_<name>",
        ),
        (
            "-- pattern: x\n-- input: candles\n-- severity: info\n-- param: n rows 0\n"
            "SELECT ${n} FROM ${candles}",
            ">= 1",
        ),
    ],
)
def test_malformed_pattern_files_are_rejected(text: str, error: str) -> None:
    with pytest.raises(PatternError, match=re.escape(error)):
        parse_pattern(text, "t.sql")


def test_parameter_values_are_validated_per_kind() -> None:
    spike = load_patterns()["price_spike"]
    pct, window = spike.param("pct"), spike.param("window")
    assert normalize(pct, "2.50") == "2.5"
    assert normalize(pct, 3) == "3"
    for bad in ["-1", "1.00001", "1000000", "abc", "NaN"]:
        with pytest.raises(PatternError):
            normalize(pct, bad)
    assert normalize(window, "10m") == "10m"
    for bad in ["10", "0s", "ten minutes"]:
        with pytest.raises(PatternError):
            normalize(window, bad)
    stale = load_patterns()["stale_feed"]
    assert normalize(stale.param("after"), "90s") == "90s"


def test_per_market_decimals_are_case_columns_in_one_query() -> None:
    spike = load_patterns()["price_spike"]
    config = PatternConfig(markets={"BINANCE:SOL/USDT": {"pct": "50", "atr_k": "3"}})
    groups = query_groups(spike, config)
    assert len(groups) == 1 and groups[0].markets is None and not groups[0].excluded
    sql = render(spike, config, groups[0])
    assert "${" not in sql
    assert (
        "CASE WHEN (`exchange` = 'BINANCE' AND `symbol` = 'SOL/USDT') THEN "
        "CAST('50' AS DECIMAL(10, 4)) ELSE CAST('5' AS DECIMAL(10, 4)) END AS p_pct"
    ) in sql
    assert "WITHIN INTERVAL '0 00:05:00.000' DAY TO SECOND(3)" in sql
    assert "end_us - CAST(300000000 AS BIGINT)" in sql
    assert "within 5m," in sql


def test_per_market_constants_split_the_markets_into_queries() -> None:
    surge = load_patterns()["volume_surge"]
    config = PatternConfig(
        values={"k": "4"},
        markets={
            "BINANCE:ETH/USDT": {"k": "2", "trailing": "5"},
            "KRAKEN:XBT/EUR": {"trailing": "5"},
            "BINANCE:SOL/USDT": {"k": "6"},  # decimal only: stays in the default query
        },
    )
    groups = query_groups(surge, config)
    assert [(dict(g.consts), g.markets, g.excluded) for g in groups] == [
        ({"trailing": "20"}, None, ("BINANCE:ETH/USDT", "KRAKEN:XBT/EUR")),
        ({"trailing": "5"}, ("BINANCE:ETH/USDT", "KRAKEN:XBT/EUR"), ()),
    ]
    default, five = (render(surge, config, g) for g in groups)
    assert "ROWS BETWEEN 20 PRECEDING" in default and "trailing_n = 20" in default
    assert "WHERE NOT ((`exchange` = 'BINANCE' AND `symbol` = 'ETH/USDT') OR " in default
    assert "ROWS BETWEEN 5 PRECEDING" in five and "volume * 5 > p_k * trailing_sum" in five
    assert "FROM candles WHERE (`exchange` = 'BINANCE' AND `symbol` = 'ETH/USDT') OR " in five
    assert "ELSE CAST('4' AS DECIMAL(10, 4)) END AS p_k" in default
    assert alert_select(surge, config).count("UNION ALL") == 1


def test_unknown_parameters_and_bad_markets_are_errors() -> None:
    spike = load_patterns()["price_spike"]
    with pytest.raises(PatternError, match="no parameter 'pc'"):
        query_groups(spike, PatternConfig(values={"pc": "5"}))
    with pytest.raises(PatternError, match="EXCHANGE:BASE/QUOTE"):
        query_groups(spike, PatternConfig(markets={"BTC/USDT": {"pct": "1"}}))
    with pytest.raises(PatternError, match="decimal places"):
        query_groups(spike, PatternConfig(markets={"BINANCE:BTC/USDT": {"pct": "0.00001"}}))


def test_every_pattern_yields_the_match_columns_in_order() -> None:
    for pattern in load_patterns().values():
        select = alert_select(pattern, PatternConfig())
        head = select.split("\n", 1)[0]
        assert head.endswith("m.`unit`, m.`message`")
        assert "REGEXP_REPLACE(CAST((m.`threshold`) AS STRING), '\\.?0+$', '')" in head
        assert "${" not in select
        for column in MATCH_COLUMNS:
            assert f"AS `{column}`" in pattern.body or f"`{column}`," in pattern.body, (
                pattern.name,
                column,
            )


def test_num_placeholder_trims_trailing_zeros_only_after_a_point() -> None:
    assert num_text_sql("x") == (
        "CASE WHEN POSITION('.' IN CAST((x) AS STRING)) > 0 "
        "THEN REGEXP_REPLACE(CAST((x) AS STRING), '\\.?0+$', '') ELSE CAST((x) AS STRING) END"
    )
    # The same regular expression (Java and Python agree on it) on typical values.
    cases = [("12.50000000", "12.5"), ("24.000", "24"), ("100.00", "100"),
             ("0.00000001", "0.00000001"), ("0.000", "0"), ("-3.10", "-3.1")]  # fmt: skip
    for text, short in cases:
        assert re.sub(r"\.?0+$", "", text) == short
    surge = load_patterns()["volume_surge"]
    groups = query_groups(surge, PatternConfig())
    sql = render(surge, PatternConfig(), groups[0])
    assert "${" not in sql
    assert num_text_sql("trailing_sum / 20") in sql


def test_alert_id_sql_hashes_the_documented_identity() -> None:
    sql = alert_id_sql("dead_feed")
    assert sql.startswith("SUBSTRING(SHA256(CONCAT('dead_feed|', m.`exchange`, ':', m.`symbol`")
    assert "COALESCE(m.`ingestor_id`, '')" in sql and sql.endswith("FROM 1 FOR 32)")


def test_patterns_file_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cep.toml"
    path.write_text(
        '[price_spike]\npct = 4\nwindow = "10m"\n'
        '[price_spike.markets."BINANCE:BTC/USDT"]\npct = "2.5"\n'
    )
    configs = read_pattern_configs(path)
    assert configs["price_spike"].values == {"pct": "4", "window": "10m"}
    assert configs["price_spike"].markets == {"BINANCE:BTC/USDT": {"pct": "2.5"}}

    monkeypatch.setenv("TICKLAKE_CEP_PATTERNS", "price_spike, dead_feed")
    monkeypatch.setenv("TICKLAKE_CEP_PATTERNS_FILE", str(path))
    settings = CepSettings()
    assert settings.patterns == ("price_spike", "dead_feed")
    sql = settings.sql_options(Connections())
    assert [p.name for p in sql.patterns] == ["price_spike", "dead_feed"]
    assert sql.configs["price_spike"].values["window"] == "10m"

    path.write_text('[price_spyke]\npct = "4"\n')
    with pytest.raises(PatternError, match="no pattern named 'price_spyke'"):
        settings.sql_options(Connections())
    with pytest.raises(PatternError, match="unknown pattern"):
        CepSettings(patterns=("nope",)).sql_options(Connections())
    with pytest.raises(ValueError, match="at least one pattern"):
        CepSettings(patterns=())


def test_job_sql_reads_committed_and_writes_exactly_once(tmp_path: Path) -> None:
    from ticklake.jobs.cep import plan

    settings = CepSettings(checkpoint_dir=tmp_path.as_uri(), bounded=True, namespace="ns1")
    sql = plan(settings, Connections())
    script = sql.script()
    assert script.count("'properties.isolation.level' = 'read_committed'") == 2
    assert "'scan.bounded.mode' = 'latest-offset'" in script
    assert "'sink.delivery-guarantee' = 'exactly-once'" in script
    assert "'sink.transactional-id-prefix' = 'ticklake-cep-alerts'" in script
    assert "'key.fields' = 'market'" in script and "'topic' = 'ticklake.alerts'" in script
    assert "WHERE `timeframe` = '1m' AND `final` AND `ingestor_id` = 'flink:dedup_ohlc'" in script
    assert "ROWS BETWEEN 13 PRECEDING AND CURRENT ROW" in script  # ATR(14)
    assert sql.inserts[0].startswith("INSERT INTO alerts_kafka SELECT `alert_id`, `pattern`")
    assert sql.inserts[1].startswith("INSERT INTO `ticklake`.`ns1`.`alerts` (`alert_id`")
    assert sql.config["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert "${" not in script


def test_liveness_clock_is_on_for_unbounded_runs_and_never_for_bounded_ones(
    tmp_path: Path,
) -> None:
    from ticklake.jobs.cep import plan

    live = plan(CepSettings(checkpoint_dir=tmp_path.as_uri()), Connections()).script()
    assert "CREATE TEMPORARY TABLE clock_source" in live
    assert "'connector' = 'datagen'" in live
    assert "AS `event_time` - INTERVAL '0 00:00:05.000' DAY TO SECOND(3)" in live
    # every clock row is filtered out by a condition the planner cannot fold away
    assert "FROM clock_source WHERE `tick` < 0" in live
    assert "'fields.tick.min' = '0'" in live
    for settings in (
        CepSettings(checkpoint_dir=tmp_path.as_uri(), bounded=True),
        CepSettings(checkpoint_dir=tmp_path.as_uri(), liveness_clock=False),
        # candle patterns only: no heartbeats, no clock
        CepSettings(checkpoint_dir=tmp_path.as_uri(), patterns=("price_spike",)),
    ):
        assert "clock_source" not in plan(settings, Connections()).script()


def test_liveness_clock_flag(tmp_path: Path) -> None:
    from ticklake.jobs.cep import _overrides, parser

    assert _overrides(parser().parse_args([])).get("liveness_clock") is None
    args = parser().parse_args(["--no-liveness-clock"])
    assert CepSettings(**_overrides(args)).liveness_clock is False
    args = parser().parse_args(["--liveness-clock"])
    assert CepSettings(**_overrides(args)).liveness_clock is True
