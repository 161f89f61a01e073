"""The replay's columnar path: the same bytes as fastavro, never more lenient than the model,
and the block reader numbers lines exactly as the line reader does."""

from __future__ import annotations

import gzip
import io
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from tests.unit.test_ingest_replay_fast import random_decimal
from ticklake.ingestors.replay import FastTradeEncoder
from ticklake.ingestors.replay_blocks import (
    BlockEncoder,
    _decimal_column,
    _decimal_values,
    _decimals,
    _varint8,
)
from ticklake.ingestors.tardis import Record, RowError, TapeBlock, TapeError, TardisTape
from ticklake.schemas.models import MAX_TS_US, MIN_TS_US, Trade
from ticklake.schemas.serde import encode

HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
DECIMAL_SCHEMA = fastavro.parse_schema(
    {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}
)


def fastavro_bytes(schema: Any, value: object) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, value)
    return out.getvalue()


def test_decimals_are_fastavros_bytes() -> None:
    rng = random.Random(1)
    values = [Decimal("0.00000001"), Decimal("9999999999.99999999"), Decimal(1)]
    for k in range(1, 9):  # each side of every change of length: 2**7, 2**15, ...
        for unscaled in (2 ** (8 * k - 1) - 1, 2 ** (8 * k - 1), 2 ** (8 * k - 1) + 1):
            if unscaled < 10**18:
                values.append(Decimal(unscaled).scaleb(-8))
    values += [random_decimal(rng) for _ in range(5000)]
    texts = [f"{v:f}" for v in values]
    texts += [f"{rng.randint(0, 9_999_999_999)}.{rng.randint(0, 10**8 - 1):08d}"
              for _ in range(2000)]  # fmt: skip
    texts += ["1.", "0000000001.5", "0000000000.00000001", "42"]
    unscaled, valid = _decimals(pa.array([t.encode() for t in texts], pa.binary()))
    assert valid.all()
    encoded = _decimal_values(unscaled, valid).to_pylist()
    for text, got in zip(texts, encoded, strict=True):
        assert got == fastavro_bytes(DECIMAL_SCHEMA, Decimal(text).quantize(Decimal("1e-8"))), text


def test_repeated_decimals_are_encoded_once_with_the_same_result() -> None:
    rng = random.Random(4)
    distinct = [f"{random_decimal(rng):f}" for _ in range(100)] + ["0", "-1", "1e-8", "x"]
    texts = [rng.choice(distinct) for _ in range(10_000)]
    column = pa.array([t.encode() for t in texts], pa.binary())
    values, valid = _decimal_column(column)  # mostly repeats: the distinct values only
    unscaled, direct_valid = _decimals(column)
    assert valid.tolist() == direct_valid.tolist()
    assert 0 < valid.sum() < len(texts)
    direct = _decimal_values(unscaled, direct_valid).to_pylist()
    assert [v for v, ok in zip(values.to_pylist(), valid, strict=True) if ok] == [
        v for v, ok in zip(direct, valid, strict=True) if ok
    ]


def test_decimals_the_block_path_leaves_to_the_model() -> None:
    texts = ["0", "0.0", "0.00000000", "-1", "+1", "1e-8", "1E5", ".5", "", " 1", "1 ",
             "1.123456789", "12345678901", "1_0", "NaN", "Infinity", "0x10", "1.2.3",
             "\u0661", "1,5", "00000000001"]  # fmt: skip
    _, valid = _decimals(pa.array([t.encode() for t in texts], pa.binary()))
    assert not valid.any()


def test_timestamps_are_fastavros_longs() -> None:
    rng = random.Random(2)
    stamps = [MIN_TS_US, MAX_TS_US, *(rng.randint(MIN_TS_US, MAX_TS_US) for _ in range(5000))]
    words = _varint8(np.array(stamps, np.int64))
    for ts, word in zip(stamps, words.tolist(), strict=True):
        assert int(word).to_bytes(8, "little") == fastavro_bytes("long", ts), ts


