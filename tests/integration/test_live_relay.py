"""The dedup + OHLC job's live outputs published straight to the relay (``--live-relay``).

No Kafka live topics and no bridge: the job's ``ticklake-relay`` sinks (Java, JeroMQ) connect
to a real relay's publish port; an SDK subscriber listens on its subscribe port. One job run,
unbounded (the last-value cache lives in the job, so it must be running for a late joiner),
on the embedded MiniCluster, one forming update per trade, over the crafted tape of
``test_dedup_ohlc`` plus history backfills. Then:

- the subscriber receives every deduplicated on-time trade that is not a backfill, exactly
  once (nothing failed, so nothing is repeated), and nothing else, decoded into ``Trade``;
- the 1m and 1h candle updates, applied by the documented rule, equal the pandas truth of
  every candle (the closed windows' final candles, the open ones' last forming update),
  and each candle's forming versions arrive as 0, 1, 2, ... in order; no gaps;
- a late joiner gets the last tick and the last 1m candle of its market at once, flagged
  as replays of messages the first subscriber had (same epoch and sequence number);
- the Kafka live topics stay empty (``--no-live-kafka``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.test_dedup_ohlc import CANDLE_COLS, key, make_tape, produce, rows
from tests.integration.test_live_outputs import (
    CandleKey,
    _end_offsets,
    _job_args,
    _topics,
    apply_updates,
    candle_frame,
    candle_key,
    tape_truth,
    with_history,
)
from tests.integration.test_relay import make_settings, running
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.jobs.thread_priority import thread_names
from ticklake.relay import RelayClient, RelaySettings
from ticklake.relay.subscription import Message
from ticklake.schemas import Candle, Trade
from ticklake.settings import Connections

MARKET = "BINANCE:BTC/USDT"


@pytest.fixture(scope="module")
def relay() -> Iterator[RelaySettings]:
    settings = make_settings()
    with running(settings):
        yield settings


def _start_job(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """The job, unbounded, in a session of its own (its driver and JVM stop together)."""
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    env = dict(os.environ) | job_environment(ctx)
    cmd = [str(flink_python(ctx)), "-m", "ticklake.jobs.dedup_ohlc", *argv]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _thread_nice(driver: int) -> dict[str, set[int]]:
    """Nice values by thread name in the JVM the job's driver started (its child)."""
    jvms = [
        int(p.name) for p in Path("/proc").iterdir()
        if p.name.isdigit() and _ppid(p) == driver and "java" in _comm(p)
    ]  # fmt: skip
    assert len(jvms) == 1, jvms
    out: dict[str, set[int]] = defaultdict(set)
    for tid, name in thread_names(jvms[0]).items():
        with contextlib.suppress(OSError):
            out[name].add(os.getpriority(os.PRIO_PROCESS, tid))
    return out


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text()
    except OSError:
        return ""


def _stop(job: subprocess.Popen[bytes]) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGTERM)
        try:
            job.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)


class RelayRun:
    def __init__(self) -> None:
        self.tape, self.history = with_history(make_tape(seed=11))
        self.received: list[Message] = []
        self.late_joiner: list[Message] = []
        self.gaps = 0
        self.duplicates = 0
        self.live_kafka_records = -1
        #: Nice values of the job JVM's threads, by name.
        self.thread_nice: dict[str, set[int]] = {}


@pytest.fixture(scope="module")
def relay_run(
    conn: Connections, relay: RelaySettings, tmp_path_factory: pytest.TempPathFactory
) -> RelayRun:
    out = RelayRun()
    run = uuid.uuid4().hex[:8]
    t = _topics(conn, run)
    namespace = f"it_lrelay_{run}"
    ensure_market_tables(load_catalog(conn), namespace)
    on_time, _, _ = _truth_of(out)
    want_ticks = {key(tr) for tr in on_time if tr.request_id is None}
    markets = sorted({f"{r.exchange}:{r.symbol}" for r in out.tape.records})
    work = tmp_path_factory.mktemp("lrelay")
    argv = [
        *[a for a in _job_args(t, run, namespace, work / "c") if a != "--bounded"],
        "--live-relay", f"tcp://127.0.0.1:{relay.publish_port}", "--no-live-kafka",
        "--background-nice", "10",
    ]  # fmt: skip
    client = RelayClient(relay)
    job = _start_job(argv, work / "job.log")
    try:
        with client.subscribe(markets, ticks=True, timeframes=["1m", "1h"]) as sub:
            produce(conn, t.raw, out.tape.records)
            deadline = time.monotonic() + 400
            ticks: set[tuple[str, str, str]] = set()
            while not want_ticks <= ticks and time.monotonic() < deadline:
                assert job.poll() is None, (work / "job.log").read_text()[-5000:]
                message = sub.recv(0.5)
                if message is not None:
                    out.received.append(message)
                    if isinstance(message.model, Trade):
                        ticks.add(key(message.model))
            # The candle updates of the last trades follow them; then it goes quiet.
            while (message := sub.recv(3.0)) is not None:
                out.received.append(message)
            out.gaps, out.duplicates = sub.stats.gaps, sub.stats.duplicates
        with client.subscribe([MARKET], ticks=True, timeframes=["1m"]) as late:
            while (message := late.recv(2.0)) is not None:
                out.late_joiner.append(message)
        out.live_kafka_records = _end_offsets(conn, t.live_trades) + _end_offsets(
            conn, t.live_candles
        )
        out.thread_nice = _thread_nice(job.pid)
    finally:
        _stop(job)
    return out


