"""Per-market cursor and deduplication, settings, and the CLI's help (no servers)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from click.testing import CliRunner

from ticklake.ingestors.cli import run_command
from ticklake.ingestors.exchanges import BinanceAdapter, Cursor, adapter_for
from ticklake.ingestors.feed import MarketFeed
from ticklake.ingestors.service import IngestorSettings
from ticklake.schemas import Trade

TS = 1_760_000_000_000


def trade(trade_id: int, ts_ms: int = TS) -> Trade:
    return Trade(
        exchange="BINANCE",
        symbol="BTC/USDT",
        exchange_ts_us=ts_ms * 1000,
        receipt_ts_us=ts_ms * 1000 + 1,
        ingestor_id="i",
        trade_id=str(trade_id),
        side="buy",
        price=Decimal("1"),
        amount=Decimal("1"),
    )


def test_contiguous_ids_detect_jumps_and_duplicates() -> None:
    feed = MarketFeed("BINANCE", "BTC/USDT", BinanceAdapter())
    assert not feed.already_sent(trade(10)) and not feed.jumps("10")
    feed.sent(trade(10))
    assert feed.cursor == Cursor(TS, "10")
    assert feed.already_sent(trade(10)) and feed.already_sent(trade(9))
    assert not feed.jumps("11") and feed.jumps("12")
    assert feed.reaches({"id": "11", "timestamp": TS}, page_full=True)
    assert not feed.reaches({"id": "13", "timestamp": TS}, page_full=False)
    assert feed.newer_than_cursor({"id": "11"}) and not feed.newer_than_cursor({"id": "10"})
    beat = feed.heartbeat("i", 500, TS * 1000 + 7)
    assert (beat.trades_since_last, beat.last_trade_id, beat.exchange_ts_us) == (1, "10", TS * 1000)
    assert feed.heartbeat("i", 500, TS * 1000 + 8).trades_since_last == 0


def test_opaque_ids_deduplicate_by_id_and_time() -> None:
    feed = MarketFeed("KRAKEN", "BTC/USDT", adapter_for("kraken"))
    feed.sent(trade(5, TS + 10))
    assert feed.already_sent(trade(5, TS + 10))
    assert feed.already_sent(trade(99, TS))  # older than the cursor's millisecond
    assert not feed.already_sent(trade(1, TS + 10))  # same millisecond, other id
    assert not feed.jumps("999")
    assert not feed.reaches({"id": "x", "timestamp": TS + 20}, page_full=True)
    assert feed.reaches({"id": "x", "timestamp": TS + 20}, page_full=False)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TICKLAKE_INGESTOR__EXCHANGES",
        '[{"name": "binance", "markets": ["BTC/USDT", "ETH/USDT"], "url": "http://x:1"}]',
    )
    monkeypatch.setenv("TICKLAKE_INGESTOR__TOPICS__TRADES", "my.trades")
    monkeypatch.setenv("TICKLAKE_INGESTOR__STALE_AFTER_S", "3")
    settings = IngestorSettings()
    assert settings.exchanges[0].markets == ("BTC/USDT", "ETH/USDT")
    assert settings.topics.trades == "my.trades"
    assert settings.topics.specs().trades.name == "my.trades"
    assert settings.feed_options().stale_after_s == 3
    with pytest.raises(ValueError):
        IngestorSettings(exchanges=[{"markets": ["BTCUSDT"]}])  # type: ignore[list-item]


def test_cli_help_and_config_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(run_command, ["--help"])
    assert result.exit_code == 0 and "--markets" in result.output and "--poll" in result.output
    bad = runner.invoke(run_command, ["--markets", "BTCUSDT"])
    assert bad.exit_code == 3 and "invalid ingestor settings" in bad.output
    unknown = runner.invoke(run_command, ["--exchange", "nosuchex", "--markets", "A/B"])
    assert unknown.exit_code != 0
