"""End to end: a crafted trade tape through the dedup + OHLC job, checked against pandas.

The tape has several markets, duplicates of the same trade from two ingestors (some of them
arriving after the lateness bound), out-of-order trades within the bound, trades exactly on
window boundaries, identical timestamps with different trade ids (``999`` before ``1000``),
a quiet market with hours-long gaps, VWAP rounding ties, and trades far beyond the bound.
It goes to a fresh one-partition raw topic (one partition: the watermark is a function of
the input order, and with ``on-event`` watermarks lateness is deterministic); the job runs
bounded on the embedded MiniCluster; then Iceberg candles and read_committed Kafka candles
must equal candles computed independently with pandas, to the last decimal, for all five
timeframes; late trades must be on the late topic and in the late table; the trades table
must hold every distinct trade exactly once.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any

import pandas as pd
from confluent_kafka import Consumer, Producer, TopicPartition

from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.jobs.runner import run_local_job
from ticklake.schemas import CANDLES, PRODUCER_CONFIG, RAW_TRADES, Candle, Trade
from ticklake.schemas.serde import decode, encode, schema_header
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections

T0 = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000
S = 1_000_000
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
BOUND_S = 10
TIMEFRAMES = {"1m": MIN, "5m": 5 * MIN, "15m": 15 * MIN, "1h": HOUR, "1d": DAY}
INGESTOR = "flink:dedup_ohlc"
BUSY = [("BINANCE", "BTC/USDT"), ("BINANCE", "ETH/USDT"), ("COINBASE", "BTC/USD")]
QUIET = ("KRAKEN", "XBT/EUR")


@dataclasses.dataclass
class Tape:
    records: list[Trade]  # in production (= arrival) order
    late_keys: set[tuple[str, str, str]]  # trades sent far beyond the bound on purpose


def _trade(
    market: tuple[str, str], ts: int, trade_id: str, price: Decimal, amount: Decimal
) -> Trade:
    return Trade(
        exchange=market[0],
        symbol=market[1],
        exchange_ts_us=ts,
        receipt_ts_us=ts + 1_500,
        ingestor_id="it-ingestor-1",
        trade_id=trade_id,
        side="buy" if int(trade_id[-1], 36) % 2 else "sell",
        price=price,
        amount=amount,
    )


def make_tape(seed: int) -> Tape:
    rng = random.Random(seed)
    next_id = {m: 990 for m in [*BUSY, QUIET]}  # ids cross 999 -> 1000 early on

    def new_id(market: tuple[str, str]) -> str:
        next_id[market] += 1
        return str(next_id[market])

    def price() -> Decimal:
        return Decimal(rng.randrange(100_000_000, 7_000_000_000_000)).scaleb(-8)

    def amount() -> Decimal:
        return Decimal(rng.randrange(1, 5_000_000_000)).scaleb(-8)

    # (trade, delay of its arrival in event time)
    events: list[tuple[Trade, int]] = []
    late_keys: set[tuple[str, str, str]] = set()

    def add(t: Trade, delay: int = 0) -> None:
        events.append((t, delay))

    # Busy markets over 26 hours: bursts with identical timestamps, boundaries, disorder.
    ts = T0 + 7 * S
    while ts < T0 + 26 * HOUR:
        ts += rng.randrange(1, 240) * S + rng.randrange(0, S)
        market = rng.choice(BUSY)
        at = ts
        if rng.random() < 0.08:  # exactly on a minute boundary (window start)
            at = ts - ts % MIN
        for _ in range(rng.choice([1, 1, 1, 2, 3, 4])):  # identical timestamps, new ids
            delay = rng.randrange(0, 7 * S) if rng.random() < 0.15 else 0  # within the bound
            add(_trade(market, at, new_id(market), price(), amount()), delay)
    # Exact hour and day boundaries and the last microsecond before them.
    for i, at in enumerate([T0 + HOUR, T0 + HOUR - 1, T0 + DAY, T0 + DAY - 1, T0 + DAY + MIN]):
        market = BUSY[i % len(BUSY)]
        add(_trade(market, at, new_id(market), price(), amount()))
    # Same microsecond, ids "999" and "1000": numeric order puts 999 first (string order not).
    tie = ("BINANCE", "SOL/USDT")
    for trade_id, p in [("1000", "20.5"), ("999", "20.1"), ("1001", "20.3"), ("998", "20.2")]:
        add(_trade(tie, T0 + 3 * HOUR + 30 * S, trade_id, Decimal(p), Decimal("2")))
    # VWAP ties: 1.000000005 and 1.000000025 exactly -> HALF_UP gives ...01 and ...03.
    vw = ("BITSTAMP", "TIE/USD")
    for k, (p1, p2) in enumerate([("1.00000001", "1.00000000"), ("1.00000002", "1.00000003")]):
        at = T0 + 2 * HOUR + k * 5 * MIN
        add(_trade(vw, at, f"v{k}a", Decimal(p1), Decimal(1)))
        add(_trade(vw, at + S, f"v{k}b", Decimal(p2), Decimal(1)))
    # A quiet market: three short clusters hours apart (no candles in between).
    for start in [T0 + 10 * MIN + 17 * S, T0 + 5 * HOUR + 59 * MIN, T0 + 25 * HOUR + 3 * S]:
        for j in range(rng.randrange(2, 5)):
            add(_trade(QUIET, start + j * 7 * S, new_id(QUIET), price(), amount()))
    # Far beyond the bound: sent 10-25 minutes of event time after their own time.
    candidates = [
        t
        for t, d in events
        if d == 0
        and T0 + 30 * MIN < t.exchange_ts_us < T0 + 25 * HOUR
        and (t.exchange, t.symbol) in BUSY
    ]
    for t in rng.sample(candidates, 12):
        events.remove((t, 0))
        events.append((t, rng.randrange(600, 1500) * S))
        late_keys.add((t.exchange, t.symbol, t.trade_id))
    # Duplicates from a second ingestor, some of them far behind the first copy.
    for t, delay in list(events):
        if rng.random() < 0.2:
            dup_delay = delay + rng.choice([0, 1, rng.randrange(1, 3 * BOUND_S)]) * S
            dup = t.model_copy(
                update={"ingestor_id": "it-ingestor-2", "receipt_ts_us": t.receipt_ts_us + 7}
            )
            events.append((dup, dup_delay))
    # Arrival order: by event time + delay; stable, so equal keys keep insertion order.
    events.sort(key=lambda e: e[0].exchange_ts_us + e[1])
    return Tape([t for t, _ in events], late_keys)


def key(t: Trade) -> tuple[str, str, str]:
    return (t.exchange, t.symbol, t.trade_id)


def first_arrivals_and_late(
    tape: Tape, bound_ms: int
) -> tuple[list[Trade], set[tuple[str, str, str]], int]:
    """Dedup (first arrival wins) and lateness: event time <= watermark when it arrives.

    With one partition and a watermark after every record, the watermark a record meets is
    max(event time in ms of every earlier record) - bound. Also returns the smallest
    distance (ms) of any first arrival from that edge, to show no trade sits near it.
    """
    seen: set[tuple[str, str, str]] = set()
    firsts: list[Trade] = []
    late: set[tuple[str, str, str]] = set()
    max_ms: int | None = None
    margin = 10**12
    for t in tape.records:
        ts_ms = t.exchange_ts_us // 1000
        if key(t) not in seen:
            seen.add(key(t))
            firsts.append(t)
            if max_ms is not None:
                margin = min(margin, abs(ts_ms - (max_ms - bound_ms)))
                if ts_ms <= max_ms - bound_ms:
                    late.add(key(t))
        max_ms = ts_ms if max_ms is None else max(max_ms, ts_ms)
    return firsts, late, margin


def vwap(quote_volume: Decimal, volume: Decimal) -> Decimal:
    """Flink's DECIMAL division: 38 significant digits HALF_UP, then scale 8 HALF_UP."""
    with localcontext() as ctx:
        ctx.prec, ctx.rounding = 38, ROUND_HALF_UP
        return (quote_volume / volume).quantize(Decimal("1E-8"), rounding=ROUND_HALF_UP)


