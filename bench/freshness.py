"""Benchmark: freshness of the live stream, trade produced -> live outputs -> subscriber.

    .venv/bin/python -m ticklake.bench freshness [--rates 1000,10000,50000] [--seconds 20]

Starts its own stack (free ports), a relay and a ``ticklake relay bridge`` (processes), and
the dedup + OHLC job unbounded on the embedded MiniCluster (default settings: 5 timeframes,
5 s lateness bound, 10 s checkpoints; idle timeout 5 s). A producer process writes trades of
10 markets to the raw topic at each fixed rate in turn; every trade carries its produce time
(wall clock, µs) as both ``exchange_ts_us`` and ``receipt_ts_us``. Four observer processes,
each on its own core time, measure against the same clock:

- (0) raw topic: a consumer of the job's input, ``now - receipt_ts_us`` (Kafka's own
  share of the latency); (0), (a) and (a0) read a sample, every third partition of their
  topics (``TRADE_PARTITION_SAMPLE``: the same markets in both topics), so that the
  observers take less of the machine from the pipeline they measure;
- (a) live trade: a consumer of the live trades topic, ``now - receipt_ts_us``;
- (a0) the part of (a) inside the job: the live trade record's Kafka ``CreateTime`` (set
  when the job's producer ``send()`` was called; milliseconds) ``- receipt_ts_us``;
- (b) forming 1m candle: a consumer of the live candles topic, for every non-final 1m
  update ``now - receipt_ts_us`` (a forming candle's ``receipt_ts_us`` is the newest
  receipt of its trades: the trade that caused the update);
- (b') the same updates seen from the **oldest** trade they add: with conflated updates
  (``--live-conflation``) a trade waits for the end of its slice, so the newest trade is the
  freshest. The oldest trade an update adds arrived after the previous update's newest
  receipt, so ``now - (that + 1 µs)`` bounds its latency from above (over-estimating by the
  gap between trades of a market: about 10 ms at 1,000 trades/s over 10 markets); the
  first update of a candle this observer sees has no previous one and is left out;
- (c) subscriber: an SDK ``RelayClient.subscribe`` to the ticks of one market (a tenth of
  the trades), through Kafka -> bridge -> relay XSUB -> XPUB, decoded, ``now - receipt``;
  with ``--live-path relay`` the job publishes to the relay's XSUB port itself
  (``--live-relay --no-live-kafka``): no live topics, no bridge, so (a0), (a), (b) and (b')
  have no samples and (c) is the whole path;
- final: a read_committed consumer of the exactly-once candles topic, for every 1m candle
  ``now - window_end_us`` (expected: lateness bound + up to one checkpoint interval).

p50/p99/max per rate (the records produced during that phase), one run per invocation
(``--runs`` repeats the phases on the same job). After the producer stops, the observers
keep reading until the output topics stop growing (the job has caught up, at most 300 s).
Values are sparse-decoded (only the fields needed) so the observers keep up. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from ticklake.bench.stats import latency_percentiles
from ticklake.schemas.kafka_poll import consume_ready

MARKETS = [(f"BENCH{i}", f"S{i}/USDT") for i in range(10)]
SUBSCRIBED = f"{MARKETS[0][0]}:{MARKETS[0][1]}"
BOUND = "5s"
CHECKPOINT = "10s"
#: The trade observers read every N-th partition of the raw and live trades topics (the same
#: markets in both: one key, one murmur2 partition). At 10,000 trades/s reading all of both
#: cost the bench ~0.25 of the machine's 2 cores, taken from the pipeline it measures.
TRADE_PARTITION_SAMPLE = 3

# -- Avro, just enough ------------------------------------------------------------------


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 127:
        out.append(z & 127 | 128)
        z >>= 7
    out.append(z)
    return bytes(out)


def _string(s: str) -> bytes:
    data = s.encode()
    return _zigzag(len(data)) + data


def _decimal(unscaled: int) -> bytes:
    data = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return _zigzag(len(data)) + data


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    shift = z = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 127) << shift
        if b < 128:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7


def _skip_bytes(buf: bytes, pos: int) -> int:
    n, pos = _long(buf, pos)
    return pos + n


def trade_receipt(value: bytes) -> int:
    """``receipt_ts_us`` of a Trade (fields: exchange, symbol, exchange_ts_us, receipt)."""
    pos = _skip_bytes(value, _skip_bytes(value, 0))
    _, pos = _long(value, pos)
    return _long(value, pos)[0]


def candle_fields(value: bytes) -> tuple[int, str, int, bool]:
    """(receipt_ts_us, timeframe, window_end_us, final) of a Candle."""
    pos = _skip_bytes(value, _skip_bytes(value, 0))
    _, pos = _long(value, pos)
    receipt, pos = _long(value, pos)
    pos = _skip_bytes(value, pos)  # ingestor_id
    n, pos = _long(value, pos)
    timeframe = value[pos : pos + n].decode()
    pos += n
    _, pos = _long(value, pos)
    window_end, pos = _long(value, pos)
    for _ in range(5):  # open, high, low, close, volume
        pos = _skip_bytes(value, pos)
    for kind in ("bytes", "long", "bytes"):  # quote_volume, trade_count, vwap: unions
        branch, pos = _long(value, pos)
        if branch == 1:
            pos = _skip_bytes(value, pos) if kind == "bytes" else _long(value, pos)[1]
    return receipt, timeframe, window_end, value[pos] == 1


def _now_us() -> int:
    return time.time_ns() // 1000


# -- child processes ---------------------------------------------------------------------


def _producer(
    bootstrap: str,
    topic: str,
    phases: list[tuple[int, float]],
    out: Path,
    *,
    warmup: tuple[int, float] | None = None,
    overrides: dict[str, str] | None = None,
) -> None:
    """Produce ``rate`` trades/s per phase; 100/s before (3 s), between and after.

    ``warmup`` (rate, seconds): first that load, not measured, then 5 s at 100/s.
    ``overrides``: librdkafka settings over the ingestors' (experiments).
    """
    from confluent_kafka import Producer

    from ticklake.ingestors.kafka_sink import INGEST_PRODUCER_CONFIG

    # An ingestor's producer settings (batches of its linger): the broker's and the job's
    # load from the requests of that linger is part of what this measures.
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **INGEST_PRODUCER_CONFIG,
        **(overrides or {}),
    }
    if "statistics.interval.ms" in config:  # librdkafka's own view, one line per interval
        config["stats_cb"] = _stats_writer(out.with_suffix(".stats.jsonl"))
    producer = Producer(config)
    prefixes = [(f"{e}:{s}".encode(), _string(e) + _string(s)) for e, s in MARKETS]
    tail = _string("bench:freshness")
    # side, price 1000, amount 1 (DECIMAL(18, 8): unscaled big-endian), request_id null
    rest = _string("buy") + _decimal(1000 * 10**8) + _decimal(10**8) + b"\x00"
    counter = [0]
    # Trade ids unique across producer processes (runs): the job's dedup (1 h TTL) would
    # drop a later run's trades that reuse an earlier run's ids.
    run_tag = f"{_now_us()}-{os.getpid()}"

    def run_at(rate: int, seconds: float) -> tuple[int, int, int]:
        start = _now_us()
        t0 = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                counter[0] += 1
                key, prefix = prefixes[counter[0] % len(prefixes)]
                now = _now_us()
                ts = _zigzag(now)
                trade_id = _string(f"{run_tag}-{counter[0]}")
                value = prefix + ts + ts + tail + trade_id + rest
                try:
                    producer.produce(topic, value, key)
                except BufferError:
                    producer.poll(0.01)
                    continue
                sent += 1
            producer.poll(0)
            time.sleep(0.0005)
        return start, _now_us(), sent

    # Connect and learn the partition leaders before the first measured phase: a new
    # producer's first records wait for bootstrap and metadata (0.5 s p99 in the first
    # second of a run's first phase), a cost of starting a producer, not of the pipeline.
    run_at(100, 3.0)
    if warmup is not None:
        run_at(*warmup)
        run_at(100, 5.0)
    results = []
    for rate, seconds in phases:
        start, end, sent = run_at(rate, seconds)
        results.append(
            {"rate": rate, "start": start, "end": end, "sent": sent, "load": os.getloadavg()[0]}
        )
        run_at(100, 5.0)
    run_at(100, 20.0)  # the last windows close (bound) and commit (checkpoint)
    producer.flush(30)
    out.write_text(json.dumps(results))


def _stats_writer(path: Path) -> Callable[[str], None]:
    """A ``stats_cb`` that appends the brokers' request counters and latencies to ``path``.

    Per broker: requests sent (``tx``), awaiting a response (``waitresp_cnt``) and queued
    (``outbuf_cnt``), and the percentiles (µs) of the round trip (``rtt``) and of the time
    a record waits in the producer before it is sent (``int_latency``).
    """

    def write(raw: str) -> None:
        stats = json.loads(raw)
        brokers = {
            b["nodename"]: {
                "tx": b["tx"],
                "waitresp_cnt": b["waitresp_cnt"],
                "outbuf_cnt": b["outbuf_cnt"],
                "rtt": {k: b["rtt"][k] for k in ("p50", "p99", "max")},
                "int_latency": {k: b["int_latency"][k] for k in ("p50", "p99", "max")},
            }
            for b in stats["brokers"].values()
            if b.get("nodeid", -1) >= 0
        }
        line = {"time": stats["time"], "msg_cnt": stats["msg_cnt"], "brokers": brokers}
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")

    return write


def _relay_observer(stop: list[bool], out: Path) -> None:
    """An SDK subscriber to one market's ticks, through the bridge and the relay."""
    from ticklake.relay import RelayClient

    samples: list[tuple[int, int]] = []

    with RelayClient().subscribe([SUBSCRIBED], ticks=True) as sub:
        print("ready", flush=True)
        while not stop[0]:
            message = sub.recv(0.2)
            if message is not None and not message.replay:
                now = _now_us()
                receipt = message.model.receipt_ts_us  # type: ignore[attr-defined]
                samples.append((receipt, now - receipt))
    out.write_text(json.dumps({"relay": {"samples": samples, "gaps": sub.stats.gaps}}))


