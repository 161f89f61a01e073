"""The relay process: one bind point, stateless topic routing, start / run / stop.

Threads and sockets (docs/relay.md has the picture):

- the **fan-out** is libzmq's own proxy (``zmq.proxy_steerable``, C, GIL released) between
  the XSUB that publishers connect to and the XPUB that subscribers connect to, so live data
  crosses the relay without touching Python;
- the proxy copies every message to a capture socket whose only subscriber takes the
  subscriptions (frames starting with byte 0 or 1), so libzmq discards the data copies in C
  and the **control loop** (Python, :meth:`Relay.run`) sees only subscriptions: on each one
  (``XPUB_VERBOSER`` shows each) it injects an ACK through an inproc publisher into the
  XSUB side. The last-value cache is kept by the publishers (``relay/publisher.py``), which
  see the same subscriptions through the proxy and replay their cached values;
- the control loop also serves the ROUTER (client requests), the work-queue XPUB (ingestor
  subscriptions, answered with ACKs), socket monitors (connections) and proxy statistics.
"""

from __future__ import annotations

import logging
import secrets
import signal
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from ticklake.relay import requests, topics
from ticklake.relay.errors import RelayError
from ticklake.relay.metrics import RelayMetrics
from ticklake.relay.settings import RelaySettings
from ticklake.relay.topics import FLAG_ACK, Header

log = logging.getLogger(__name__)

_POLL_MS = 100
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
_SUBSCRIBE = 1
_UNSUBSCRIBE = 0


def _socket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, **options: int) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    return sock


