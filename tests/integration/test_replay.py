"""`ticklake ingest replay` against the real Kafka of the test stack.

The expected messages are computed from the tape with the ``csv`` module and this test's own
market table, never with the replay's reader; every message on the topics is decoded and
compared with them.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from confluent_kafka import Consumer

from tests.integration.test_wire_format import murmur2_partition
from ticklake.ingestors.replay import replay, replay_command
from ticklake.schemas import RAW_TRADES
from ticklake.schemas.models import DeadLetter, Trade
from ticklake.schemas.serde import decode, writer_version
from ticklake.settings import Connections

HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
#: This test's own truth of how Tardis markets map to ticklake markets.
MARKETS = {
    ("binance", "BTCUSDT"): ("BINANCE", "BTC/USDT"),
    ("binance", "ETHBTC"): ("BINANCE", "ETH/BTC"),
    ("binance-futures", "BTCUSDT"): ("BINANCEUSDM", "BTC/USDT"),
    ("coinbase", "BTC-USD"): ("COINBASE", "BTC/USD"),
    ("kraken", "XBT/EUR"): ("KRAKEN", "XBT/EUR"),
}
#: Bad lines: (line text, reason code the replay must give).
BAD = [
    ("binance,BTCUSDT,1700000000000000,1700000000000001,b1,buy,0,1", "INVALID_PRICE"),
    ("binance,BTCUSDT,1700000000000000,1700000000000001,b2,buy,1.000000001,1", "INVALID_PRICE"),
    ("binance,BTCUSDT,1700000000000000,1700000000000001,b3,buy,1,10000000000", "INVALID_AMOUNT"),
    ("binance,BTCUSDT,1700000000000,1700000000000001,b4,buy,1,1", "INVALID_TIMESTAMP"),
    ("binance,BTCUSDT,1700000000000000,1700000000000001,,buy,1,1", "INVALID_TRADE_ID"),
    ("binance,BTCUSD_PERP,1700000000000000,1700000000000001,b6,buy,1,1", "UNKNOWN_SYMBOL"),
    ("binance,BTCUSDT,1700000000000000,1700000000000001,b7,buy,1", "MALFORMED_ROW"),
    ("binance,BTCUSDT,1700000000000000,1700000000000001,b8,BUY,1,1", "INVALID_SIDE"),
    ("binance,BTCUSDT,not-a-time,1700000000000001,b9,buy,1,1", "INVALID_TIMESTAMP"),
]


def make_tape(path: Path, n: int, seed: int, *, span_s: float = 600.0) -> list[str]:
    """A tape with ``n`` good rows, the BAD rows and a blank line; returns its lines."""
    rng = random.Random(seed)
    ts0 = 1_700_000_000_000_000
    lines = [HEADER]
    for i in range(n):
        exchange, symbol = rng.choice(list(MARKETS))
        ts = ts0 + int(i * span_s * 1e6 / max(n - 1, 1))
        price = rng.choice(["0.00000001", "9999999999.99999999", "65000.5", "1e-8", "3.10"])
        amount = rng.choice(
            [f"{rng.randint(0, 10**10 - 1)}.{rng.randint(1, 10**8 - 1):08d}", "0.00000001", "7"]
        )
        side = rng.choice(["buy", "sell", "unknown"])
        lines.append(f"{exchange},{symbol},{ts},{ts + rng.randint(0, 5000)},{i},{side},"
                     f"{price},{amount}")  # fmt: skip
    for k, (bad, _) in enumerate(BAD):
        lines.insert(1 + (k + 1) * n // (len(BAD) + 1), bad)
    lines.insert(len(lines) // 2, "")  # a blank line: skipped, not a row
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return lines


def consume(conn: Connections, topic: str, count: int, timeout_s: float = 60) -> list[Any]:
    consumer = Consumer({
        "bootstrap.servers": conn.kafka.bootstrap_servers,
        "group.id": f"test-replay-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
        # Nothing beyond what is expected arrives either.
        extra = consumer.poll(2.0)
        assert extra is None, "more messages than rows"
    finally:
        consumer.close()
    return messages


def expected_trades(lines: list[str], ingestor: str) -> list[tuple[Any, ...]]:
    bad = {b for b, _ in BAD}
    out = []
    for row in csv.reader(line for line in lines[1:] if line and line not in bad):
        exchange, symbol = MARKETS[row[0], row[1]]
        out.append((exchange, symbol, int(row[2]), int(row[3]), ingestor, row[4], row[5],
                    Decimal(row[6]), Decimal(row[7]), None))  # fmt: skip
    return out


def test_replay_publishes_exactly_the_tape(conn: Connections, tmp_path: Path) -> None:
    topic = f"test.replay.{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    tape = tmp_path / "tape.csv.gz"
    lines = make_tape(tape, 3000, seed=1)
    result = CliRunner().invoke(
        replay_command,
        [str(tape), "--topic", topic, "--dead-letter-topic", dlq, "--output", "json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows_read"] == 3000 + len(BAD)
    assert (summary["produced"], summary["dead_lettered"], summary["failed"]) == (3000, 9, 0)
    assert summary["blank_lines"] == 1

    expected = expected_trades(lines, "replay:tape.csv.gz")
    messages = consume(conn, topic, len(expected))
    got = []
    order: dict[str, list[str]] = defaultdict(list)
    for msg in messages:
        trade = decode(Trade, msg.value(), writer_version=writer_version(Trade, msg.headers()))
        got.append(tuple(trade.model_dump().values()))
        key = msg.key()
        assert key == f"{trade.exchange}:{trade.symbol}".encode()
        assert msg.partition() == murmur2_partition(key, RAW_TRADES.partitions)
        order[key.decode()].append(trade.trade_id)
    assert Counter(got) == Counter(expected)
    # Per market, the topic holds the trades in tape order.
    for key, ids in order.items():
        exchange, symbol = key.split(":")
        assert ids == [e[5] for e in expected if (e[0], e[1]) == (exchange, symbol)]

    letters = [decode(DeadLetter, m.value()) for m in consume(conn, dlq, len(BAD))]
    line_of = {text: i + 1 for i, text in enumerate(lines)}
    assert sorted((d.source_line, d.reason_code, d.payload) for d in letters) == sorted(
        (line_of[text], code, text.encode()) for text, code in BAD
    )
    for letter in letters:
        assert letter.source_file == "tape.csv.gz"
        assert letter.source_component == "replay:tape.csv.gz"
        assert letter.reason_message


def test_replay_at_a_multiple_of_real_time(conn: Connections, tmp_path: Path) -> None:
    """200 trades over 3 s of exchange time at --speed 2 take about 1.5 s."""
    topic = f"test.replay.speed.{uuid.uuid4().hex[:8]}"
    tape = tmp_path / "short.csv"
    make_tape(tape, 200, seed=2, span_s=3.0)
    t0 = time.monotonic()
    result = replay(
        tape,
        bootstrap_servers=conn.kafka.bootstrap_servers,
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        speed=2,
    )
    wall = time.monotonic() - t0
    assert (result.produced, result.dead_lettered, result.failed) == (200, len(BAD), 0)
    assert 1.4 <= result.elapsed_s <= wall < 10, (result.elapsed_s, wall)


def test_limit_and_not_a_tape(conn: Connections, tmp_path: Path) -> None:
    topic = f"test.replay.limit.{uuid.uuid4().hex[:8]}"
    tape = tmp_path / "t.csv"
    make_tape(tape, 100, seed=3)
    runner = CliRunner()
    args = ["--topic", topic, "--dead-letter-topic", f"{topic}.dlq", "-o", "json"]
    result = runner.invoke(replay_command, [str(tape), "--limit", "10", *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["rows_read"] == 10
    bogus = tmp_path / "book.csv"
    bogus.write_text("exchange,symbol,timestamp,local_timestamp,bids[0].price\n")
    result = runner.invoke(replay_command, [str(bogus), *args])
    assert result.exit_code == 10
    assert "not a Tardis trades CSV" in result.stderr


def test_stop_flushes_what_was_read_and_counts_exactly(conn: Connections, tmp_path: Path) -> None:
    """A stop request (SIGTERM, Ctrl-C in the command) ends between rows, after a flush."""
    topic = f"test.replay.stop.{uuid.uuid4().hex[:8]}"
    tape = tmp_path / "long.csv"
    lines = make_tape(tape, 80_000, seed=4)  # about 6 MiB: several blocks
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2  # checked between blocks: stops after the first one

    result = replay(
        tape,
        bootstrap_servers=conn.kafka.bootstrap_servers,
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        stop=stop,
    )
    assert result.interrupted
    assert 0 < result.rows_read < 80_000
    assert result.failed == 0
    assert result.produced + result.dead_lettered == result.rows_read
    # Exactly the first rows_read data lines were sent, in tape order.
    read = [line for line in lines[1:] if line][: result.rows_read]
    expected = expected_trades([HEADER, *read], "replay:long.csv")
    assert result.produced == len(expected)
    got = [decode(Trade, m.value()).trade_id for m in consume(conn, topic, result.produced)]
    assert sorted(got, key=int) == [e[5] for e in expected]
    assert len(consume(conn, f"{topic}.dlq", result.dead_lettered)) == result.dead_lettered
