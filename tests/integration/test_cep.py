"""End to end: crafted candle and heartbeat tapes through the CEP job, alerts checked by hand.

Each built-in pattern fires on a tape made for it, including a case exactly at its limit
that must not fire (every comparison is strictly "more than"); quiet markets and healthy
feeds in the same run fire nothing. Candles are published directly in the Candle layout
(as ``dedup_ohlc`` writes them), heartbeats in the FeedHeartbeat layout, each to a fresh
one-partition topic. The job runs unbounded on the embedded MiniCluster (end of input would
count as the end of event time and report every feed dead); once the alerts are committed
it is stopped. Alerts are read back from Kafka (read_committed) and from Iceberg and must
equal the hand-computed list exactly: ids, windows, times and the exact decimals. A second,
bounded job then replays the same tapes (without dead_feed) and must write byte-identical
alerts: the ids depend only on the match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_alerts_table
from ticklake.jobs.runner import run_local_job
from ticklake.schemas import (
    ALERTS,
    CANDLES,
    FEED_HEARTBEATS,
    PRODUCER_CONFIG,
    Alert,
    Candle,
    FeedHeartbeat,
    TopicSpec,
)
from ticklake.schemas.serde import decode, encode, schema_header
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections

T0 = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000
S = 1_000_000
MIN = 60 * S
PRODUCER = "flink:dedup_ohlc"

BTC = ("BINANCE", "BTC/USDT")  # price spikes by percent, up then down; dead feed it-a
ETH = ("BINANCE", "ETH/USDT")  # volume surge (k 2, trailing 5); stale feed it-a
SOL = ("BINANCE", "SOL/USDT")  # price spike by ATR (pct 50, atr_k 3)
XBT = ("KRAKEN", "XBT/EUR")  # quiet market, healthy feed; also runs the candle clock
CB = ("COINBASE", "BTC/USD")  # a reconnecting feed with an old last trade: not stale

PATTERNS_TOML = """
[price_spike]
pct = "5"
window = "5m"

[price_spike.markets."BINANCE:SOL/USDT"]
pct = "50"
atr_k = "3"

[volume_surge]
k = "3"
trailing = 20

[volume_surge.markets."BINANCE:ETH/USDT"]
k = "2"
trailing = 5

[stale_feed]
after = "60s"

