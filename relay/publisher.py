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
loses no cached value. Subscriptions are served on every 64th publish and by a small
background thread every ``SERVE_INTERVAL_S`` (so an idle publisher answers too); a lock makes
the socket safe to share between the two.

Every message carries this publisher's epoch and a per-topic sequence number (frame 2), so
subscribers count messages they lost (gaps) and discard replays they already have.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any

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
_MORE = zmq.SNDMORE
_PACK_HEADER = HEADER_STRUCT.pack


class _Topic:
    """What a publisher keeps per topic: the prebuilt topic frame and the last sequence number.

    Kept for every topic ever published (the sequence must not restart within an epoch, or
    subscribers would discard the new messages as replays), unlike the bounded cache.
    """

    __slots__ = ("frame", "seq")

    def __init__(self, topic: str) -> None:
        self.frame = topic_frame(topic)
        self.seq = 0


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
        self._topics: dict[str, _Topic] = {}
        self._cached = self.cache.last
        self._due = _SERVE_EVERY
        self._lock = threading.Lock()
        # Bound once: ``with self._lock`` costs twice as much as the two calls.
        self._acquire = self._lock.acquire
        self._release = self._lock.release
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
        # The backend's (Cython) send, bound to the socket: pyzmq's Python-level
        # ``Socket.send`` only adds the routing_id/group handling (unused here) and costs as
        # much again per call (docs/relay.md, "The publisher's hot path").
        self._send: Callable[..., Any] = zmq.backend.Socket.send.__get__(self._sock)
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
        """Publish raw Avro bytes on ``topic``; returns its sequence number. Never blocks."""
        return self._publish(((topic, payload),))[1]

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> int:
        """Publish ``(topic, payload)`` pairs in order, under one lock; returns the count.

        The hot path of the bridge, which hands over each consumed Kafka batch at once: no
        call and no lock round trip per message.
        """
        return self._publish(messages)[0]

    def _publish(self, messages: Iterable[tuple[str, bytes]]) -> tuple[int, int]:
        """Send each message with its header and cache it; ``(count, last seq)``.

        Per message: plain local operations only, the cache update inlined
        (:meth:`LastValueCache.store`), subscriptions served every 64 messages.
        """
        topics, cached, make_room = self._topics, self._cached, self.cache.make_room
        send, epoch, more, pack = self._send, self.epoch, _MORE, _PACK_HEADER
        count = seq = 0
        self._acquire()
        try:
            for topic, payload in messages:
                state = topics.get(topic)
                if state is None:
                    state = topics[topic] = _Topic(topic)
                seq = state.seq = state.seq + 1
                frame = state.frame
                header = pack(0, epoch, seq)
                # Three sends, not send_multipart: a third of the CPU per message in pyzmq.
                send(frame, more)
                send(header, more)
                send(payload)
                if cached.pop(frame, None) is None:
                    make_room()
                cached[frame] = (frame, header, payload)
                count += 1
                self._due -= 1
                if not self._due:
                    self._due = _SERVE_EVERY
                    self._serve()
        finally:
            self._release()
        return count, seq

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
