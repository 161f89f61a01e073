"""Live outputs of the dedup + OHLC job, and the live stream through the bridge and relay.

One job run (bounded, on the embedded MiniCluster, one forming update per trade:
``--live-conflation 0ms``) over the crafted tape of
``test_dedup_ohlc`` plus history backfills (``request_id`` set, on time and late), with a
relay, a ``KafkaRelayBridge`` and an SDK subscriber attached while it runs. Then:

- the live trades topic holds exactly the deduplicated on-time trades that are not history
  backfills (each at least once, as first received), no late one;
- applying the live candle updates by the documented rule (per candle the highest version,
  a final one always wins) gives exactly the pandas truth candles of every timeframe, all
  final; the forming updates of each candle have versions 0, 1, 2, ... in order;
- the subscriber receives, decoded, the same ticks and the 1m/1h candle updates, which
  applied by the same rule equal the truth; a late joiner gets the last value at once;
- a record whose key cannot be routed goes to the dead-letter topic; the bridge goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.test_dedup_ohlc import (
    BOUND_S,
    CANDLE_COLS,
    HOUR,
    T0,
    Tape,
    consume_to_end,
    first_arrivals_and_late,
    key,
    make_tape,
    produce,
    rows,
    truth_candles,
)
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.jobs.runner import run_local_job
from ticklake.relay import KafkaRelayBridge, Relay, RelayClient, RelaySettings
from ticklake.relay.bridge import BridgeSettings
from ticklake.relay.subscription import Message
from ticklake.schemas import CANDLES, DEAD_LETTERS, RAW_TRADES, Candle, DeadLetter, Trade
from ticklake.schemas.serde import decode
from ticklake.schemas.topics import LIVE_CANDLES, LIVE_TRADES, TopicSpec, ensure_topics
from ticklake.settings import Connections
from ticklake.stack.process import free_port

CandleKey = tuple[str, str, str, int]
BAD_KEY = b"no-market-here"


def with_history(tape: Tape) -> tuple[Tape, set[tuple[str, str, str]]]:
    """The tape plus history backfills: 4 inserted on time, 3 sent far behind."""
    records = list(tape.records)
    history: set[tuple[str, str, str]] = set()
    step = len(records) // 5
    for n in range(1, 5):  # right after an on-time trade, same market and microsecond
        i = n * step
        while key(records[i]) in tape.late_keys:
            i += 1
        t = records[i].model_copy(update={"trade_id": f"h{n}", "request_id": f"req-{n}"})
        records.insert(i + 1, t)
        history.add(key(t))
    for n in range(5, 8):  # an hour of event time in: far beyond the bound
        t = records[n].model_copy(
            update={
                "trade_id": f"h{n}",
                "request_id": "req-late",
                "exchange_ts_us": T0 + HOUR + n,
                "receipt_ts_us": T0 + HOUR + n + 9,
            }
        )
        records.append(t)
        history.add(key(t))
    return Tape(records, tape.late_keys), history


def candle_key(c: Candle) -> CandleKey:
    return (c.exchange, c.symbol, c.timeframe, c.window_start_us)


def apply_updates(updates: Iterable[Candle]) -> dict[CandleKey, Candle]:
    """The consumer rule: per candle keep the highest version; a final one always wins."""
    state: dict[CandleKey, Candle] = {}
    for c in updates:
        have = state.get(candle_key(c))
        if have is None or (c.final, c.version) > (have.final, have.version):
            state[candle_key(c)] = c
    return state


def candle_frame(candles: Iterable[Candle]) -> pd.DataFrame:
    return pd.DataFrame([c.model_dump() for c in candles])


@dataclasses.dataclass
class LiveRun:
    conn: Connections
    tape: Tape
    history: set[tuple[str, str, str]]
    live_trades: list[Any]
    live_candles: list[Any]
    received: list[Message]
    late_joiner: list[Message]
    subscribed_markets: list[str]
    dead_letters: list[Any]
    gaps: int


class _Job(threading.Thread):
    def __init__(self, argv: list[str]) -> None:
        super().__init__(daemon=True)
        self.argv = argv
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            run_local_job("ticklake.jobs.dedup_ohlc", self.argv, timeout_s=400)
        except BaseException as exc:  # re-raised in the test thread
            self.error = exc


def _end_offsets(conn: Connections, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": conn.kafka.bootstrap_servers, "group.id": "x"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


@dataclasses.dataclass
class _Topics:
    raw: str
    candles: str
    late: str
    live_trades: str
    live_candles: str
    dead: str


def _topics(conn: Connections, run: str) -> _Topics:
    raw = dataclasses.replace(RAW_TRADES, name=f"it.live.raw.{run}", partitions=1)
    candles_topic = CANDLES.renamed(f"it.live.candles.{run}")
    late_topic = RAW_TRADES.renamed(f"it.live.late.{run}")
    live_trades = dataclasses.replace(LIVE_TRADES, name=f"it.live.ltrades.{run}", partitions=3)
    live_candles = dataclasses.replace(LIVE_CANDLES, name=f"it.live.lcandles.{run}", partitions=3)
    dead = DEAD_LETTERS.renamed(f"it.live.dead.{run}")
    specs: list[TopicSpec[Any]] = [raw, candles_topic, late_topic, live_trades, live_candles, dead]
    ensure_topics(conn.kafka.bootstrap_servers, specs)
    return _Topics(*(s.name for s in specs))


def _job_args(t: _Topics, run: str, namespace: str, checkpoints: Path) -> list[str]:
    return [
        "--raw-topic", t.raw, "--candles-topic", t.candles, "--late-topic", t.late,
        "--live-trades-topic", t.live_trades, "--live-candles-topic", t.live_candles,
        "--namespace", namespace, "--timeframes", "1m,5m,15m,1h,1d",
        "--out-of-orderness", f"{BOUND_S}s", "--watermark-emit", "on-event", "--bounded",
        "--checkpoint-interval", "2s", "--checkpoint-dir", checkpoints.as_uri(),
        "--transactional-id-prefix", f"it-live-{run}", "--group-id", f"it-live-{run}",
        # One forming update per trade (conflated updates: test_live_conflation.py).
        "--live-conflation", "0ms",
    ]  # fmt: skip


@contextlib.contextmanager
def _relay_and_bridge(bootstrap: str, t: _Topics, run: str) -> Iterator[KafkaRelayBridge]:
    """A relay and a bridge of the two live topics, each in a thread, stopped on exit."""
    settings = RelaySettings(
        request_port=free_port(),
        work_port=free_port(),
        publish_port=free_port(),
        subscribe_port=free_port(),
    )
    relay = Relay(settings)
    relay.start()
    relay_thread = threading.Thread(target=relay.run, daemon=True)
    relay_thread.start()
    routes = [f"{t.live_trades}=tick", f"{t.live_candles}=ohlc:{{1}}"]
    bridge = KafkaRelayBridge(
        bootstrap,
        BridgeSettings(routes=routes, group_id=f"it-bridge-{run}", dead_letter_topic=t.dead),  # type: ignore[arg-type]
        relay=settings,
    )
    bridge_thread = threading.Thread(target=bridge.run, daemon=True)
    try:
        bridge.start()
        bridge_thread.start()
        assert bridge.wait_assigned(60)
        yield bridge
        assert bridge_thread.is_alive()  # nothing stopped it
    finally:
        bridge.stop()
        if bridge_thread.is_alive():
            bridge_thread.join(15)
        bridge.close()
        relay.stop()
        relay_thread.join(15)
    assert not bridge_thread.is_alive() and not relay_thread.is_alive()


def _drain(sub: Any, into: list[Message], until: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not until() and time.monotonic() < deadline:
        message = sub.recv(0.2)
        if message is not None:
            into.append(message)


@pytest.fixture(scope="module")
def live_run(conn: Connections, tmp_path_factory: pytest.TempPathFactory) -> LiveRun:
    run = uuid.uuid4().hex[:8]
    bootstrap = conn.kafka.bootstrap_servers
    t = _topics(conn, run)
    namespace = f"it_live_{run}"
    ensure_market_tables(load_catalog(conn), namespace)
    tape, history = with_history(make_tape(seed=11))
    markets = sorted({f"{r.exchange}:{r.symbol}" for r in tape.records})
    received: list[Message] = []
    late_joiner: list[Message] = []
    with _relay_and_bridge(bootstrap, t, run) as bridge:
        client = RelayClient(bridge.relay)
        with client.subscribe(markets, ticks=True, timeframes=["1m", "1h"]) as sub:
            produce(conn, t.raw, tape.records)
            job = _Job(_job_args(t, run, namespace, tmp_path_factory.mktemp("ckpt") / "c"))
            job.start()
            _drain(sub, received, lambda: not job.is_alive(), 600)
            assert not job.is_alive() and job.error is None, job.error
            # Everything the job wrote crosses the bridge, then the relay drains.
            total = _end_offsets(conn, t.live_trades) + _end_offsets(conn, t.live_candles)
            _drain(sub, received, lambda: bridge.forwarded >= total, 180)
            assert bridge.forwarded == total
            while (message := sub.recv(3.0)) is not None:
                received.append(message)
            gaps = sub.stats.gaps
        # A late joiner gets the current value of a topic at once (last-value cache).
        with client.subscribe(["BINANCE:BTC/USDT"], ticks=False, timeframes=["1m"]) as sub2:
            while (message := sub2.recv(2.0)) is not None:
                late_joiner.append(message)
        # An unroutable record: dead-lettered, and the bridge goes on.
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(t.live_trades, key=BAD_KEY, value=b"\x01\x02")
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 30
        while bridge.dead_lettered < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    return LiveRun(
        conn=conn,
        tape=tape,
        history=history,
        live_trades=consume_to_end(conn, t.live_trades, "read_uncommitted"),
        live_candles=consume_to_end(conn, t.live_candles, "read_uncommitted"),
        received=received,
        late_joiner=late_joiner,
        subscribed_markets=markets,
        dead_letters=consume_to_end(conn, t.dead, "read_uncommitted"),
        gaps=gaps,
    )


def tape_truth(tape: Tape) -> tuple[list[Trade], pd.DataFrame, set[tuple[str, str, str]]]:
    """On-time first arrivals, their pandas candles, the late trades."""
    firsts, late, margin_ms = first_arrivals_and_late(tape, BOUND_S * 1000)
    assert margin_ms >= 1000
    on_time = [t for t in firsts if key(t) not in late]
    return on_time, truth_candles(on_time), late


def _truth(r: LiveRun) -> tuple[list[Trade], pd.DataFrame, set[tuple[str, str, str]]]:
    return tape_truth(r.tape)


def test_live_trades_are_the_on_time_deduplicated_trades(live_run: LiveRun) -> None:
    on_time, _, late = _truth(live_run)
    history_late = {k for k in live_run.history if k in late}
    assert len(history_late) == 3 and len(live_run.history - late) == 4
    want = {key(t): t for t in on_time if t.request_id is None}
    messages = [m for m in live_run.live_trades if m.key() != BAD_KEY]  # the dead letter's
    assert len(messages) == len(live_run.live_trades) - 1
    got = [decode(Trade, m.value()) for m in messages]
    assert [m.key() for m in messages] == [LIVE_TRADES.key(t) for t in got]
    seen = Counter(key(t) for t in got)
    assert set(seen) == set(want)  # each at least once, nothing else
    assert all(want[key(t)] == t for t in got)  # as first received
    assert not set(seen) & late
    assert not set(seen) & live_run.history


def test_live_candles_converge_to_the_truth(live_run: LiveRun) -> None:
    _, want, _ = _truth(live_run)
    updates = [decode(Candle, m.value()) for m in live_run.live_candles]
    assert [m.key() for m in live_run.live_candles] == [LIVE_CANDLES.key(c) for c in updates]
    state = apply_updates(updates)
    assert all(c.final for c in state.values())
    assert rows(candle_frame(state.values()), CANDLE_COLS) == rows(want, CANDLE_COLS)
    # Forming updates: versions 0, 1, 2, ... in order per candle (one key, one partition),
    # the last one equal to the final candle but for final/version.
    forming: dict[CandleKey, list[Candle]] = defaultdict(list)
    finals: Counter[CandleKey] = Counter()
    for c in updates:
        if c.final:
            finals[candle_key(c)] += 1
        else:
            forming[candle_key(c)].append(c)
    assert set(forming) == set(state) and set(finals) == set(state)
    same = [c for c in CANDLE_COLS if c not in ("final", "version")]
    for k, versions in forming.items():
        final = state[k]
        assert [c.version for c in versions] == list(range(final.version)), k
        last = versions[-1].model_dump()
        assert {c: last[c] for c in same} == {c: final.model_dump()[c] for c in same}
    assert len(updates) > 2 * len(state)


def test_subscriber_receives_ticks_and_candles_through_bridge_and_relay(
    live_run: LiveRun,
) -> None:
    on_time, want, _ = _truth(live_run)
    assert live_run.gaps == 0
    ticks = [m.model for m in live_run.received if m.topic.endswith("|tick")]
    candles = [m.model for m in live_run.received if "|ohlc:" in m.topic]
    assert len(ticks) + len(candles) == len(live_run.received)
    assert all(isinstance(t, Trade) for t in ticks) and all(isinstance(c, Candle) for c in candles)
    trades = [t for t in ticks if isinstance(t, Trade)]
    updates = [c for c in candles if isinstance(c, Candle)]
    for m in live_run.received:
        assert isinstance(m.model, Trade | Candle)
        assert m.topic.startswith(f"{m.model.exchange}:{m.model.symbol}|")
    want_ticks = {key(t): t for t in on_time if t.request_id is None}
    assert {key(t): t for t in trades} == want_ticks
    state = apply_updates(updates)
    assert {c.timeframe for c in state.values()} == {"1m", "1h"}
    assert all(c.final for c in state.values())
    want_1m_1h = want[want["timeframe"].isin(["1m", "1h"])]
    assert rows(candle_frame(state.values()), CANDLE_COLS) == rows(want_1m_1h, CANDLE_COLS)
    forming = [c for c in updates if not c.final]
    assert len(forming) > len(state)
    # The late joiner got the last message of BINANCE:BTC/USDT|ohlc:1m, replayed, at once.
    topic = "BINANCE:BTC/USDT|ohlc:1m"
    last = [m for m in live_run.received if m.topic == topic][-1]
    assert [(m.topic, m.replay, m.model) for m in live_run.late_joiner] == [
        (topic, True, last.model)
    ]


def test_unroutable_record_is_dead_lettered(live_run: LiveRun) -> None:
    assert len(live_run.dead_letters) == 1
    letter = decode(DeadLetter, live_run.dead_letters[0].value())
    assert letter.source_component == "relay:bridge"
    assert letter.reason_code == "UNROUTABLE_KEY"
    assert letter.original_key == BAD_KEY
    assert letter.payload == b"\x01\x02"
    assert letter.source_topic and letter.source_topic.startswith("it.live.ltrades.")


def test_live_topics_created_by_the_job_when_missing(conn: Connections, tmp_path: Path) -> None:
    """Without pre-created live topics the job creates them (JVM admin client) and runs."""
    run = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_TRADES, name=f"it.live2.raw.{run}", partitions=1)
    candles_topic = CANDLES.renamed(f"it.live2.candles.{run}")
    late_topic = RAW_TRADES.renamed(f"it.live2.late.{run}")
    ensure_topics(conn.kafka.bootstrap_servers, [raw, candles_topic, late_topic])
    namespace = f"it_live2_{run}"
    ensure_market_tables(load_catalog(conn), namespace)
    tape = make_tape(seed=3)
    produce(conn, raw.name, tape.records[:200])
    lt, lc = f"it.live2.lt.{run}", f"it.live2.lc.{run}"
    run_local_job(
        "ticklake.jobs.dedup_ohlc",
        [
            "--raw-topic", raw.name, "--candles-topic", candles_topic.name,
            "--late-topic", late_topic.name, "--live-trades-topic", lt,
            "--live-candles-topic", lc, "--namespace", namespace, "--timeframes", "1m",
            "--bounded", "--checkpoint-dir", tmp_path.joinpath("c").as_uri(),
            "--transactional-id-prefix", f"it-live2-{run}", "--group-id", f"it-live2-{run}",
        ],
        timeout_s=400,
    )  # fmt: skip
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": conn.kafka.bootstrap_servers})
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[lt].partitions) == LIVE_TRADES.partitions
    assert len(meta[lc].partitions) == LIVE_CANDLES.partitions
    config = admin.describe_configs([ConfigResource("topic", lc)])
    entries = next(iter(config.values())).result(timeout=10)
    assert entries["cleanup.policy"].value == "compact,delete"
    assert consume_to_end(conn, lt, "read_uncommitted")
