"""Conflated forming candles (the job's default ``--live-conflation 50ms``), end to end.

The dedup + OHLC job runs unbounded on the embedded MiniCluster while trades arrive in small
bursts over a few seconds (processing time has to pass for the conflation to show). Then,
from the live candles topic, checked against candles computed with pandas from the tape:

- per candle the forming updates have strictly increasing versions (``trade_count - 1``),
  and far fewer updates than trades (at most one per candle per 50 ms slice);
- every forming 1m update equals the candle of the first ``trade_count`` trades of that
  minute in arrival order (a slice holds a contiguous run of arrivals);
- every forming update of a longer timeframe only grows (volume, trade count, high up, low
  down) and stays within its final candle;
- the last forming update of each candle equals its final candle but for final/version, and
  the consumer rule (highest version, a final one wins) gives exactly the truth.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cep import start_job, stop
from tests.integration.test_dedup_ohlc import CANDLE_COLS, MIN, T0, produce, rows, truth_candles
from tests.integration.test_live_outputs import apply_updates, candle_frame, candle_key
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.schemas import CANDLES, RAW_TRADES, Candle, Trade
from ticklake.schemas.serde import decode
from ticklake.schemas.topics import LIVE_CANDLES, LIVE_TRADES, ensure_topics
from ticklake.settings import Connections

MARKETS = [("BINANCE", "BTC/USDT"), ("BINANCE", "ETH/USDT")]
TIMEFRAMES = "1m,5m,1h"
BURSTS = 60
PER_BURST = 16  # trades per burst, spread over the markets
BURST_GAP_S = 0.06
SAME = [c for c in CANDLE_COLS if c not in ("final", "version")]


def _tape() -> list[Trade]:
    """Trades over about 3 minutes of event time, a little out of order (within 2 s)."""
    out: list[Trade] = []
    step = 3 * MIN // (BURSTS * PER_BURST)
    n = 0
    for b in range(BURSTS):
        for i in range(PER_BURST):
            n += 1
            ts = T0 + 20 * MIN + n * step - (1_500_000 if (b + i) % 7 == 3 else 0)
            exchange, symbol = MARKETS[(b + i) % len(MARKETS)]
            out.append(
                Trade(
                    exchange=exchange, symbol=symbol, trade_id=f"c{n}",
                    side="buy" if n % 2 else "sell",
                    price=Decimal(1000 + (n * 7919) % 5000).scaleb(-2),
                    amount=Decimal(1 + (n * 104729) % 900).scaleb(-3),
                    exchange_ts_us=ts, receipt_ts_us=ts + 2_000, ingestor_id="it",
                )
            )  # fmt: skip
    return out


def _closers() -> list[Trade]:
    """One trade per market a day later: the watermark passes every window of the tape."""
    return [
        Trade(exchange=e, symbol=s, trade_id="closer", side="buy", price=Decimal(1),
              amount=Decimal(1), exchange_ts_us=T0 + 26 * 60 * MIN,
              receipt_ts_us=T0 + 26 * 60 * MIN, ingestor_id="it")
        for e, s in MARKETS
    ]  # fmt: skip


@dataclasses.dataclass
class _Run:
    conn: Connections
    raw: str
    live_trades: str
    live_candles: str
    namespace: str
    log: Path


@pytest.fixture
def job(conn: Connections, tmp_path: Path) -> Iterator[_Run]:
    run = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_TRADES, name=f"it.conf.raw.{run}", partitions=1)
    candles = CANDLES.renamed(f"it.conf.candles.{run}")
    late = RAW_TRADES.renamed(f"it.conf.late.{run}")
    live_trades = dataclasses.replace(LIVE_TRADES, name=f"it.conf.lt.{run}", partitions=1)
    live_candles = dataclasses.replace(LIVE_CANDLES, name=f"it.conf.lc.{run}", partitions=1)
    ensure_topics(conn.kafka.bootstrap_servers, [raw, candles, late, live_trades, live_candles])
    namespace = f"it_conf_{run}"
    ensure_market_tables(load_catalog(conn), namespace)
    args = [
        "--raw-topic", raw.name, "--candles-topic", candles.name, "--late-topic", late.name,
        "--live-trades-topic", live_trades.name, "--live-candles-topic", live_candles.name,
        "--namespace", namespace, "--timeframes", TIMEFRAMES, "--out-of-orderness", "5s",
        "--watermark-emit", "on-event", "--checkpoint-interval", "2s",
        "--checkpoint-dir", (tmp_path / "ckpt").as_uri(),
        "--transactional-id-prefix", f"it-conf-{run}", "--group-id", f"it-conf-{run}",
    ]  # fmt: skip
    log = tmp_path / "job.log"
    proc = start_job(args, log, "ticklake.jobs.dedup_ohlc")
    try:
        yield _Run(conn, raw.name, live_trades.name, live_candles.name, namespace, log)
        assert proc.poll() is None, log.read_text()[-3000:]  # ran until stopped
    finally:
        stop(proc)


class _Tail:
    """A read_uncommitted consumer of one topic from its beginning."""

    def __init__(self, conn: Connections, topic: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "group.id": f"it-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "isolation.level": "read_uncommitted",
        })  # fmt: skip
        self.consumer.subscribe([topic])
        self.messages: list[Any] = []

    def poll(self) -> list[Any]:
        for msg in self.consumer.consume(500, timeout=0.2):
            assert msg.error() is None, msg.error()
            self.messages.append(msg)
        return self.messages


def _wait(what: str, until: Any, timeout_s: float, run: _Run) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s\n{run.log.read_text()[-3000:]}")
        time.sleep(0.1)


def test_conflated_forming_candles_are_fewer_ordered_prefixes_and_converge(job: _Run) -> None:
    tape = _tape()
    trades_tail, candles_tail = _Tail(job.conn, job.live_trades), _Tail(job.conn, job.live_candles)
    # The job is up once the first burst comes out on the live trades topic.
    produce(job.conn, job.raw, tape[:PER_BURST])
    _wait("the job's first live trades", lambda: len(trades_tail.poll()) >= PER_BURST, 240, job)
    for b in range(1, BURSTS):  # the rest in bursts: processing time passes between them
        produce(job.conn, job.raw, tape[b * PER_BURST : (b + 1) * PER_BURST])
        time.sleep(BURST_GAP_S)
    produce(job.conn, job.raw, _closers())

    truth = truth_candles(tape)
    truth = truth[truth["timeframe"].isin(TIMEFRAMES.split(","))]
    n_candles = len(truth)

    def finals() -> int:
        return sum(1 for m in candles_tail.poll() if decode(Candle, m.value()).final)

    _wait("every final candle", lambda: finals() >= n_candles, 180, job)
    updates = [decode(Candle, m.value()) for m in candles_tail.poll()]
    updates = [c for c in updates if c.window_start_us < T0 + 24 * 60 * MIN]  # not the closers

    # The consumer rule gives exactly the truth, all final.
    state = apply_updates(updates)
    assert all(c.final for c in state.values())
    assert rows(candle_frame(state.values()), CANDLE_COLS) == rows(truth, CANDLE_COLS)

    forming: dict[tuple[str, str, str, int], list[Candle]] = defaultdict(list)
    for c in updates:
        if not c.final:
            forming[candle_key(c)].append(c)
    assert set(forming) == set(state)
    arrivals: dict[tuple[str, str, int], list[Trade]] = defaultdict(list)
    for t in tape:  # one partition: arrival order is the tape's order
        arrivals[(t.exchange, t.symbol, t.exchange_ts_us // MIN * MIN)].append(t)
    n_1m_updates = 0
    for k, versions in forming.items():
        final = state[k].model_dump()
        assert [c.version for c in versions] == sorted({c.version for c in versions}), k
        assert all(c.version == c.trade_count - 1 for c in versions), k
        assert {c: versions[-1].model_dump()[c] for c in SAME} == {c: final[c] for c in SAME}
        for before, after in itertools.pairwise(versions):
            assert before.volume < after.volume and before.high <= after.high, k
            assert before.low >= after.low and after.high <= final["high"], k
        if k[2] != "1m":
            continue
        n_1m_updates += len(versions)
        minute = arrivals[(k[0], k[1], k[3])]
        for c in versions:  # each one the candle of an arrival prefix
            prefix = truth_candles(minute[: c.trade_count])
            want = prefix[prefix["timeframe"] == "1m"].iloc[0]
            got = c.model_dump()
            assert all(got[col] == want[col] for col in SAME if col != "final"), (c, want)
    # Conflated: per trade there would be one 1m update each.
    assert n_1m_updates <= len(tape) // 2, (n_1m_updates, len(tape))
    print(f"\n{len(tape)} trades -> {n_1m_updates} forming 1m updates")
