"""A live subscription to relay topics: confirmation, decoding, gap and replay accounting.

Protocol (docs/relay.md): the relay answers every subscription with the cached last value
of each matching topic (flag REPLAY) and then an ACK whose topic frame is the filter itself.
:meth:`Subscription.wait_confirmed` returns once every filter is acknowledged, so nothing
published afterwards can be missed. ZMQ resubscribes by itself after a relay restart; the
new relay acknowledges again (``stats.relay_epochs`` grows).

Per topic the subscription remembers the publisher's (epoch, seq): a jump is a gap (messages
the relay dropped for this subscriber at its high-water mark, counted in ``stats.gaps``), a
seq already seen is a replay another subscriber's join caused (discarded, ``duplicates``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import zmq

from ticklake.relay import topics
from ticklake.relay.errors import FramingError, RelayTimeoutError, RelayUnavailableError
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context, SocketClient, client_socket, shared_context
from ticklake.relay.wire import decode_payload
from ticklake.schemas import WireModel
from ticklake.schemas.serde import DecodeError

_RESUBSCRIBE_S = 1.0


@dataclass(frozen=True)
class Message:
    """One decoded message and where it came from."""

    topic: str
    model: WireModel
    epoch: int
    seq: int
    replay: bool


@dataclass
class SubscriptionStats:
    received: int = 0
    gaps: int = 0
    duplicates: int = 0
    acks: int = 0
    malformed: int = 0
    relay_epochs: set[int] = field(default_factory=set)


class Subscription(SocketClient):
    """Iterate to get decoded models; every wait is bounded by a timeout."""

    def __init__(
        self,
        settings: RelaySettings,
        filters: Iterable[bytes],
        *,
        context: Context | None = None,
        rcvhwm: int = 100_000,
        rcvbuf: int = 0,
    ) -> None:
        self.settings = settings
        self.filters = tuple(dict.fromkeys(filters))
        if not self.filters:
            raise ValueError("a subscription needs at least one topic filter")
        self.stats = SubscriptionStats()
        self._unconfirmed = set(self.filters)
        self._last: dict[str, tuple[int, int]] = {}
        self._buffer: deque[Message] = deque()
        options = {"RCVHWM": rcvhwm}
        if rcvbuf:
            options["RCVBUF"] = rcvbuf
        self._sock = client_socket(
            shared_context(context), zmq.SUB, settings, settings.subscribe_port, **options
        )
        for f in self.filters:
            self._sock.setsockopt(zmq.SUBSCRIBE, f)

    @property
    def confirmed(self) -> bool:
        return not self._unconfirmed

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        """Block until the relay acknowledged every filter; data meanwhile is kept."""
        deadline = time.monotonic() + timeout
        resubscribe = time.monotonic() + _RESUBSCRIBE_S
        while self._unconfirmed:
            now = time.monotonic()
            if now >= deadline:
                raise RelayUnavailableError(
                    f"relay at {self.settings.connect(self.settings.subscribe_port)} did not "
                    f"confirm the subscription within {timeout:.1f}s",
                    hint="start the relay (`ticklake relay serve`) or check "
                    "TICKLAKE_RELAY__HOST / TICKLAKE_RELAY__SUBSCRIBE_PORT",
                )
            if now >= resubscribe:  # the ACK may have been lost (relay restarted meanwhile)
                for f in self._unconfirmed:
                    self._sock.setsockopt(zmq.SUBSCRIBE, f)
                resubscribe = now + _RESUBSCRIBE_S
            wait = min(deadline, resubscribe) - now
            if self._sock.poll(max(1, int(wait * 1000))):
                message = self._handle(self._sock.recv_multipart())
                if message is not None:
                    self._buffer.append(message)

    def recv(self, timeout: float) -> Message | None:
        """The next message, or None when none arrived within ``timeout`` seconds."""
        if self._buffer:
            return self._buffer.popleft()
        deadline = time.monotonic() + timeout
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                left = deadline - time.monotonic()
                if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                    return None
                continue
            message = self._handle(frames)
            if message is not None:
                return message

    def messages(self, idle_timeout: float | None = None, poll: float = 0.2) -> Iterator[Message]:
        """Messages until closed; raise RelayTimeoutError after ``idle_timeout`` s of silence."""
        idle_since = time.monotonic()
        while not self._sock.closed:
            message = self.recv(poll)
            if message is not None:
                idle_since = time.monotonic()
                yield message
            elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                raise RelayTimeoutError(f"no message on {self.describe()} for {idle_timeout}s")

    def __iter__(self) -> Iterator[WireModel]:
        for message in self.messages():
            yield message.model

    def describe(self) -> str:
        return ", ".join(f.rstrip(b"\x00").decode() for f in self.filters)

    def _handle(self, frames: list[bytes]) -> Message | None:
        try:
            if len(frames) != 3:
                raise FramingError(f"{len(frames)} frames, expected 3")
            header = topics.Header.unpack(frames[1])
            if header.is_ack:
                if frames[0] in self.filters:
                    self.stats.acks += 1
                    self.stats.relay_epochs.add(header.epoch)
                    self._unconfirmed.discard(frames[0])
                return None
            topic = topics.topic_of(frames[0])
        except FramingError:
            self.stats.malformed += 1
            return None
        last = self._last.get(topic)
        if last is not None and last[0] == header.epoch:
            if header.seq <= last[1]:
                self.stats.duplicates += 1
                return None
            self.stats.gaps += header.seq - last[1] - 1
        self._last[topic] = (header.epoch, header.seq)
        try:
            model = decode_payload(topic, frames[2])
        except DecodeError:
            self.stats.malformed += 1
            return None
        self.stats.received += 1
        return Message(topic, model, header.epoch, header.seq, header.is_replay)
