"""ticklake's dedup operator (``'connector' = 'ticklake-kafka-dedup'``, jobs/java/.../dedup).

On the MiniCluster, against real Kafka, with the dedup + OHLC job's state backend (the
changelog backend over the heap):

- the fingerprint is MurmurHash3 x64 128, as the ``mmh3`` package computes it;
- each key passes once while it is remembered, and again once its TTL has passed;
- a job killed after a checkpoint and restarted from it at a higher parallelism (the keyed
  chunks split over two operator instances) still drops every copy of a key it had seen.

The dedup + OHLC job's own tests (test_dedup_ohlc.py, test_exactly_once.py, the live
outputs) run with this operator as their default, against the pandas truth.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mmh3
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ticklake.settings import Connections

pytestmark = pytest.mark.timeout(600)


def _flink_env() -> tuple[str, dict[str, str]]:
    from ticklake.stack.components.flink import flink_python, job_environment
    from ticklake.stack.context import StackContext
    from ticklake.stack.settings import StackSettings

    ctx = StackContext(StackSettings())
    return str(flink_python(ctx)), dict(os.environ) | job_environment(ctx)


HASH_SCRIPT = """
import json, sys
from pyflink.java_gateway import get_gateway
gateway = get_gateway()
jvm = gateway.jvm
key = jvm.io.ticklake.flink.dedup.DedupKey
out = []
for text in json.loads(sys.argv[1]):
    data = text.encode("utf-8")
    h = key.murmur3(bytearray(data))
    out.append([int(h[0]), int(h[1])])
parts = gateway.new_array(jvm.java.lang.String, 3)
parts[0], parts[1], parts[2] = "BINANCE", "BTC/USDT", "42"
f = key.fingerprintOf(parts)
out.append([int(f[0]), int(f[1])])
print("HASHES " + json.dumps(out))
"""


def test_fingerprint_is_murmur3_x64_128(conn: Connections) -> None:
    # Every tail length (0-15 bytes past a 16-byte block), blocks, and non-ASCII text.
    texts = ["", "a", "été", "x" * 15, "y" * 16, "z" * 17, "0123456789abcdef" * 3 + "tail"]
    texts += ["k" * n for n in range(1, 33)]
    python, env = _flink_env()
    proc = subprocess.run(
        [python, "-c", HASH_SCRIPT, json.dumps(texts)],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("HASHES "))
    got = json.loads(line.removeprefix("HASHES "))
    want = [list(mmh3.hash64(t.encode("utf-8"), 0, True, True)) for t in texts]
    assert got[:-1] == want
    # The key encoding: per part a 4-byte big-endian length, then its UTF-8 bytes.
    parts = [b"BINANCE", b"BTC/USDT", b"42"]
    encoded = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    assert got[-1] == list(mmh3.hash64(encoded, 0, True, True))


SET_SCRIPT = """
import json, random, sys
from pyflink.java_gateway import get_gateway
jvm = get_gateway().jvm
rng = random.Random(int(sys.argv[1]))
lim = 2**63
pool = [(rng.randrange(-lim, lim), rng.randrange(-lim, lim)) for _ in range(5000)]
pool += [(0, 0), (0, 2), (-1, -1), (-lim, 0), (lim - 1, lim - 1)]
java = jvm.io.ticklake.flink.dedup.HashSet128(2)  # 4 shards: each rebuilds many times
model = {}
now, ttl, mismatches, added, restored = 1_000, 500, 0, 0, 0
for _ in range(60_000):
    now += rng.randrange(0, 3)
    key = rng.choice(pool)
    norm = (0, 1) if key == (0, 0) else key  # the set stores the all-zero fingerprint so
    if rng.random() < 0.1:  # restore: the later expiry wins
        expires = now + rng.randrange(-200, ttl)
        java.restore(key[0], key[1], expires, now)
        model[norm] = max(model.get(norm, expires), expires)
        restored += 1
        continue
    want = not (norm in model and model[norm] > now)
    if want:
        model[norm] = now + ttl
    got = java.addIfAbsent(key[0], key[1], now + ttl, now)
    mismatches += got != want
    added += want
print("SET " + json.dumps([mismatches, added, restored, java.used()]))
"""


def test_fingerprint_set_agrees_with_a_dict_model(conn: Connections) -> None:
    """``HashSet128`` against a dict: first add, duplicate, expiry, restore (max expiry),
    through many shard rebuilds that drop expired keys; (0, 0) is stored as (0, 1)."""
    python, env = _flink_env()
    proc = subprocess.run(
        [python, "-c", SET_SCRIPT, "7"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SET "))
    mismatches, added, restored, used = json.loads(line.removeprefix("SET "))
    assert mismatches == 0
    assert added > 10_000 and restored > 5_000  # both paths taken, keys expired and re-added
    assert used < added  # rebuilds dropped expired keys


# -- jobs ------------------------------------------------------------------------------


def _topics(conn: Connections, *specs: tuple[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": conn.kafka.bootstrap_servers})
    futures = admin.create_topics([NewTopic(name, partitions) for name, partitions in specs])
    for future in futures.values():
        future.result(timeout=30)


def _script(
    conn: Connections,
    src: str,
    out: str,
    *,
    ttl: str,
    checkpoints: Path,
    restore_from: Path | None = None,
) -> str:
    restore = f"SET 'execution.savepoint.path' = '{restore_from.as_uri()}';" if restore_from else ""
    return f"""
