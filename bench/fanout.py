"""Fan-out throughput: the relay against a bare ``zmq.proxy`` (XSUB/XPUB), same machine.

One publisher process sends N small messages as fast as it can; one subscriber process
holds K SUB sockets. Each SUB socket is drained at C speed by its own ``zmq.proxy_steerable``
thread (into a PUB socket nobody reads) and counted with the proxy's STATISTICS, so the
measurement is the broker's, not a Python reader's (a Python ``recv`` loop over 100 sockets
saturates long before either broker does). The rate is N / (time the last subscriber had
all N - time the first message was sent), i.e. messages per second delivered to each
subscriber; deliveries/s = rate x K. The broker (relay or bare proxy) is its own process.
High-water marks are raised so nothing is dropped (drops are counted and reported).

Three setups, run interleaved (one run of each, then again), so a change in the machine's
load hits all three alike:

- ``bare``: bare sends (the relay's framing, nothing else) into a bare ``zmq.proxy``;
- ``relay-broker``: the same bare sends into the relay: relay-broker / bare is the broker
  alone (the relay process against libzmq's proxy);
- ``relay``: a ``RelayPublisher`` (sequence numbers, last-value cache, lock) into the
  relay, fed with ``publish_many`` in batches of 1,000 as the bridge feeds it (one Kafka
  consume batch at a time): relay / bare is the end-to-end comparison, the publisher's cost
  included.

Bare sends and ``RelayPublisher`` use the same send call (pyzmq's backend ``send``), so the
end-to-end gap is the publisher's own work, not a difference in pyzmq call paths. Two more
setups are not run by default (``run(setups=...)``): ``capture``, the bare proxy plus a
capture socket filtered as the relay's (``relay/service.py``: what the relay's way of seeing
subscriptions costs), and ``pyzmq-send``, the bare proxy fed with pyzmq's usual Python-level
``Socket.send`` (how the bare publisher sent before 2026-11-22).

A second table gives the CPU time per message of the broker and of the publisher process
(every thread, ZMQ's I/O threads included; Linux schedstat and ``time.process_time``): with
two cores shared by publisher, broker and subscribers, a CPU microsecond anywhere is
throughput everywhere, and CPU per message is less sensitive to other load than msgs/s.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import statistics
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import zmq
from rich.console import Group
from rich.table import Table

from ticklake.bench.threads import read_threads
from ticklake.relay.publisher import RelayPublisher
from ticklake.relay.settings import RelaySettings
from ticklake.relay.topics import HEADER_SIZE, HEADER_STRUCT, exact_filter
from ticklake.stack.process import free_port

TOPIC = "BENCH:BTC/USDT|tick"
PAYLOAD = b"x" * 64
HWM = 1_000_000
SIZES = {1: 300_000, 10: 100_000, 100: 20_000}
#: Messages per ``publish_many`` call in the ``relay`` setup (the bridge's default consume batch).
BRIDGE_BATCH = 1_000
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


def _bare_proxy(settings: RelaySettings, capture: bool = False) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    xsub.setsockopt(zmq.RCVHWM, HWM)
    xpub.setsockopt(zmq.SNDHWM, HWM)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # forward every subscription, as the relay does
    xsub.bind(settings.bind(settings.publish_port))
    xpub.bind(settings.bind(settings.subscribe_port))
    if not capture:
        zmq.proxy(xsub, xpub)
        return
    # The relay's capture (relay/service.py): every message is copied to an XPUB whose one
    # subscriber only takes frames starting with byte 0 or 1 (subscriptions).
    tap, tap_sub = ctx.socket(zmq.XPUB), ctx.socket(zmq.SUB)
    tap.setsockopt(zmq.SNDHWM, HWM)
    tap.bind("inproc://capture")
    tap_sub.connect("inproc://capture")
    tap_sub.setsockopt(zmq.SUBSCRIBE, b"\x00")
    tap_sub.setsockopt(zmq.SUBSCRIBE, b"\x01")
    tap.recv()  # the subscription is in place
    zmq.proxy(xsub, xpub, tap)


def _capture_proxy(settings: RelaySettings) -> None:
    _bare_proxy(settings, capture=True)


def _relay(settings: RelaySettings) -> None:
    from ticklake.relay.service import Relay

    Relay(settings).serve()


#: setup -> (broker, publisher)
SETUPS: dict[str, tuple[Callable[[RelaySettings], None], str]] = {
    "bare": (_bare_proxy, "bare"),
    "relay-broker": (_relay, "bare"),
    "relay": (_relay, "relay"),
    "capture": (_capture_proxy, "bare"),
    "pyzmq-send": (_bare_proxy, "pyzmq-send"),
}
DEFAULT_SETUPS = ("bare", "relay-broker", "relay")


def _publish(
    settings: RelaySettings,
    n: int,
    subscribers: int,
    *,
    times: Any,
    up: Any,
    done: Any,
    kind: str,
) -> None:
    """Send n messages once every subscriber is in: bare XPUB sends, or a RelayPublisher.

    ``times[0]`` is set just before the first message, ``times[1]`` after the last was
    handed to ZMQ (the publisher's own loop rate); ``times[2]`` and ``times[3]`` are the
    process's CPU time (every thread: ZMQ's I/O thread too) at the start and once every
    subscriber has everything. The bare sends are the relay's framing
    with a constant epoch and a counted sequence, sent with the same call as
    ``RelayPublisher.publish_raw`` (pyzmq's backend ``send``); the ``RelayPublisher`` adds
    its per-topic sequence, last-value cache and lock.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    monitor = pub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    pub.connect(settings.connect(settings.publish_port))
    # Connected before any subscriber subscribes, so the broker forwards each subscription
    # to this socket (a broker sends a publisher that connects later each filter only once).
    if not monitor.poll(60_000):
        raise RuntimeError("the publisher did not connect to the broker within 60 s")
    pub.disable_monitor()
    monitor.close(linger=0)
    up.set()
    wanted = b"\x01" + exact_filter(TOPIC)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < subscribers and time.monotonic() < deadline:  # every subscriber is in
        if pub.poll(1000) and pub.recv() == wanted:
            seen += 1
    if seen < subscribers:
        raise RuntimeError(f"{seen} of {subscribers} subscriptions reached the publisher")
    if kind == "relay":
        pub.close(linger=0)
        relay_pub = RelayPublisher(settings, context=ctx, sndhwm=HWM)
        relay_pub.wait_ready(30)
        publish_many = relay_pub.publish_many
        batch = [(TOPIC, PAYLOAD)] * BRIDGE_BATCH
        whole, rest = divmod(n, BRIDGE_BATCH)
        times[2] = time.process_time()
        times[0] = time.monotonic()
        for _ in range(whole):  # as the bridge hands over each consumed Kafka batch
            publish_many(batch)
        publish_many(batch[:rest])
        times[1] = time.monotonic()
        done.wait(120)  # close() drops what is still queued: wait for the subscribers
        times[3] = time.process_time()
        relay_pub.close()
        ctx.term()
        return
    frame = exact_filter(TOPIC)
    send = pub.send if kind == "pyzmq-send" else zmq.backend.Socket.send.__get__(pub)
    more, pack = zmq.SNDMORE, HEADER_STRUCT.pack
    times[2] = time.process_time()
    times[0] = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
    for seq in range(1, n + 1):  # as RelayPublisher.publish_raw sends
        send(frame, more)
        send(pack(0, 1, seq), more)
        send(PAYLOAD)
    times[1] = time.monotonic()
    done.wait(120)
    times[3] = time.process_time()
    pub.close(linger=0)
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


class Result(NamedTuple):
    rate: float  # messages/s delivered to each subscriber
    publisher_rate: float  # messages/s handed to ZMQ by the publisher's loop
    lost: int
    broker_cpu_us: float  # broker process CPU (all threads) per message
    publisher_cpu_us: float  # publisher process CPU (all threads) per message


def _cpu_seconds(pid: int | None) -> float:
    """CPU time of a live process, summed over its threads (Linux schedstat, in ns)."""
    try:
        return sum(t.run_ns for t in read_threads(pid).values()) / 1e9 if pid else float("nan")
    except OSError:
        return float("nan")


def _one_run(setup: str, subscribers: int, n: int) -> Result:
    settings = _settings()
    broker_target, kind = SETUPS[setup]
    mpc = mp.get_context("spawn")
    broker = mpc.Process(target=broker_target, args=(settings,))
    broker.start()
    times, up, done = mpc.Array("d", 4), mpc.Event(), mpc.Event()
    publisher = mpc.Process(
        target=_publish,
        args=(settings, n, subscribers),
        kwargs={"times": times, "up": up, "done": done, "kind": kind},
    )
    publisher.start()
    if not up.wait(60):
        raise RuntimeError(f"{setup}: the publisher did not connect within 60 s")
    broker_cpu = _cpu_seconds(broker.pid)  # started and serving: start-up not counted
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    endpoint = settings.connect(settings.subscribe_port)
    subs = [_CountingSubscriber(ctx, endpoint, i) for i in range(subscribers)]
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
    broker_cpu = _cpu_seconds(broker.pid) - broker_cpu
    done.set()
    publisher.join(30)
    first, sent, cpu0, cpu1 = times[:]
    broker.terminate()
    broker.join(10)
    for s in subs:
        s.close()
    ctx.term()
    lost = sum(max(0, n - c) for c in counts)
    return Result(
        n / (last - first) if last > first else 0.0,
        n / (sent - first) if sent > first else 0.0,
        lost,
        broker_cpu / n * 1e6,
        (cpu1 - cpu0) / n * 1e6,
    )


def _cell(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f} ({min(rates):,.0f}, {max(rates):,.0f})"


def _ratio(results: dict[str, list[Result]], setup: str) -> str:
    if setup not in results or "bare" not in results:
        return "-"
    bare = statistics.median(r.rate for r in results["bare"])
    return f"{statistics.median(r.rate for r in results[setup]) / max(1.0, bare):.0%}"


def run(
    runs: int = 3,
    sizes: dict[int, int] | None = None,
    setups: Sequence[str] = DEFAULT_SETUPS,
) -> Group:
    """``runs`` interleaved runs of each setup per subscriber count; a table of medians."""
    sizes = sizes or SIZES
    table = Table(
        title=f"fan-out, {len(PAYLOAD)}-byte payload, msgs/s per subscriber, "
        f"median (min, max) of {runs}"
    )
    headers = {
        "bare": "bare proxy, bare sends",
        "relay-broker": "relay, bare sends",
        "relay": "relay, RelayPublisher.publish_many",
        "capture": "proxy + capture, bare sends",
        "pyzmq-send": "bare proxy, bare pyzmq Socket.send",
    }
    table.add_column("subscribers", justify="right")
    table.add_column("messages", justify="right")
    for setup in setups:
        table.add_column(headers[setup], justify="right")
    table.add_column("broker: relay / bare", justify="right")
    table.add_column("end to end: relay / bare", justify="right")
    extra = [setup for setup in ("capture", "pyzmq-send") if setup in setups]
    for setup in extra:
        table.add_column(f"{setup} / bare", justify="right")
    table.add_column("lost", justify="right")
    loops: dict[str, list[float]] = {setup: [] for setup in setups}
    cpu = Table(title="CPU per message (us, median of the runs, every thread of the process)")
    cpu.add_column("subscribers", justify="right")
    for setup in setups:
        cpu.add_column(f"{headers[setup]}: broker", justify="right")
        cpu.add_column("publisher", justify="right")
    for k, n in sizes.items():
        results: dict[str, list[Result]] = {setup: [] for setup in setups}
        for _ in range(runs):
            for setup in setups:
                results[setup].append(_one_run(setup, k, n))
        cells = [_cell([r.rate for r in results[setup]]) for setup in setups]
        ratios = [_ratio(results, "relay-broker"), _ratio(results, "relay")]
        ratios.extend(_ratio(results, setup) for setup in extra)
        lost = sum(r.lost for rs in results.values() for r in rs)
        table.add_row(str(k), f"{n:,}", *cells, *ratios, str(lost))
        cpu_cells: list[str] = []
        for setup in setups:
            loops[setup].extend(r.publisher_rate for r in results[setup])
            for field in ("broker_cpu_us", "publisher_cpu_us"):
                values = [getattr(r, field) for r in results[setup]]
                cpu_cells.append(f"{statistics.median(values):.2f}")
        cpu.add_row(str(k), *cpu_cells)
    table.caption = "publisher loop alone (msgs/s handed to ZMQ, median of all runs): " + ", ".join(
        f"{headers[setup]} {statistics.median(rates):,.0f}" for setup, rates in loops.items()
    )
    return Group(table, cpu)
