"""The relay on real loopback sockets: matching, slow subscribers, LVC, restart, history.

Every wait is bounded; synchronisation is by protocol (publisher readiness, subscription
ACKs, acknowledged counters), never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import zmq

from ticklake.relay import (
    ExchangeUnavailableError,
    Relay,
    RelayClient,
    RelayPublisher,
    RelaySettings,
    RelayTimeoutError,
    TimeRangeInFutureError,
    UnknownMarketError,
)
from ticklake.relay import topics as t
from ticklake.relay.subscription import Subscription
from ticklake.schemas import Candle, HistoryReady, HistoryRequest, Trade
from ticklake.schemas.serde import decode, encode
from ticklake.stack.process import free_port

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000_000


def trade(symbol: str, i: int) -> Trade:
    return Trade(
        exchange="BINANCE",
        symbol=symbol,
        exchange_ts_us=T0 + i,
        receipt_ts_us=T0 + i + 5,
        ingestor_id="test",
        trade_id=str(i),
        side="buy",
        price=Decimal("100.5"),
        amount=Decimal("0.25"),
    )


def candle(i: int) -> Candle:
    return Candle(
        exchange="BINANCE",
        symbol="BTC/USDT",
        exchange_ts_us=T0 + i,
        receipt_ts_us=T0 + i,
        ingestor_id="flink",
        timeframe="1m",
        window_start_us=T0,
        window_end_us=T0 + 60_000_000,
        open=Decimal(100),
        high=Decimal(100 + i),
        low=Decimal(99),
        close=Decimal(100 + i),
        volume=Decimal(i),
        final=False,
        version=i,
    )


def make_settings(**overrides: int) -> RelaySettings:
    ports = {
        "request_port": free_port(),
        "work_port": free_port(),
        "publish_port": free_port(),
        "subscribe_port": free_port(),
    }
    return RelaySettings(**ports, stats_interval_s=0.2, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


@contextlib.contextmanager
def running(settings: RelaySettings) -> Iterator[Relay]:
    relay = Relay(settings)
    relay.start()
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        relay.stop()
        thread.join(10)
        assert not thread.is_alive()


@pytest.fixture
def settings() -> RelaySettings:
    return make_settings()


@pytest.fixture
def relay(settings: RelaySettings) -> Iterator[Relay]:
    with running(settings) as r:
        yield r


@pytest.fixture
def publisher(settings: RelaySettings, relay: Relay, ctx: zmq.Context) -> Iterator[RelayPublisher]:
    pub = RelayPublisher(settings, context=ctx)
    pub.wait_ready(10)
    yield pub
    pub.close()


def test_exact_topic_matching(settings, publisher, ctx):
    client = RelayClient(settings, context=ctx)
    with client.subscribe(["BINANCE:BTC/USDT"], ticks=True) as sub:
        for i in range(3):
            publisher.publish("BINANCE:BTC/USDTX|tick", trade("BTC/USDTX", i))
            publisher.publish("BINANCE:BTC/USDT|tickX", trade("BTC/USDT", i))
            publisher.publish("BINANCE:BTC/USDT|tick", trade("BTC/USDT", 100 + i))
        got = [sub.recv(5.0) for _ in range(3)]
        assert [m.topic for m in got if m] == ["BINANCE:BTC/USDT|tick"] * 3
        assert [m.model.trade_id for m in got if m] == ["100", "101", "102"]
        # Per-publisher order holds across topics: the X topics were sent before each
        # sentinel, so had they matched they would have arrived first.
        assert sub.stats.received == 3
        assert sub.stats.gaps == 0


def test_last_value_on_join(settings, publisher, ctx):
    client = RelayClient(settings, context=ctx)
    topic = "BINANCE:BTC/USDT|ohlc:1m"
    with client.subscribe(["BINANCE:BTC/USDT"], ticks=False, timeframes=["1m"]) as early:
        for i in (1, 2, 3):
            publisher.publish(topic, candle(i))
        assert [early.recv(5.0).seq for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
        with client.subscribe(["BINANCE:BTC/USDT"], ticks=False, timeframes=["1m"]) as late:
            first = late.recv(5.0)
            assert first is not None
            assert first.replay and first.seq == 3
            assert first.model == candle(3)
            publisher.publish(topic, candle(4))
            nxt = late.recv(5.0)
            assert nxt is not None and nxt.seq == 4 and not nxt.replay
        # The early subscriber also saw the replay on the wire, and dropped it (once per
        # subscription message of the late one: the SDK may resubscribe before its ACK).
        nxt = early.recv(5.0)
        assert nxt is not None and nxt.seq == 4
        assert early.stats.duplicates >= 1


def test_malformed_publisher_messages_do_not_disturb_the_relay(settings, publisher, relay, ctx):
    """Bad frames from a broken publisher reach subscribers as counted malformed messages."""
    raw = ctx.socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(settings.connect(settings.publish_port))
    assert raw.poll(10_000) and raw.recv() == b"\x01"  # the relay subscribed
    topic = "BINANCE:BTC/USDT|ohlc:1m"
    frame = t.exact_filter(topic)
    client = RelayClient(settings, context=ctx)
    with client.subscribe(["BINANCE:BTC/USDT"], ticks=False, timeframes=["1m"]) as sub:
        for message in (
            [frame, b"two frames"],
            [frame, t.Header(0, 7, 9).pack(), b"four", b"frames"],
            [b"\x01looks like a subscription", t.Header(0, 7, 9).pack(), b"x"],
            [frame, t.Header(0, 7, 1).pack(), b"not avro"],
        ):
            raw.send_multipart(message)
        # The raw socket and the publisher are two connections, in no defined order at the
        # relay: wait for the bad ones (none of them is a message) before the good one.
        deadline = time.monotonic() + 10
        while sub.stats.malformed < 3:  # the 2-, 4- and undecodable 3-frame ones
            assert time.monotonic() < deadline, f"malformed: {sub.stats.malformed}"
            assert sub.recv(0.05) is None
        publisher.publish(topic, candle(1))
        got = sub.recv(5.0)
        assert got is not None and got.model == candle(1)
        assert sub.stats.malformed == 3
    deadline = time.monotonic() + 10
    while relay.metrics.malformed.labels("publish")._value.get() < 1:
        assert time.monotonic() < deadline, "the relay did not count the bad subscription"
        time.sleep(0.05)
    # The relay still serves new subscriptions (ACK) and the publisher's last value.
    with client.subscribe(["BINANCE:BTC/USDT"], ticks=False, timeframes=["1m"]) as late:
        first = late.recv(5.0)
        assert first is not None and first.replay and first.model == candle(1)
    raw.close(linger=0)


def test_slow_subscriber_does_not_stall_a_fast_one(ctx):
    settings = make_settings(fanout_sndhwm=2000, fanout_sndbuf=65536)
    n, chunk = 30_000, 500
    payload = encode(trade("BTC/USDT", 1))
    topic = "BINANCE:BTC/USDT|tick"
    filters = [t.exact_filter(topic)]
    with running(settings) as relay:
        with (
            RelayPublisher(settings, context=ctx) as pub,
            Subscription(settings, filters, context=ctx, rcvhwm=10, rcvbuf=4096) as slow,
            Subscription(settings, filters, context=ctx) as fast,
        ):
            pub.wait_ready(10)
            slow.wait_confirmed(10)
            fast.wait_confirmed(10)
            progress = threading.Condition()
            got = [0]

            def read() -> None:
                deadline = time.monotonic() + 60
                while got[0] < n and time.monotonic() < deadline:
                    if fast.recv(0.5) is not None:
                        with progress:
                            got[0] += 1
                            progress.notify_all()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            for start in range(0, n, chunk):
                for _ in range(chunk):
                    pub.publish_raw(topic, payload)
                with progress:  # the fast one keeps up: wait for it, bounded
                    assert progress.wait_for(lambda s=start: got[0] >= s + chunk, timeout=20)
            reader.join(20)
            assert got[0] == n
            assert fast.stats.gaps == 0
            slow_got = 0
            while slow.recv(0.5) is not None:
                slow_got += 1
            assert slow_got < n  # the relay dropped for it instead of waiting for it
            # Its next message makes the drops visible as a sequence gap, exactly counted.
            pub.publish_raw(topic, payload)
            last = slow.recv(5.0)
            assert last is not None and last.seq == n + 1
            assert slow.stats.gaps == n - slow_got
            assert slow.stats.received == slow_got + 1
        assert relay.metrics.subscriptions.labels("fanout")._value.get() >= 0


def _spawn(settings: RelaySettings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    for name in ("request_port", "work_port", "publish_port", "subscribe_port"):
        env[f"TICKLAKE_RELAY__{name.upper()}"] = str(getattr(settings, name))
    return subprocess.Popen(
        [sys.executable, "-m", "ticklake.relay"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_relay_restart_resubscribes_automatically(ctx):
    settings = make_settings()
    proc = _spawn(settings)
    try:
        with (
            RelayPublisher(settings, context=ctx) as pub,
            RelayClient(settings, context=ctx).subscribe(["BINANCE:BTC/USDT"]) as sub,
        ):
            pub.wait_ready(30)
            pub.publish("BINANCE:BTC/USDT|tick", trade("BTC/USDT", 1))
            assert sub.recv(10.0) is not None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0  # clean shutdown on SIGTERM
            proc = _spawn(settings)
            # Neither side is told anything: ZMQ reconnects and resubscribes by itself.
            deadline = time.monotonic() + 30
            i, after = 1, None
            while time.monotonic() < deadline and after is None:
                i += 1
                pub.publish("BINANCE:BTC/USDT|tick", trade("BTC/USDT", i))
                message = sub.recv(0.1)
                if message is not None and len(sub.stats.relay_epochs) == 2:
                    after = message
            assert after is not None, "no message through the restarted relay"
            assert len(sub.stats.relay_epochs) == 2  # ACKed again by the new relay
            # The last value lives with the publisher, so it survives the relay's restart.
            with RelayClient(settings, context=ctx).subscribe(["BINANCE:BTC/USDT"]) as late:
                first = late.recv(10.0)
                assert first is not None and first.replay and first.seq == i
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Worker:
    """Plays the ingestor + Flink side: takes work by exchange prefix, answers HistoryReady."""

    def __init__(self, settings: RelaySettings, ctx: zmq.Context) -> None:
        self.settings = settings
        self.ctx = ctx
        self.requests: list[HistoryRequest] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self.settings.connect(self.settings.work_port))
        sub.setsockopt(zmq.SUBSCRIBE, b"BINANCE:")
        pub = RelayPublisher(self.settings, context=self.ctx)
        try:
            pub.wait_ready(10)
            while not self.stop.is_set():
                if not sub.poll(100):
                    continue
                topic, header, payload = sub.recv_multipart()
                if t.Header.unpack(header).is_ack:
                    assert topic == b"BINANCE:"
                    self.ready.set()
                    continue
                request = decode(HistoryRequest, payload)
                assert topic == t.exact_filter(f"{request.market}|history")
                self.requests.append(request)
                if request.symbol == "SLOW/USDT":
                    continue
                unknown = request.symbol == "NOPE/USDT"
                ready = HistoryReady(
                    **request.model_dump(exclude={"requested_ts_us"}),
                    status="failed" if unknown else "complete",
                    row_count=0 if unknown else 42,
                    iceberg_table=None if unknown else "market.candles",
                    snapshot_id=None if unknown else 7,
                    message="UNKNOWN_MARKET: binance lists no NOPE/USDT" if unknown else None,
                    ready_ts_us=time.time_ns() // 1000,
                )
                pub.publish(t.history_ready_topic(request.request_id), ready)
        finally:
            pub.close()
            sub.close(linger=0)

    def __enter__(self) -> Worker:
        self.thread.start()
        assert self.ready.wait(10), "worker subscription not acknowledged"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_history_request_end_to_end_with_a_worker(settings, relay, ctx):
    client = RelayClient(settings, client_id="gw-1", context=ctx)
    start, end = T0, T0 + 3_600_000_000
    with Worker(settings, ctx) as worker:
        seen: list[HistoryReady] = []

        def reader(ready: HistoryReady) -> list[int]:
            seen.append(ready)
            return [ready.row_count]

        result = client.request_history(
            "BINANCE", "BTC/USDT", "1m", start, end, timeout=10, reader=reader
        )
        assert result.rows == [42]
        assert result.ready.status == "complete" and result.ready.snapshot_id == 7
        (request,) = worker.requests
        assert (request.client_id, request.exchange, request.symbol) == (
            "gw-1",
            "BINANCE",
            "BTC/USDT",
        )
        assert (request.data_type, request.timeframe) == ("candles", "1m")
        assert (request.start_ts_us, request.end_ts_us) == (start, end)
        assert seen == [result.ready] and result.ready.request_id == request.request_id

        with pytest.raises(UnknownMarketError, match="NOPE/USDT"):
            client.request_history("BINANCE", "NOPE/USDT", "trades", start, end, timeout=10)
        with pytest.raises(RelayTimeoutError, match="not ready within"):
            client.request_history("BINANCE", "SLOW/USDT", "trades", start, end, timeout=1)
    with pytest.raises(ExchangeUnavailableError, match="KRAKEN"):
        client.request_history("KRAKEN", "BTC/USDT", "trades", start, end, timeout=10)
    future = time.time_ns() // 1000 + 3_600_000_000
    with pytest.raises(TimeRangeInFutureError):
        client.request_history("BINANCE", "BTC/USDT", "1m", future, future + 1, timeout=10)
    assert relay.metrics.rejected.labels("EXCHANGE_UNAVAILABLE")._value.get() == 1


def test_history_times_out_without_a_relay(ctx):
    settings = make_settings()
    client = RelayClient(settings, context=ctx)
    with pytest.raises(RelayTimeoutError, match="did not confirm"):
        client.request_history("BINANCE", "BTC/USDT", "trades", T0, T0 + 1, timeout=0.5)
