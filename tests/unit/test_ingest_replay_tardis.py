"""The Tardis trades CSV reader: gzip detection, header, line numbers, symbols, decimals."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest

from ticklake.ingestors.tardis import (
    RowError,
    SymbolResolver,
    TapeError,
    TardisRow,
    TardisTape,
    normalize_exchange,
)

HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
ROWS = (
    "binance,BTCUSDT,1585699200245000,1585699200250000,270083464,sell,6455.41,0.033\n"
    "binance,ETHBTC,1585699200300000,1585699200310000,1,buy,0.00000001,9999999999.99999999\n"
    "binance-futures,BTCUSDT,1585699200400000,1585699200410000,x-1,unknown,1e-8,1.50\n"
)


def write(path: Path, text: str, *, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read(path: Path, symbols: SymbolResolver | None = None) -> list[TardisRow | RowError]:
    with TardisTape(path, symbols) as tape:
        return list(tape)


def test_plain_and_gzip_read_the_same_rows(tmp_path: Path) -> None:
    plain = read(write(tmp_path / "a.csv", HEADER + ROWS))
    # Gzip is detected by its magic bytes, whatever the file is called.
    packed = read(write(tmp_path / "b.csv", HEADER + ROWS, gz=True))
    assert plain == packed
    assert [r.line for r in plain] == [2, 3, 4]
    first = plain[0]
    assert isinstance(first, TardisRow)
    assert (first.exchange, first.symbol, first.trade_id, first.side) == (
        "BINANCE",
        "BTC/USDT",
        "270083464",
        "sell",
    )
    assert (first.timestamp_us, first.local_timestamp_us) == (1585699200245000, 1585699200250000)
    assert first.raw == ROWS.splitlines()[0]


def test_decimals_are_exact(tmp_path: Path) -> None:
    rows = read(write(tmp_path / "a.csv", HEADER + ROWS))
    second, third = rows[1], rows[2]
    assert isinstance(second, TardisRow) and isinstance(third, TardisRow)
    assert second.price == Decimal("0.00000001") and type(second.price) is Decimal
    assert str(second.amount) == "9999999999.99999999"
    assert third.price == Decimal("1E-8") and third.amount == Decimal("1.5")
    assert third.exchange == "BINANCEUSDM"


def test_line_numbers_with_blank_lines_and_quoted_fields(tmp_path: Path) -> None:
    text = (
        HEADER
        + "binance,BTCUSDT,1585699200245000,1585699200250000,1,buy,1,1\n"
        + "\n"
        + 'binance,BTCUSDT,1585699200245000,1585699200250000,"a,\nb",buy,1,1\r\n'
        + "binance,BTCUSDT,1585699200245000,1585699200250000,3,buy,1,1"  # no final newline
    )
    with TardisTape(write(tmp_path / "a.csv", text)) as tape:
        rows = list(tape)
        assert tape.blank_lines == 1
    assert [r.line for r in rows] == [2, 4, 6]
    quoted = rows[1]
    assert isinstance(quoted, TardisRow) and quoted.trade_id == "a,\nb"
    assert quoted.raw == 'binance,BTCUSDT,1585699200245000,1585699200250000,"a,\nb",buy,1,1'


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "(empty file)"),
        (b"exchange,symbol,timestamp,local_timestamp,bids[0].price\n", "bids[0].price"),
        (b"\x00\x01\x02binary", "not a Tardis trades CSV"),
        (b"exchange;symbol;timestamp\n", "not a Tardis trades CSV"),
    ],
)
def test_files_that_are_not_trade_tapes(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(TapeError) as info:
        TardisTape(path).open()
    assert needle in info.value.render()
    assert "exchange,symbol,timestamp,local_timestamp,id,side,price,amount" in info.value.render()


def test_missing_file_and_corrupt_gzip(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match="cannot open"):
        TardisTape(tmp_path / "nope.csv").open()
    data = gzip.compress((HEADER + ROWS * 2000).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TapeError, match="cannot read tape"), TardisTape(path) as tape:
        list(tape)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("binance,BTCUSDT,1,2,3,buy,1", "MALFORMED_ROW"),
        ("binance,BTCUSDT,1,2,3,buy,1,1,extra", "MALFORMED_ROW"),
        ("binance,BTCUSD_PERP,1585699200245000,1585699200250000,1,buy,1,1", "UNKNOWN_SYMBOL"),
        ("binance,FOO,1585699200245000,1585699200250000,1,buy,1,1", "UNKNOWN_SYMBOL"),
        ("bin ance,BTCUSDT,1585699200245000,1585699200250000,1,buy,1,1", "UNKNOWN_EXCHANGE"),
        ("binance,BTCUSDT,1585699200245000.5,1585699200250000,1,buy,1,1", "INVALID_TIMESTAMP"),
        ("binance,BTCUSDT,1585699200245000,-1,1,buy,1,1", "INVALID_TIMESTAMP"),
        ("binance,BTCUSDT,1585699200245000,1585699200250000,1,BUY,1,1", "INVALID_SIDE"),
        ("binance,BTCUSDT,1585699200245000,1585699200250000,1,buy,abc,1", "INVALID_PRICE"),
        ("binance,BTCUSDT,1585699200245000,1585699200250000,1,buy,1,0x10", "INVALID_AMOUNT"),
        ("binance,BTCUSDT,1585699200245000,1585699200250000,1,buy,NaN,1", "INVALID_PRICE"),
    ],
)
def test_bad_rows_are_errors_with_reasons(tmp_path: Path, line: str, code: str) -> None:
    rows = read(write(tmp_path / "a.csv", HEADER + ROWS + line + "\n"))
    assert len(rows) == 4
    assert all(isinstance(r, TardisRow) for r in rows[:3])
    error = rows[3]
    assert isinstance(error, RowError)
    assert (error.line, error.raw, error.reason_code) == (5, line, code)
    assert error.reason


@pytest.mark.parametrize(
    ("exchange", "raw", "symbol"),
    [
        ("binance", "BTCUSDT", "BTC/USDT"),
        ("binance", "btcusdt", "BTC/USDT"),
        ("binance", "ETHBTC", "ETH/BTC"),
        ("binance", "USDTTRY", "USDT/TRY"),
        ("binance", "BTCFDUSD", "BTC/FDUSD"),  # longest quote first, not BTCFD/USD
        ("binance", "BTCTUSD", "BTC/TUSD"),
        ("binance", "NEWTUSD", "NEW/TUSD"),  # no known base either way: the longest quote
        ("binance", "1000SATSUSDT", "1000SATS/USDT"),
        ("coinbase", "BTC-USD", "BTC/USD"),
        ("kraken", "XBT/EUR", "XBT/EUR"),
        ("bitmex", "XBTUSD", "XBT/USD"),
    ],
)
def test_symbol_splitting(exchange: str, raw: str, symbol: str) -> None:
    assert SymbolResolver().resolve(exchange, raw) == symbol


def test_symbol_map_file_wins(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(
        json.dumps({"BTCUSD_PERP": "BTC/USD", "deribit:BTC-PERPETUAL": "BTC/USD", "X": "A/B"})
    )
    symbols = SymbolResolver.from_file(path)
    assert symbols.resolve("binance-delivery", "BTCUSD_PERP") == "BTC/USD"
    assert symbols.resolve("deribit", "BTC-PERPETUAL") == "BTC/USD"
    with pytest.raises(ValueError, match="symbol-map"):
        symbols.resolve("okex", "BTC-PERPETUAL")
    path.write_text(json.dumps({"BTCUSDT": "BTCUSDT"}))
    with pytest.raises(TapeError, match="BASE/QUOTE"):
        SymbolResolver.from_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(TapeError, match="JSON object"):
        SymbolResolver.from_file(path)


def test_exchange_ids() -> None:
    assert normalize_exchange("binance") == "BINANCE"
    assert normalize_exchange("binance-futures") == "BINANCEUSDM"
    assert normalize_exchange("bybit-spot") == "BYBIT-SPOT"
    with pytest.raises(ValueError, match="not a valid exchange id"):
        normalize_exchange("-x")
