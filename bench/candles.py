"""Benchmark: candles from trades, ticklake's dedup + OHLC job vs what a Python team would
otherwise pick, on the same recorded tape in the same Kafka topic.

    .venv/bin/python -m ticklake.bench candles [--records 5000000] [--runs 3]
        [--contenders raw,dict,p1,p2,quix,p1:kafka,p2:kafka,p1:iceberg,p2:iceberg]

The tape (``candles_tape``: several markets, duplicates from a second ingestor, out-of-order
trades within the lateness bound, trades on window boundaries, identical timestamps, a quiet
market) is generated once (seeded) and cached under ``<state home>/bench/candles``, with its
pandas truth. The bench starts its own stack (free ports), loads the tape into one raw-trades
topic (12 partitions, the project's Avro wire format) once, then per run starts each
contender in its own child process, all reading that topic from the beginning:

- ``ticklake pN[:sinks][:nolive]``: the dedup + OHLC job (``candles_flink``), bounded, on
  the embedded MiniCluster with parallelism N; sinks ``all`` (the job as deployed: Kafka and
  Iceberg), ``kafka`` or ``iceberg``; ``nolive`` turns the live outputs off (``--no-live``);
  ``conflate=<duration>`` sets ``--live-conflation`` (``conflate=0ms``: an update per trade);
  ``relay`` sends the live outputs straight to a relay the bench starts (``--live-relay``,
  ``--no-live-kafka``) instead of the Kafka live topics, with one subscriber to every topic
  that counts what it receives (``RelayTap``);
- ``quix``: the same computation in Quix Streams (``candles_quix``, its own environment);
- ``dict``: a confluent-kafka loop aggregating in dicts (``candles_loop``);
- ``raw``: the same consumer decoding the Avro and nothing else: the practical limit.

Per contender: trades/s = tape records / (last output - first record), wall clock as each
child reports it (for the Flink job: job submitted -> job finished, i.e. including task
deployment and the final checkpoint's commit); CPU seconds of the whole process tree (the
MiniCluster's JVM is a child of the Python driver) over that section and over the child's
whole life, and trades per CPU second of the section (the measure a loaded machine disturbs
least); peak RSS of the tree (sampled every 0.25 s from /proc); and whether its candles
equal the truth (exact ``Decimal`` equality, every timeframe it computes, counts of missing
and unexpected candles). Median, min and max over the runs. Asserts nothing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ticklake.bench import candles_tape as tape_mod
from ticklake.bench.candles_tape import BOUND_MS, TIMEFRAMES_US, CandleRow, Verdict
from ticklake.bench.proctree import TreeSampler

#: In this order within each run (the slow Quix Streams peer after the job's main variants).
DEFAULT_CONTENDERS = ("raw", "dict", "p1", "p2", "quix", "p1:kafka", "p2:kafka", "p1:iceberg",
                      "p2:iceberg")  # fmt: skip
PEERS = ("quix", "dict", "raw")


# -- the environments --------------------------------------------------------------------


def uv_binary(home: Path) -> Path:
    found = sorted(home.glob("tools/uv-*/bin/uv"))
    if not found:
        raise RuntimeError("uv not found under the state home: run bin/ticklake once")
    return found[-1]


def quix_python(home: Path, root: Path) -> Path:
    """``<state home>/venvs/quix``, created (or refreshed) from uv.lock's ``quix`` extra."""
    venv = home / "venvs" / "quix"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(venv), UV_PYTHON_DOWNLOADS="never",
               UV_PYTHON=os.path.realpath(sys.executable), UV_LINK_MODE="copy")  # fmt: skip
    subprocess.run(
        [str(uv_binary(home)), "sync", "--locked", "--quiet", "--extra", "quix", "--no-dev"],
        cwd=root, env=env, check=True,
    )  # fmt: skip
    return venv / "bin" / "python"


@dataclass
class Measured:
    rate: float
    elapsed: float
    cpu_section: float
    cpu_total: float
    rss_mib: float
    report: dict[str, Any]