def _observer(kind: str, bootstrap: str, topics: str, out: Path) -> None:
    """Record (receipt or window end µs, latency µs) pairs until SIGTERM; print 'ready'.

    ``kind`` ``relay``: an SDK subscriber. ``kafka``: one consumer of the topics in
    ``topics`` (``raw=T1,trades=T2,candles=T3``; one fetch stream for all, as the broker's
    load from the bench's own observers is part of what this measures), ``final``: a
    read_committed consumer of ``final=T``. Writes ``{kind: {"samples": ..., ...}}``.
    """
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    if kind == "relay":
        _relay_observer(stop, out)
        return
    from confluent_kafka import Consumer, TopicPartition

    kind_of = {t: k for k, t in (pair.split("=", 1) for pair in topics.split(","))}
    found: dict[str, dict[str, list[tuple[int, int]]]] = {
        k: {"samples": [], "oldest": [], "created": []} for k in kind_of.values()
    }
    newest_by_candle: dict[bytes, int] = {}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "isolation.level": "read_committed" if kind == "final" else "read_uncommitted",
        }
    )
    tps = []
    for topic, what in kind_of.items():
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        if what in ("raw", "trades"):  # a sample: the trades of every third partition
            parts = {p: v for p, v in parts.items() if p % TRADE_PARTITION_SAMPLE == 0}
        tps += [TopicPartition(topic, p) for p in parts]
    for tp in tps:
        tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
    consumer.assign(tps)
    print("ready", flush=True)
    while not stop[0]:
        for msg in consume_ready(consumer, 1000, 0.1):
            value = msg.value()
            if msg.error() is not None or value is None:
                continue
            now = _now_us()
            what = kind_of[msg.topic() or ""]
            samples = found[what]["samples"]
            if what in ("trades", "raw"):
                receipt = trade_receipt(value)
                samples.append((receipt, now - receipt))
                # the record's CreateTime (ms): when its producer's send() was called
                found[what]["created"].append((receipt, msg.timestamp()[1] * 1000 - receipt))
                continue
            receipt, timeframe, window_end, final = candle_fields(value)
            if timeframe != "1m":
                continue
            if what == "candles" and not final:
                samples.append((receipt, now - receipt))
                key = msg.key() or b""
                after = newest_by_candle.get(key)
                newest_by_candle[key] = receipt
                if after is not None:  # a candle's first update seen here has no bound
                    found[what]["oldest"].append((receipt, now - (after + 1)))
            elif what == "final" and final:
                samples.append((window_end, now - window_end))
    consumer.close()
    out.write_text(json.dumps(found))