def truth_candles(trades: list[Trade]) -> pd.DataFrame:
    """Candles of every timeframe from on-time, deduplicated trades, with pandas."""
    df = pd.DataFrame([t.model_dump() for t in trades])
    df["order_key"] = [
        f"{ts:020d}{tid.rjust(32, '0')[:32]}"
        for ts, tid in zip(df["exchange_ts_us"], df["trade_id"], strict=True)
    ]
    frames = []
    with localcontext() as ctx:
        ctx.prec = 80  # exact products and sums (the default 28 digits would round)
        df["notional"] = [p * a for p, a in zip(df["price"], df["amount"], strict=True)]
        for tf, size in TIMEFRAMES.items():
            d = df.assign(window_start_us=df["exchange_ts_us"] // size * size)
            d = d.sort_values("order_key")
            g = d.groupby(["exchange", "symbol", "window_start_us"], sort=True)
            c = g.agg(
                open=("price", "first"),
                close=("price", "last"),
                high=("price", "max"),
                low=("price", "min"),
                volume=("amount", lambda s: sum(s, Decimal(0))),
                quote_volume=("notional", lambda s: sum(s, Decimal(0))),
                trade_count=("price", "size"),
                exchange_ts_us=("exchange_ts_us", "last"),
                receipt_ts_us=("receipt_ts_us", "max"),
            ).reset_index()
            c["timeframe"] = tf
            c["window_end_us"] = c["window_start_us"] + size
            frames.append(c)
    out = pd.concat(frames, ignore_index=True)
    out["vwap"] = [vwap(q, v) for q, v in zip(out["quote_volume"], out["volume"], strict=True)]
    out["ingestor_id"] = INGESTOR
    out["final"] = True
    out["version"] = out["trade_count"]
    return out


CANDLE_COLS = [
    "exchange", "symbol", "timeframe", "window_start_us", "window_end_us", "open", "high",
    "low", "close", "volume", "quote_volume", "trade_count", "vwap", "exchange_ts_us",
    "receipt_ts_us", "ingestor_id", "final", "version",
]  # fmt: skip


def rows(df: pd.DataFrame, cols: list[str]) -> Counter[tuple[Any, ...]]:
    return Counter(
        tuple(v.item() if hasattr(v, "item") else v for v in r)
        for r in df[cols].itertuples(index=False, name=None)
    )


def produce(conn: Connections, topic: str, records: list[Trade]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,  # keeps the order under retries
        }
        | PRODUCER_CONFIG
    )
    errors: list[object] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    for t in records:
        producer.produce(
            topic,
            key=RAW_TRADES.key(t),
            value=encode(t),
            headers=[schema_header(Trade)],
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []


def consume_committed(conn: Connections, topic: str, timeout_s: float = 60) -> list[Any]:
    """Every message of the topic that a read_committed consumer sees."""
    return consume_to_end(conn, topic, "read_committed", timeout_s)


def consume_to_end(
    conn: Connections, topic: str, isolation: str, timeout_s: float = 60
) -> list[Any]:
    """Every message of the topic visible at ``isolation`` (all partitions, to their ends)."""
    consumer = Consumer(
        {
            "bootstrap.servers": conn.kafka.bootstrap_servers,
            "group.id": f"it-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p, 0) for p in parts]
        consumer.assign(tps)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}  # fmt: skip
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
            positions = consumer.position([TopicPartition(topic, p) for p in parts])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0
                   for tp in positions):  # fmt: skip
                return messages
        raise AssertionError(f"could not read {topic} to its end in {timeout_s}s")
    finally:
        consumer.close()


def assert_outputs(
    conn: Connections, namespace: str, candles_topic: str, late_topic: str, tape: Tape
) -> pd.DataFrame:
    """Iceberg and Kafka outputs equal the truth; returns the truth candles."""
    firsts, late, _ = first_arrivals_and_late(tape, BOUND_S * 1000)
    on_time = [t for t in firsts if key(t) not in late]
    want = truth_candles(on_time)
    assert set(want["timeframe"]) == set(TIMEFRAMES)
    want_rows = rows(want, CANDLE_COLS)

    # Iceberg candles, to the last decimal, every timeframe.
    table = load_catalog(conn).load_table(f"{namespace}.candles")
    got = table.scan().to_pandas()
    assert list(got["window_start"]) == [
        pd.Timestamp(us * 1000, tz="UTC") for us in got["window_start_us"]
    ]
    got_rows = rows(got, CANDLE_COLS)
    missing, extra = want_rows - got_rows, got_rows - want_rows
    for label, bad in (("missing", missing), ("unexpected", extra)):
        for r in sorted(bad)[:5]:
            print(f"iceberg {label}: {r}")
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected"

    # Kafka candles (read_committed), decoded with the serde; keyed by market.
    messages = consume_committed(conn, candles_topic)
    kafka_candles = [decode(Candle, m.value()) for m in messages]
    assert [m.key().decode() for m in messages] == [c.market for c in kafka_candles]
    got_kafka = pd.DataFrame([c.model_dump() for c in kafka_candles])
    assert rows(got_kafka, CANDLE_COLS) == want_rows

    # Late trades: on the late topic and in the late table, each once, with its first copy.
    want_late = Counter(t.model_dump_json() for t in firsts if key(t) in late)
    late_msgs = consume_committed(conn, late_topic)
    assert Counter(decode(Trade, m.value()).model_dump_json() for m in late_msgs) == want_late
    late_table = load_catalog(conn).load_table(f"{namespace}.late_trades").scan().to_pandas()
    assert Counter(zip(late_table["exchange"], late_table["symbol"], late_table["trade_id"],
                       strict=True)) == Counter(late)  # fmt: skip

    # Trades: every distinct trade exactly once (late ones too), as it first arrived.
    trades = load_catalog(conn).load_table(f"{namespace}.trades").scan().to_pandas()
    trade_cols = ["exchange", "symbol", "trade_id", "side", "price", "amount",
                  "exchange_ts_us", "receipt_ts_us", "ingestor_id"]  # fmt: skip
    assert rows(trades, trade_cols) == rows(pd.DataFrame([t.model_dump() for t in firsts]),
                                            trade_cols)  # fmt: skip
    assert list(trades["exchange_ts"]) == [
        pd.Timestamp(us * 1000, tz="UTC") for us in trades["exchange_ts_us"]
    ]

    return want


def assert_duckdb_reads_what_pyiceberg_reads(
    conn: Connections, namespace: str, expected_rows: int
) -> None:
    """Interoperability: the Flink-written table reads the same through two engines."""
    from ticklake.catalog.query import run_sql

    cols = [
        "exchange", "symbol", "timeframe", "window_start_us", "open", "high", "low", "close",
        "volume", "quote_volume", "trade_count", "vwap",
    ]  # fmt: skip
    order = ["exchange", "symbol", "timeframe", "window_start_us"]
    duck = run_sql(
        f"SELECT {', '.join(cols)} FROM candles ORDER BY {', '.join(order)}",
        namespace=namespace,
        conn=conn,
    ).to_pylist()
    iceberg = (
        load_catalog(conn)
        .load_table(f"{namespace}.candles")
        .scan(selected_fields=tuple(cols))
        .to_arrow()
        .select(cols)
        .sort_by([(c, "ascending") for c in order])
        .to_pylist()
    )
    assert len(duck) == expected_rows
    assert duck == iceberg


def test_dedup_ohlc_candles_equal_pandas_truth(conn: Connections, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    raw = dataclasses.replace(RAW_TRADES, name=f"it.ohlc.raw.{run}", partitions=1)
    candles_topic = CANDLES.renamed(f"it.ohlc.candles.{run}")
    late_topic = RAW_TRADES.renamed(f"it.ohlc.late.{run}")
    ensure_topics(conn.kafka.bootstrap_servers, [raw, candles_topic, late_topic])
    namespace = f"it_ohlc_{run}"
    catalog = load_catalog(conn)
    assert all(ensure_market_tables(catalog, namespace).values())
    assert not any(ensure_market_tables(catalog, namespace).values())  # idempotent

    tape = make_tape(seed=4)
    firsts, late, margin_ms = first_arrivals_and_late(tape, BOUND_S * 1000)
    # The tape is what it claims: exactly the trades sent far behind are late, and every
    # other trade is clearly inside the bound (no trade near the edge).
    assert late == tape.late_keys
    assert margin_ms >= 1000
    dups = len(tape.records) - len(firsts)
    assert dups > 50
    produce(conn, raw.name, tape.records)

    t0 = time.monotonic()
    run_local_job(
        "ticklake.jobs.dedup_ohlc",
        [
            "--raw-topic", raw.name,
            "--candles-topic", candles_topic.name,
            "--late-topic", late_topic.name,
            "--namespace", namespace,
            "--out-of-orderness", f"{BOUND_S}s",
            "--watermark-emit", "on-event",
            "--bounded",
            "--checkpoint-interval", "2s",
            "--checkpoint-dir", tmp_path.joinpath("checkpoints").as_uri(),
            "--transactional-id-prefix", f"it-ohlc-{run}",
            "--group-id", f"it-ohlc-{run}",
        ],
        timeout_s=300,
    )  # fmt: skip
    job_s = time.monotonic() - t0

    want = assert_outputs(conn, namespace, candles_topic.name, late_topic.name, tape)
    assert_duckdb_reads_what_pyiceberg_reads(conn, namespace, expected_rows=len(want))
    by_tf = Counter(want["timeframe"])
    print(
        f"\n{len(tape.records)} records ({dups} duplicates, {len(late)} late, "
        f"{len({(t.exchange, t.symbol) for t in firsts})} markets) -> "
        f"{len(want)} candles {dict(by_tf)}; job {job_s:.1f}s; Iceberg and Kafka equal pandas"
    )
