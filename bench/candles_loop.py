"""The candles benchmark's plain peers: a confluent-kafka loop aggregating in a dict, and
the raw consume rate (decode only). Each runs as ``python -m ticklake.bench.candles_loop``
in a child process and prints one JSON line (its own first-record and last-output times).

``DictCandles`` is the simplest correct thing: a set of seen trade keys for deduplication,
one dict of open 1m bars keyed by (market, window start), roll-ups into the longer timeframes
when a 1m bar closes, and event-time windows closed by a watermark: the minimum over the
partitions still being read of (their largest event time - the bound), in milliseconds like
Flink's. A trade at or below the watermark is late: counted, and in no candle.
"""

from __future__ import annotations

import argparse
import decimal
import io
import json
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ticklake.bench.candles_defs import TIMEFRAMES_US, CandleRow, vwap

#: A bar: [open_ts, open_id, open, close_ts, close_id, close, high, low, volume, quote, n]
Bar = list[Any]
NO_WATERMARK = -(2**62)


def new_bar(ts: int, tid: str, price: Decimal, amount: Decimal) -> Bar:
    return [ts, tid, price, ts, tid, price, price, price, amount, price * amount, 1]


def merge(bar: Bar, other: Bar) -> None:
    """Fold ``other`` (a bar or a one-trade bar) into ``bar``."""
    if (other[0], other[1]) < (bar[0], bar[1]):
        bar[0], bar[1], bar[2] = other[0], other[1], other[2]
    if (other[3], other[4]) > (bar[3], bar[4]):
        bar[3], bar[4], bar[5] = other[3], other[4], other[5]
    bar[6] = max(bar[6], other[6])
    bar[7] = min(bar[7], other[7])
    bar[8] += other[8]
    bar[9] += other[9]
    bar[10] += other[10]


def candle_row(market: tuple[str, str], tf: str, start: int, bar: Bar) -> CandleRow:
    return (market[0], market[1], tf, start, start + TIMEFRAMES_US[tf], bar[2], bar[6], bar[7],
            bar[5], bar[8], bar[9], bar[10], vwap(bar[9], bar[8]), bar[3])  # fmt: skip