[dead_feed]
factor = "2"
max_gap = "60s"
"""


def candle(
    market: tuple[str, str],
    minute: int,
    close: str,
    *,
    volume: str = "1",
    high: str | None = None,
    low: str | None = None,
    open_: str | None = None,
    timeframe: str = "1m",
    producer: str = PRODUCER,
) -> Candle:
    length = {"1m": MIN, "5m": 5 * MIN}[timeframe]
    start = T0 + minute * MIN
    c, o = Decimal(close), Decimal(open_ or close)
    return Candle(
        exchange=market[0],
        symbol=market[1],
        exchange_ts_us=start + length - S,
        receipt_ts_us=start + length + 2 * S,
        ingestor_id=producer,
        timeframe=timeframe,
        window_start_us=start,
        window_end_us=start + length,
        open=o,
        high=Decimal(high) if high else max(o, c),
        low=Decimal(low) if low else min(o, c),
        close=c,
        volume=Decimal(volume),
        trade_count=1,
        final=True,
        version=1,
    )


def candle_tape() -> list[Candle]:
    out: list[Candle] = []
    btc = ["100"] * 5 + ["104", "105"] + ["105.00000001"] * 8 + ["99"] * 16  # minutes 0..30
    out += [candle(BTC, m, p) for m, p in enumerate(btc)]
    eth_volumes = ["10"] * 5 + ["20", "24.00000001"] + ["10"] * 24
    out += [candle(ETH, m, "50", volume=v) for m, v in enumerate(eth_volumes)]
    for m in range(31):
        if m < 20:
            out.append(candle(SOL, m, "100", high="100.5", low="99.5"))
        elif m == 20:
            out.append(candle(SOL, m, "103", open_="100", high="103.5", low="99.5"))
        else:
            out.append(candle(SOL, m, "103.5", open_="103", high="104", low="103"))
    for m in range(41):  # quiet: within 0.2 %, constant volume; runs to minute 40 (the clock)
        out.append(candle(XBT, m, ["30000", "30030", "29990", "30050"][m % 4], volume="2"))
    # Ignored inputs: a 5m candle and another producer's 1m candle that would both spike.
    out.append(candle(BTC, 10, "300", volume="900", timeframe="5m"))
    out.append(candle(BTC, 25, "500", volume="900", producer="binance-klines"))
    return sorted(out, key=lambda c: (c.window_end_us, c.timeframe, c.exchange, c.symbol))


def heartbeat(
    market: tuple[str, str], ingestor: str, t_s: int, last_s: int | None, state: str = "live"
) -> FeedHeartbeat:
    return FeedHeartbeat(
        exchange=market[0],
        symbol=market[1],
        exchange_ts_us=None if last_s is None else T0 + last_s * S - 300,
        receipt_ts_us=T0 + t_s * S,
        ingestor_id=ingestor,
        state=state,  # type: ignore[arg-type]
        interval_ms=5000,
        trades_since_last=1,
        last_trade_id=None if last_s is None else str(last_s),
        last_receipt_ts_us=None if last_s is None else T0 + last_s * S,
    )


def heartbeat_tape() -> list[FeedHeartbeat]:
    out: list[FeedHeartbeat] = []
    for t in range(0, 301, 5):
        # Stale: trades stop at 100 s and resume at 200 s; 160 s is exactly 60 s (not stale).
        eth_last = t if t <= 100 or t >= 200 else 100
        out.append(heartbeat(ETH, "it-a", t, eth_last))
        # Dead: silent after 100 s until 150 s; 50 -> 60 s is exactly 2 x interval (not dead).
        if t != 55 and not 100 < t < 150:
            out.append(heartbeat(BTC, "it-a", t, t))
        out.append(heartbeat(BTC, "it-c", t, t))  # a second, healthy feed of the same market
        out.append(heartbeat(XBT, "it-b", t, max(0, t - 30)))
        out.append(heartbeat(CB, "it-b", t, 0, state="reconnecting"))
    return sorted(out, key=lambda h: h.receipt_ts_us)


@dataclasses.dataclass(frozen=True)
class Want:
    pattern: str
    severity: str
    market: tuple[str, str]
    ingestor_id: str | None
    window: tuple[int, int]
    exchange_ts_us: int
    receipt_ts_us: int
    observed: str | None
    threshold: str
    reference: str | None
    unit: str

    def alert_id(self) -> str:
        identity = (
            f"{self.pattern}|{self.market[0]}:{self.market[1]}|{self.ingestor_id or ''}"
            f"|{self.window[0]}|{self.window[1]}"
        )
        return hashlib.sha256(identity.encode()).hexdigest()[:32]


def spike(market: tuple[str, str], minute: int, observed: str, threshold: str, ref: str) -> Want:
    end = T0 + (minute + 1) * MIN  # the trigger candle's end; the window is the 5m before it
    return Want("price_spike", "warning", market, None, (end - 5 * MIN, end), end - S,
                end + 2 * S, observed, threshold, ref, "price")  # fmt: skip


def expected_alerts() -> list[Want]:
    """Worked out by hand from the tapes (see each comment)."""
    surge_start = T0 + 6 * MIN
    return [
        # BTC 100 -> 105.00000001 at minute 7: limit 5 % of 100 = 5, move 5.00000001 > 5.
        # (Minute 6, 105, is exactly 5: silent.)
        spike(BTC, 7, "105.00000001", "5", "100"),
        # BTC 105.00000001 -> 99 at minute 15: limit 5.2500000005, move 6.00000001.
        spike(BTC, 15, "99", "5.2500000005", "105.00000001"),
        # SOL: ATR(14) = 1 (every true range 1), limit min(50 % of 100, 3 x 1) = 3. Minute 20
        # (103) moves exactly 3: silent; minute 21 (103.5) moves 3.5 from 100.
        spike(SOL, 21, "103.5", "3", "100"),
        # ETH minute 6: trailing 5 volumes 10,10,10,10,20 (mean 12), limit 2 x 12 = 24,
        # volume 24.00000001. (Minute 5: 20 against exactly 2 x 10: silent.)
        Want(
            "volume_surge",
            "warning",
            ETH,
            None,
            (surge_start, surge_start + MIN),
            surge_start + MIN - S,
            surge_start + MIN + 2 * S,
            "24.00000001",
            "24",
            "12",
            "volume",
        ),
        # ETH feed it-a: last trade at 100 s; the heartbeat at 160 s is exactly 60 s old
        # (silent), the one at 165 s is 65 s old: one alert for the episode.
        Want(
            "stale_feed",
            "warning",
            ETH,
            "it-a",
            (T0 + 100 * S, T0 + 165 * S),
            T0 + 165 * S,
            T0 + 165 * S,
            "65",
            "60",
            None,
            "s",
        ),
        # BTC feed it-a: heartbeat at 100 s, the next at 150 s; due by 100 + 2 x 5 s = 110 s.
        Want(
            "dead_feed",
            "critical",
            BTC,
            "it-a",
            (T0 + 100 * S, T0 + 110 * S),
            T0 + 110 * S,
            T0 + 100 * S,
            None,
            "10",
            None,
            "s",
        ),
    ]


def want_row(w: Want) -> tuple[Any, ...]:
    return (w.alert_id(), w.pattern, w.severity, *w.market, w.ingestor_id, *w.window,
            w.exchange_ts_us, w.receipt_ts_us, w.observed, w.threshold, w.reference,
            w.unit)  # fmt: skip


def got_row(a: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(a[k] for k in ("alert_id", "pattern", "severity", "exchange", "symbol",
                                "ingestor_id", "window_start_us", "window_end_us",
                                "exchange_ts_us", "receipt_ts_us", "observed", "threshold",
                                "reference", "unit"))  # fmt: skip


#: The numbers are exact decimals in their shortest text (no trailing zeros).
MESSAGES = {
    "BINANCE:BTC/USDT moved from 100 to 105.00000001 within 5m, more than the limit of 5",
    "BINANCE:BTC/USDT moved from 105.00000001 to 99 within 5m, more than the limit of 5.2500000005",
    "BINANCE:SOL/USDT moved from 100 to 103.5 within 5m, more than the limit of 3",
    "BINANCE:ETH/USDT traded 24.00000001 in one candle, more than 2 x the average 12 of the "
    "previous 5 candles",
    "BINANCE:ETH/USDT feed it-a is live but received no trade for 65 s",
    "BINANCE:BTC/USDT feed it-a sent no heartbeat within 10 s of its last one (state live)",
}


def produce(conn: Connections, spec: TopicSpec[Any], records: list[Any]) -> None:
    producer = Producer(
        {"bootstrap.servers": conn.kafka.bootstrap_servers, "enable.idempotence": True}
        | PRODUCER_CONFIG
    )
    for r in records:
        producer.produce(
            spec.name, key=spec.key(r), value=encode(r), headers=[schema_header(type(r))]
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def read_committed(conn: Connections, topic: str) -> list[Any]:
    """Every message a read_committed consumer sees now (one partition, to its end)."""
    consumer = Consumer(
        {
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "group.id": f"it-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        tp = TopicPartition(topic, 0, 0)
        consumer.assign([tp])
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if consumer.position([TopicPartition(topic, 0)])[0].offset >= end or end == 0:
                return out
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(msg)
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        consumer.close()


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop the job's whole process group (driver, gateway JVM), this process's own child."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def running_job() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        stop(proc)


def start_job(
    args: list[str], log: Path, module: str = "ticklake.jobs.cep"
) -> subprocess.Popen[str]:
    """A job unbounded on the embedded MiniCluster, in its own session (stopped by pid)."""
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    env = dict(os.environ) | job_environment(ctx)
    out = log.open("w")
    return subprocess.Popen(
        [str(flink_python(ctx)), "-m", module, *args],
        env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def alerts_in_iceberg(conn: Connections, namespace: str) -> list[dict[str, Any]]:
    table = load_catalog(conn).load_table(f"{namespace}.alerts")
    rows: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    return rows


@dataclasses.dataclass(frozen=True)
class CepRun:
    """One test's own topics (one partition each), alerts table and patterns file."""

    run: str
    candles: TopicSpec[Any]
    heartbeats: TopicSpec[Any]
    alerts: TopicSpec[Any]
    namespace: str
    patterns_file: Path


