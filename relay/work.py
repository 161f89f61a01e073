"""The ingestor's side of the work queue: subscribe by exchange, receive HistoryRequests.

The relay publishes each accepted request on its work-queue XPUB with the topic
``{EXCHANGE}:{BASE}/{QUOTE}|history``; an ingestor subscribes with ``{EXCHANGE}:`` and the
relay acknowledges the subscription (the same ACK as on the fan-out). Until at least one
ingestor of an exchange is subscribed, the relay rejects that exchange's requests with
EXCHANGE_UNAVAILABLE instead of letting clients wait for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import zmq

from ticklake.relay import topics
from ticklake.relay.errors import RelayUnavailableError
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context, SocketClient, client_socket, shared_context
from ticklake.schemas import HistoryRequest
from ticklake.schemas.serde import DecodeError, decode


class WorkQueueConsumer(SocketClient):
    """Receive history requests for some exchanges; every wait bounded by a timeout."""

    def __init__(
        self,
        exchanges: Iterable[str],
        settings: RelaySettings | None = None,
        *,
        context: Context | None = None,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.filters = {topics.exchange_filter(e) for e in exchanges}
        self.malformed = 0
        self._unconfirmed = set(self.filters)
        self._sock = client_socket(
            shared_context(context), zmq.SUB, self.settings, self.settings.work_port
        )
        for f in self.filters:
            self._sock.setsockopt(zmq.SUBSCRIBE, f)

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self._unconfirmed:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000)):
                raise RelayUnavailableError(
                    f"relay work queue at {self.settings.connect(self.settings.work_port)} "
                    f"did not confirm the subscription within {timeout:.1f}s"
                )
            frames = self._sock.recv_multipart()
            if len(frames) == 3 and topics.Header.unpack(frames[1]).is_ack:
                self._unconfirmed.discard(frames[0])

    def recv(self, timeout: float) -> HistoryRequest | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                return None
            frames = self._sock.recv_multipart()
            if len(frames) != 3 or topics.Header.unpack(frames[1]).is_ack:
                continue
            try:
                return decode(HistoryRequest, frames[2])
            except DecodeError:
                self.malformed += 1
