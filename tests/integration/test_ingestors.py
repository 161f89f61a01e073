"""CCXT ingestors end to end: real CCXT against the real local exchange, into real Kafka.

Every assertion compares what reached Kafka with the exchange's ground truth (a ``Tape``
built separately from the server's settings), never with the ingestor's own output.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from confluent_kafka import Consumer

from ticklake.exchange import BackgroundExchange, ExchangeSettings, FaultRequest, Tape
from ticklake.exchange.settings import default_genesis_ms
from ticklake.ingestors import ExchangeFeed, IngestorService, IngestorSettings, TopicNames
from ticklake.schemas import DeadLetter, FeedGap, FeedHeartbeat, Trade, WireModel
from ticklake.schemas.serde import decode
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections

pytestmark = pytest.mark.timeout(120)

M = TypeVar("M", bound=WireModel)
SETTINGS = ExchangeSettings(seed=11, genesis_ms=default_genesis_ms(), rate_multiplier=4.0)


@pytest.fixture(scope="module")
def exchange() -> Iterator[BackgroundExchange]:
    background = BackgroundExchange(SETTINGS)
    background.start()
    try:
        yield background
    finally:
        background.stop()


@pytest.fixture(scope="module")
def truth() -> Tape:
    return Tape(SETTINGS)


@pytest.fixture
def topics(conn: Connections) -> TopicNames:
    tag = uuid.uuid4().hex[:8]
    names = TopicNames(
        trades=f"test.ingest.{tag}.trades",
        dead_letters=f"test.ingest.{tag}.dlq",
        heartbeats=f"test.ingest.{tag}.heartbeats",
        gaps=f"test.ingest.{tag}.gaps",
    )
    ensure_topics(conn.kafka.bootstrap_servers, names.specs().all())
    return names


def inject(exchange: BackgroundExchange, **fault: Any) -> dict[str, Any]:
    """Apply a fault on the exchange's own loop."""
    return exchange.inject(FaultRequest(**fault))