def _truth_of(r: RelayRun) -> tuple[list[Trade], pd.DataFrame, set[tuple[str, str, str]]]:
    return tape_truth(r.tape)


def test_subscriber_gets_each_on_time_trade_once(relay_run: RelayRun) -> None:
    on_time, _, late = _truth_of(relay_run)
    ticks = [m for m in relay_run.received if m.topic.endswith("|tick")]
    assert all(isinstance(m.model, Trade) and not m.replay for m in ticks)
    got = [m.model for m in ticks if isinstance(m.model, Trade)]
    for m, tr in zip(ticks, got, strict=True):
        assert m.topic == f"{tr.exchange}:{tr.symbol}|tick"
    want = {key(tr): tr for tr in on_time if tr.request_id is None}
    seen = Counter(key(tr) for tr in got)
    assert set(seen) == set(want) and set(seen.values()) == {1}
    assert all(want[key(tr)] == tr for tr in got)  # as first received
    assert not set(seen) & late and not set(seen) & relay_run.history
    assert relay_run.gaps == 0 and relay_run.duplicates == 0


def test_candle_updates_equal_the_truth(relay_run: RelayRun) -> None:
    _, want, _ = _truth_of(relay_run)
    messages = [m for m in relay_run.received if "|ohlc:" in m.topic]
    assert len(messages) + sum(m.topic.endswith("|tick") for m in relay_run.received) == len(
        relay_run.received
    )
    updates = [m.model for m in messages if isinstance(m.model, Candle)]
    assert len(updates) == len(messages)
    for m, c in zip(messages, updates, strict=True):
        assert m.topic == f"{c.exchange}:{c.symbol}|ohlc:{c.timeframe}"
    state = apply_updates(updates)
    assert {c.timeframe for c in state.values()} == {"1m", "1h"}
    assert any(c.final for c in state.values())
    same = [c for c in CANDLE_COLS if c not in ("final", "version")]
    want_1m_1h = want[want["timeframe"].isin(["1m", "1h"])]
    assert rows(candle_frame(state.values()), same) == rows(want_1m_1h, same)
    forming: dict[CandleKey, list[Candle]] = defaultdict(list)
    for c in updates:
        if not c.final:
            forming[candle_key(c)].append(c)
    for k, versions in forming.items():
        assert [c.version for c in versions] == list(range(len(versions))), k
    finals = [c for c in state.values() if c.final]
    assert all(c.version == len(forming[candle_key(c)]) for c in finals)


def test_late_joiner_gets_the_last_values_from_the_job(relay_run: RelayRun) -> None:
    got = {m.topic: m for m in relay_run.late_joiner}
    assert set(got) == {f"{MARKET}|tick", f"{MARKET}|ohlc:1m"}
    assert len(relay_run.late_joiner) == 2
    for topic, m in got.items():
        last = [r for r in relay_run.received if r.topic == topic][-1]
        assert m.replay and (m.epoch, m.seq, m.model) == (last.epoch, last.seq, last.model)


def test_no_live_kafka_topics_written(relay_run: RelayRun) -> None:
    assert relay_run.live_kafka_records == 0


def test_the_bulk_threads_run_at_a_lower_priority(relay_run: RelayRun) -> None:
    """The Iceberg writers and committers at nice 10 (``--background-nice 10``), the live
    path's tasks (source, dedup with its live sinks) unchanged."""
    nice = relay_run.thread_nice
    assert nice["IcebergStreamWr"] == {10} and nice["IcebergFilesCom"] == {10}
    live = [name for name in nice if name.startswith(("Source: ", "Deduplicate"))]
    assert live and all(nice[name] == {0} for name in live)
