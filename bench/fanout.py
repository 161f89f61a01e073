"""Fan-out throughput: the relay against a bare ``zmq.proxy`` (XSUB/XPUB), same machine.

One publisher process sends N small messages as fast as it can; one subscriber process
holds K SUB sockets and drains them. The rate is N / (last message received by every
subscriber - first message received), i.e. messages per second delivered to each
subscriber; deliveries/s = rate x K. The broker (relay or bare proxy) is its own process.
High-water marks are raised so nothing is dropped (drops are counted and reported).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import Any

import zmq
from rich.table import Table

from ticklake.relay.settings import RelaySettings
from ticklake.relay.topics import Header, exact_filter
from ticklake.stack.process import free_port

TOPIC = "BENCH:BTC/USDT|tick"
PAYLOAD = b"x" * 64
HWM = 1_000_000
SIZES = {1: 200_000, 10: 50_000, 100: 10_000}


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


def _publish(settings: RelaySettings, n: int, subscribers: int) -> None:
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
    frame = exact_filter(TOPIC)
    for seq in range(1, n + 1):
        pub.send_multipart([frame, Header(0, 1, seq).pack(), PAYLOAD])
    pub.close(linger=-1)  # flush
    ctx.term()


def _one_run(kind: str, subscribers: int, n: int) -> tuple[float, int]:
    settings = _settings()
    mpc = mp.get_context("spawn")
    broker = mpc.Process(target=_relay if kind == "relay" else _bare_proxy, args=(settings,))
    broker.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    subs = []
    for _ in range(subscribers):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, HWM)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(settings.connect(settings.subscribe_port))
        s.setsockopt(zmq.SUBSCRIBE, exact_filter(TOPIC))
        subs.append(s)
    publisher = mpc.Process(target=_publish, args=(settings, n, subscribers))
    publisher.start()
    poller = zmq.Poller()
    for s in subs:
        poller.register(s, zmq.POLLIN)
    counts = dict.fromkeys(subs, 0)
    first = last = 0.0
    deadline = time.monotonic() + 120
    done = 0
    while done < subscribers and time.monotonic() < deadline:
        for sock, _ in poller.poll(1000):
            s = sock
            try:
                while True:
                    frames = s.recv_multipart(zmq.NOBLOCK)
                    if Header.unpack(frames[1]).is_ack:
                        continue
                    if not first:
                        first = time.monotonic()
                    counts[s] += 1
                    if counts[s] == n:
                        done += 1
                        last = time.monotonic()
                        break
            except zmq.Again:
                pass
    publisher.join(30)
    broker.terminate()
    broker.join(10)
    for s in subs:
        s.close(linger=0)
    ctx.term()
    lost = sum(n - c for c in counts.values())
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