SET 'execution.checkpointing.dir' = '{checkpoints.as_uri()}';
SET 'execution.checkpointing.externalized-checkpoint-retention' = 'RETAIN_ON_CANCELLATION';
SET 'state.backend.type' = 'hashmap';
SET 'state.changelog.enabled' = 'true';
SET 'state.changelog.storage' = 'filesystem';
SET 'state.changelog.dstl.dfs.base-path' = '{(checkpoints / "changelog").as_uri()}';
SET 'execution.state-recovery.claim-mode' = 'CLAIM';
SET 'pipeline.object-reuse' = 'true';
{restore}
CREATE TEMPORARY TABLE src (
  `exchange` STRING, `symbol` STRING, `trade_id` STRING, `n` INT
) WITH (
  'connector' = 'ticklake-kafka-dedup',
  'dedup.key' = 'exchange;symbol;trade_id',
  'dedup.ttl' = '{ttl}',
  'topic' = '{src}',
  'properties.bootstrap.servers' = '{conn.kafka.bootstrap_servers}',
  'properties.group.id' = 'it-dedup-{src}',
  'properties.fetch.max.wait.ms' = '20',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);
CREATE TEMPORARY TABLE out_kafka (
  `exchange` STRING, `symbol` STRING, `trade_id` STRING, `n` INT
) WITH (
  'connector' = 'kafka',
  'topic' = '{out}',
  'properties.bootstrap.servers' = '{conn.kafka.bootstrap_servers}',
  'properties.linger.ms' = '0',
  'format' = 'json'
);
INSERT INTO out_kafka SELECT * FROM src;
"""


class _Job:
    """``ticklake.jobs.sql_script`` on the MiniCluster, in the background, killed at will."""

    def __init__(self, script: Path, parallelism: int, log: Path) -> None:
        python, env = _flink_env()
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [python, "-m", "ticklake.jobs.sql_script", "--file", str(script), "--no-catalog",
             "--parallelism", str(parallelism), "--checkpoint-interval", "1s"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self.log.flush()
            tail = Path(self.log.name).read_text()[-3000:]
            raise AssertionError(f"the job exited with {self.proc.returncode}:\n{tail}")


class _Out:
    """Everything on the output topic so far (read_uncommitted: the sink is at-least-once)."""

    def __init__(self, conn: Connections, topic: str) -> None:
        self.consumer = Consumer({
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "group.id": f"it-dedup-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })  # fmt: skip
        self.consumer.subscribe([topic])
        self.rows: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for msg in self.consumer.consume(1000, 0.2):
            if msg.error() is None:
                self.rows.append(json.loads(msg.value()))
        return self.rows

    def wait_for(self, what: str, cond: Callable[[list[dict[str, Any]]], bool], job: _Job) -> None:
        deadline = time.monotonic() + 240
        while not cond(self.poll()):
            job.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; output: {self.rows[-20:]}")

    def close(self) -> None:
        self.consumer.close()


def _send(conn: Connections, topic: str, rows: list[tuple[str, str, str | None, int]]) -> None:
    producer = Producer({"bootstrap.servers": conn.kafka.bootstrap_servers})
    for ex, sym, tid, n in rows:
        value = json.dumps({"exchange": ex, "symbol": sym, "trade_id": tid, "n": n})
        producer.produce(topic, value=value.encode(), key=f"{ex}:{sym}".encode())
    assert producer.flush(30) == 0


def _ids(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter((r["exchange"], r["symbol"], r["trade_id"]) for r in rows)


def _checkpoint_number(path: Path) -> int:
    return int(path.name.split("-")[1])


def _completed_checkpoints(root: Path) -> list[Path]:
    """The job's complete checkpoints (``<root>/<job id>/chk-N/_metadata``), oldest first."""
    return sorted((p.parent for p in root.glob("*/chk-*/_metadata")), key=_checkpoint_number)


def _newest_checkpoint(root: Path) -> int:
    done = _completed_checkpoints(root)
    return _checkpoint_number(done[-1]) if done else 0


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def jobs() -> Iterator[list[_Job]]:
    started: list[_Job] = []
    yield started
    for job in started:
        job.kill()


