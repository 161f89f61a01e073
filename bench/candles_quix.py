"""The candles benchmark's Quix Streams peer: dedup + event-time OHLC written the way a
Python team would write it with ``quixstreams`` (Application, StreamingDataFrame).

    $TICKLAKE_HOME/venvs/quix/bin/python -m ticklake.bench.candles_quix BOOTSTRAP TOPIC OUT

Runs in its own environment (quixstreams pins an older confluent-kafka and pydantic than the
platform's; ``candles.quix_python()`` creates it from ``uv.lock``). The pipeline:

- the raw-trades topic, Avro values decoded with fastavro, message time = the trade's
  exchange time (milliseconds) through a ``timestamp_extractor``;
- deduplication in state: a stateful ``filter`` per message key (the market) that keeps a
  trade id the first time it is seen (RocksDB state, changelogged, the defaults);
- ``tumbling_window(1 min, grace = the lateness bound).reduce(...).final()``: open/close by
  (exchange time, trade id left-padded to 32), high, low, volume, quote volume, count; the
  aggregate lives in state as JSON, so decimals are kept as strings;
- the 5m, 15m, 1h and 1d candles roll the closed 1m bars up (tumbling windows over the 1m
  stream, whose record time is the bar's start), as the Flink job does;
- every candle to an output topic as JSON.

Windows close by the event time of their key (Quix's default closing strategy): the tape's
closing trades close every window. Prints one JSON line with its first-record and
last-output wall-clock times.
"""

from __future__ import annotations

import argparse
import decimal
import io
import json
import tempfile
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import fastavro
from quixstreams import Application, State  # type: ignore[import-not-found]
from quixstreams.models.serializers import Deserializer  # type: ignore[import-not-found]

from ticklake.bench.candles_defs import TIMEFRAMES_US, vwap
from ticklake.schemas.serde import parsed_schema

MARKS = {"t_first": 0.0, "t_last": 0.0, "outputs": 0.0}


class AvroTrade(Deserializer):  # type: ignore[misc]
    """The raw topic's value: schemaless Avro of ``trade.avsc`` (fastavro)."""

    def __init__(self) -> None:
        super().__init__()
        self.schema = parsed_schema("trade")

    def __call__(self, value: bytes, ctx: Any) -> Any:
        if not MARKS["t_first"]:
            MARKS["t_first"] = time.time()
        return fastavro.schemaless_reader(io.BytesIO(value), self.schema, None)


def event_time(value: Any, _headers: Any, _timestamp: int, _type: Any) -> int:
    return int(value["exchange_ts_us"]) // 1000


def first_seen(trade: dict[str, Any], state: State) -> bool:
    """Dedup in state: the message key is the market, so the trade id alone is the key."""
    trade_id = trade["trade_id"]
    if state.get(trade_id) is not None:
        return False
    state.set(trade_id, 1)
    return True


def bar_init(t: dict[str, Any]) -> list[Any]:
    ts, tid, p, a = t["exchange_ts_us"], t["trade_id"].rjust(32, "0"), t["price"], t["amount"]
    ps = str(p)
    return [ts, tid, ps, ts, tid, ps, ps, ps, str(a), str(p * a), 1]


def bar_add(bar: list[Any], t: dict[str, Any]) -> list[Any]:
    ts, tid, p, a = t["exchange_ts_us"], t["trade_id"].rjust(32, "0"), t["price"], t["amount"]
    if (ts, tid) < (bar[0], bar[1]):
        bar[0], bar[1], bar[2] = ts, tid, str(p)
    if (ts, tid) > (bar[3], bar[4]):
        bar[3], bar[4], bar[5] = ts, tid, str(p)
    if p > Decimal(bar[6]):
        bar[6] = str(p)
    if p < Decimal(bar[7]):
        bar[7] = str(p)
    bar[8] = str(Decimal(bar[8]) + a)
    bar[9] = str(Decimal(bar[9]) + p * a)
    bar[10] += 1
    return bar


def bar_merge(bar: list[Any], window: dict[str, Any]) -> list[Any]:
    o = window["value"]
    if (o[0], o[1]) < (bar[0], bar[1]):
        bar[0], bar[1], bar[2] = o[0], o[1], o[2]
    if (o[3], o[4]) > (bar[3], bar[4]):
        bar[3], bar[4], bar[5] = o[3], o[4], o[5]
    if Decimal(o[6]) > Decimal(bar[6]):
        bar[6] = o[6]
    if Decimal(o[7]) < Decimal(bar[7]):
        bar[7] = o[7]
    bar[8] = str(Decimal(bar[8]) + Decimal(o[8]))
    bar[9] = str(Decimal(bar[9]) + Decimal(o[9]))
    bar[10] += o[10]
    return bar


def bar_from_window(window: dict[str, Any]) -> list[Any]:
    return list(window["value"])


def to_candle(timeframe: str) -> Any:
    def convert(window: dict[str, Any], key: Any, _ts: int, _headers: Any) -> dict[str, Any]:
        bar = window["value"]
        exchange, symbol = (key.decode() if isinstance(key, bytes) else key).split(":", 1)
        start = window["start"] * 1000
        volume, quote = Decimal(bar[8]), Decimal(bar[9])
        MARKS["t_last"] = time.time()
        MARKS["outputs"] += 1
        return {
            "exchange": exchange, "symbol": symbol, "timeframe": timeframe,
            "window_start_us": start, "window_end_us": start + TIMEFRAMES_US[timeframe],
            "open": bar[2], "high": bar[6], "low": bar[7], "close": bar[5],
            "volume": str(volume), "quote_volume": str(quote), "trade_count": bar[10],
            "vwap": str(vwap(quote, volume)), "exchange_ts_us": bar[3],
        }  # fmt: skip

    return convert


def build(app: Application, topic: str, out_topic: str, bound_ms: int) -> None:
    raw = app.topic(topic, value_deserializer=AvroTrade(), timestamp_extractor=event_time)
    out = app.topic(out_topic, value_serializer="json")
    trades = app.dataframe(raw).filter(first_seen, stateful=True)
    bars = (
        trades.tumbling_window(duration_ms=timedelta(minutes=1), grace_ms=bound_ms)
        .reduce(reducer=bar_add, initializer=bar_init)
        .final()
    )
    bars.apply(to_candle("1m"), metadata=True).to_topic(out)
    for tf in ("5m", "15m", "1h", "1d"):
        (
            bars.tumbling_window(duration_ms=TIMEFRAMES_US[tf] // 1000, grace_ms=0)
            .reduce(reducer=bar_merge, initializer=bar_from_window)
            .final()
            .apply(to_candle(tf), metadata=True)
            .to_topic(out)
        )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ticklake.bench.candles_quix")
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("out_topic")
    p.add_argument("--bound-ms", type=int, default=5000)
    p.add_argument("--idle-timeout", type=float, default=15.0)
    a = p.parse_args()
    decimal.getcontext().prec = 60  # exact sums: the default 28 digits could round
    with tempfile.TemporaryDirectory(prefix="bench-quix-state-") as state_dir:
        app = Application(
            broker_address=a.bootstrap,
            consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
        )
        build(app, a.topic, a.out_topic, a.bound_ms)
        app.run(timeout=a.idle_timeout)
    print(json.dumps({"t_first": MARKS["t_first"], "t_last": MARKS["t_last"],
                      "outputs": int(MARKS["outputs"])}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
