"""Fan-out throughput: the relay against a bare ``zmq.proxy`` (XSUB/XPUB), same machine.

One publisher process sends N small messages as fast as it can; one subscriber process
holds K SUB sockets. Each SUB socket is drained at C speed by its own ``zmq.proxy_steerable``
thread (into a PUB socket nobody reads) and counted with the proxy's STATISTICS, so the
measurement is the broker's, not a Python reader's (a Python ``recv`` loop over 100 sockets
saturates long before either broker does). The rate is N / (time the last subscriber had
all N - time the first message arrived), i.e. messages per second delivered to each
subscriber; deliveries/s = rate x K. The broker (relay or bare proxy) is its own process.
High-water marks are raised so nothing is dropped (drops are counted and reported).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import statistics
import struct
import threading
import time
from typing import Any

import zmq
from rich.table import Table

from ticklake.relay.publisher import RelayPublisher
from ticklake.relay.settings import RelaySettings
from ticklake.relay.topics import HEADER_SIZE, HEADER_STRUCT, exact_filter
from ticklake.stack.process import free_port

TOPIC = "BENCH:BTC/USDT|tick"
PAYLOAD = b"x" * 64
HWM = 1_000_000
SIZES = {1: 300_000, 10: 100_000, 100: 20_000}
#: Bytes of an ACK message (topic frame + header, empty payload); data adds the payload.
ACK_BYTES = len(exact_filter(TOPIC)) + HEADER_SIZE


def _settings() -> RelaySettings:
    return RelaySettings(
        request_port=free_port(),
        work_port=free_port(),
        publish_port=free_port(),
        subscribe_port=free_port(),
        fanout_sndhwm=HWM,
        publish_rcvhwm=HWM,
    )


def _bare_proxy(settings: RelaySettings) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    xsub.setsockopt(zmq.RCVHWM, HWM)
    xpub.setsockopt(zmq.SNDHWM, HWM)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # forward every subscription, as the relay does
    xsub.bind(settings.bind(settings.publish_port))
    xpub.bind(settings.bind(settings.subscribe_port))
    zmq.proxy(xsub, xpub)


def _relay(settings: RelaySettings) -> None:
    from ticklake.relay.service import Relay

    Relay(settings).serve()


def _publish(
    settings: RelaySettings, n: int, subscribers: int, started: Any, done: Any, *, kind: str
) -> None:
    """Send n messages once every subscriber is in: bare XPUB sends, or a RelayPublisher.

    Against the relay the publisher is the SDK's ``RelayPublisher``, whose last-value cache
    (the relay keeps none) is part of what is measured; against the bare proxy it is the
    same three ``send`` calls without the cache.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.connect(settings.connect(settings.publish_port))
    wanted = b"\x01" + exact_filter(TOPIC)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < subscribers and time.monotonic() < deadline:  # every subscriber is in
        if pub.poll(1000) and pub.recv() == wanted:
            seen += 1
    if kind == "relay":
        pub.close(linger=0)
        relay_pub = RelayPublisher(settings, context=ctx, sndhwm=HWM)
        relay_pub.wait_ready(30)
        started.value = time.monotonic()
        for _ in range(n):
            relay_pub.publish_raw(TOPIC, PAYLOAD)
        done.wait(120)  # close() drops what is still queued: wait for the subscribers
        relay_pub.close()
        ctx.term()
        return
    frame = exact_filter(TOPIC)
    send, more, pack = pub.send, zmq.SNDMORE, HEADER_STRUCT.pack
    started.value = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
    for seq in range(1, n + 1):  # as RelayPublisher.publish_raw sends
        send(frame, more)
        send(pack(0, 1, seq), more)
        send(PAYLOAD)
    pub.close(linger=-1)  # flush
    ctx.term()


