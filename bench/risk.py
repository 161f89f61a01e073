"""Benchmark: risk decision latency under market-data load, and breach -> halt latency.

    .venv/bin/python -m ticklake.bench risk [--rate 1000] [--seconds 20] [--trades 10000]
        [--breaches 20] [--python-mode process|thread] [--runs 1] [--warmup-seconds 120]
        [--audit separate|in-job|none] [--job-arg=--bundle-size=100 ...] [--audit-arg=...]

Starts its own stack (free ports) and the risk job unbounded on the embedded MiniCluster
(default settings: process mode, bundles of 1000 records / 5 ms, 5 ms buffer timeout, 10 s
checkpoints; ``--job-arg`` passes any other flag of the job), and the Iceberg audit trail as
deployed: ``--audit separate`` (the default) runs the ``risk_audit`` job beside it on an
embedded MiniCluster of its own (its defaults: nice 10, 10 s checkpoints; ``--audit-arg``
passes its flags), ``in-job`` has the risk job write the audit tables itself (its
``--namespace``, the default until session 26), ``none`` (or ``--no-audit``) runs no audit.
With an audit, after the runs: how long until every measured decision was in the Iceberg
table, and whether each was there once. A load
process writes ``--trades`` trades/s of 10 markets to a raw-trades topic (broker and machine
load, as in production) and one final 1m candle per market per second to the job's candles
topic (the market data the job reads).

Then one unbroken stream of ``--rate`` proposals/s over 100 funded accounts: first
``--warmup-seconds`` that are not measured (the job's JIT compilers take a large share of
the 2 cores in its first minute and a half), then ``--runs`` measured windows of
``--seconds`` each, with no pause between them (until session 20 each run started from an
idle job, and its first seconds measured the step from idle to the full rate). Per window:

- **decisions**: each proposal is stamped with its produce time (wall clock, µs) as
  ``created_ts_us``; an observer process consumes the live decisions topic: end to end =
  ``now - proposal_ts_us`` (produce -> Kafka -> job -> live topic -> consumer), in job =
  ``decision_ts_us - proposal_ts_us`` (which includes the proposals topic), and
  **proposals topic** = ``now - created_ts_us`` of each proposal read by the same observer
  from the job's input topic (Kafka's own share, measured like the freshness bench's raw
  topic); **s over 100 ms**: the window's seconds whose in-job p99 is over 100 ms;
- **breach -> halt**: ``--breaches`` accounts each hold 1000 units bought at 100; one fill
  at 50, sent while the proposals flow (spread over the window), marks them down 50%
  (drawdown above 10%): ``now - event_ts_us`` of the ``halt`` event on the live events
  topic (``event_ts_us`` is the fill's produce time), and in job ``emitted_ts_us -
  event_ts_us``.

p50/p99/max of each. The machine's load average is printed with the figures. Asserts
nothing. The observer decodes with fastavro alone (no pydantic), to take less of the CPU
the job needs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from ticklake.bench.stats import latency_percentiles
from ticklake.schemas.kafka_poll import consume_ready

MARKETS = [f"B{i}/USDT" for i in range(10)]
AUDITED_TOPICS = ("decisions", "violations", "events")
ACCOUNTS = [f"bench-{i}" for i in range(100)]
S = 1_000_000
MIN = 60 * S
D = Decimal


def _now_us() -> int:
    return time.time_ns() // 1000


def _producer(bootstrap: str) -> Any:
    """A producer that sends each record at once (proposals, fills: the measured path)."""
    from confluent_kafka import Producer

    from ticklake.schemas.topics import PRODUCER_CONFIG

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **PRODUCER_CONFIG})


def _candle(symbol: str, end: int) -> Any:
    from ticklake.schemas.models import Candle

    return Candle(
        exchange="BENCH",
        symbol=symbol,
        exchange_ts_us=end - 1,
        receipt_ts_us=end,
        ingestor_id="bench",
        timeframe="1m",
        window_start_us=end - MIN,
        window_end_us=end,
        open=D(100),
        high=D(101),
        low=D(99),
        close=D(100),
        volume=D(10),
        final=True,
        version=1,
    )


def _daily(symbol: str, end: int) -> Any:
    from ticklake.schemas.models import Candle

    day = end - end % (86_400 * S) - 86_400 * S
    return Candle(
        exchange="BENCH",
        symbol=symbol,
        exchange_ts_us=day + 1,
        receipt_ts_us=day + 2,
        ingestor_id="bench",
        timeframe="1d",
        window_start_us=day,
        window_end_us=day + 86_400 * S,
        open=D(100),
        high=D(101),
        low=D(99),
        close=D(100),
        volume=D(1),
        quote_volume=D(10**9),
        final=True,
        version=1,
    )


def load_process(bootstrap: str, topics: dict[str, str], trades_per_s: int, stop: Any) -> None:
    """Trades at ``trades_per_s`` to the raw topic, one 1m candle per market per second."""
    from confluent_kafka import Producer

    from ticklake.ingestors.kafka_sink import INGEST_PRODUCER_CONFIG
    from ticklake.schemas.models import Trade
    from ticklake.schemas.serde import encode

    # The market data comes from ingestors: their producer settings (batches, idempotence),
    # and so the broker's load from their requests.
    producer = Producer({"bootstrap.servers": bootstrap, **INGEST_PRODUCER_CONFIG})
    template = encode(
        Trade(
            exchange="BENCH",
            symbol=MARKETS[0],
            exchange_ts_us=_now_us(),
            receipt_ts_us=_now_us(),
            ingestor_id="bench",
            trade_id="1",
            side="buy",
            price=D(100),
            amount=D(1),
        )
    )
    end = _now_us()
    for symbol in MARKETS:  # 14 candles back in time: the ATR is ready at once
        for i in range(14, 0, -1):
            producer.produce(topics["candles"], _encode(_candle(symbol, end - i * MIN)))
        producer.produce(topics["candles"], _encode(_daily(symbol, end)))
    producer.flush(30)
    t0 = time.monotonic()
    sent = 0
    next_candles = t0
    while not stop.is_set():
        elapsed = time.monotonic() - t0
        while sent < int(elapsed * trades_per_s):
            try:
                producer.produce(topics["raw"], template, MARKETS[sent % 10].encode())
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        if time.monotonic() >= next_candles:
            now = _now_us()
            for symbol in MARKETS:
                value = _encode(_candle(symbol, now))
                while True:
                    try:
                        producer.produce(topics["candles"], value)
                        break
                    except BufferError:
                        producer.poll(0.01)
            next_candles += 1.0
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)


def _encode(record: Any) -> bytes:
    from ticklake.schemas.serde import encode

    data: bytes = encode(record)
    return data


def _reader(name: str) -> Any:
    """Decode the current version of schema ``name`` with fastavro alone: the observer
    needs three fields, and it shares the 2 cores with the job it measures (with pydantic's
    validation of every record it used 0.20-0.26 cores at 1,000 proposals/s, without it
    0.17-0.19: ``/proc/<pid>/stat``, session 21)."""
    import io

    import fastavro

    from ticklake.schemas.serde import parsed_schema

    schema = parsed_schema(name)

    def read(data: bytes) -> dict[str, Any]:
        record = fastavro.schemaless_reader(io.BytesIO(data), schema, None)
        if not isinstance(record, dict):
            raise TypeError(f"{name} decoded to {type(record).__name__}")
        return record

    return read


def observer_process(  # noqa: PLR0917
    bootstrap: str, topics: dict[str, str], out: str, ready: Any, stop: Any, counts: Any
) -> None:
    """Latencies of every measured live decision and live halt event, to ``out`` (json).

    Decisions and halts of the warm-up (ids and accounts ``w-...``) are read and dropped."""
    from confluent_kafka import Consumer, TopicPartition

    from ticklake.schemas.risk import AccountEvent, OrderProposal, RiskDecision

    read_decision = _reader(RiskDecision.avro_name)
    read_proposal = _reader(OrderProposal.avro_name)
    read_event = _reader(AccountEvent.avro_name)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4()}", "fetch.wait.max.ms": 5}
    )
    # From the topics' ends: the warm-up's approvals (``_warm``) are not measured. The
    # proposals topic too: its latency is Kafka's share of "in job" (produce -> a
    # consumer), measured the same way as the freshness bench's raw topic.
    parts = [TopicPartition(topics[t], 0) for t in ("decisions_live", "events_live", "proposals")]
    for tp in parts:
        tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
    consumer.assign(parts)
    #: (proposal id, e2e us, in-job us, proposal ts us): the last splits a run by second.
    decisions: list[tuple[str, int, int, int]] = []
    halts: list[tuple[str, int, int]] = []
    #: (proposal id, us from produce to this consumer)
    proposals: list[tuple[str, int]] = []
    ready.set()
    while not stop.is_set():
        for msg in consume_ready(consumer, 500, 0.05):
            now = _now_us()
            if msg.error() is not None:
                continue
            if msg.topic() == topics["decisions_live"]:
                d = read_decision(msg.value() or b"")
                if d["proposal_id"].startswith("w-"):
                    continue
                ts = d["proposal_ts_us"]
                decisions.append((d["proposal_id"], now - ts, d["decision_ts_us"] - ts, ts))
                counts[0] += 1
                counts[2] = now
            elif msg.topic() == topics["proposals"]:
                p = read_proposal(msg.value() or b"")
                if not p["proposal_id"].startswith("w-"):
                    proposals.append((p["proposal_id"], now - p["created_ts_us"]))
            else:
                e = read_event(msg.value() or b"")
                if e["event"] == "halt" and not e["account"].startswith("w-"):
                    halts.append(
                        (
                            e["account"],
                            now - e["event_ts_us"],
                            e["emitted_ts_us"] - e["event_ts_us"],
                        )
                    )
                    counts[1] += 1
    consumer.close()
    Path(out).write_text(
        json.dumps({"decisions": decisions, "halts": halts, "proposals": proposals})
    )


def _proposal(pid: str, account: str, symbol: str) -> Any:
    from ticklake.schemas.risk import OrderProposal

    now = _now_us()
    return OrderProposal(
        proposal_id=pid,
        account=account,
        exchange="BENCH",
        symbol=symbol,
        side="buy",
        source_id="bench",
        signal_ts_us=now,
        created_ts_us=now,
    )


def _command(account: str, cid: str, amount: str) -> Any:
    from ticklake.schemas.risk import AccountCommand

    return AccountCommand(
        command_id=cid,
        account=account,
        command="deposit",
        amount=D(amount),
        reason="bench",
        issued_by="bench",
        issued_ts_us=_now_us(),
    )


def _fill(account: str, fid: str, side: Literal["buy", "sell"], qty: str, price: str) -> Any:
    from ticklake.schemas.risk import Fill

    now = _now_us()
    return Fill(
        fill_id=fid,
        account=account,
        exchange="BENCH",
        symbol="HALT/USDT",
        side=side,
        qty=D(qty),
        price=D(price),
        fee=D(0),
        fill_ts_us=now,
        receipt_ts_us=now,
    )


def measure(
    bootstrap: str,
    topics: dict[str, str],
    *,
    rate: int,
    seconds: float,
    runs: int,
    warmup_s: float,
    breaches: int,
    work: Path,
    console: Console,
) -> list[dict[str, Any]]:
    """One unbroken stream of proposals at ``rate``: ``warmup_s`` unmeasured, then ``runs``
    windows of ``seconds``; each phase's ``breaches`` losing fills spread over it."""
    tags = [f"r{i}" for i in range(runs)]
    ready, stop = mp.Event(), mp.Event()
    counts = mp.Array("q", 3)  # decisions seen, halts seen, time of the last decision (us)
    out = work / "observed.json"
    obs = mp.Process(
        target=observer_process, args=(bootstrap, topics, str(out), ready, stop, counts)
    )
    obs.start()
    ready.wait(30)
    producer = _producer(bootstrap)
    phases = [("w", warmup_s), *((t, seconds) for t in tags)]
    sent: dict[str, int] = dict.fromkeys(tags, 0)
    load: dict[str, float] = {}
    t0 = time.monotonic()
    total = 0  # proposals of every phase: one schedule, no pause between phases
    phase_end = t0
    for tag, length in phases:
        phase_t0, phase_end = phase_end, phase_end + length
        console.print(
            "warm-up" if tag == "w" else f"run {tag[1:]}",
            f"{length:.0f}s at {rate} proposals/s (load {os.getloadavg()[0]:.1f})",
        )
        n = breach = 0
        while (now := time.monotonic()) < phase_end:
            while total < int((now - t0) * rate):
                account = ACCOUNTS[total % len(ACCOUNTS)]
                p = _proposal(f"{tag}-{n}", account, MARKETS[total % len(MARKETS)])
                producer.produce(topics["proposals"], _encode(p), account.encode())
                total += 1
                n += 1
            # The warm-up breaches too: a halt's first time runs code (the violation and
            # event sinks, their first transactions, the broker's first writes to those
            # topics) that the JIT compilers of both JVMs compile then; measured, the
            # first breach stalled the job for 1-2 s (session 21).
            if breach < breaches and now >= phase_t0 + (breach + 0.5) * length / breaches:
                account = f"{tag}-breach-{breach}"
                fill = _fill(account, f"{account}-2", "sell", "1", "50")
                producer.produce(topics["fills"], _encode(fill), account.encode())
                breach += 1
            producer.poll(0)
            time.sleep(0.0005)
        if tag != "w":
            sent[tag] = n
            load[tag] = os.getloadavg()[0]
    producer.flush(30)
    _drain(lambda: counts[0], sum(sent.values()), stall_s=20, limit_s=300)
    _drain(lambda: counts[1], breaches * runs, stall_s=20, limit_s=60)
    stop.set()
    obs.join(60)
    data = json.loads(out.read_text())
    return [_run_figures(data, tag, sent[tag], seconds, load[tag]) for tag in tags]


