"""Publishing into the relay (XSUB side): the live bridge, ingestors' notifications.

The publisher's socket is an XPUB, not a PUB, so it *sees* subscriptions: the relay's own
(subscribe-to-everything, sent on connect and again after every restart) and, forwarded by
the relay's proxy, every client's. :meth:`RelayPublisher.wait_ready` returns once the
relay's has arrived: messages published before it would be dropped by ZMQ (the slow-joiner
problem); waiting for the subscription solves it without sleeping.

**The last-value cache lives here**, with the data's owner, not in the relay: the publisher
keeps the newest message of every topic it published, and when a client subscribes it
re-sends the cached messages that subscription matches, flagged as replays. The relay stays
a stateless router whose fan-out never touches Python (docs/relay.md), and a relay restart
loses no cached value. Subscriptions are served on every publish and, while the publisher
is idle, by a small background thread (at most ``SERVE_INTERVAL_S`` late); a lock makes the
socket safe to share between the two.

Every message carries this publisher's epoch and a per-topic sequence number (frame 2), so
subscribers count messages they lost (gaps) and discard replays they already have.
"""

from __future__ import annotations

import secrets
import threading

import zmq

from ticklake.relay.errors import RelayUnavailableError
from ticklake.relay.lvc import LastValueCache
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context, SocketClient, client_socket, shared_context
from ticklake.relay.topics import HEADER_STRUCT, topic_frame
from ticklake.schemas import WireModel
from ticklake.schemas.serde import encode

#: Serve pending subscriptions after this many publishes (cheap: one poll).
_SERVE_EVERY = 64
#: How often the background thread serves subscriptions of an idle publisher.
SERVE_INTERVAL_S = 0.02
_RELAY = b"\x01"  # the relay's own subscription: everything


class RelayPublisher(SocketClient):
    """Publish schema models (or raw Avro bytes) on relay topics, with a last-value cache."""

    def __init__(
        self,
        settings: RelaySettings | None = None,
        *,
        context: Context | None = None,
        sndhwm: int = 100_000,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.epoch = secrets.randbits(63) | 1
        self.cache = LastValueCache(self.settings.lvc_max_topics)
        #: Messages re-sent to late joiners, and subscriptions seen (metrics, tests).
        self.replayed = 0
        self.subscriptions = 0
        self._seq: dict[str, int] = {}
        self._frames: dict[str, bytes] = {}
        self._sent = 0
        self._lock = threading.Lock()
        self._relay_ready = threading.Event()
        self._closed = threading.Event()
        self._sock = client_socket(
            shared_context(context),
            zmq.XPUB,
            self.settings,
            self.settings.publish_port,
            SNDHWM=sndhwm,
            XPUB_VERBOSE=1,  # every client's subscription, not only a topic's first
        )
        self._server = threading.Thread(target=self._serve_idle, name="lvc", daemon=True)
        self._server.start()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once the relay subscribed to this publisher; raise after ``timeout`` s."""
        if not self._relay_ready.wait(timeout):
            raise RelayUnavailableError(
                f"relay at {self.settings.connect(self.settings.publish_port)} did not "
                f"subscribe to this publisher within {timeout:.1f}s",
                hint="start the relay (`ticklake relay serve`) or check "
                "TICKLAKE_RELAY__HOST / TICKLAKE_RELAY__PUBLISH_PORT",
            )

    def publish(self, topic: str, record: WireModel) -> int:
        """Publish one record; returns its sequence number on ``topic``. Never blocks."""
        return self.publish_raw(topic, encode(record))

    def publish_raw(self, topic: str, payload: bytes) -> int:
        with self._lock:
            seq = self._seq.get(topic, 0) + 1
            self._seq[topic] = seq
            frame = self._frames.get(topic)
            if frame is None:
                frame = self._frames[topic] = topic_frame(topic)
            header = HEADER_STRUCT.pack(0, self.epoch, seq)
            # Three sends, not send_multipart: a third of the CPU per message in pyzmq.
            send = self._sock.send
            send(frame, zmq.SNDMORE)
            send(header, zmq.SNDMORE)
            send(payload)
            self.cache.store(frame, header, payload)
            self._sent += 1
            if self._sent % _SERVE_EVERY == 0:
                self._serve()
        return seq

    def close(self) -> None:
        self._closed.set()
        self._server.join(5.0)
        with self._lock:
            super().close()

    def _serve_idle(self) -> None:
        while not self._closed.wait(SERVE_INTERVAL_S):
            with self._lock:
                if self._closed.is_set():
                    return
                self._serve()

    def _serve(self) -> None:
        """Answer the subscriptions that arrived (lock held): replay what each one matches."""
        sock = self._sock
        while sock.poll(0):
            message = sock.recv()
            if message == _RELAY:
                self._relay_ready.set()
            elif message[:1] == _RELAY:
                self.subscriptions += 1
                for topic, header, payload in self.cache.matching(message[1:]):
                    sock.send(topic, zmq.SNDMORE)
                    sock.send(header, zmq.SNDMORE)
                    sock.send(payload)
                    self.replayed += 1