class _CountingSubscriber:
    """A SUB socket drained by libzmq's proxy in its own thread; counts frames, not Python."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, index: int) -> None:
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, HWM)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(endpoint)
        self.sub.setsockopt(zmq.SUBSCRIBE, exact_filter(TOPIC))
        self.sink = ctx.socket(zmq.PUB)  # nobody subscribes: libzmq discards at once
        self.sink.setsockopt(zmq.LINGER, 0)
        self.sink.bind(f"inproc://bench-sink-{index}")
        control = f"inproc://bench-control-{index}"
        self.control_srv = ctx.socket(zmq.REP)
        self.control_srv.bind(control)
        self.control = ctx.socket(zmq.REQ)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(control)
        self.thread = threading.Thread(target=self._drain, name=f"bench-sub-{index}", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(zmq.ZMQError):  # TERMINATE ends it
            zmq.proxy_steerable(self.sub, self.sink, None, self.control_srv)

    def data_messages(self) -> int:
        """Data messages received so far, from the proxy's frame and byte counters.

        Besides the data, a relay subscriber receives one ACK per subscription to its topic
        (every subscriber's, since ACKs travel the fan-out): same topic and header frames,
        empty payload. Frames and bytes together separate the two exactly.
        """
        self.control.send(b"STATISTICS")
        stats = self.control.recv_multipart()
        frames, size = (struct.unpack("=Q", f)[0] for f in stats[:2])
        messages = frames // 3
        return int((size - ACK_BYTES * messages) // len(PAYLOAD))

    def close(self) -> None:
        self.control.send(b"TERMINATE")
        self.control.recv_multipart()
        self.thread.join(5)
        for sock in (self.sub, self.sink, self.control_srv, self.control):
            sock.close(linger=0)


def _one_run(kind: str, subscribers: int, n: int) -> tuple[float, int]:
    settings = _settings()
    mpc = mp.get_context("spawn")
    broker = mpc.Process(target=_relay if kind == "relay" else _bare_proxy, args=(settings,))
    broker.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoint = settings.connect(settings.subscribe_port)
    subs = [_CountingSubscriber(ctx, endpoint, i) for i in range(subscribers)]
    started, done = mpc.Value("d", 0.0), mpc.Event()
    publisher = mpc.Process(
        target=_publish, args=(settings, n, subscribers, started, done), kwargs={"kind": kind}
    )
    publisher.start()
    counts = [0] * subscribers
    last = 0.0
    pause = 0.002 if subscribers == 1 else 0.01
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        counts = [s.data_messages() for s in subs]
        if min(counts) >= n:
            last = time.monotonic()
            break
        time.sleep(pause)
    done.set()
    first = started.value
    publisher.join(30)
    broker.terminate()
    broker.join(10)
    for s in subs:
        s.close()
    ctx.term()
    lost = sum(max(0, n - c) for c in counts)
    return (n / (last - first) if last > first else 0.0), lost


def run(runs: int = 3, sizes: dict[int, int] | None = None) -> Table:
    sizes = sizes or SIZES
    table = Table(title=f"fan-out, {len(PAYLOAD)}-byte payload, median (min, max) of {runs}")
    for col in (
        "subscribers",
        "messages",
        "bare zmq.proxy msgs/s",
        "relay msgs/s",
        "relay/bare",
        "lost",
    ):
        table.add_column(col, justify="right")
    for k, n in sizes.items():
        results: dict[str, list[float]] = {"bare": [], "relay": []}
        lost = 0
        for _ in range(runs):
            for kind in ("bare", "relay"):
                rate, dropped = _one_run(kind, k, n)
                results[kind].append(rate)
                lost += dropped
        cells: list[Any] = []
        for kind in ("bare", "relay"):
            r = results[kind]
            cells.append(f"{statistics.median(r):,.0f} ({min(r):,.0f}, {max(r):,.0f})")
        ratio = statistics.median(results["relay"]) / max(1.0, statistics.median(results["bare"]))
        table.add_row(str(k), f"{n:,}", *cells, f"{ratio:.0%}", str(lost))
    return table