def fresh_run(conn: Connections, tmp_path: Path, tag: str, patterns: str) -> CepRun:
    run = uuid.uuid4().hex[:8]
    topics = [
        dataclasses.replace(spec, name=f"it.cep.{tag}.{kind}.{run}", partitions=1)
        for spec, kind in ((CANDLES, "candles"), (FEED_HEARTBEATS, "hb"), (ALERTS, "alerts"))
    ]
    ensure_topics(conn.kafka.bootstrap_servers, topics)
    namespace = f"it_cep_{tag}_{run}"
    assert ensure_alerts_table(load_catalog(conn), namespace)
    patterns_file = tmp_path / "cep.toml"
    patterns_file.write_text(patterns)
    return CepRun(run, *topics, namespace=namespace, patterns_file=patterns_file)


def test_cep_patterns_fire_on_crafted_tapes_and_stay_silent_on_quiet_ones(
    conn: Connections, tmp_path: Path, running_job: list[subprocess.Popen[str]]
) -> None:
    r = fresh_run(conn, tmp_path, "fire", PATTERNS_TOML)
    run, candles, heartbeats, alerts = r.run, r.candles, r.heartbeats, r.alerts
    namespace, patterns_file = r.namespace, r.patterns_file
    assert not ensure_alerts_table(load_catalog(conn), namespace)  # idempotent
    produce(conn, candles, candle_tape())
    produce(conn, heartbeats, heartbeat_tape())

    want = sorted(want_row(w) for w in expected_alerts())
    log = tmp_path / "job.log"
    running_job.append(
        start_job(
            [
                "--candles-topic", candles.name,
                "--heartbeats-topic", heartbeats.name,
                "--alerts-topic", alerts.name,
                "--namespace", namespace,
                "--patterns-file", str(patterns_file),
                "--watermark-emit", "on-event",
                "--no-liveness-clock",  # recorded heartbeats: their feeds end with the tape
                "--out-of-orderness", "5s",
                "--checkpoint-interval", "2s",
                "--checkpoint-dir", (tmp_path / "checkpoints").as_uri(),
                "--transactional-id-prefix", f"it-cep-{run}",
                "--group-id", f"it-cep-{run}",
            ],
            log,
        )
    )  # fmt: skip

    # Wait until both sinks hold every expected alert, then some checkpoints more for extras.
    deadline = time.monotonic() + 420
    kafka: list[Alert] = []
    iceberg: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        assert running_job[0].poll() is None, log.read_text()[-3000:]
        kafka = [decode(Alert, m.value()) for m in read_committed(conn, alerts.name)]
        iceberg = alerts_in_iceberg(conn, namespace)
        if len(kafka) >= len(want) and len(iceberg) >= len(want):
            break
        time.sleep(3)
    else:
        raise AssertionError(f"{len(kafka)} alerts in Kafka, {len(iceberg)} in Iceberg; "
                             f"log tail:\n{log.read_text()[-3000:]}")  # fmt: skip
    time.sleep(10)
    messages = read_committed(conn, alerts.name)
    kafka = [decode(Alert, m.value()) for m in messages]
    iceberg = alerts_in_iceberg(conn, namespace)

    # Kafka: keyed by market, exactly the hand-computed alerts, each once.
    assert [m.key().decode() for m in messages] == [a.market for a in kafka]
    assert sorted(got_row(a.model_dump()) for a in kafka) == want
    assert {a.message for a in kafka} == MESSAGES
    # Iceberg: the same rows, and the partition time is the window start.
    assert sorted(got_row(r) for r in iceberg) == want
    for r in iceberg:
        assert r["window_start"] == datetime.fromtimestamp(r["window_start_us"] / S, tz=UTC)
    # The quiet market and the healthy or reconnecting feeds fired nothing.
    quiet = {XBT, CB, (BTC[0], BTC[1], "it-c")}
    assert not [a for a in kafka if (a.exchange, a.symbol) in quiet
                or (a.exchange, a.symbol, a.ingestor_id) in quiet]  # fmt: skip
    print("\n" + "\n".join(f"{a.pattern}: {a.message}" for a in kafka))

    # A replay of the same tapes by a second, bounded job (dead_feed left out: end of input
    # is the end of event time) gives the same alerts with the same ids, byte for byte.
    stop(running_job[0])
    replay_alerts = dataclasses.replace(alerts, name=f"it.cep.replay.{run}")
    ensure_topics(conn.kafka.bootstrap_servers, [replay_alerts])
    replay_ns = f"{namespace}_replay"
    ensure_alerts_table(load_catalog(conn), replay_ns)
    run_local_job(
        "ticklake.jobs.cep",
        [
            "--candles-topic", candles.name,
            "--heartbeats-topic", heartbeats.name,
            "--alerts-topic", replay_alerts.name,
            "--namespace", replay_ns,
            "--patterns-file", str(patterns_file),
            "--patterns", "price_spike,volume_surge,stale_feed",
            "--watermark-emit", "on-event",
            "--bounded",
            "--checkpoint-interval", "2s",
            "--checkpoint-dir", (tmp_path / "replay-checkpoints").as_uri(),
            "--transactional-id-prefix", f"it-cep-replay-{run}",
            "--group-id", f"it-cep-replay-{run}",
        ],
        timeout_s=420,
    )  # fmt: skip
    replayed = read_committed(conn, replay_alerts.name)
    first = {m.value() for m, a in zip(messages, kafka, strict=True) if a.pattern != "dead_feed"}
    assert len(replayed) == len(first) == len(want) - 1
    assert {m.value() for m in replayed} == first
    assert len(alerts_in_iceberg(conn, replay_ns)) == len(first)