class Running:
    """An ``IngestorService`` running on its own event loop in a thread."""

    def __init__(self, settings: IngestorSettings, conn: Connections) -> None:
        self.service = IngestorService(settings, conn)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.service.run())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Running:
        self.service.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "ingestor did not stop within 30s"
        if self.error is not None:
            raise self.error

    def metric(self, name: str, **labels: str) -> float:
        value = self.service.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class Reader:
    """Reads a topic from the beginning, decoding every message, with bounded waits."""

    def __init__(self, conn: Connections, topic: str, model: type[M]) -> None:
        self.model = model
        self.records: list[Any] = []
        self.consumer = Consumer(
            {
                "bootstrap.servers": conn.kafka.bootstrap_servers,
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.consumer.subscribe([topic])

    def until(self, done: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            assert time.monotonic() < deadline, f"condition not met in {timeout}s"
            msg = self.consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            self.records.append(decode(self.model, msg.value()))
        return self.records

    def drain(self, quiet_s: float = 1.0) -> list[Any]:
        """Read until nothing arrives for ``quiet_s`` (after the producers stopped)."""
        while True:
            msg = self.consumer.poll(quiet_s)
            if msg is None:
                return self.records
            assert msg.error() is None, msg.error()
            self.records.append(decode(self.model, msg.value()))

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def readers(conn: Connections) -> Iterator[Callable[[str, type[Any]], Reader]]:
    made: list[Reader] = []

    def make(topic: str, model: type[Any]) -> Reader:
        made.append(Reader(conn, topic, model))
        return made[-1]

    yield make
    for reader in made:
        reader.close()


@pytest.fixture(autouse=True)
def _clear_faults(exchange: BackgroundExchange) -> Iterator[None]:
    yield
    exchange.exchange.faults.clear()


def settings(exchange: BackgroundExchange, topics: TopicNames, **kw: Any) -> IngestorSettings:
    markets = kw.pop("markets", ("BTC/USDT",))
    feed = ExchangeFeed(
        name="binance",
        markets=markets,
        url=exchange.exchange.url,
        gap_fill=kw.pop("gap_fill", "history"),
        guard_stream=kw.pop("guard_stream", True),
    )
    base: dict[str, Any] = {
        "exchanges": (feed,),
        "ingestor_id": "test-ingestor",
        "heartbeat_interval_s": 0.5,
        "stale_after_s": 1.5,
        "topics": topics,
        "create_topics": False,
    }
    return IngestorSettings.model_validate({**base, **kw})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(trades: list[Any]) -> list[tuple[str, int, Any, Any, str]]:
    """(id, ms, price, amount, side) of tape trades or wire trades, sorted by id."""
    out = []
    for t in trades:
        if isinstance(t, Trade):
            out.append((t.trade_id, t.exchange_ts_us // 1000, t.price, t.amount, t.side))
        else:
            out.append((str(t.id), t.timestamp, t.price, t.amount, t.side))
    return sorted(out, key=lambda r: int(r[0]))


def in_window(trades: list[Trade], symbol: str, start: int, end: int) -> list[Trade]:
    return [t for t in trades if t.symbol == symbol and start <= t.exchange_ts_us // 1000 <= end]


def ends_after(truth: Tape, symbol: str, start_ms: int, count: int) -> int:
    """The timestamp of the ``count``-th tape trade of ``symbol`` from ``start_ms`` on."""
    return int(truth.market(symbol).trades(start_ms, start_ms + 3_600_000, limit=count).ts[-1])


def past(symbol: str, end_ms: int) -> Callable[[list[Trade]], bool]:
    """Done once a trade of ``symbol`` after ``end_ms`` arrived (per-market order holds)."""
    return lambda got: any(t.symbol == symbol and t.exchange_ts_us // 1000 > end_ms for t in got)


# -- tests ---------------------------------------------------------------------------------


def test_realtime_ingest_of_a_window_is_exactly_the_tape(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    """Backfill from ``since_ms``, then live: the window holds every tape trade exactly once."""
    markets = ("BTC/USDT", "ETH/USDT")
    start = now_ms() - 2000
    trades = readers(topics.trades, Trade)
    with Running(settings(exchange, topics, markets=markets, since_ms=start), conn) as run:
        # at least 2 s of live trades, and long enough that the tape (deterministic, so known
        # ahead) holds over 50 trades of each market: a quiet stretch must not fail the test
        end = max(now_ms() + 2000, *(ends_after(truth, s, start, 51) for s in markets))
        for symbol in markets:
            trades.until(past(symbol, end))
        assert run.service.health()["healthy"]
    got = trades.drain()
    for symbol in markets:
        expected = truth.trades(symbol, start, end)
        assert len(expected) > 50
        assert rows(in_window(got, symbol, start, end)) == rows(expected)
    assert {t.ingestor_id for t in got} == {"test-ingestor"}
    assert {t.exchange for t in got} == {"BINANCE"}
    assert all(t.receipt_ts_us >= t.exchange_ts_us for t in got)


def test_two_ingestors_on_one_market_produce_each_trade_twice(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    trades = readers(topics.trades, Trade)
    a = settings(exchange, topics, markets=("ETH/USDT",), ingestor_id="ingestor-a")
    b = settings(exchange, topics, markets=("ETH/USDT",), ingestor_id="ingestor-b")
    with Running(a, conn), Running(b, conn):
        # both have seen a trade: the window starts after that
        trades.until(lambda got: {t.ingestor_id for t in got} == {"ingestor-a", "ingestor-b"})
        start = max(t.exchange_ts_us // 1000 for t in trades.records) + 1
        end = max(start + 2000, ends_after(truth, "ETH/USDT", start, 11))
        trades.until(
            lambda got: all(
                any(t.ingestor_id == i and t.exchange_ts_us // 1000 > end for t in got)
                for i in ("ingestor-a", "ingestor-b")
            )
        )
    got = in_window(trades.drain(), "ETH/USDT", start, end)
    expected = truth.trades("ETH/USDT", start, end)
    assert len(expected) > 10
    counts = Counter((t.trade_id, t.ingestor_id) for t in got)
    assert set(counts.values()) == {1}
    for ingestor in ("ingestor-a", "ingestor-b"):
        mine = [t for t in got if t.ingestor_id == ingestor]
        assert rows(mine) == rows(expected)


def test_a_dropped_connection_and_a_skipping_stall_lose_no_trade(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    trades = readers(topics.trades, Trade)
    with Running(settings(exchange, topics), conn) as run:
        first = trades.until(lambda got: len(got) >= 5)[0]
        start = first.exchange_ts_us // 1000 + 1
        assert inject(exchange, drop_ws="abort")["dropped"] >= 1
        trades.until(lambda got: run.metric("ticklake_ingestor_reconnects_total",
                                             exchange="BINANCE", reason="error") >= 1)  # fmt: skip
        # a stall whose trades are never pushed: the live ids jump, REST fills the hole
        inject(exchange, stall_ws_s=1.0, stall_skip=True)
        end = now_ms() + 2500
        trades.until(past("BTC/USDT", end))
        filled = run.metric("ticklake_ingestor_gap_fill_trades_total",
                            exchange="BINANCE", market="BTC/USDT")  # fmt: skip
    got = trades.drain()
    expected = truth.trades("BTC/USDT", start, end)
    assert rows(in_window(got, "BTC/USDT", start, end)) == rows(expected)
    assert filled > 0


MALFORMED = {
    "missing_id": "MISSING_TRADE_ID",
    "missing_price": "MISSING_PRICE",
    "zero_price": "NON_POSITIVE_PRICE",
    "negative_price": "NON_POSITIVE_PRICE",
    "nan_price": "NON_FINITE_PRICE",
    "infinite_price": "NON_FINITE_PRICE",
    "zero_amount": "NON_POSITIVE_AMOUNT",
    "negative_amount": "NON_POSITIVE_AMOUNT",
    "nan_amount": "NON_FINITE_AMOUNT",
    "unknown_symbol": "UNKNOWN_SYMBOL",
    "undecodable": "UNDECODABLE",
    "binary": "UNDECODABLE",
}


def test_malformed_records_are_dead_lettered_and_ingestion_continues(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    trades = readers(topics.trades, Trade)
    dead = readers(topics.dead_letters, DeadLetter)
    with Running(settings(exchange, topics, markets=("SOL/USDT",)), conn) as run:
        first = trades.until(lambda got: len(got) >= 3)[0]
        start = first.exchange_ts_us // 1000 + 1
        sent = []
        for kind in MALFORMED:
            injected = inject(
                exchange, malformed=[{"kind": kind, "symbol": "SOL/USDT", "stream": "aggTrade"}]
            )["injected"][0]
            assert injected["subscribers"] == 1
            sent.append(injected)
        dead.until(lambda got: len(got) >= len(MALFORMED))
        end = now_ms() + 1500
        trades.until(past("SOL/USDT", end))
        assert run.metric("ticklake_ingestor_reconnects_total",
                          exchange="BINANCE", reason="stale") == 0  # fmt: skip
    letters = dead.drain()
    assert Counter(d.reason_code for d in letters) == Counter(MALFORMED.values())
    payloads = {d.payload for d in letters}
    for injected in sent:
        raw = bytes.fromhex(injected["binary_hex"]) if "binary_hex" in injected else None
        assert (raw or injected["text"].encode()) in payloads
    assert all(d.source_component == "ingestor:test-ingestor" for d in letters)
    assert all(d.exchange == "BINANCE" for d in letters)
    expected = truth.trades("SOL/USDT", start, end)
    assert rows(in_window(trades.drain(), "SOL/USDT", start, end)) == rows(expected)


def test_a_feed_wedged_inside_ccxt_is_detected_by_the_watchdog_and_recovered(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    """Without the guard, a NaN price stops ccxt.pro reading the socket (silently)."""
    trades = readers(topics.trades, Trade)
    config = settings(exchange, topics, guard_stream=False, stale_after_s=1.0)
    with Running(config, conn) as run:
        first = trades.until(lambda got: len(got) >= 5)[0]
        start = first.exchange_ts_us // 1000 + 1
        inject(exchange, malformed=[{"kind": "nan_price", "symbol": "BTC/USDT",
                                     "stream": "aggTrade"}])  # fmt: skip
        trades.until(lambda got: run.metric("ticklake_ingestor_reconnects_total",
                                            exchange="BINANCE", reason="stale") >= 1)  # fmt: skip
        end = now_ms() + 1500
        trades.until(past("BTC/USDT", end))
    expected = truth.trades("BTC/USDT", start, end)
    assert rows(in_window(trades.drain(), "BTC/USDT", start, end)) == rows(expected)


def test_rest_polling_mode(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    trades = readers(topics.trades, Trade)
    heartbeats = readers(topics.heartbeats, FeedHeartbeat)
    config = settings(exchange, topics, markets=("DOGE/USDT", "BTC/USDT"), mode="poll",
                      poll_interval_s=0.2)  # fmt: skip
    with Running(config, conn):
        first = trades.until(lambda got: {t.symbol for t in got} == {"DOGE/USDT", "BTC/USDT"})
        start = max(t.exchange_ts_us // 1000 for t in first) + 1
        end = start + 2000
        trades.until(lambda got: past("DOGE/USDT", end)(got) and past("BTC/USDT", end)(got))
        heartbeats.until(lambda got: any(h.state == "polling" for h in got))
    got = trades.drain()
    for symbol in ("DOGE/USDT", "BTC/USDT"):
        assert rows(in_window(got, symbol, start, end)) == rows(truth.trades(symbol, start, end))


def test_heartbeats_tell_a_quiet_market_from_a_busy_one(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, readers
) -> None:
    heartbeats = readers(topics.heartbeats, FeedHeartbeat)
    trades = readers(topics.trades, Trade)
    config = settings(exchange, topics, markets=("BTC/USDT", "QUIET/USDT"),
                      heartbeat_interval_s=0.3, stale_after_s=1.0)  # fmt: skip
    with Running(config, conn):

        def enough(got: list[FeedHeartbeat]) -> bool:
            return all(
                sum(h.symbol == s and h.state == "live" for h in got) >= 3
                for s in ("BTC/USDT", "QUIET/USDT")
            )

        heartbeats.until(enough, timeout=20)
    beats = heartbeats.drain()
    got = trades.drain()
    assert all(h.interval_ms == 300 and h.ingestor_id == "test-ingestor" for h in beats)
    btc = [h for h in beats if h.symbol == "BTC/USDT"]
    # every trade sent is counted by exactly one heartbeat (up to the last one)
    counted = sum(h.trades_since_last for h in btc)
    assert 0 < counted <= sum(t.symbol == "BTC/USDT" for t in got)
    assert btc[-1].last_trade_id is not None and btc[-1].exchange_ts_us is not None
    receipts = [h.receipt_ts_us for h in btc]
    assert receipts == sorted(receipts)


def test_a_gap_that_cannot_be_filled_is_recorded(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, truth: Tape, readers
) -> None:
    """Only the 20 most recent trades on REST: a skipping stall of 2 s or more (until the
    tape has had 50 trades) leaves a real hole."""
    trades = readers(topics.trades, Trade)
    gaps = readers(topics.gaps, FeedGap)
    config = settings(exchange, topics, gap_fill="recent", page_limit=20)
    with Running(config, conn):
        first = trades.until(lambda got: len(got) >= 5)[0]
        start = first.exchange_ts_us // 1000 + 1
        now = now_ms()
        stall_s = max(2.0, (ends_after(truth, "BTC/USDT", now, 50) - now) / 1000 + 0.5)
        inject(exchange, stall_ws_s=stall_s, stall_skip=True)
        gap = gaps.until(lambda got: len(got) >= 1)[0]
        end = now_ms() + 1000
        trades.until(past("BTC/USDT", end))
    assert gap.reason_code == "HISTORY_LIMIT" and gap.symbol == "BTC/USDT"
    assert gap.last_trade_id_before is not None and gap.first_trade_id_after is not None
    holes = [
        (int(g.last_trade_id_before), int(g.first_trade_id_after))  # type: ignore[arg-type]
        for g in gaps.drain()
    ]
    expected = [
        t
        for t in truth.trades("BTC/USDT", start, end)
        if not any(lo < t.id < hi for lo, hi in holes)
    ]
    missing = sum(hi - lo - 1 for lo, hi in holes)
    assert missing > 20
    assert rows(in_window(trades.drain(), "BTC/USDT", start, end)) == rows(expected)


def test_the_process_flushes_and_exits_cleanly_on_sigterm(
    exchange: BackgroundExchange, topics: TopicNames, conn: Connections, readers
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKLAKE_INGESTOR__")}
    env.update(
        {
            "TICKLAKE_KAFKA__BOOTSTRAP_SERVERS": conn.kafka.bootstrap_servers,
            "TICKLAKE_INGESTOR__TOPICS__TRADES": topics.trades,
            "TICKLAKE_INGESTOR__TOPICS__DEAD_LETTERS": topics.dead_letters,
            "TICKLAKE_INGESTOR__TOPICS__HEARTBEATS": topics.heartbeats,
            "TICKLAKE_INGESTOR__TOPICS__GAPS": topics.gaps,
        }
    )
    argv = [sys.executable, "-m", "ticklake.ingestors", "--markets", "BTC/USDT",
            "--exchange-url", exchange.exchange.url, "--ingestor-id", "proc-1"]  # fmt: skip
    trades = readers(topics.trades, Trade)
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        trades.until(lambda got: len(got) >= 20)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    ids = sorted(int(t.trade_id) for t in trades.drain())
    assert ids == list(range(ids[0], ids[-1] + 1))  # nothing lost up to the last one sent
    assert {t.ingestor_id for t in trades.records} == {"proc-1"}