# -- the benchmark -----------------------------------------------------------------------


def _spawn(
    args: list[str], env: dict[str, str], log: Path, *, ready_line: bool = False
) -> subprocess.Popen[str]:
    """Start a child in its own session, its output to ``log``.

    ``ready_line``: its stdout is a pipe, for the one ``ready`` line an observer prints.
    Every other child writes stdout to the log too: a pipe nobody reads fills at 64 KiB and
    then blocks the writer. The job's JVM logs Hadoop's INFO lines (a Parquet compressor
    per data file) to stdout, and with a pipe here it froze after 7-8 minutes at 10,000
    trades/s, its Iceberg writer stuck in ``FileOutputStream.write`` (session 11).
    """
    out = log.open("w")
    return subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE if ready_line else out,
        stderr=out,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class _Seen(Protocol):
    """Whether a live output has appeared yet (polls up to ~0.2 s); ``close`` at the end."""

    def __call__(self) -> bool: ...

    def close(self) -> None: ...


class _kafka_record:  # noqa: N801 (used like a function)
    """A live output seen on a Kafka topic (the live trades topic)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4()}"})
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])

    def __call__(self) -> bool:
        return any(m.error() is None for m in self.consumer.consume(100, 0.2))

    def close(self) -> None:
        self.consumer.close()


class _relay_tick:  # noqa: N801 (used like a function)
    """A live output seen through the relay: a tick of the subscribed market."""

    def __init__(self, env: dict[str, str]) -> None:
        from ticklake.relay import RelayClient, RelaySettings

        def port(var: str) -> int:
            return int(env[f"TICKLAKE_RELAY__{var}_PORT"])

        settings = RelaySettings(
            request_port=port("REQUEST"),
            work_port=port("WORK"),
            publish_port=port("PUBLISH"),
            subscribe_port=port("SUBSCRIBE"),
        )
        self.sub = RelayClient(settings).subscribe([SUBSCRIBED], ticks=True)

    def __call__(self) -> bool:
        return self.sub.recv(0.2) is not None

    def close(self) -> None:
        self.sub.close()


def _wait_live(bootstrap: str, raw: str, seen: _Seen, timeout_s: float) -> float:
    """Produce a few trades until a live output shows one; returns the seconds it took."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    t0 = time.monotonic()
    n = 0
    try:
        while time.monotonic() - t0 < timeout_s:
            for e, s in MARKETS:
                n += 1
                ts = _zigzag(_now_us())
                value = (_string(e) + _string(s) + ts + ts + _string("bench:warmup")
                         + _string(f"w{n}") + _string("buy") + b"\x02\x01\x02\x01\x00")  # fmt: skip
                producer.produce(raw, value, f"{e}:{s}".encode())
            producer.poll(0)
            if seen():
                return time.monotonic() - t0
        raise TimeoutError(f"no live trade within {timeout_s:.0f}s")
    finally:
        producer.flush(10)
        seen.close()