def wait_for_alerts(
    conn: Connections,
    topic: str,
    namespace: str,
    count: int,
    *,
    proc: subprocess.Popen[str],
    log: Path,
) -> None:
    """Until Kafka (read_committed) and Iceberg both hold at least ``count`` alerts."""
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        kafka = read_committed(conn, topic)
        if len(kafka) >= count and len(alerts_in_iceberg(conn, namespace)) >= count:
            return
        time.sleep(3)
    raise AssertionError(f"fewer than {count} alerts; log tail:\n{log.read_text()[-3000:]}")


def test_cep_restart_from_a_checkpoint_loses_and_repeats_no_alert(
    conn: Connections, tmp_path: Path, running_job: list[subprocess.Popen[str]]
) -> None:
    """The job is killed (SIGKILL) mid-tape after its first alerts are committed, restarted
    from its last retained checkpoint, and the rest of the tapes arrive: every alert exactly
    once in Kafka and in Iceberg, the same six as in one uninterrupted run."""
    r = fresh_run(conn, tmp_path, "restart", PATTERNS_TOML)
    run, candles, heartbeats, alerts = r.run, r.candles, r.heartbeats, r.alerts
    namespace, patterns_file = r.namespace, r.patterns_file
    checkpoints = tmp_path / "checkpoints"
    args = [
        "--candles-topic", candles.name,
        "--heartbeats-topic", heartbeats.name,
        "--alerts-topic", alerts.name,
        "--namespace", namespace,
        "--patterns-file", str(patterns_file),
        "--watermark-emit", "on-event",
        "--no-liveness-clock",  # recorded heartbeats: their feeds end with the tape
        "--checkpoint-interval", "2s",
        "--checkpoint-dir", checkpoints.as_uri(),
        "--transactional-id-prefix", f"it-cep-r-{run}",
        "--group-id", f"it-cep-r-{run}",
    ]  # fmt: skip
    # Part 1: candles to minute 10, heartbeats to 130 s: the BTC spike at minute 7 and the
    # ETH surge at minute 6 fire; the rest needs later data.
    split_us = T0 + 11 * MIN
    tape_c, tape_h = candle_tape(), heartbeat_tape()
    produce(conn, candles, [c for c in tape_c if c.window_end_us <= split_us])
    produce(conn, heartbeats, [h for h in tape_h if h.receipt_ts_us <= T0 + 130 * S])
    log1 = tmp_path / "job1.log"
    running_job.append(start_job(args, log1))
    wait_for_alerts(conn, alerts.name, namespace, 2, proc=running_job[0], log=log1)
    os.killpg(running_job[0].pid, signal.SIGKILL)  # a crash: no savepoint, no flush
    running_job[0].wait()

    done = [p.parent for p in checkpoints.glob("*/chk-*/_metadata")]
    assert done, "no completed checkpoint"
    latest = max(done, key=lambda p: int(p.name.split("-")[1]))
    produce(conn, candles, [c for c in tape_c if c.window_end_us > split_us])
    produce(conn, heartbeats, [h for h in tape_h if h.receipt_ts_us > T0 + 130 * S])
    log2 = tmp_path / "job2.log"
    running_job.append(start_job([*args, "--from-checkpoint", latest.as_uri()], log2))
    want = sorted(want_row(w) for w in expected_alerts())
    wait_for_alerts(conn, alerts.name, namespace, len(want), proc=running_job[1], log=log2)
    time.sleep(10)  # several checkpoints more: anything repeated would show now

    kafka = [decode(Alert, m.value()) for m in read_committed(conn, alerts.name)]
    assert sorted(got_row(a.model_dump()) for a in kafka) == want
    assert sorted(got_row(r) for r in alerts_in_iceberg(conn, namespace)) == want
    print(f"\nrestored from {latest.name}; {len(kafka)} alerts, each once")


