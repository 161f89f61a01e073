"""The freshness bench's record of librdkafka's statistics (``_stats_writer``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from confluent_kafka import Producer

from ticklake.bench.freshness import _stats_writer

BROKER = {
    "nodename": "127.0.0.1:9092",
    "nodeid": 1,
    "tx": 1200,
    "waitresp_cnt": 5,
    "outbuf_cnt": 2,
    "rtt": {"min": 100, "max": 90000, "avg": 900, "p50": 700, "p99": 40000},
    "int_latency": {"min": 1, "max": 70000, "avg": 5000, "p50": 5100, "p99": 30000},
}
BOOTSTRAP = {**BROKER, "nodename": "127.0.0.1:9092/bootstrap", "nodeid": -1}


def test_it_keeps_each_brokers_requests_and_latencies(tmp_path: Path) -> None:
    out = tmp_path / "p.stats.jsonl"
    write = _stats_writer(out)
    stats = {"ts": 5, "time": 1795496072, "msg_cnt": 42,
             "brokers": {"a": BROKER, "b": BOOTSTRAP}}  # fmt: skip
    write(json.dumps(stats))
    write(json.dumps({**stats, "msg_cnt": 7}))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["msg_cnt"] for line in lines] == [42, 7]
    assert lines[0]["time"] == 1795496072
    assert lines[0]["brokers"] == {
        "127.0.0.1:9092": {
            "tx": 1200, "waitresp_cnt": 5, "outbuf_cnt": 2,
            "rtt": {"p50": 700, "p99": 40000, "max": 90000},
            "int_latency": {"p50": 5100, "p99": 30000, "max": 70000},
        }
    }  # fmt: skip


def test_it_reads_what_a_real_librdkafka_emits(tmp_path: Path) -> None:
    """No broker listens: the statistics still come, with the queued records counted."""
    out = tmp_path / "p.stats.jsonl"
    producer = Producer({
        "bootstrap.servers": "127.0.0.1:1",
        "statistics.interval.ms": 100,
        "stats_cb": _stats_writer(out),
        "log_level": 0,
    })  # fmt: skip
    producer.produce("t", b"v")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not out.exists():
        producer.poll(0.1)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["msg_cnt"] == 1
    assert abs(lines[0]["time"] - time.time()) < 30
    assert lines[0]["brokers"] == {}  # only the bootstrap entry, which has no node id
    producer.purge()