class Relay:
    """The ZMQ relay. ``start()`` binds and starts the proxy; ``run()`` serves until ``stop()``."""

    def __init__(
        self, settings: RelaySettings | None = None, *, metrics: RelayMetrics | None = None
    ):
        self.settings = settings or RelaySettings()
        self.metrics = metrics or RelayMetrics()
        #: Random per start: subscribers see a new epoch in ACKs after a relay restart.
        self.epoch = secrets.randbits(63) | 1
        self.metrics_port = 0
        self._stop = threading.Event()
        self._started = False
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._proxy: threading.Thread | None = None
        self._work_subs: Counter[bytes] = Counter()
        self._fanout_subs = 0
        self._work_seq = 0
        self._captured = 0
        self._stats = [0] * 8
        self._next_stats = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Bind every channel and start the fan-out proxy; raises RelayError if a port is taken."""
        s = self.settings
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._ctx = ctx
        uid = uuid.uuid4().hex[:12]
        inject_ep, capture_ep, control_ep = (
            f"inproc://relay-{uid}-{name}" for name in ("inject", "capture", "control")
        )
        socks = self._sockets
        try:
            socks["xsub"] = _socket(ctx, zmq.XSUB, RCVHWM=s.publish_rcvhwm)
            socks["xsub"].bind(s.bind(s.publish_port))
            socks["xsub"].bind(inject_ep)
            opts = {"SNDHWM": s.fanout_sndhwm, "XPUB_NODROP": 0, "XPUB_VERBOSER": 1}
            if s.fanout_sndbuf:
                opts["SNDBUF"] = s.fanout_sndbuf
            socks["xpub"] = _socket(ctx, zmq.XPUB, **opts)
            socks["xpub"].bind(s.bind(s.subscribe_port))
            socks["router"] = _socket(ctx, zmq.ROUTER)
            socks["router"].bind(s.bind(s.request_port))
            socks["work"] = _socket(
                ctx, zmq.XPUB, SNDHWM=s.work_sndhwm, XPUB_NODROP=0, XPUB_VERBOSER=1
            )
            socks["work"].bind(s.bind(s.work_port))
        except zmq.ZMQError as exc:
            self.close()
            raise RelayError(
                f"relay could not bind on {s.bind_host}: {exc}",
                hint="another relay may be running; change TICKLAKE_RELAY__*_PORT",
            ) from exc
        socks["capture"] = _socket(ctx, zmq.XPUB, SNDHWM=s.capture_hwm)
        socks["capture"].bind(capture_ep)
        socks["capture_sub"] = _socket(ctx, zmq.SUB, RCVHWM=s.capture_hwm)
        socks["capture_sub"].connect(capture_ep)
        # Subscriptions only (they start with byte 0 or 1; topics never do): the data
        # copies are dropped by libzmq's own prefix filter, never reaching Python.
        socks["capture_sub"].setsockopt(zmq.SUBSCRIBE, b"\x00")
        socks["capture_sub"].setsockopt(zmq.SUBSCRIBE, b"\x01")
        socks["control_srv"] = _socket(ctx, zmq.REP)
        socks["control_srv"].bind(control_ep)
        socks["control"] = _socket(ctx, zmq.DEALER)
        socks["control"].connect(control_ep)
        socks["inject"] = _socket(ctx, zmq.XPUB, SNDHWM=s.capture_hwm)
        socks["inject"].connect(inject_ep)
        # The relay subscribes to everything: the cache must see every topic.
        socks["xsub"].send(b"\x01")
        # Slow joiner, inside the relay too: wait for the subscriptions to be in place.
        self._await_subscription(socks["inject"], "inject")
        self._await_subscription(socks["capture"], "capture")
        for name in ("xpub", "xsub", "work"):
            socks[f"monitor_{name}"] = socks[name].get_monitor_socket(_MONITOR_EVENTS)
        self._proxy = threading.Thread(target=self._run_proxy, name="relay-proxy", daemon=True)
        self._proxy.start()
        for channel, hwm in (
            ("fanout", s.fanout_sndhwm),
            ("publish", s.publish_rcvhwm),
            ("work", s.work_sndhwm),
            ("capture", s.capture_hwm),
        ):
            self.metrics.hwm.labels(channel).set(hwm)
        self.metrics_port = self.metrics.serve(s.metrics_port)
        self._started = True
        log.info(
            "relay up: requests %s, work %s, publish %s, subscribe %s",
            s.bind(s.request_port),
            s.bind(s.work_port),
            s.bind(s.publish_port),
            s.bind(s.subscribe_port),
        )

    @staticmethod
    def _await_subscription(sock: zmq.Socket[bytes], name: str) -> None:
        if not sock.poll(5000):
            raise RelayError(f"relay internal socket {name} got no subscription in 5 s")
        sock.recv()

    def _run_proxy(self) -> None:
        s = self._sockets
        try:
            zmq.proxy_steerable(s["xsub"], s["xpub"], s["capture"], s["control_srv"])
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError:
            log.exception("relay proxy failed")
            self._stop.set()

    def run(self) -> None:
        """Serve the control loop until :meth:`stop` (or a SIGTERM in :meth:`serve`)."""
        if not self._started:
            self.start()
        s = self._sockets
        poller = zmq.Poller()
        handlers: dict[zmq.Socket[bytes], Callable[[zmq.Socket[bytes]], None]] = {
            s["capture_sub"]: self._on_capture,
            s["router"]: self._on_request,
            s["work"]: self._on_work_subscription,
            s["inject"]: self._drain,
            s["monitor_xpub"]: lambda sock: self._on_monitor(sock, "fanout"),
            s["monitor_xsub"]: lambda sock: self._on_monitor(sock, "publish"),
            s["monitor_work"]: lambda sock: self._on_monitor(sock, "work"),
        }
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for sock, _ in poller.poll(_POLL_MS):
                    # Bounded batch per socket, so no channel starves the others.
                    handler = handlers[sock]
                    try:
                        for _ in range(1000):
                            handler(sock)
                    except zmq.Again:
                        pass
                if time.monotonic() >= self._next_stats:
                    self._refresh_stats()
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread- and signal-safe, idempotent)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the proxy and close every socket (linger 0)."""
        self._started = False
        control = self._sockets.get("control")
        if self._proxy is not None and control is not None:
            control.send_multipart([b"", b"TERMINATE"])
            self._proxy.join(5.0)
        for name in ("xpub", "xsub", "work"):
            if f"monitor_{name}" in self._sockets:
                self._sockets[name].disable_monitor()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        self.metrics.close()
        if self._ctx is not None:
            if self._proxy is not None and self._proxy.is_alive():
                self._ctx.destroy(linger=0)
            else:
                self._ctx.term()
            self._ctx = None
        self._proxy = None

    def serve(self) -> None:
        """start, run until SIGTERM/SIGINT, close: the process entry point."""
        self.start()
        previous = {
            sig: signal.signal(sig, lambda *_: self.stop())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("relay stopped")

    # -- handlers ------------------------------------------------------------------------

    def _on_capture(self, sock: zmq.Socket[bytes]) -> None:
        """A subscription copied by the proxy (the capture's filter lets nothing else in).

        A data message whose topic frame starts with byte 0 or 1 (a broken publisher) also
        passes the filter: it has more frames, and is skipped and counted.
        """
        message = sock.recv(zmq.NOBLOCK)
        self._captured += 1
        if sock.getsockopt(zmq.RCVMORE):
            while sock.getsockopt(zmq.RCVMORE):
                sock.recv(zmq.NOBLOCK)
            self.metrics.malformed.labels("publish").inc()
            return
        self._on_fanout_subscription(message)

    def _on_fanout_subscription(self, message: bytes) -> None:
        prefix = message[1:]
        if message[0] == _UNSUBSCRIBE:
            self._fanout_subs -= 1
        else:
            self._fanout_subs += 1
            self.metrics.messages_in.labels("fanout").inc()
            inject = self._sockets["inject"]
            inject.send_multipart([prefix, Header(FLAG_ACK, self.epoch, 0).pack(), b""])
            self.metrics.messages_out.labels("ack").inc()
        self.metrics.subscriptions.labels("fanout").set(self._fanout_subs)

    def _on_work_subscription(self, sock: zmq.Socket[bytes]) -> None:
        message = sock.recv(zmq.NOBLOCK)
        self.metrics.messages_in.labels("work").inc()
        if not message or message[0] not in (_SUBSCRIBE, _UNSUBSCRIBE):
            self.metrics.malformed.labels("work").inc()
            return
        prefix = message[1:]
        if message[0] == _UNSUBSCRIBE:
            self._work_subs[prefix] -= 1
            if self._work_subs[prefix] <= 0:
                del self._work_subs[prefix]
        else:
            self._work_subs[prefix] += 1
            sock.send_multipart([prefix, Header(FLAG_ACK, self.epoch, 0).pack(), b""])
            self.metrics.messages_out.labels("ack").inc()
        self.metrics.subscriptions.labels("work").set(sum(self._work_subs.values()))

    def _on_request(self, sock: zmq.Socket[bytes]) -> None:
        identity, *frames = sock.recv_multipart(zmq.NOBLOCK)
        self.metrics.messages_in.labels("request").inc()
        parsed = requests.parse_request(frames)
        if isinstance(parsed, requests.Rejection):
            self._reject(identity, parsed)
            return
        frame = topics.exact_filter(topics.work_topic(parsed.exchange, parsed.symbol))
        if not any(frame.startswith(prefix) for prefix in self._work_subs):
            self._reject(
                identity,
                requests.Rejection(
                    requests.EXCHANGE_UNAVAILABLE,
                    f"no ingestor of {parsed.exchange} is taking work from the relay",
                    parsed.request_id,
                ),
            )
            return
        self._work_seq += 1
        self._sockets["work"].send_multipart(
            [frame, Header(0, self.epoch, self._work_seq).pack(), frames[1]]
        )
        self.metrics.messages_out.labels("work").inc()
        sock.send_multipart([identity, requests.ACCEPTED, parsed.request_id.encode()])
        self.metrics.messages_out.labels("reply").inc()

    def _reject(self, identity: bytes, rejection: requests.Rejection) -> None:
        self.metrics.rejected.labels(rejection.code).inc()
        self._sockets["router"].send_multipart([identity, *rejection.frames()])
        self.metrics.messages_out.labels("reply").inc()

    @staticmethod
    def _drain(sock: zmq.Socket[bytes]) -> None:
        sock.recv(zmq.NOBLOCK)  # subscriptions forwarded upstream by the proxy: nothing to do

    def _on_monitor(self, sock: zmq.Socket[bytes], channel: str) -> None:
        event = recv_monitor_message(sock, zmq.NOBLOCK)
        if event["event"] == zmq.EVENT_ACCEPTED:
            self.metrics.connections.labels(channel).inc()
        elif event["event"] == zmq.EVENT_DISCONNECTED:
            self.metrics.connections.labels(channel).dec()

    def _refresh_stats(self) -> None:
        """Proxy counters (libzmq STATISTICS) into the Prometheus counters."""
        self._next_stats = time.monotonic() + self.settings.stats_interval_s
        control = self._sockets["control"]
        control.send_multipart([b"", b"STATISTICS"])
        if not control.poll(1000):
            log.warning("relay proxy did not answer STATISTICS within 1 s")
            return
        reply = control.recv_multipart()[1:]
        if len(reply) != 8:
            return
        now = [struct.unpack("=Q", f)[0] for f in reply]
        delta = [max(0, a - b) for a, b in zip(now, self._stats, strict=True)]
        self._stats = now
        m = self.metrics
        # libzmq counts frames; data messages are 3 frames, subscriptions 1.
        m.frames_in.labels("publish").inc(delta[0])
        m.bytes_in.labels("publish").inc(delta[1])
        m.frames_out.labels("publish").inc(delta[2])
        m.frames_in.labels("fanout").inc(delta[4])
        m.bytes_in.labels("fanout").inc(delta[5])
        m.frames_out.labels("fanout").inc(delta[6])
        m.bytes_out.labels("fanout").inc(delta[7])
        m.capture_backlog.set(max(0, now[4] - self._captured))