def measure(cmd: list[str], env: dict[str, str], records: int, timeout_s: float) -> Measured:
    """Run one contender; its JSON line gives t_first and t_last (wall clock)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    sampler = TreeSampler(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:  # a timeout, or the bench itself stopped: the child tree goes too
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        sampler.stop()
        raise
    sampler.stop()
    if proc.returncode:
        tail = "\n".join((out + err).splitlines()[-30:])
        raise RuntimeError(f"{cmd[2:4]} exited {proc.returncode}:\n{tail}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1])
    elapsed = report["t_last"] - report["t_first"]
    return Measured(
        rate=records / elapsed,
        elapsed=elapsed,
        cpu_section=sampler.cpu_at(report["t_last"]) - sampler.cpu_at(report["t_first"]),
        cpu_total=sampler.cpu_total(),
        rss_mib=sampler.peak_rss_mib(),
        report=report,
    )


# -- reading outputs back ----------------------------------------------------------------


def consume_all(bootstrap: str, topic: str) -> list[Any]:
    """Every committed message of ``topic``, to the end offsets seen now."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}  # fmt: skip
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        msgs: list[Any] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for m in c.consume(5000, timeout=0.5):
                if m.error() is None:
                    msgs.append(m)
            pos = c.position([TopicPartition(topic, p) for p in parts])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in pos):
                return msgs
        raise RuntimeError(f"could not read {topic} to its end")
    finally:
        c.close()


def avro_candles(bootstrap: str, topic: str) -> list[CandleRow]:
    import fastavro

    from ticklake.schemas.serde import parsed_schema

    schema = parsed_schema("candle")
    rows = []
    for m in consume_all(bootstrap, topic):
        c: Any = fastavro.schemaless_reader(io.BytesIO(m.value()), schema, None)
        rows.append(tuple(c[k] for k in (*tape_mod.CANDLE_KEY, *tape_mod.CANDLE_VALUE)))
    return rows


def json_candles(bootstrap: str, topic: str) -> list[CandleRow]:
    from decimal import Decimal

    rows = []
    for m in consume_all(bootstrap, topic):
        v = json.loads(m.value())
        if isinstance(v, dict):
            v = [v[k] for k in (*tape_mod.CANDLE_KEY, *tape_mod.CANDLE_VALUE)]
        rows.append(tuple(
            str(x) if i < 3 else int(x) if i in (3, 4, 11, 13) else Decimal(str(x))
            for i, x in enumerate(v)
        ))  # fmt: skip
    return rows


def iceberg_candles(namespace: str) -> list[CandleRow]:
    from ticklake.catalog.connection import load_catalog

    cols = (*tape_mod.CANDLE_KEY, *tape_mod.CANDLE_VALUE)
    df = load_catalog().load_table(f"{namespace}.candles").scan().to_pandas()
    return [
        tuple(v.item() if hasattr(v, "item") else v for v in r)
        for r in df[list(cols)].itertuples(index=False, name=None)
    ]


# -- the contenders ----------------------------------------------------------------------


@dataclass
class Contender:
    label: str
    kind: str  # flink | quix | dict | raw
    parallelism: int = 1
    sinks: str = "all"
    live: bool | None = None  # None: the job's default (or no such option)
    conflation: str | None = None  # --live-conflation (None: the job's default)
    via_relay: bool = False  # live outputs to a relay (--live-relay) instead of Kafka