def test_dead_feed_fires_when_the_only_feed_stops(
    conn: Connections, tmp_path: Path, running_job: list[subprocess.Popen[str]]
) -> None:
    """One feed, the only one on its topic, sends live heartbeats (receipt = now, every
    0.5 s) and stops, as when the only ingestor crashes. No other feed moves event time on;
    the liveness clock does once the topic is idle: exactly one dead_feed alert, for the
    last heartbeat, with its deadline worked out by hand."""
    r = fresh_run(conn, tmp_path, "live", '[dead_feed]\nfactor = "2"\nmax_gap = "3s"\n')
    run, candles, heartbeats, alerts = r.run, r.candles, r.heartbeats, r.alerts
    namespace, patterns_file = r.namespace, r.patterns_file
    log = tmp_path / "job.log"
    running_job.append(
        start_job(
            [
                "--candles-topic", candles.name,
                "--heartbeats-topic", heartbeats.name,
                "--alerts-topic", alerts.name,
                "--namespace", namespace,
                "--patterns", "dead_feed",
                "--patterns-file", str(patterns_file),
                "--watermark-emit", "on-event",
                "--out-of-orderness", "1s",
                "--idle-timeout", "10s",
                "--checkpoint-interval", "2s",
                "--checkpoint-dir", (tmp_path / "checkpoints").as_uri(),
                "--transactional-id-prefix", f"it-cep-l-{run}",
                "--group-id", f"it-cep-l-{run}",
            ],
            log,
        )
    )  # fmt: skip
    # Heartbeats every 0.5 s that announce a 2 s interval: each is due within min(2 x 2 s,
    # max_gap 3 s) = 3 s, far above the spacing even on a loaded machine.
    producer = Producer(
        {"bootstrap.servers": conn.kafka.bootstrap_servers, "enable.idempotence": True}
        | PRODUCER_CONFIG
    )
    last = 0
    for i in range(30):
        last = time.time_ns() // 1000
        hb = FeedHeartbeat(
            exchange=BTC[0], symbol=BTC[1], exchange_ts_us=last - 300, receipt_ts_us=last,
            ingestor_id="it-live", state="live", interval_ms=2000, trades_since_last=1,
            last_trade_id=str(i), last_receipt_ts_us=last - 200,
        )  # fmt: skip
        producer.produce(
            heartbeats.name, key=heartbeats.key(hb), value=encode(hb),
            headers=[schema_header(FeedHeartbeat)],
        )  # fmt: skip
        assert producer.flush(10) == 0
        time.sleep(0.5)
    want = Want("dead_feed", "critical", BTC, "it-live", (last, last + 3 * S), last + 3 * S,
                last, None, "3", None, "s")  # fmt: skip
    wait_for_alerts(conn, alerts.name, namespace, 1, proc=running_job[0], log=log)
    time.sleep(6)  # checkpoints more: anything else would show now
    kafka = [decode(Alert, m.value()) for m in read_committed(conn, alerts.name)]
    assert [got_row(a.model_dump()) for a in kafka] == [want_row(want)]
    assert kafka[0].message == (
        "BINANCE:BTC/USDT feed it-live sent no heartbeat within 3 s of its last one (state live)"
    )
    assert [got_row(r) for r in alerts_in_iceberg(conn, namespace)] == [want_row(want)]
