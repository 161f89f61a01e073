"""The last-value cache: the newest message of every topic, re-sent to late joiners.

Pure data structure (no sockets), so it is unit-tested on its own. A publisher feeds it every
message it sends and asks it, on every new subscription, for the cached messages whose topic
frame starts with the subscription's filter (ZMQ's own rule).

:meth:`LastValueCache.store` runs once per message a publisher sends (``relay/publisher.py``
keeps the cache, not the relay): it is kept to a few dictionary operations.
"""

from __future__ import annotations

from collections.abc import Iterator

from ticklake.relay.topics import FLAG_ACK, FLAG_REPLAY, HEADER_SIZE, TERMINATOR, Header

Frames = tuple[bytes, bytes, bytes]

_NOT_DATA = FLAG_ACK | FLAG_REPLAY


class LastValueCache:
    """Topic frame -> last (topic, header, payload); evicts the least recently updated."""

    def __init__(self, max_topics: int = 100_000) -> None:
        self.max_topics = max_topics
        #: Insertion order is update order: a topic is re-inserted on every update.
        self._last: dict[bytes, Frames] = {}

    def __len__(self) -> int:
        return len(self._last)

    def put(self, topic: bytes, header: bytes, payload: bytes) -> bool:
        """Remember a data message; ignores acks, replays and malformed frames."""
        if len(header) != HEADER_SIZE or header[0] & _NOT_DATA or not topic.endswith(TERMINATOR):
            return False
        self.store(topic, header, payload)
        return True

    def store(self, topic: bytes, header: bytes, payload: bytes) -> None:
        """:meth:`put` without the checks, for a publisher's own well-formed messages."""
        last = self._last
        if last.pop(topic, None) is None and len(last) >= self.max_topics:
            del last[next(iter(last))]
        last[topic] = (topic, header, payload)

    def update(self, frames: list[bytes]) -> bool:
        """:meth:`put` for a received multipart message (any frame count)."""
        if len(frames) != 3:
            return False
        return self.put(frames[0], frames[1], frames[2])

    def matching(self, prefix: bytes) -> Iterator[Frames]:
        """Cached messages a subscription to ``prefix`` would receive, marked as replays."""
        for topic, (_, header, payload) in list(self._last.items()):
            if topic.startswith(prefix):
                h = Header.unpack(header)
                yield topic, Header(h.flags | FLAG_REPLAY, h.epoch, h.seq).pack(), payload