class RelayTap:
    """A relay process of its own (free ports) and one ZeroMQ subscriber to all of its topics
    that counts the live messages by data type (not the last-value replays, nor the relay's
    acknowledgement of the subscription)."""

    def __init__(self, log: Path) -> None:
        import threading

        from ticklake.stack.process import free_port

        self.ports = {v: free_port() for v in ("REQUEST", "WORK", "PUBLISH", "SUBSCRIBE")}
        env = dict(os.environ) | {f"TICKLAKE_RELAY__{v}_PORT": str(p)
                                  for v, p in self.ports.items()}  # fmt: skip
        self._log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "ticklake.relay"], env=env,
                                     stdout=self._log, stderr=self._log,
                                     start_new_session=True)  # fmt: skip
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._count, name="relay-tap", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            self.close()
            raise RuntimeError(f"the bench's relay did not start: see {log}")

    @property
    def endpoint(self) -> str:
        """Where the job publishes (the relay's XSUB side)."""
        return f"tcp://127.0.0.1:{self.ports['PUBLISH']}"

    def _count(self) -> None:
        import zmq

        from ticklake.relay.topics import TERMINATOR, Header

        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 0)  # count everything the relay sends
        sub.connect(f"tcp://127.0.0.1:{self.ports['SUBSCRIBE']}")
        sub.setsockopt(zmq.SUBSCRIBE, b"")  # ready when the relay acknowledges it
        while not self._stop.is_set():
            if not sub.poll(200):
                continue
            while True:
                try:
                    topic, header, _ = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                h = Header.unpack(header)
                if h.is_ack:  # the relay has our subscription: the job may start
                    self._ready.set()
                    continue
                if h.is_replay:  # last values re-sent to a late joiner
                    continue
                kind = topic.rstrip(TERMINATOR).rsplit(b"|", 1)[-1].decode()
                self.counts[kind] = self.counts.get(kind, 0) + 1
        sub.close(linger=0)
        ctx.term()

    def close(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self._log.close()
        return dict(self.counts)


def parse_flink(spec: str, has_live_flag: bool) -> Contender:
    parts = spec.split(":")
    par = int(parts[0].lstrip("p"))
    sinks = next((p for p in parts[1:] if p in ("all", "kafka", "iceberg")), "all")
    live: bool | None = None
    if has_live_flag:
        live = "nolive" not in parts[1:] and sinks != "iceberg"
    what = {"all": "Kafka + Iceberg", "kafka": "Kafka only", "iceberg": "Iceberg only"}[sinks]
    live_txt = "" if live is None else (", live on" if live else ", live off")
    conflation = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("conflate=")), None)
    if conflation is not None and live:
        live_txt += f" (conflate {conflation})"
    via_relay = "relay" in parts[1:]
    if via_relay and not live:
        raise ValueError(f"{spec!r}: 'relay' sends the live outputs to a relay; they are off")
    if via_relay:
        live_txt += " to the relay"
    return Contender(f"ticklake p{par}, {what}{live_txt}", "flink", par, sinks, live,
                     conflation, via_relay)  # fmt: skip


def _live_args(c: Contender, run: str, tap: RelayTap | None) -> list[str]:
    """The job's live-output flags of a contender."""
    args: list[str] = []
    if tap is not None:
        args += ["--live-relay", tap.endpoint, "--no-live-kafka"]
    elif c.live is not None:
        args += ["--live-trades-topic", f"bench.live.trades.{run}",
                 "--live-candles-topic", f"bench.live.candles.{run}"]  # fmt: skip
    if c.live is False:
        args.append("--no-live")
    elif c.live and c.conflation is not None:
        args += ["--live-conflation", c.conflation]
    return args