def fuzz_fields(rng: random.Random) -> list[str]:
    """Mostly valid rows, many broken in one field; every kind of value at its edges."""
    trade_id = rng.choice([
        str(rng.randint(0, 2**63)), "id-é", "x" * 63, "x" * 64, "x" * 256, "😀" * 64,
        "😀" * 65, "é" * 200, "a b", str(rng.randint(0, 10**30)),
    ])  # fmt: skip
    fields = [
        rng.choice(["binance", "binance", "binance-futures", "coinbase", "kraken"]),
        rng.choice(["BTCUSDT", "ETHBTC", "BTC-USD", "XBT/EUR"]),
        rng.choice([str(rng.randint(MIN_TS_US, MAX_TS_US)), str(MIN_TS_US), str(MAX_TS_US)]),
        str(rng.randint(MIN_TS_US, MAX_TS_US)),
        trade_id,
        rng.choice(["buy", "sell", "unknown"]),
        rng.choice([f"{random_decimal(rng):f}", "9999999999.99999999", "0.00000001"]),
        rng.choice([f"{random_decimal(rng):f}", "1", "0.1", "1."]),
    ]
    if rng.random() < 0.3:  # break one field in one of many ways
        i = rng.randrange(8)
        fields[i] = rng.choice(
            ["", "0", "0.000000001", "1e-8", "-1", "1" * 11, "99999999999", "1.0000000000",
             str(MIN_TS_US - 1), str(MAX_TS_US + 1), "\u00b2", "\u0661\u0667" + "\u0660" * 14,
             "0" * 4 + str(MIN_TS_US), "9" * 19, "9" * 30, "BUY", "x" * 257, "\udcff", " 1",
             "1_0", "NaN", "Infinity", "nope", "0.00000001", "9999999999.99999999", "0001.5",
             "BTCUSD_PERP", "BTCÉUSDT", "bin ance"]
        )  # fmt: skip
    return fields


