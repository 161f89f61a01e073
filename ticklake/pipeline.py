"""The platform's main job, end to end on the embedded default, as a bounded run.

local exchange --CCXT--> two ingestors (same markets: real duplicates) --> Kafka
  --> Flink dedup + OHLC on the MiniCluster --> Iceberg (trades, candles) and Kafka (candles)
  --> candles read back from Iceberg with pyiceberg and checked against the exchange's own
      klines fetched through CCXT ``fetch_ohlcv``.

Every run works in the ``demo`` namespace and ``ticklake.demo.*`` topics, recreated at the
start, so a run is repeatable and never touches production topics or tables.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ticklake.errors import StackError, TickLakeError
from ticklake.settings import Connections

Progress = Callable[[str], None]

DEMO_NAMESPACE = "demo"
DEMO_PREFIX = "ticklake.demo"


@dataclass(frozen=True)
class DemoTopics:
    raw: str = f"{DEMO_PREFIX}.trades.raw"
    candles: str = f"{DEMO_PREFIX}.candles"
    late: str = f"{DEMO_PREFIX}.trades.late"
    dead_letters: str = f"{DEMO_PREFIX}.dead-letters"
    heartbeats: str = f"{DEMO_PREFIX}.feed.heartbeats"
    gaps: str = f"{DEMO_PREFIX}.feed.gaps"


@dataclass
class CandleRow:
    symbol: str
    window_start_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int


@dataclass
class PipelineReport:
    markets: tuple[str, ...]
    raw_messages: int
    unique_trades: int
    candles_1m: list[CandleRow]
    compared: int
    matched: int
    mismatches: list[str]
    seconds: dict[str, float]


def _recreate_topics(bootstrap: str, topics: DemoTopics) -> None:
    from confluent_kafka.admin import AdminClient

    from ticklake.schemas import topics as contract

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = list(dataclasses.asdict(topics).values())
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(30)
        deadline = time.monotonic() + 30
        while set(doomed) & set(admin.list_topics(timeout=10).topics):
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not delete {doomed} within 30 s")
            time.sleep(0.2)
    specs: list[contract.TopicSpec[Any]] = [
        dataclasses.replace(contract.RAW_TRADES, name=topics.raw),
        dataclasses.replace(contract.CANDLES, name=topics.candles),
        dataclasses.replace(contract.RAW_TRADES, name=topics.late),
        dataclasses.replace(contract.DEAD_LETTERS, name=topics.dead_letters),
        dataclasses.replace(contract.FEED_HEARTBEATS, name=topics.heartbeats),
        dataclasses.replace(contract.FEED_GAPS, name=topics.gaps),
    ]
    contract.ensure_topics(bootstrap, specs)


def _recreate_tables(conn: Connections) -> None:
    from ticklake.catalog import load_catalog
    from ticklake.catalog.tables import ensure_market_tables

    catalog = load_catalog(conn)
    if (DEMO_NAMESPACE,) in catalog.list_namespaces():
        for ident in catalog.list_tables(DEMO_NAMESPACE):
            catalog.purge_table(ident)
    ensure_market_tables(catalog, DEMO_NAMESPACE)


def _count_messages(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4()}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for pid in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _start_ingestor(
    ingestor_id: str, url: str, markets: Sequence[str], since_ms: int, topics: DemoTopics
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        TICKLAKE_INGESTOR__TOPICS__TRADES=topics.raw,
        TICKLAKE_INGESTOR__TOPICS__DEAD_LETTERS=topics.dead_letters,
        TICKLAKE_INGESTOR__TOPICS__HEARTBEATS=topics.heartbeats,
        TICKLAKE_INGESTOR__TOPICS__GAPS=topics.gaps,
        TICKLAKE_INGESTOR__CREATE_TOPICS="false",
    )
    cmd = [
        sys.executable, "-m", "ticklake.ingestors", "--exchange", "binance",
        "--markets", ",".join(markets), "--exchange-url", url,
        "--ingestor-id", ingestor_id, "--since-ms", str(since_ms),
    ]  # fmt: skip
    # Its log to an unnamed file, not a pipe: a pipe that nobody reads while the ingestor
    # runs fills at 64 KiB, and then its next log line blocks the ingestor for good (a long
    # `--live-seconds`). The file stands in as `proc.stderr` for `_ingestor_failed`.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _stop)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    proc.stderr = log
    return proc


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def _ingestor_failed(proc: subprocess.Popen[bytes], name: str) -> TickLakeError:
    err = ""
    if proc.stderr is not None:
        proc.stderr.seek(0)
        err = proc.stderr.read().decode(errors="replace")
    return StackError(
        f"ingestor {name} exited with code {proc.returncode}",
        detail="\n".join(err.splitlines()[-20:]),
        hint="run it alone: `ticklake ingest run --help`",
    )


def _read_candles(conn: Connections) -> list[CandleRow]:
    from ticklake.catalog import load_catalog

    table = load_catalog(conn).load_table(f"{DEMO_NAMESPACE}.candles")
    rows = table.scan(row_filter="timeframe = '1m'").to_arrow().to_pylist()
    out = [
        CandleRow(
            r["symbol"],
            int(r["window_start_us"]),
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
            int(r["trade_count"]),
        )
        for r in rows
    ]
    return sorted(out, key=lambda c: (c.symbol, c.window_start_us))


def _compare_with_exchange(
    config: dict[str, Any], candles: list[CandleRow], until_ms: int
) -> tuple[int, int, list[str]]:
    """Candles of closed minutes vs the exchange's klines through CCXT ``fetch_ohlcv``."""
    import ccxt

    exchange = ccxt.binance(config)
    compared = matched = 0
    mismatches: list[str] = []
    for symbol in sorted({c.symbol for c in candles}):
        mine = [
            c
            for c in candles
            if c.symbol == symbol and c.window_start_us // 1000 + 60_000 <= until_ms
        ]
        if not mine:
            continue
        since = mine[0].window_start_us // 1000
        klines = {
            int(k[0]): k
            for k in exchange.fetch_ohlcv(symbol, "1m", since=since, limit=len(mine) + 5)
        }
        for c in mine:
            compared += 1
            k = klines.get(c.window_start_us // 1000)
            ours = [float(c.open), float(c.high), float(c.low), float(c.close), float(c.volume)]
            if k is not None and [float(x) for x in k[1:6]] == ours:
                matched += 1
            else:
                mismatches.append(
                    f"{symbol} {c.window_start_us // 1000}: ours {ours}, exchange {k}"
                )
    return compared, matched, mismatches


def _ingest_until_live_done(
    procs: Sequence[subprocess.Popen[bytes]],
    *,
    bootstrap: str,
    raw_topic: str,
    history: int,
    live_seconds: float,
    catch_up_timeout_s: float,
    say: Progress,
) -> None:
    """Wait until both ingestors have caught up with the backfill, then `live_seconds` more."""
    deadline = time.monotonic() + catch_up_timeout_s
    live_until: float | None = None
    while live_until is None or time.monotonic() < live_until:
        for proc, name in zip(procs, ("ingestor-a", "ingestor-b"), strict=True):
            if proc.poll() is not None:
                raise _ingestor_failed(proc, name)
        count = _count_messages(bootstrap, raw_topic)
        if live_until is None and count >= 2 * history:
            live_until = time.monotonic() + live_seconds
            say(f"both ingestors caught up ({count} raw trades); live for {live_seconds:.0f}s")
        elif live_until is None and time.monotonic() > deadline:
            raise StackError(
                f"the ingestors did not catch up within {catch_up_timeout_s:.0f}s "
                f"({count} of {2 * history} raw trades)",
                hint="see `ticklake ingest run --help`; a slow machine may need more time",
            )
        else:
            say(f"ingesting: {count} trades on {raw_topic}")
        time.sleep(1)


def _run_dedup_ohlc(topics: DemoTopics) -> None:
    from ticklake.jobs.runner import run_local_job

    unique = uuid.uuid4().hex[:8]
    args = {
        "--raw-topic": topics.raw,
        "--candles-topic": topics.candles,
        "--late-topic": topics.late,
        "--namespace": DEMO_NAMESPACE,
        "--checkpoint-interval": "2s",
        "--checkpoint-dir": f"file://{conn_home()}/demo-checkpoints/{unique}",
        "--transactional-id-prefix": f"demo-{unique}",
        "--group-id": f"demo-{unique}",
    }
    argv = [part for item in args.items() for part in item] + ["--bounded"]
    run_local_job("ticklake.jobs.dedup_ohlc", argv, timeout_s=900)


def run_pipeline(
    markets: Sequence[str] = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "QUIET/USDT"),
    *,
    history_minutes: int = 10,
    live_seconds: float = 20.0,
    rate_multiplier: float = 3.0,
    catch_up_timeout_s: float = 300.0,
    progress: Progress | None = None,
) -> PipelineReport:
    """Run the bounded pipeline against an already running local stack."""
    from ticklake.exchange import BackgroundExchange, ExchangeSettings, Tape

    say = progress or (lambda _m: None)
    conn = Connections.load()
    bootstrap = conn.kafka.bootstrap_servers
    topics = DemoTopics()
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    say("recreating the demo topics and Iceberg tables")
    _recreate_topics(bootstrap, topics)
    _recreate_tables(conn)
    seconds["prepare"] = time.monotonic() - t0

    settings = ExchangeSettings(seed=42, rate_multiplier=rate_multiplier)
    exchange = BackgroundExchange(settings)
    local = exchange.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        # From a minute boundary, so the first 1m candle is complete on both sides.
        since_ms = (int(time.time() * 1000) // 60_000 - history_minutes) * 60_000
        say(f"local exchange at {local.url}; two ingestors backfill {history_minutes} min")
        for name in ("ingestor-a", "ingestor-b"):
            procs.append(_start_ingestor(name, local.url, markets, since_ms, topics))
        # Wait until both ingestors have caught up with the history (their backfill), then
        # let them run live for `live_seconds`.
        tape = Tape(settings)
        caught_up_ms = int(time.time() * 1000)
        history = sum(len(tape.market(m).trades(since_ms, caught_up_ms)) for m in markets)
        say(f"the exchange's tape holds {history} trades since the backfill start")
        _ingest_until_live_done(
            procs,
            bootstrap=bootstrap,
            raw_topic=topics.raw,
            history=history,
            live_seconds=live_seconds,
            catch_up_timeout_s=catch_up_timeout_s,
            say=say,
        )
        stop_ms = int(time.time() * 1000)
        _stop(procs)
        raw = _count_messages(bootstrap, topics.raw)
        seconds["ingest"] = time.monotonic() - t0
        say(f"ingestors stopped cleanly; {raw} raw trades (two ingestors: duplicates expected)")

        t0 = time.monotonic()
        say("Flink dedup + OHLC job on the embedded MiniCluster (bounded run)")
        _run_dedup_ohlc(topics)
        seconds["flink"] = time.monotonic() - t0

        t0 = time.monotonic()
        candles = _read_candles(conn)
        from ticklake.catalog import load_catalog

        trades = len(load_catalog(conn).load_table(f"{DEMO_NAMESPACE}.trades").scan().to_arrow())
        compared, matched, mismatches = _compare_with_exchange(
            local.ccxt_config(), candles, stop_ms - 60_000
        )
        seconds["verify"] = time.monotonic() - t0
        return PipelineReport(
            tuple(markets), raw, trades, candles, compared, matched, mismatches, seconds
        )
    finally:
        _stop(procs)
        exchange.stop()


def conn_home() -> str:
    from ticklake.home import state_home

    return str(state_home())
