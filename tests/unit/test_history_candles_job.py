"""The history_candles job's SQL (no Flink here; the integration test runs it)."""

from __future__ import annotations

from ticklake.catalog.tables import CANDLE_COLUMNS
from ticklake.jobs.history_candles import HistoryCandlesSettings, statements
from ticklake.schemas.flink import flink_columns
from ticklake.schemas.models import Candle
from ticklake.schemas.topics import HISTORY_CANDLES, TOPICS
from ticklake.settings import Connections

CONN = Connections(
    catalog={"password": "pg-secret-xyz"},  # type: ignore[arg-type]
    s3={"secret_key": "s3-secret-xyz"},  # type: ignore[arg-type]
)


def test_dedup_pattern_and_every_candle_column() -> None:
    settings = HistoryCandlesSettings(namespace="ns", topic="t.klines", bounded=True)
    setup, insert = statements(settings, CONN)
    source = setup[1]
    assert "'topic' = 't.klines'" in source and "'scan.bounded.mode' = 'latest-offset'" in source
    for column in flink_columns(Candle):
        assert column in source
    assert "PARTITION BY `exchange`, `symbol`, `timeframe`, `window_start_us`" in insert
    assert "ORDER BY `proc_time` ASC" in insert and "WHERE row_num = 1" in insert
    assert f"`{CONN.catalog.name}`.`ns`.`candles`" in insert
    target = insert.split("(", 1)[1].split(")", 1)[0]
    assert [c.strip(" `") for c in target.split(",")] == [name for name, _ in CANDLE_COLUMNS]


def test_topic_is_outside_the_one_topic_per_model_list() -> None:
    assert HISTORY_CANDLES.model is Candle and HISTORY_CANDLES not in TOPICS
    assert HistoryCandlesSettings().topic == HISTORY_CANDLES.name == "ticklake.history.candles"