def model_of(tape: TardisTape, record: Record) -> Trade | None:
    row = tape.parse(*record)
    if isinstance(row, RowError):
        return None
    try:
        return Trade(
            exchange=row.exchange,
            symbol=row.symbol,
            exchange_ts_us=row.timestamp_us,
            receipt_ts_us=row.local_timestamp_us,
            ingestor_id="replay:t.csv",
            trade_id=row.trade_id,
            side=row.side,
            price=row.price,
            amount=row.amount,
        )
    except ValidationError:
        return None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_block_path_accepts_only_what_the_model_accepts_with_the_same_bytes(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    lines = [",".join(fuzz_fields(rng)) for _ in range(8000)]
    path = tmp_path / "t.csv"
    path.write_bytes((HEADER + "\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    fast = FastTradeEncoder("replay:t.csv")
    models: dict[int, Trade | None] = {}
    with TardisTape(path) as tape:
        for record in tape.records():
            model = models[record[0]] = model_of(tape, record)
            if model is not None:  # as the replay does: markets the model accepted
                fast.learn_market(record[2][0], record[2][1], model)
    encoder = BlockEncoder(fast.ingestor, fast.markets)
    accepted = valid = 0
    with TardisTape(path) as tape:
        for item in tape.blocks(size=64 * 1024):
            if not isinstance(item, TapeBlock):
                continue
            encoded = encoder.encode(item)
            rejected = set(encoded.rejected)
            for i in range(item.rows):
                model = models[item.first_line + i]
                valid += model is not None
                if i in rejected:
                    continue
                accepted += 1
                assert model is not None, lines[item.first_line + i - 2]
                assert encoded.keys[i] == model.market.encode()
                assert encoded.values[i] == encode(model), lines[item.first_line + i - 2]
    # Not vacuous: blocks were parsed, and they took most valid rows (not: the ids over 256
    # bytes, a fifth of the ids here, and timestamps with leading zeros; the model takes them).
    assert accepted > 0.7 * valid > 4000


def test_block_path_takes_unicode_and_long_trade_ids(tmp_path: Path) -> None:
    ids = ["1", "é", "x" * 63, "x" * 64, "😀" * 16, "😀" * 64, "z" * 256, "日本" * 100]
    path = tmp_path / "t.csv"
    path.write_text(
        HEADER + "".join(f"binance,BTCUSDT,{MIN_TS_US},{MAX_TS_US},{i},buy,1.5,2\n" for i in ids),
        encoding="utf-8",
    )
    fast = FastTradeEncoder("replay:t.csv")
    with TardisTape(path) as tape:
        records = list(tape.records())
        models = [model_of(tape, r) for r in records]
    assert all(models)
    fast.learn_market("binance", "BTCUSDT", models[0])  # type: ignore[arg-type]
    with TardisTape(path) as tape:
        (block,) = tape.blocks()
    assert isinstance(block, TapeBlock)
    encoded = BlockEncoder(fast.ingestor, fast.markets).encode(block)
    assert encoded.rejected == [7]  # 600 bytes: the per-row path's (and it is valid)
    assert encoded.values[:7] == [encode(m) for m in models[:7]]  # type: ignore[arg-type]


def test_unknown_markets_and_invalid_utf8_are_left_to_the_per_row_path(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    row = f"binance,BTCUSDT,{MIN_TS_US},{MIN_TS_US},1,buy,1,1\n".encode()
    path.write_bytes(HEADER.encode() + row + row.replace(b",1,buy", b",\xff,buy") + row)
    with TardisTape(path) as tape:
        (block,) = tape.blocks()
    assert isinstance(block, TapeBlock)
    fast = FastTradeEncoder("replay:t.csv")
    assert BlockEncoder(fast.ingestor, fast.markets).encode(block).rejected == [0, 1, 2]
    with TardisTape(path) as tape:
        model = model_of(tape, next(tape.records()))
    assert model is not None
    fast.learn_market("binance", "BTCUSDT", model)
    encoded = BlockEncoder(fast.ingestor, fast.markets).encode(block)
    assert encoded.rejected == [1]  # the trade id that is not UTF-8: the model decides
    assert encoded.values[0] == encoded.values[2] == encode(model)


def flatten(tape: TardisTape, size: int) -> list[Record]:
    out: list[Record] = []
    for item in tape.blocks(size):
        if isinstance(item, TapeBlock):
            for record in item.records():
                if record is None:
                    tape.blank_lines += 1  # as the replay counts them
                else:
                    out.append(record)
        else:
            out.append(item)
    return out


def messy_tape(rng: random.Random) -> bytes:
    good = "binance,BTCUSDT,1585699200245000,1585699200250000,{},buy,1,1"
    pieces = ["\ufeff" if rng.random() < 0.5 else "", HEADER.rstrip("\n")]
    pieces.append(rng.choice(["\n", "\r\n", "\r"]))
    for i in range(rng.randint(0, 400)):
        line = rng.choice([
            good.format(i), good.format(i), good.format(i), good.format(f'"q,{i}\nx"'),
            good.format(f'"a""b{i}"'), "", "binance,BTCUSDT,1", "x,y,z,1,2,3,4,5,6",
            good.format(f"\udcfe{i}"), good.format(f"é{i}"), "   ", good.format('"open'),
        ])  # fmt: skip
        pieces.append(line + rng.choice(["\n", "\n", "\r\n", "\r"]))
    if rng.random() < 0.5:
        pieces[-1] = pieces[-1].rstrip("\r\n")
    return "".join(pieces).encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("seed", range(40))
def test_blocks_number_lines_and_blanks_exactly_as_records(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = messy_tape(rng)
    path = tmp_path / ("t.csv.gz" if seed % 3 == 0 else "t.csv")
    path.write_bytes(gzip.compress(data) if seed % 3 == 0 else data)
    with TardisTape(path) as tape:
        expected = list(tape.records())
        blanks = tape.blank_lines
    for size in (1, 64, 700, 1 << 20):
        with TardisTape(path) as tape:
            assert flatten(tape, size) == expected, size
            assert tape.blank_lines == blanks


def test_plain_tape_comes_in_blocks(tmp_path: Path) -> None:
    rows = [f"binance,BTCUSDT,{MIN_TS_US + i},{MIN_TS_US},{i},buy,1,1" for i in range(5000)]
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "\r\n".join(rows), encoding="utf-8")  # CRLF, no final newline
    with TardisTape(path) as tape:
        items = list(tape.blocks(size=32 * 1024))
    assert len(items) > 5
    assert all(isinstance(item, TapeBlock) for item in items)
    blocks = [item for item in items if isinstance(item, TapeBlock)]
    assert sum(b.rows for b in blocks) == 5000
    assert [r for b in blocks for r in b.records()] == [
        (i + 2, row, row.split(",")) for i, row in enumerate(rows)
    ]


def test_truncated_gzip_fails_in_blocks_too(tmp_path: Path) -> None:
    row = "binance,BTCUSDT,1585699200245000,1585699200250000,1,buy,1,1\n"
    data = gzip.compress((HEADER + row * 50_000).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TapeError, match="cannot read tape"), TardisTape(path) as tape:
        list(tape.blocks(size=4096))