def _run_figures(
    data: dict[str, Any], tag: str, sent: int, seconds: float, load: float
) -> dict[str, Any]:
    decided = [x for x in data["decisions"] if x[0].startswith(f"{tag}-")]
    halts = [x for x in data["halts"] if x[0].startswith(f"{tag}-breach")]
    first = min((x[3] for x in decided), default=0)
    last = max((x[3] + x[2] for x in decided), default=0)
    per_second: dict[int, list[int]] = {}
    for x in decided:
        per_second.setdefault((x[3] - first) // S, []).append(x[2])
    return {
        "sent": sent,
        "achieved": sent / seconds,
        "load": load,
        "e2e": latency_percentiles([x[1] for x in decided]),
        "topic": latency_percentiles(
            [x[1] for x in data["proposals"] if x[0].startswith(f"{tag}-")]
        ),
        "in_job": latency_percentiles([x[2] for x in decided]),
        "halt_e2e": latency_percentiles([x[1] for x in halts]),
        "halt_in_job": latency_percentiles([x[2] for x in halts]),
        "decided": len({x[0] for x in decided}),
        "sustained": len(decided) / ((last - first) / S) if last > first else float("nan"),
        # seconds of the run whose in-job p99 is over 100 ms (the design's target)
        "slow_seconds": sum(
            1 for v in per_second.values() if latency_percentiles(v)["p99"] > 100.0
        ),
        "seconds": len(per_second),
    }


def _drain(count: Any, want: int, *, stall_s: float, limit_s: float) -> None:
    """Wait until ``count()`` reaches ``want``, stops growing for ``stall_s``, or ``limit_s``."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        if n >= want:
            return
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > stall_s:
            return
        time.sleep(0.2)


def _setup_accounts(bootstrap: str, topics: dict[str, str], tags: list[str], breaches: int) -> None:
    producer = _producer(bootstrap)
    for account in ACCOUNTS:
        producer.produce(
            topics["commands"], _encode(_command(account, f"d-{account}", "1e12")), account.encode()
        )
    for tag in tags:
        for i in range(breaches):
            account = f"{tag}-breach-{i}"
            producer.produce(
                topics["commands"],
                _encode(_command(account, f"d-{account}", "100000")),
                account.encode(),
            )
            producer.produce(
                topics["fills"],
                _encode(_fill(account, f"{account}-1", "buy", "1000", "100")),
                account.encode(),
            )
    producer.flush(30)


def _warm(bootstrap: str, topics: dict[str, str], timeout_s: float) -> float:
    """Propose until a decision is approved (job up, market data and deposits in)."""
    from confluent_kafka import Consumer, TopicPartition

    from ticklake.schemas.risk import RiskDecision
    from ticklake.schemas.serde import decode

    producer = _producer(bootstrap)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(topics["decisions_live"], 0, 0)])
    t0 = time.monotonic()
    n = 0
    try:
        while time.monotonic() - t0 < timeout_s:
            n += 1
            producer.produce(
                topics["proposals"],
                _encode(_proposal(f"warm-{n}", ACCOUNTS[0], MARKETS[0])),
                ACCOUNTS[0].encode(),
            )
            producer.flush(10)
            for msg in consumer.consume(100, 1.0):
                if msg.error() is None and decode(RiskDecision, msg.value() or b"").approved:
                    return time.monotonic() - t0
        raise TimeoutError(f"no approved decision within {timeout_s:.0f}s")
    finally:
        consumer.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``risk`` subcommand's options (``bench/__main__.py``)."""
    p.add_argument("--rate", type=int, default=1000, help="proposals/s (default 1000)")
    p.add_argument("--seconds", type=float, default=20.0, help="per run (default 20)")
    p.add_argument("--trades", type=int, default=10_000, help="background trades/s")
    p.add_argument("--breaches", type=int, default=20, help="drawdown breaches per run")
    p.add_argument("--python-mode", choices=["process", "thread"], default="process")
    p.add_argument("--runs", type=int, default=1, help="measured windows (default 1)")
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=120.0,
        help="proposals at --rate before the first measured window, not measured (default"
        " 120: the job's JIT compilers are busy for its first 1.5-2 minutes)",
    )
    p.add_argument(
        "--audit",
        choices=["separate", "in-job", "none"],
        default="separate",
        help="the Iceberg audit trail: separate (default: the risk_audit job in a process of"
        " its own, as deployed), in-job (the risk job's own Iceberg sinks), none",
    )
    p.add_argument(
        "--no-audit",
        dest="audit",
        action="store_const",
        const="none",
        help="the same as --audit none (the commands of earlier sessions)",
    )
    p.add_argument(
        "--audit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument of the risk_audit job, repeatable (e.g. --audit-arg=--nice=0)",
    )
    p.add_argument(
        "--job-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument of the job, repeatable (e.g. --job-arg=--bundle-size=100)",
    )


def run_from(args: argparse.Namespace) -> Table:
    return run(
        rate=args.rate,
        seconds=args.seconds,
        trades=args.trades,
        breaches=args.breaches,
        python_mode=args.python_mode,
        runs=args.runs,
        warmup_s=args.warmup_seconds,
        audit=args.audit,
        job_args=args.job_arg,
        audit_args=args.audit_arg,
    )


def run(  # noqa: PLR0915
    *,
    rate: int,
    seconds: float,
    trades: int,
    breaches: int,
    python_mode: str,
    runs: int = 1,
    warmup_s: float = 120.0,
    audit: Literal["separate", "in-job", "none"] = "separate",
    job_args: list[str] | None = None,
    audit_args: list[str] | None = None,
) -> Table:
    from ticklake.bench.stack_up import scratch_stack
    from ticklake.catalog.connection import load_catalog
    from ticklake.catalog.tables import ensure_risk_tables
    from ticklake.schemas.topics import (
        CANDLES,
        DEAD_LETTERS,
        RAW_TRADES,
        RISK_BROKER_POSITIONS,
        RISK_COMMANDS,
        RISK_DECISIONS,
        RISK_DECISIONS_LIVE,
        RISK_EVENTS,
        RISK_EVENTS_LIVE,
        RISK_FILLS,
        RISK_LIMITS,
        RISK_PROPOSALS,
        RISK_VIOLATIONS,
        TopicSpec,
        ensure_topics,
    )
    from ticklake.settings import Connections
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.manager import Stack
    from ticklake.stack.settings import StackSettings

    console = Console(stderr=True)
    run_id = uuid.uuid4().hex[:8]
    specs: dict[str, TopicSpec[Any]] = {
        "proposals": RISK_PROPOSALS,
        "fills": RISK_FILLS,
        "broker_positions": RISK_BROKER_POSITIONS,
        "commands": RISK_COMMANDS,
        "limits": RISK_LIMITS,
        "candles": CANDLES,
        "decisions": RISK_DECISIONS,
        "violations": RISK_VIOLATIONS,
        "events": RISK_EVENTS,
        "decisions_live": RISK_DECISIONS_LIVE,
        "events_live": RISK_EVENTS_LIVE,
        "dead_letters": DEAD_LETTERS,
        "raw": RAW_TRADES,
    }
    topics = {k: f"bench.risk.{run_id}.{k}" for k in specs}
    results: list[dict[str, Any]] = []
    keep = os.environ.get("TICKLAKE_BENCH_WORK")  # keep the job log and observations there
    with scratch_stack(), tempfile.TemporaryDirectory() as tmp:
        work = Path(keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        stack = Stack()
        stack.up()
        job = auditor = None
        stop = mp.Event()
        load = None
        try:
            bootstrap = Connections.load().kafka.bootstrap_servers
            ensure_topics(
                bootstrap,
                [
                    s.renamed(topics[k]) if k == "raw" else _one_partition(s, topics[k])
                    for k, s in specs.items()
                ],
            )
            namespace = f"bench_risk_{run_id}"
            if audit != "none":
                ensure_risk_tables(load_catalog(), namespace)
            ctx = StackContext(StackSettings())
            args = [
                str(flink_python(ctx)),
                "-m",
                "ticklake.jobs.risk",
                "--namespace",
                namespace if audit == "in-job" else "",
                "--checkpoint-dir",
                (work / "ckpt").as_uri(),
                "--python-mode",
                python_mode,
                "--transactional-id-prefix",
                f"bench-risk-{run_id}",
                "--group-id",
                f"bench-risk-{run_id}",
                *(job_args or []),
            ]
            for key in specs:
                if key != "raw":
                    args += [f"--{key.replace('_', '-')}-topic", topics[key]]
            log = (work / "job.log").open("w")
            job = subprocess.Popen(
                args,
                env=dict(os.environ) | job_environment(ctx),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if audit == "separate":
                auditor = subprocess.Popen(
                    [
                        str(flink_python(ctx)),
                        "-m",
                        "ticklake.jobs.risk_audit",
                        "--namespace",
                        namespace,
                        "--checkpoint-dir",
                        (work / "audit-ckpt").as_uri(),
                        "--group-id",
                        f"bench-risk-audit-{run_id}",
                        *(
                            f"--{k}-topic={topics[k]}"
                            for k in ("decisions", "violations", "events")
                        ),
                        *(audit_args or []),
                    ],
                    env=dict(os.environ) | job_environment(ctx),
                    stdout=(work / "audit.log").open("w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            load = mp.Process(target=load_process, args=(bootstrap, topics, trades, stop))
            load.start()
            _setup_accounts(bootstrap, topics, ["w", *(f"r{i}" for i in range(runs))], breaches)
            warm = _warm(bootstrap, topics, 600)
            console.print(f"job deciding after {warm:.0f}s (load {os.getloadavg()[0]:.1f})")
            results = measure(
                bootstrap,
                topics,
                rate=rate,
                seconds=seconds,
                runs=runs,
                warmup_s=warmup_s,
                breaches=breaches,
                work=work,
                console=console,
            )
            for row in results:
                console.print(row)
            if audit != "none":
                trail = _audit_trail(namespace, sum(r["sent"] for r in results), limit_s=180)
                console.print(f"audit trail: {trail}")
        finally:
            stop.set()
            if load is not None:
                load.join(30)
            for proc in (job, auditor):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, 15)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, 9)
            stack.down()
    detail = (
        f"{python_mode}, audit {audit}"
        + "".join(f" {a}" for a in job_args or [])
        + "".join(f" audit:{a}" for a in audit_args or [])
    )
    return _table(results, rate, trades, detail)


def _audit_trail(namespace: str, sent: int, *, limit_s: float) -> str:
    """Wait for the measured runs' decisions (ids ``r<i>-<n>``) in the Iceberg audit table:
    how long after the runs ended they were all there, and whether each is there once.
    """
    import pyarrow.compute as pc

    from ticklake.catalog.connection import load_catalog

    start = time.monotonic()
    rows = distinct = 0
    while time.monotonic() - start < limit_s:
        every = (
            load_catalog()
            .load_table(f"{namespace}.decisions")
            .scan(selected_fields=("proposal_id",))
            .to_arrow()
            .column("proposal_id")
        )
        ids = every.filter(pc.starts_with(every, "r"))
        rows, distinct = len(ids), len(set(ids.to_pylist()))
        if rows >= sent:
            break
        time.sleep(2)
    waited = time.monotonic() - start
    state = "all there" if distinct == sent else "INCOMPLETE"
    dupes = f", {rows - distinct} repeated" if rows != distinct else ", each once"
    return (
        f"{distinct}/{sent} measured decisions in Iceberg ({state}{dupes}),"
        f" {waited:.0f} s after the measured runs ended"
    )


def _one_partition(spec: Any, name: str) -> Any:
    import dataclasses

    return dataclasses.replace(spec, name=name, partitions=1)


def _fmt(p: dict[str, float]) -> str:
    return f"{p['p50']:.1f} / {p['p99']:.1f} / {p['max']:.1f}"


def _table(results: list[dict[str, Any]], rate: int, trades: int, mode: str) -> Table:
    table = Table(
        title=f"risk job, {rate} proposals/s, {trades} trades/s of load, {mode} mode "
        "(ms: p50 / p99 / max)"
    )
    for col in (
        "run",
        "proposals/s",
        "decided",
        "decided/s",
        "decision e2e",
        "decision in job",
        "proposals topic",
        "breach->halt e2e",
        "breach->halt in job",
        "s over 100 ms",
        "load avg",
    ):
        table.add_column(col)
    for i, r in enumerate(results, start=1):
        table.add_row(
            str(i),
            f"{r['achieved']:.0f}",
            f"{r['decided']}/{r['sent']}",
            f"{r['sustained']:.0f}",
            _fmt(r["e2e"]),
            _fmt(r["in_job"]),
            _fmt(r["topic"]),
            _fmt(r["halt_e2e"]),
            _fmt(r["halt_in_job"]),
            f"{r['slow_seconds']}/{r['seconds']}",
            f"{r['load']:.1f}",
        )
    return table
