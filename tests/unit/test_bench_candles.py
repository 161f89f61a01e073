"""The candles benchmark's pure parts: the tape, its wire encoding, its truth, the dict loop."""

from __future__ import annotations

import io
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pandas as pd
import pytest

from ticklake.bench import candles_tape as tape
from ticklake.bench.candles import RelayTap, _live_args, parse_flink
from ticklake.bench.candles_loop import DictCandles
from ticklake.schemas.models import Trade
from ticklake.schemas.serde import decode, encode, parsed_schema

RECORDS = 40_000


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return tape.generate(RECORDS, seed=3)


def test_tape_is_deterministic(df: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(df, tape.generate(RECORDS, seed=3))
    assert not df.equals(tape.generate(RECORDS, seed=4))


def test_tape_has_what_it_promises(df: pd.DataFrame) -> None:
    st = tape.stats(df)
    assert abs(st.records - RECORDS) < RECORDS * 0.02
    # about 5% duplicates (a second copy of the same trade, from the second ingestor)
    assert 0.04 * st.trades < st.duplicates < 0.06 * st.trades
    dups = df[df.duplicated(["market", "trade_id"], keep="first")]
    assert set(dups["ingestor"]) == {1}
    # out of order, but never by more than the generator's delay: far inside the bound
    assert st.delayed > 0.02 * st.trades
    assert 0 < st.max_disorder_us < tape.MAX_DELAY_US < tape.BOUND_MS * 1000
    assert st.on_boundary > 0.01 * st.trades
    assert st.same_timestamp > 0.01 * st.trades
    assert st.quiet_trades == 12 + 2  # three clusters of four, and two closing trades
    # the closing trades come last, after every window of the compared range
    last = df.tail(2 * len(tape.ALL_MARKETS))
    assert (last["ts"] >= tape.close_us()).all()
    assert (df["ts"].iloc[: -len(last)] < tape.cutoff_us()).all()


def test_records_are_the_wire_format(df: pd.DataFrame) -> None:
    rows = df.head(300)
    for (key, value), r in zip(tape.encoded_records(rows), rows.itertuples(), strict=True):
        m = tape.ALL_MARKETS[r.market]
        trade = Trade(
            exchange=m.exchange,
            symbol=m.symbol,
            exchange_ts_us=r.ts,
            receipt_ts_us=r.receipt,
            ingestor_id=tape.INGESTORS[r.ingestor],
            trade_id=str(r.trade_id),
            side="buy" if r.side else "sell",
            price=Decimal(int(r.price)).scaleb(-m.price_places).quantize(Decimal("1E-8")),
            amount=Decimal(int(r.amount)).scaleb(-m.amount_places).quantize(Decimal("1E-8")),
        )
        assert value == encode(trade)
        assert decode(Trade, value) == trade
        assert key == f"{m.exchange}:{m.symbol}".encode()


T = 1_709_294_400_000_000  # 2024-03-01 12:00:00 UTC
S = 1_000_000


def _t(ts: int, trade_id: str, price: str, amount: str) -> dict[str, Any]:
    return {"exchange": "BINANCE", "symbol": "BTC/USDT", "exchange_ts_us": ts,
            "trade_id": trade_id, "price": Decimal(price), "amount": Decimal(amount)}  # fmt: skip


def test_dict_loop_against_a_hand_computed_case() -> None:
    out: list[tuple[Any, ...]] = []
    agg = DictCandles(("1m", "5m", "1d"), 5_000, out.append)
    agg.partitions = {0}
    for t in [
        _t(T + S, "10", "100", "1"),
        _t(T, "9", "101", "2"),  # exactly on the window start, one second out of order
        _t(T + S, "10", "100", "1"),  # the same trade again (a second ingestor)
        _t(T + S, "11", "99", "1"),  # same microsecond: id 11 after id 10
        _t(T + 61 * S, "12", "105", "0.5"),
        _t(T + 70 * S, "13", "104", "1"),
    ]:
        agg.add(0, t)
        agg.advance()
    # the watermark (70 s - 5 s) passed the first minute: it closed, nothing else did
    assert [r[2:4] for r in out] == [("1m", T)]
    agg.add(0, _t(T + 30 * S, "8", "1", "1"))  # 40 s behind the latest: late
    agg.finished = {0}
    agg.advance()
    d = Decimal
    want = [
        ("BINANCE", "BTC/USDT", "1m", T, T + 60 * S, d(101), d(101), d(99), d(99), d(4),
         d(401), 3, d("100.25"), T + S),
        ("BINANCE", "BTC/USDT", "1m", T + 60 * S, T + 120 * S, d(105), d(105), d(104), d(104),
         d("1.5"), d("156.5"), 2, d("104.33333333"), T + 70 * S),
        ("BINANCE", "BTC/USDT", "5m", T, T + 300 * S, d(101), d(105), d(99), d(104), d("5.5"),
         d("557.5"), 5, d("101.36363636"), T + 70 * S),
        ("BINANCE", "BTC/USDT", "1d", T - 12 * 3600 * S, T + 12 * 3600 * S, d(101), d(105),
         d(99), d(104), d("5.5"), d("557.5"), 5, d("101.36363636"), T + 70 * S),
    ]  # fmt: skip
    assert len(out) == len(want)
    assert set(out) == set(want)
    assert (agg.duplicates, agg.late) == (1, 1)


def test_dict_loop_equals_the_pandas_truth_on_a_tape(df: pd.DataFrame) -> None:
    """Two independent computations of the same tape agree (one partition, in order)."""
    out: list[tuple[Any, ...]] = []
    agg = DictCandles(tuple(tape.TIMEFRAMES_US), tape.BOUND_MS, out.append)
    agg.partitions = {0}
    schema = parsed_schema("trade")
    for (_, value), i in zip(tape.encoded_records(df), range(len(df)), strict=False):
        agg.add(0, fastavro.schemaless_reader(io.BytesIO(value), schema, None))
        if i % 500 == 0:
            agg.advance()
    agg.finished = {0}
    agg.advance()
    want = tape.truth(df)
    verdict = tape.compare(want, out, tuple(tape.TIMEFRAMES_US))
    assert verdict.correct, verdict
    assert agg.late == 0
    assert verdict.compared == len(want) > 1000


def test_contender_specs_choose_the_live_path() -> None:
    kafka = parse_flink("p1", has_live_flag=True)
    assert (kafka.live, kafka.via_relay) == (True, False)
    assert _live_args(kafka, "r1", None) == [
        "--live-trades-topic", "bench.live.trades.r1",
        "--live-candles-topic", "bench.live.candles.r1",
    ]  # fmt: skip
    relay = parse_flink("p2:relay", has_live_flag=True)
    assert (relay.parallelism, relay.live, relay.via_relay) == (2, True, True)
    assert relay.label == "ticklake p2, Kafka + Iceberg, live on to the relay"
    off = parse_flink("p1:nolive", has_live_flag=True)
    assert _live_args(off, "r1", None)[-1] == "--no-live"
    with pytest.raises(ValueError, match="they are off"):
        parse_flink("p1:nolive:relay", has_live_flag=True)
    with pytest.raises(ValueError, match="they are off"):
        parse_flink("p1:iceberg:relay", has_live_flag=True)


def test_relay_tap_counts_live_messages_through_a_real_relay(tmp_path: Path) -> None:
    from ticklake.relay import RelaySettings
    from ticklake.relay.publisher import RelayPublisher

    tap = RelayTap(tmp_path / "relay.log")
    try:
        ports = {f"{k.lower()}_port": v for k, v in tap.ports.items()}
        pub = RelayPublisher(RelaySettings(**ports))  # type: ignore[arg-type]
        try:
            pub.wait_ready(10)
            deadline = time.monotonic() + 10
            while not tap.counts and time.monotonic() < deadline:  # the tap's subscription
                pub.publish_raw("BINANCE:ETH/USDT|tick", b"warm")  # reaches the relay
                time.sleep(0.05)
            before = dict(tap.counts)
            for i in range(50):
                pub.publish_raw("BINANCE:BTC/USDT|tick", b"t%d" % i)
            for i in range(7):
                pub.publish_raw("BINANCE:BTC/USDT|ohlc:1m", b"c%d" % i)
            time.sleep(1)
        finally:
            pub.close()
    finally:
        counts = tap.close()
    assert counts["tick"] - before.get("tick", 0) == 50
    assert counts["ohlc:1m"] == 7
    assert set(counts) == {"tick", "ohlc:1m"}  # no subscribe ack, no replay counted
    assert tap.proc.returncode is not None  # the relay stopped with the tap