def test_a_key_passes_once_until_its_ttl_has_passed(
    conn: Connections, tmp_path: Path, run_id: str, jobs: list[_Job]
) -> None:
    src, out_topic = f"it.dedup.ttl.src.{run_id}", f"it.dedup.ttl.out.{run_id}"
    _topics(conn, (src, 1), (out_topic, 1))
    script = tmp_path / "ttl.sql"
    script.write_text(_script(conn, src, out_topic, ttl="5 s", checkpoints=tmp_path / "chk"))
    job = _Job(script, 1, tmp_path / "job.log")
    jobs.append(job)
    out = _Out(conn, out_topic)
    try:
        # The same id on another market or exchange is another trade; a NULL id is a key,
        # and not the empty one.
        first = [("BINANCE", "BTC/USDT", "1", 1), ("BINANCE", "ETH/USDT", "1", 2),
                 ("KRAKEN", "BTC/USDT", "1", 3), ("BINANCE", "BTC/USDT", "1", 4),
                 ("BINANCE", "BTC/USDT", "2", 5), ("BINANCE", "BTC/USDT", None, 6),
                 ("BINANCE", "BTC/USDT", None, 7), ("BINANCE", "BTC/USDT", "", 8)]  # fmt: skip
        _send(conn, src, first)
        out.wait_for("the first arrivals", lambda r: len(r) >= 6, job)
        seen_at = time.monotonic()
        # Within the TTL: dropped (the sentinel proves the copies were read before it).
        _send(conn, src, [("BINANCE", "BTC/USDT", "1", 9), ("KRAKEN", "BTC/USDT", "1", 10),
                          ("S", "S", "sentinel-1", 11)])  # fmt: skip
        out.wait_for("sentinel 1", lambda r: any(x["trade_id"] == "sentinel-1" for x in r), job)
        time.sleep(max(0.0, seen_at + 6.5 - time.monotonic()))
        # After the TTL: remembered no more, so each passes once again.
        again = [("BINANCE", "BTC/USDT", "1", 12), ("BINANCE", "BTC/USDT", "1", 13),
                 ("BINANCE", "BTC/USDT", "2", 14), ("S", "S", "sentinel-2", 15)]  # fmt: skip
        _send(conn, src, again)
        out.wait_for("sentinel 2", lambda r: any(x["trade_id"] == "sentinel-2" for x in r), job)
        time.sleep(1.0)
        rows = out.poll()
    finally:
        out.close()
    assert [r["n"] for r in rows] == [1, 2, 3, 5, 6, 8, 11, 12, 14, 15]


def test_restore_from_a_checkpoint_at_a_higher_parallelism_keeps_every_key(
    conn: Connections, tmp_path: Path, run_id: str, jobs: list[_Job]
) -> None:
    src, out_topic = f"it.dedup.rs.src.{run_id}", f"it.dedup.rs.out.{run_id}"
    _topics(conn, (src, 2), (out_topic, 1))
    checkpoints = tmp_path / "chk"
    markets = [("BINANCE", "BTC/USDT"), ("BINANCE", "ETH/USDT"), ("KRAKEN", "BTC/USDT")]
    before = [(ex, sym, str(i), i) for i in range(300) for ex, sym in markets]
    after = [(ex, sym, str(i), i) for i in range(300, 400) for ex, sym in markets]
    script = tmp_path / "one.sql"
    script.write_text(_script(conn, src, out_topic, ttl="1 h", checkpoints=checkpoints))
    first = _Job(script, 1, tmp_path / "job1.log")
    jobs.append(first)
    out = _Out(conn, out_topic)
    try:
        _send(conn, src, before + before[::-1])  # every trade twice
        out.wait_for("the first job's trades", lambda r: len(r) >= len(before), first)
        # A checkpoint triggered after this moment covers every first arrival (the copies
        # may still be on their way: then they are read again after the restore). The
        # newest complete one now, and the next, may have been triggered before it.
        newest = _newest_checkpoint(checkpoints)
        deadline = time.monotonic() + 120
        while _newest_checkpoint(checkpoints) < newest + 2:
            first.check_alive()
            assert time.monotonic() < deadline, "no checkpoint completed"
            time.sleep(0.2)
        restore_from = _completed_checkpoints(checkpoints)[-1]
        first.kill()  # no savepoint, no clean stop: as a crash
        assert _ids(out.poll()) == _ids([{"exchange": e, "symbol": s, "trade_id": t}
                                         for e, s, t, _ in before])  # fmt: skip

        script2 = tmp_path / "two.sql"
        script2.write_text(_script(conn, src, out_topic, ttl="1 h", checkpoints=checkpoints,
                                   restore_from=restore_from))  # fmt: skip
        second = _Job(script2, 2, tmp_path / "job2.log")
        jobs.append(second)
        # Copies of every earlier trade (each must be dropped), then new trades twice.
        _send(conn, src, before + after + after)
        want = len(before) + len(after)
        out.wait_for("the second job's trades", lambda r: len(r) >= want, second)
        time.sleep(3.0)  # anything more would be a copy that passed
        rows = out.poll()
    finally:
        out.close()
    counts = _ids(rows)
    assert len(rows) == want, f"{len(rows) - want} copies passed: {counts.most_common(5)}"
    assert set(counts.values()) == {1}
    assert set(counts) == {(e, s, t) for e, s, t, _ in before + after}
