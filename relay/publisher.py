"""Publishing into the relay (XSUB side): Flink's live publisher, ingestors' notifications.

The publisher's socket is an XPUB, not a PUB, so it *sees* the relay's subscription: the
relay subscribes to everything on connect (and again after every restart), and
:meth:`RelayPublisher.wait_ready` returns once that subscription has arrived. Messages
published before it would be dropped by ZMQ (the slow-joiner problem); waiting for the
subscription solves it without sleeping.

Every message carries this publisher's epoch and a per-topic sequence number (frame 2), so
subscribers count messages they lost (gaps) and discard last-value replays they already have.
"""

from __future__ import annotations

import secrets
import time

import zmq

from ticklake.relay.errors import RelayUnavailableError
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context, SocketClient, client_socket, shared_context
from ticklake.relay.topics import HEADER_STRUCT, topic_frame
from ticklake.schemas import WireModel
from ticklake.schemas.serde import encode

_DRAIN_EVERY = 256


class RelayPublisher(SocketClient):
    """Publish schema models (or raw Avro bytes) on relay topics."""

    def __init__(
        self,
        settings: RelaySettings | None = None,
        *,
        context: Context | None = None,
        sndhwm: int = 100_000,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.epoch = secrets.randbits(63) | 1
        self._seq: dict[str, int] = {}
        self._frames: dict[str, bytes] = {}
        self._sent = 0
        self._sock = client_socket(
            shared_context(context),
            zmq.XPUB,
            self.settings,
            self.settings.publish_port,
            SNDHWM=sndhwm,
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once the relay subscribed to this publisher; raise after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000)):
                raise RelayUnavailableError(
                    f"relay at {self.settings.connect(self.settings.publish_port)} did not "
                    f"subscribe to this publisher within {timeout:.1f}s",
                    hint="start the relay (`ticklake relay serve`) or check "
                    "TICKLAKE_RELAY__HOST / TICKLAKE_RELAY__PUBLISH_PORT",
                )
            if self._sock.recv() == b"\x01":  # subscribe to everything: the relay itself
                return

    def publish(self, topic: str, record: WireModel) -> int:
        """Publish one record; returns its sequence number on ``topic``. Never blocks."""
        return self.publish_raw(topic, encode(record))

    def publish_raw(self, topic: str, payload: bytes) -> int:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        frame = self._frames.get(topic)
        if frame is None:
            frame = self._frames[topic] = topic_frame(topic)
        # Three sends, not send_multipart: a third of the CPU per message in pyzmq.
        send = self._sock.send
        send(frame, zmq.SNDMORE)
        send(HEADER_STRUCT.pack(0, self.epoch, seq), zmq.SNDMORE)
        send(payload)
        self._sent += 1
        if self._sent % _DRAIN_EVERY == 0:
            self._drain()
        return seq

    def _drain(self) -> None:
        """Discard subscription messages the relay forwards, so they never pile up."""
        try:
            while True:
                self._sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass
