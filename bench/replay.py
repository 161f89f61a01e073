"""Benchmark: replay throughput into Kafka, against a bare producer loop.

    .venv/bin/python -m ticklake.bench replay [--trades 2000000] [--runs 3]

Generates a deterministic synthetic Tardis tape (several markets, random-walk prices, varied
amounts; plain and gzipped), starts its own local stack (free ports, shared download cache),
then per run measures in a fresh child process:

- ``replay``: ``ticklake.ingestors.replay.replay()`` of the whole tape (plain and gzipped);
- ``bare producer``: the practical limit, a confluent-kafka loop producing the very same
  pre-encoded keys and values (encoded before the clock starts) with the same producer
  settings and headers, and the very same ``produce()`` call (positional arguments, the
  header as a list), to a topic of the same layout, then ``flush()``.

Each prints trades/s and CPU seconds (process CPU time, all threads, over the measured
section only: the bare loop's pre-encoding is not counted) and the child's peak RSS (the bare
child holds every pre-encoded record in memory), CPU µs per trade and the 1-minute load
average when the child started: median of the runs with min and max, and the ratio replay /
bare of the median trades/s. Asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

MARKETS = (
    ("binance", "BTCUSDT", Decimal("65000.00"), Decimal("0.01"), 5),
    ("binance", "ETHUSDT", Decimal("3400.00"), Decimal("0.01"), 4),
    ("binance", "SOLUSDT", Decimal("150.000"), Decimal("0.001"), 2),
    ("binance", "ETHBTC", Decimal("0.05231"), Decimal("0.00001"), 4),
    ("binance", "PEPEUSDT", Decimal("0.00001234"), Decimal("0.00000001"), 0),
    ("binance-futures", "BTCUSDT", Decimal("65010.0"), Decimal("0.1"), 3),
    ("coinbase", "BTC-USD", Decimal("65005.00"), Decimal("0.01"), 8),
    ("kraken", "XBT/EUR", Decimal("60000.0"), Decimal("0.1"), 8),
)
HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def generate_tape(path: Path, trades: int, seed: int = 7) -> None:
    """A deterministic Tardis trades CSV; gzipped when ``path`` ends with ``.gz``."""
    rng = random.Random(seed)
    prices = [m[2] for m in MARKETS]
    ids = [10**9 * (i + 1) for i in range(len(MARKETS))]
    weights = [30, 20, 10, 5, 5, 15, 10, 5]
    ts = 1_717_200_000_000_000
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        chunk: list[str] = []
        for _ in range(trades):
            i = rng.choices(range(len(MARKETS)), weights)[0]
            exchange, symbol, _, tick, amount_places = MARKETS[i]
            price = prices[i] = max(tick, prices[i] + tick * rng.randint(-3, 3))
            next_id = ids[i] = ids[i] + 1
            ts += rng.randint(0, 3_000)
            amount = Decimal(rng.randint(1, 5_000_000)).scaleb(-amount_places)
            side = "buy" if rng.random() < 0.5 else "sell"
            chunk.append(
                f"{exchange},{symbol},{ts},{ts + rng.randint(500, 40_000)},{next_id},{side},"
                f"{price:f},{amount:f}\n"
            )
            if len(chunk) >= 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


def _worker(mode: str, tape: Path, bootstrap: str) -> None:
    """Child process: one measured run; prints a JSON line."""
    from ticklake.ingestors.replay import (
        REPLAY_PRODUCER_CONFIG,
        FastTradeEncoder,
        replay,
    )
    from ticklake.ingestors.tardis import TardisRow, TardisTape
    from ticklake.schemas.models import Trade
    from ticklake.schemas.serde import schema_header
    from ticklake.schemas.topics import RAW_TRADES, ensure_topics

    topic = f"bench.{mode}.{uuid.uuid4().hex[:8]}"
    if mode == "replay":
        result = replay(
            tape,
            bootstrap_servers=bootstrap,
            topic=topic,
            dead_letter_topic=f"{topic}.dlq",
        )
        elapsed, count, failed = result.elapsed_s, result.produced, result.failed
        cpu = result.cpu_s
    else:
        from confluent_kafka import Producer

        ensure_topics(bootstrap, [RAW_TRADES.renamed(topic)])
        encoder = FastTradeEncoder(f"replay:{tape.name}")
        records: list[tuple[bytes, bytes]] = []
        with TardisTape(tape) as reader:
            for n, raw, fields in reader.records():
                encoded = encoder.encode(fields)
                if encoded is None:  # a market not seen yet: learn it through the model
                    row = reader.parse(n, raw, fields)
                    assert isinstance(row, TardisRow)
                    trade = Trade(
                        exchange=row.exchange,
                        symbol=row.symbol,
                        exchange_ts_us=row.timestamp_us,
                        receipt_ts_us=row.local_timestamp_us,
                        ingestor_id=f"replay:{tape.name}",
                        trade_id=row.trade_id,
                        side=row.side,
                        price=row.price,
                        amount=row.amount,
                    )
                    encoder.learn_market(fields[0], fields[1], trade)
                    encoded = encoder.encode(fields)
                assert encoded is not None
                records.append(encoded)
        failures = [0]

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures[0] += 1

        producer = Producer(
            {**REPLAY_PRODUCER_CONFIG, "bootstrap.servers": bootstrap, "on_delivery": on_delivery}
        )
        produce, poll = producer.produce, producer.poll
        # The very call the replay makes: positional arguments, the header as a list.
        headers: list[tuple[str, str | bytes | None]] = [schema_header(Trade)]
        cpu0, t0 = time.process_time(), time.monotonic()
        for key, value in records:
            try:
                produce(topic, value, key, -1, None, None, 0, headers)
            except BufferError:
                while True:  # the local queue is full: let librdkafka drain it
                    poll(0.05)
                    try:
                        produce(topic, value, key, -1, None, None, 0, headers)
                        break
                    except BufferError:
                        continue
        remaining = producer.flush(120)
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        count, failed = len(records) - failures[0] - remaining, failures[0] + remaining
    print(
        json.dumps({"elapsed": elapsed, "cpu": cpu, "count": count, "failed": failed}), flush=True
    )


def _measure(mode: str, tape: Path, bootstrap: str) -> dict[str, float]:
    """Run one child; trades/s and CPU (all its threads) over the measured section, from
    the child itself; peak RSS of the whole child from wait4()."""
    cmd = [sys.executable, "-m", "ticklake.bench.replay", "--worker", mode, str(tape), bootstrap]
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves: wait4 gives its rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"benchmark worker {mode} failed with exit code {proc.returncode}")
    data = json.loads(out.strip().splitlines()[-1])
    return {
        "rate": data["count"] / data["elapsed"],
        "failed": data["failed"],
        "elapsed": data["elapsed"],
        "cpu": data["cpu"],
        "cpu_us": data["cpu"] / max(data["count"], 1) * 1e6,
        "rss": usage.ru_maxrss / 1024,
        "load": load,
    }


def _fmt(values: list[float], spec: str) -> str:
    return (
        f"{statistics.median(values):{spec}} (min {min(values):{spec}}, max {max(values):{spec}})"
    )


def run(trades: int = 2_000_000, runs: int = 3, bootstrap: str | None = None) -> Table:
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="ticklake-bench-replay-") as tmp:
        plain, gz = Path(tmp) / "trades.csv", Path(tmp) / "trades.csv.gz"
        t0 = time.monotonic()
        generate_tape(plain, trades)
        generate_tape(gz, trades)
        console.print(
            f"tapes: {trades:,} trades, {plain.stat().st_size / 2**20:.0f} MiB plain, "
            f"{gz.stat().st_size / 2**20:.0f} MiB gzipped ({time.monotonic() - t0:.0f}s)"
        )
        if bootstrap is not None:
            return _runs(plain, gz, trades, runs, bootstrap=bootstrap, console=console)
        from ticklake.bench.stack_up import scratch_stack
        from ticklake.settings import Connections
        from ticklake.stack.manager import Stack

        with scratch_stack():
            stack = Stack()
            stack.up()
            try:
                bootstrap = Connections.load().kafka.bootstrap_servers
                return _runs(plain, gz, trades, runs, bootstrap=bootstrap, console=console)
            finally:
                stack.down()


def _runs(
    plain: Path, gz: Path, trades: int, runs: int, *, bootstrap: str, console: Console
) -> Table:
    results: dict[str, list[dict[str, float]]] = {}
    cases = (("replay, plain CSV", "replay", plain), ("replay, gzipped CSV", "replay", gz),
             ("bare producer, pre-encoded", "bare", plain))  # fmt: skip
    for i in range(runs):
        for label, mode, tape in cases:
            m = _measure(mode, tape, bootstrap)
            results.setdefault(label, []).append(m)
            console.print(
                f"run {i + 1}/{runs} {label}: {m['rate']:,.0f} trades/s, cpu {m['cpu']:.1f}s, "
                f"rss {m['rss']:.0f} MiB, failed {m['failed']:.0f}, load {m['load']:.1f}"
            )
    table = Table(title=f"replay into Kafka: {trades:,} trades, {runs} runs, median (min, max)")
    cols = ("case", "trades/s", "CPU s", "CPU µs/trade", "peak RSS MiB", "load 1m", "vs bare")
    for col in cols:
        table.add_column(col, justify="right" if col != "case" else "left")
    bare = statistics.median(m["rate"] for m in results["bare producer, pre-encoded"])
    for label, ms in results.items():
        rates = [m["rate"] for m in ms]
        table.add_row(
            label,
            _fmt(rates, ",.0f"),
            _fmt([m["cpu"] for m in ms], ".1f"),
            _fmt([m["cpu_us"] for m in ms], ".2f"),
            _fmt([m["rss"] for m in ms], ".0f"),
            _fmt([m["load"] for m in ms], ".1f"),
            f"{statistics.median(rates) / bare:.2f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ticklake.bench.replay")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "TAPE", "BOOTSTRAP"))
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bootstrap", default=None, help="use this Kafka instead of a stack")
    args = parser.parse_args()
    if args.worker:
        mode, tape, bootstrap = args.worker
        _worker(mode, Path(tape), bootstrap)
        return
    Console(width=200).print(run(args.trades, args.runs, args.bootstrap))


if __name__ == "__main__":
    main()