def _run_flink(
    c: Contender, *, bootstrap: str, raw_topic: str, out_topic: str, records: int,
    want: set[CandleRow], timeout_s: float, scratch: Path, run: str,
) -> tuple[Measured, Verdict]:  # fmt: skip
    from ticklake.catalog.connection import load_catalog
    from ticklake.catalog.tables import ensure_market_tables
    from ticklake.schemas.topics import CANDLES, RAW_TRADES, ensure_topics
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    namespace = f"bench_{run}"
    late_topic = f"bench.candles.late.{run}"
    ensure_topics(bootstrap, [CANDLES.renamed(out_topic), RAW_TRADES.renamed(late_topic)])
    ensure_market_tables(load_catalog(), namespace)
    ctx = StackContext(StackSettings())
    env = dict(os.environ) | job_environment(ctx)
    all_tf = tuple(TIMEFRAMES_US)
    args = ["--raw-topic", raw_topic, "--candles-topic", out_topic, "--late-topic",
            late_topic, "--namespace", namespace, "--out-of-orderness", f"{BOUND_MS}ms",
            "--bounded", "--parallelism", str(c.parallelism),
            "--checkpoint-dir", (scratch / f"ckpt-{run}").as_uri(),
            "--transactional-id-prefix", f"bench-{run}",
            "--group-id", f"bench-{run}"]  # fmt: skip
    tap = RelayTap(scratch / f"relay-{run}.log") if c.via_relay else None
    args += _live_args(c, run, tap)
    cmd = [str(flink_python(ctx)), "-m", "ticklake.bench.candles_flink",
           "--sinks", c.sinks, "--", *args]  # fmt: skip
    try:
        m = measure(cmd, env, records, timeout_s)
    finally:
        if tap is not None:
            time.sleep(1)  # the last messages in flight through the relay
            received = tap.close()
    if tap is not None:
        m.report["relay_received"] = received
    verdicts = []
    if c.sinks in ("all", "kafka"):
        verdicts.append(tape_mod.compare(want, avro_candles(bootstrap, out_topic), all_tf))
    if c.sinks in ("all", "iceberg"):
        verdicts.append(tape_mod.compare(want, iceberg_candles(namespace), all_tf))
    worst = max(verdicts, key=lambda v: v.missing + v.unexpected)
    return m, worst


def run_contender(
    c: Contender, *, bootstrap: str, raw_topic: str, records: int, quix_py: Path,
    want: set[CandleRow], timeout_s: float, scratch: Path,
) -> tuple[Measured, Verdict | None]:  # fmt: skip
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    run = uuid.uuid4().hex[:8]
    out_topic = f"bench.candles.out.{c.kind}.{run}"
    env = dict(os.environ)
    all_tf = tuple(TIMEFRAMES_US)
    if c.kind == "flink":
        return _run_flink(c, bootstrap=bootstrap, raw_topic=raw_topic, out_topic=out_topic,
                          records=records, want=want, timeout_s=timeout_s, scratch=scratch,
                          run=run)  # fmt: skip
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep it alive for the result
    # No time-based retention: Quix Streams stamps each window result with the window start
    # (event time, years ago), which the broker's retention would delete within minutes.
    topic = NewTopic(out_topic, num_partitions=1, replication_factor=1,
                     config={"retention.ms": "-1"})  # fmt: skip
    admin.create_topics([topic])[out_topic].result(30)
    if c.kind == "quix":
        cmd = [str(quix_py), "-m", "ticklake.bench.candles_quix", bootstrap, raw_topic,
               out_topic, "--bound-ms", str(BOUND_MS)]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "ticklake.bench.candles_loop", c.kind, bootstrap,
               raw_topic, out_topic, "--bound-ms", str(BOUND_MS)]  # fmt: skip
    try:
        m = measure(cmd, env, records, timeout_s)
    except RuntimeError as exc:
        if c.kind != "quix" or "TopicNotFoundError" not in str(exc):
            raise
        # Quix creates its changelog topics, then reads their metadata back; on a loaded
        # machine the metadata can lag the creation. One retry from the start.
        m = measure(cmd, env, records, timeout_s)
    if c.kind == "raw":
        return m, None
    return m, tape_mod.compare(want, json_candles(bootstrap, out_topic), all_tf)


# -- the benchmark -----------------------------------------------------------------------


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _fmt(values: list[float], spec: str) -> str:
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    med = statistics.median(values)
    return f"{med:{spec}} ({min(values):{spec}}, {max(values):{spec}})"