class DictCandles:
    """Dedup + event-time OHLC in plain dicts (see the module doc)."""

    def __init__(
        self, timeframes: tuple[str, ...], bound_ms: int, emit: Callable[[CandleRow], None]
    ) -> None:
        self.timeframes = timeframes
        self.longer = [tf for tf in timeframes if tf != "1m"]
        self.bound_ms = bound_ms
        self.emit = emit
        self.seen: set[tuple[str, str, str]] = set()
        self.bars: dict[tuple[tuple[str, str], int], Bar] = {}
        self.rollups: dict[tuple[str, tuple[str, str], int], Bar] = {}
        self.max_ms: dict[int, int] = {}
        self.finished: set[int] = set()
        self.partitions: set[int] = set()
        self.watermark_ms = NO_WATERMARK
        self.duplicates = 0
        self.late = 0

    def add(self, partition: int, t: dict[str, Any]) -> None:
        key = (t["exchange"], t["symbol"], t["trade_id"])
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        ts = t["exchange_ts_us"]
        ts_ms = ts // 1000
        if ts_ms <= self.watermark_ms:
            self.late += 1
            return
        if ts_ms > self.max_ms.get(partition, NO_WATERMARK):
            self.max_ms[partition] = ts_ms
        market = key[0], key[1]
        start = ts - ts % 60_000_000
        tid = key[2].rjust(32, "0")
        price, amount = t["price"], t["amount"]
        bar = self.bars.get((market, start))
        if bar is None:
            self.bars[market, start] = new_bar(ts, tid, price, amount)
        else:
            merge(bar, new_bar(ts, tid, price, amount))

    def advance(self) -> None:
        """Recompute the watermark; close every window it passed."""
        live = [self.max_ms.get(p, NO_WATERMARK) for p in self.partitions - self.finished]
        wm = (min(live) - self.bound_ms) if live else 2**62
        if (wm + 1) // 60_000 <= (self.watermark_ms + 1) // 60_000 and wm < 2**62:
            self.watermark_ms = max(self.watermark_ms, wm)
            return  # no new minute: nothing can close
        self.watermark_ms = max(self.watermark_ms, wm)
        # A window [s, e) fires when the watermark reaches e - 1 ms (Flink's rule).
        closed = [k for k in self.bars if (k[1] + 60_000_000) // 1000 - 1 <= self.watermark_ms]
        for market, start in sorted(closed, key=lambda k: k[1]):
            bar = self.bars.pop((market, start))
            if "1m" in self.timeframes:
                self.emit(candle_row(market, "1m", start, bar))
            for tf in self.longer:
                size = TIMEFRAMES_US[tf]
                k = (tf, market, start - start % size)
                agg = self.rollups.get(k)
                if agg is None:
                    self.rollups[k] = list(bar)
                else:
                    merge(agg, bar)
        done = [k for k in self.rollups
                if (k[2] + TIMEFRAMES_US[k[0]]) // 1000 - 1 <= self.watermark_ms]  # fmt: skip
        for k in sorted(done, key=lambda k: (k[2], TIMEFRAMES_US[k[0]])):
            self.emit(candle_row(k[1], k[0], k[2], self.rollups.pop(k)))


def _consumer(bootstrap: str, topic: str) -> tuple[Any, dict[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-candles-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 2**20,
            "max.partition.fetch.bytes": 8 * 2**20,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts}  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    return consumer, ends


def run_worker(mode: str, bootstrap: str, topic: str, out_topic: str, bound_ms: int) -> None:
    """Consume the tape to its end offsets (as seen at start); print one JSON line."""
    import fastavro
    from confluent_kafka import Producer

    from ticklake.schemas.serde import parsed_schema

    decimal.getcontext().prec = 60  # exact sums: the default 28 digits could round
    schema = parsed_schema("trade")
    reader = fastavro.schemaless_reader
    consumer, ends = _consumer(bootstrap, topic)
    remaining = {p for p, end in ends.items() if end > 0}
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    outputs = [0]
    t_last = [0.0]

    def emit(row: CandleRow) -> None:
        producer.produce(out_topic, json.dumps([str(v) for v in row]).encode())
        outputs[0] += 1
        t_last[0] = time.time()

    agg = DictCandles(tuple(TIMEFRAMES_US), bound_ms, emit)
    agg.partitions = set(remaining)
    agg.finished = {p for p, end in ends.items() if end == 0}
    count, t_first = 0, 0.0
    while remaining:
        batch = consumer.consume(10_000, timeout=1.0)
        if not batch:
            continue
        if not t_first:
            t_first = time.time()
        for msg in batch:
            if msg.error() is not None:
                raise RuntimeError(str(msg.error()))
            value: Any = reader(io.BytesIO(msg.value()), schema, None)
            count += 1
            p = msg.partition()
            if mode == "dict":
                agg.add(p, value)
            if msg.offset() + 1 >= ends[p]:
                remaining.discard(p)
                agg.finished.add(p)
        if mode == "dict":
            agg.advance()
    if mode == "dict":
        agg.advance()  # every partition finished: the watermark is at the end of time
        producer.flush(60)
    else:
        t_last[0] = time.time()
    consumer.close()
    print(json.dumps({"t_first": t_first, "t_last": t_last[0], "records": count,
                      "outputs": outputs[0], "duplicates": agg.duplicates, "late": agg.late}),
          flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ticklake.bench.candles_loop")
    p.add_argument("mode", choices=["dict", "raw"])
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("out_topic")
    p.add_argument("--bound-ms", type=int, default=5000)
    a = p.parse_args()
    run_worker(a.mode, a.bootstrap, a.topic, a.out_topic, a.bound_ms)


if __name__ == "__main__":
    main()
