"""Benchmark: how long a record waits in the consumer call: ``consume`` vs ``consume_ready``.

    python -m ticklake.bench kafka-poll [--rates 100,1000,10000] [--seconds 5] [--runs 3]

Starts its own stack (free ports). Per run and rate, a producer thread writes records (the
value is its produce time, linger 0) to a one-partition topic, and the same consumer reads
them for ``--seconds`` with each method in turn: ``Consumer.consume(1000, 0.1)`` (librdkafka's
batch call: it returns when 1,000 records are in hand or 0.1 s has passed) and
:func:`ticklake.schemas.kafka_poll.consume_ready` (``poll`` for the first record, then the
records already fetched). Latency = the time the call returned - the produce time, p50 / p99
/ max in ms. The bridge and the risk forwarder used the first before session 6 and use the
second now. Asserts nothing.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ticklake.bench.stats import latency_percentiles
from ticklake.schemas.kafka_poll import consume_ready

BATCH, TIMEOUT_S = 1000, 0.1


def _methods(consumer: Any) -> dict[str, Callable[[], list[Any]]]:
    return {
        f"consume({BATCH}, {TIMEOUT_S})": lambda: consumer.consume(BATCH, TIMEOUT_S),
        f"consume_ready({BATCH}, {TIMEOUT_S})": lambda: consume_ready(consumer, BATCH, TIMEOUT_S),
    }


def _measure(
    producer: Any, topic: str, *, rate: int, seconds: float, read: Callable[[], list[Any]]
) -> list[int]:
    stop = threading.Event()

    def produce() -> None:
        t0, sent = time.monotonic(), 0
        while not stop.is_set():
            due = int((time.monotonic() - t0) * rate) + 1
            while sent < due:
                producer.produce(topic, str(time.time_ns()).encode())
                sent += 1
            producer.poll(0)
            time.sleep(0.0005)
        producer.flush(10)

    thread = threading.Thread(target=produce, daemon=True)
    latencies: list[int] = []
    thread.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        batch = read()
        now = time.time_ns()
        latencies += [(now - int(m.value())) // 1000 for m in batch if m.error() is None]
    stop.set()
    thread.join()
    while read():  # drain what the producer sent last, outside the measurement
        pass
    return latencies


def run(rates: list[int], seconds: float = 5.0, runs: int = 3) -> Table:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from ticklake.bench.stack_up import scratch_stack
    from ticklake.settings import Connections
    from ticklake.stack.manager import Stack

    console = Console(stderr=True)
    rows: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    with scratch_stack():
        stack = Stack()
        stack.up()
        try:
            bootstrap = Connections.load().kafka.bootstrap_servers
            admin = AdminClient({"bootstrap.servers": bootstrap})
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
            for i in range(runs):
                for rate in rates:
                    topic = f"bench-kafka-poll-{uuid.uuid4().hex[:8]}"
                    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                    consumer = Consumer(
                        {"bootstrap.servers": bootstrap, "group.id": topic, "fetch.wait.max.ms": 10}
                    )
                    consumer.assign([TopicPartition(topic, 0, 0)])
                    for name, read in _methods(consumer).items():
                        lat = _measure(producer, topic, rate=rate, seconds=seconds, read=read)
                        pcts = latency_percentiles(lat)
                        p = (pcts["p50"], pcts["p99"], pcts["max"])
                        rows.setdefault((rate, name), []).append(p)
                        console.print(f"run {i + 1}/{runs} {rate}/s {name}: {p}")
                    consumer.close()
                    admin.delete_topics([topic])
            producer.flush(10)
            del producer, admin  # closed before the broker stops: no reconnect noise
        finally:
            stack.down()
    table = Table(title=f"record wait in the consumer call (ms, median of {runs} runs)")
    for col in ("records/s", "call", "p50", "p99", "max"):
        table.add_column(col, justify="right")
    for (rate, name), values in rows.items():
        table.add_row(
            f"{rate:,}",
            name,
            *(f"{statistics.median(v[k] for v in values):.1f}" for k in range(3)),
        )
    return table