def run(
    records: int = 5_000_000,
    runs: int = 3,
    order: tuple[str, ...] = DEFAULT_CONTENDERS,
    timeout_s: float = 1800.0,
) -> Table:
    from ticklake.bench.stack_up import scratch_stack
    from ticklake.home import project_root, state_home
    from ticklake.jobs import dedup_ohlc

    console = Console(stderr=True)
    home = state_home()
    root = project_root() or Path.cwd()
    cache = home / "bench" / "candles"
    t0 = time.monotonic()
    df = tape_mod.load_or_generate(cache, records)
    st = tape_mod.stats(df)
    want = tape_mod.truth_cached(cache, df, records, 11)
    console.print(f"tape: {st} ; truth {len(want)} candles ({time.monotonic() - t0:.0f}s)")
    quix_py = quix_python(home, root) if "quix" in order else Path()
    has_live = "--no-live" in dedup_ohlc.parser().format_help()
    labels = {"quix": DEFAULT_PEERS_LABEL_QUIX, "dict": "confluent-kafka loop, dicts",
              "raw": "raw consume (decode only)"}  # fmt: skip
    contenders = [Contender(labels[s], s) if s in PEERS else parse_flink(s, has_live)
                  for s in order]  # fmt: skip
    signal.signal(signal.SIGTERM, _exit_on_signal)  # `kill` still stops the stack
    results: dict[str, list[tuple[Measured, Verdict | None]]] = {}
    with scratch_stack() as scratch:
        from ticklake.settings import Connections
        from ticklake.stack.manager import Stack

        stack = Stack()
        stack.up()
        try:
            bootstrap = Connections.load().kafka.bootstrap_servers
            raw_topic = f"bench.candles.raw.{uuid.uuid4().hex[:8]}"
            load_s = tape_mod.produce(df, bootstrap, raw_topic)
            console.print(f"loaded {len(df):,} records into {raw_topic} in {load_s:.0f}s")
            del df
            for i in range(runs):
                for c in contenders:
                    console.print(f"run {i + 1}/{runs} {c.label} (load {os.getloadavg()[0]:.1f})")
                    m, v = run_contender(c, bootstrap=bootstrap, raw_topic=raw_topic,
                                         records=st.records, quix_py=quix_py, want=want,
                                         timeout_s=timeout_s, scratch=scratch)  # fmt: skip
                    results.setdefault(c.label, []).append((m, v))
                    console.print(
                        f"  {m.rate:,.0f} trades/s, {m.elapsed:.1f}s, cpu {m.cpu_section:.1f}s "
                        f"(tree total {m.cpu_total:.1f}s), rss {m.rss_mib:.0f} MiB, "
                        f"{v}, load {os.getloadavg()[0]:.1f}, {m.report}"
                    )
        finally:
            stack.down()
    return table(results, st, runs)


def table(
    results: dict[str, list[tuple[Measured, Verdict | None]]], st: tape_mod.TapeStats, runs: int
) -> Table:
    t = Table(title=f"candles from trades: {st.records:,} records ({st.duplicates:,} duplicates,"
              f" {st.delayed:,} out of order), {runs} run(s), median (min, max)")  # fmt: skip
    for col in ("contender", "trades/s", "CPU s (section)", "trades per CPU s",
                "CPU s (tree, whole life)", "peak RSS MiB", "candles equal truth"):  # fmt: skip
        t.add_column(col, justify="left" if col == "contender" else "right")
    quix = [m.rate for m, _ in results.get(DEFAULT_PEERS_LABEL_QUIX, [])]
    records = st.records
    for label, ms in results.items():
        verdicts = [v for _, v in ms if v is not None]
        if not verdicts:
            correct = "n/a"
        elif all(v.correct for v in verdicts):
            correct = f"yes ({verdicts[0].compared:,} candles)"
        else:
            bad = max(verdicts, key=lambda v: v.missing + v.unexpected)
            correct = f"NO ({bad.missing:,} missing, {bad.unexpected:,} unexpected)"
        rates = [m.rate for m, _ in ms]
        ratio = f" = {statistics.median(rates) / statistics.median(quix):.1f}x Quix" if quix else ""
        t.add_row(label, _fmt(rates, ",.0f") + (ratio if "ticklake" in label else ""),
                  _fmt([m.cpu_section for m, _ in ms], ".1f"),
                  _fmt([records / m.cpu_section for m, _ in ms], ",.0f"),
                  _fmt([m.cpu_total for m, _ in ms], ".1f"),
                  _fmt([m.rss_mib for m, _ in ms], ".0f"), correct)  # fmt: skip
    return t


DEFAULT_PEERS_LABEL_QUIX = "Quix Streams 3.28.1 (1m windows + roll-ups)"