def _wait_quiet(
    bootstrap: str, topics: list[str], quiet_s: float = 10, cap_s: float = 300
) -> float:
    """Wait until the output topics stop growing (the job has caught up), then 5 s more."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"q-{uuid.uuid4()}"})
    t0 = time.monotonic()
    try:

        def ends() -> int:
            total = 0
            for topic in topics:
                parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                for p in parts:
                    total += consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
            return total

        last, since = ends(), time.monotonic()
        while time.monotonic() - t0 < cap_s:
            time.sleep(2)
            now = ends()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
        time.sleep(5)  # the observers read the tail
        return time.monotonic() - t0
    finally:
        consumer.close()


def run(  # noqa: PLR0912, PLR0915
    rates: list[int],
    seconds: float,
    runs: int = 1,
    *,
    checkpoint: str = CHECKPOINT,
    job_args: list[str] | None = None,
    sinks: str = "all",
    warmup_s: float = 0.0,
    live_path: str = "kafka",
    producer_config: list[str] | None = None,
) -> Table:
    """Run the phases; ``job_args`` are extra flags of the dedup + OHLC job (experiments).

    ``producer_config``: ``KEY=VALUE`` librdkafka settings of the bench's trade producer
    over the ingestors' own (experiments).

    ``warmup_s``: before the first run's phases, that long at the highest rate, not measured
    (the job's JIT compilers are still busy minutes after it starts: bench/README.md).
    ``live_path``: ``kafka`` (live topics and the bridge) or ``relay`` (the job publishes to
    the relay itself).
    """
    from ticklake.bench.proctree import TreeSampler
    from ticklake.bench.stack_up import scratch_stack
    from ticklake.bench.system import SystemSampler
    from ticklake.catalog.connection import load_catalog
    from ticklake.catalog.tables import ensure_market_tables
    from ticklake.schemas.topics import (
        CANDLES,
        DEAD_LETTERS,
        LATE_TRADES,
        LIVE_CANDLES,
        LIVE_TRADES,
        RAW_TRADES,
        ensure_topics,
    )
    from ticklake.settings import Connections
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.manager import Stack
    from ticklake.stack.process import free_port
    from ticklake.stack.settings import StackSettings

    console = Console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    results: list[dict[str, Any]] = []
    finals: list[int] = []
    gaps = 0
    procs: list[subprocess.Popen[str]] = []
    keep = os.environ.get("TICKLAKE_BENCH_WORK")  # keep the logs there (diagnosis)
    with scratch_stack(), tempfile.TemporaryDirectory() as tmp:
        work = Path(keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        stack = Stack()
        stack.up()
        sampler = TreeSampler(interval=0.25 if keep else 0.5)
        system = SystemSampler() if keep else None  # per-second diagnosis of kept runs
        for comp in stack.status():
            if comp.pids:
                sampler.add(comp.name, comp.pids)
        try:
            bootstrap = Connections.load().kafka.bootstrap_servers
            names = {
                "raw": f"bench.fresh.raw.{run_id}", "candles": f"bench.fresh.candles.{run_id}",
                "late": f"bench.fresh.late.{run_id}", "lt": f"bench.fresh.lt.{run_id}",
                "lc": f"bench.fresh.lc.{run_id}", "dead": f"bench.fresh.dead.{run_id}",
            }  # fmt: skip
            ensure_topics(bootstrap, [
                RAW_TRADES.renamed(names["raw"]), CANDLES.renamed(names["candles"]),
                LATE_TRADES.renamed(names["late"]), LIVE_TRADES.renamed(names["lt"]),
                LIVE_CANDLES.renamed(names["lc"]), DEAD_LETTERS.renamed(names["dead"]),
            ])  # fmt: skip
            namespace = f"bench_fresh_{run_id}"
            ensure_market_tables(load_catalog(), namespace)
            env = dict(os.environ)
            for var in ("REQUEST", "WORK", "PUBLISH", "SUBSCRIBE"):
                env[f"TICKLAKE_RELAY__{var}_PORT"] = str(free_port())
            py = sys.executable
            procs.append(_spawn([py, "-m", "ticklake.relay"], env, work / "relay.log"))
            sampler.add("relay", [procs[-1].pid])
            via_relay = live_path == "relay"
            live_args = ["--live-trades-topic", names["lt"], "--live-candles-topic", names["lc"]]
            if via_relay:
                endpoint = f"tcp://127.0.0.1:{env['TICKLAKE_RELAY__PUBLISH_PORT']}"
                live_args = ["--live-relay", endpoint, "--no-live-kafka"]
            else:
                bridge = [str(Path(py).parent / "ticklake"), "relay", "bridge"]
                bridge += ["--topic", f"{names['lt']}=tick",
                           "--topic", f"{names['lc']}=ohlc:{{1}}"]  # fmt: skip
                procs.append(_spawn(bridge, env, work / "bridge.log"))
                sampler.add("bridge", [procs[-1].pid])
            ctx = StackContext(StackSettings())
            job_env = env | job_environment(ctx)
            module = ["-m", "ticklake.jobs.dedup_ohlc"]
            if sinks != "all":  # experiments: the same job with only some of its sinks
                module = ["-m", "ticklake.bench.candles_flink", "--sinks", sinks, "--"]
            job = _spawn([
                str(flink_python(ctx)), *module,
                "--raw-topic", names["raw"], "--candles-topic", names["candles"],
                "--late-topic", names["late"], *live_args, "--namespace", namespace,
                "--out-of-orderness", BOUND, "--checkpoint-interval", checkpoint,
                "--idle-timeout", "5s", "--checkpoint-dir", (work / "ckpt").as_uri(),
                "--transactional-id-prefix", f"bench-fresh-{run_id}",
                "--group-id", f"bench-fresh-{run_id}", *(job_args or []),
            ], job_env, work / "job.log")  # fmt: skip
            procs.append(job)
            sampler.add("job", [job.pid])
            seen = _relay_tick(env) if via_relay else _kafka_record(bootstrap, names["lt"])
            warm = _wait_live(bootstrap, names["raw"], seen, 600)
            console.print(f"job live after {warm:.0f}s of warm-up trades")
            time.sleep(6)  # past the idle timeout: empty partitions no longer hold watermarks
            for i in range(runs):
                observers = {}
                live = f"raw={names['raw']},trades={names['lt']},candles={names['lc']}"
                if via_relay:
                    live = f"raw={names['raw']}"
                for kind, topic in [("kafka", live), ("final", f"final={names['candles']}"),
                                    ("relay", "")]:  # fmt: skip
                    out = work / f"{kind}-{i}.json"
                    p = _spawn([py, "-m", "ticklake.bench.freshness", "_observe", kind,
                                bootstrap, topic, str(out)], env, work / f"{kind}.log",
                               ready_line=True)  # fmt: skip
                    assert p.stdout is not None
                    if p.stdout.readline().strip() != "ready":
                        raise RuntimeError(f"observer {kind} failed: see {work}/{kind}.log")
                    observers[kind] = (p, out)
                    sampler.add("observers", [p.pid])
                phases_out = work / f"phases-{i}.json"
                spec = ",".join(f"{r}:{seconds}" for r in rates)
                console.print(f"run {i + 1}/{runs}: phases {spec} (load {os.getloadavg()[0]:.1f})")
                produce = [py, "-m", "ticklake.bench.freshness", "_produce", bootstrap]
                if i == 0 and warmup_s > 0:
                    produce.append(f"--warmup={max(rates)}:{warmup_s}")
                    console.print(f"warm-up: {max(rates):,}/s for {warmup_s:.0f}s, not measured")
                produce += [f"--config={c}" for c in producer_config or []]
                producer = subprocess.Popen(
                    [*produce, names["raw"], spec, str(phases_out)], env=env
                )
                sampler.add("producer", [producer.pid])
                if producer.wait():
                    raise RuntimeError(f"the producer exited {producer.returncode}")
                outputs = [] if via_relay else [names["lt"], names["lc"]]
                caught_up = _wait_quiet(bootstrap, [*outputs, names["candles"]])
                console.print(
                    f"outputs quiet after {caught_up:.0f}s (load {os.getloadavg()[0]:.1f})"
                )
                data = {}
                for p, out in observers.values():
                    _stop(p)
                    data.update(json.loads(out.read_text()))
                gaps += data["relay"]["gaps"]
                if system is not None:
                    system.save(work / f"system-{i}.json")
                    sampler.save(work / f"cpu-{i}.json")
                phases = json.loads(phases_out.read_text())
                for ph in phases:
                    achieved = ph["sent"] / ((ph["end"] - ph["start"]) / 1e6)
                    row: dict[str, Any] = {"rate": ph["rate"], "run": i + 1, "load": ph["load"],
                                           "achieved": achieved}  # fmt: skip
                    for kind in ("trades", "candles"):  # none with the relay path
                        data.setdefault(kind, {"samples": [], "oldest": [], "created": []})
                    for kind in ("raw", "trades", "candles", "relay"):
                        lat = [
                            lt for r, lt in data[kind]["samples"] if ph["start"] <= r <= ph["end"]
                        ]
                        row[kind] = latency_percentiles(lat)
                    row["trades_sent"] = latency_percentiles([
                        lt for r, lt in data["trades"]["created"] if ph["start"] <= r <= ph["end"]
                    ])  # fmt: skip
                    row["candles_oldest"] = latency_percentiles([
                        lt for r, lt in data["candles"]["oldest"] if ph["start"] <= r <= ph["end"]
                    ])  # fmt: skip
                    row["cores"] = sampler.cores(ph["start"] / 1e6, ph["end"] / 1e6)
                    results.append(row)
                    console.print(row)
                start, end = phases[0]["start"], phases[-1]["end"]
                finals += [lt for w, lt in data["final"]["samples"] if start <= w <= end]
        finally:
            sampler.stop()
            if system is not None:
                system.stop()
            for p in reversed(procs):
                _stop(p)
            stack.down()
    return table(
        results, latency_percentiles(finals), gaps, checkpoint, job_args or [],
        warmup_s=warmup_s, live_path=live_path, producer_config=producer_config,
    )  # fmt: skip


def _fmt(p: dict[str, float]) -> str:
    return f"{p['p50']:.0f} / {p['p99']:.0f} / {p['max']:.0f} (n={p['n']})"


def _cores(cores: dict[str, float]) -> str:
    """``total 1.93: job 1.02, kafka 0.31, ...`` (largest first)."""
    parts = sorted(cores.items(), key=lambda kv: -kv[1])
    total = sum(cores.values())
    return f"total {total:.2f}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts if v >= 0.005)


def table(
    results: list[dict[str, Any]],
    final: dict[str, float],
    gaps: int,
    checkpoint: str = CHECKPOINT,
    job_args: list[str] | None = None,
    *,
    warmup_s: float = 0.0,
    live_path: str = "kafka",
    producer_config: list[str] | None = None,
) -> Table:
    path = (
        "live path: the job -> relay (no Kafka live topics, no bridge)"
        if live_path == "relay"
        else "live path: the job -> Kafka live topics -> bridge -> relay"
    )
    t = Table(
        title="Freshness: trade produced -> live outputs (ms, p50 / p99 / max)",
        caption=f"final 1m candle, window end -> committed (read_committed): {_fmt(final)}; "
        f"bound {BOUND}, checkpoints {checkpoint}; subscriber gaps {gaps}; (0), (a0), (a) "
        f"from every {TRADE_PARTITION_SAMPLE}rd partition of the trade topics; {path}"
        + (f"; job flags {' '.join(job_args)}" if job_args else "")
        + (f"; {warmup_s:.0f}s of unmeasured warm-up at the top rate first" if warmup_s else "")
        + (f"; trade producer {' '.join(producer_config)}" if producer_config else ""),
    )
    for col in ("trades/s (achieved)", "run", "(0) raw topic",
                "(a0) in the job: live trade sent (CreateTime, ms)", "(a) live trade",
                "(b) forming 1m candle", "(b') same, oldest trade (bound)",
                "(c) subscriber tick", "load"):  # fmt: skip
        t.add_column(col)
    t.add_column("cores used (job, broker, bench, ...)")
    for r in results:
        t.add_row(
            f"{r['rate']:,} ({r['achieved']:,.0f})", str(r["run"]), _fmt(r["raw"]),
            _fmt(r["trades_sent"]), _fmt(r["trades"]), _fmt(r["candles"]),
            _fmt(r["candles_oldest"]), _fmt(r["relay"]), f"{r['load']:.1f}", _cores(r["cores"]),
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> None:
    """Child entry points: ``_produce`` and ``_observe`` (used by :func:`run`)."""
    p = argparse.ArgumentParser(prog="python -m ticklake.bench.freshness")
    sub = p.add_subparsers(dest="cmd", required=True)
    prod = sub.add_parser("_produce")
    prod.add_argument("bootstrap")
    prod.add_argument("topic")
    prod.add_argument("phases", help="rate:seconds,...")
    prod.add_argument("out", type=Path)
    prod.add_argument("--warmup", help="rate:seconds, produced first and not measured")
    prod.add_argument("--config", action="append", default=[], help="KEY=VALUE (librdkafka)")
    obs = sub.add_parser("_observe")
    obs.add_argument("kind", choices=["kafka", "final", "relay"])
    obs.add_argument("bootstrap")
    obs.add_argument("topic")
    obs.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "_produce":
        phases = [(int(r), float(s)) for r, s in (x.split(":") for x in args.phases.split(","))]
        warmup = None
        if args.warmup:
            rate, secs = args.warmup.split(":")
            warmup = (int(rate), float(secs))
        overrides = dict(c.split("=", 1) for c in args.config)
        _producer(args.bootstrap, args.topic, phases, args.out, warmup=warmup, overrides=overrides)
    else:
        _observer(args.kind, args.bootstrap, args.topic, args.out)


if __name__ == "__main__":
    main()
