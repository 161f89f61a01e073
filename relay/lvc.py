"""The last-value cache: the newest message of every topic, re-sent to late joiners.

Pure data structure (no sockets), so it is unit-tested on its own. A publisher feeds it every
message it sends and asks it, on every new subscription, for the cached messages whose topic
frame starts with the subscription's filter (ZMQ's own rule).

The cache is updated once per message a publisher sends (``relay/publisher.py`` keeps the
cache, not the relay), so the update is two dictionary operations on
:attr:`LastValueCache.last` and the publisher's send loop (``RelayPublisher._publish``) does
them inline (a method call would cost as much as the update itself);
:meth:`LastValueCache.store` is the same update as a method.
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
        #: Topic frame -> its last message. Insertion order is update order: a topic is
        #: popped and re-inserted on every update; call :meth:`make_room` before inserting
        #: a topic that the pop did not find.
        self.last: dict[bytes, Frames] = {}

    def __len__(self) -> int:
        return len(self.last)

    def put(self, topic: bytes, header: bytes, payload: bytes) -> bool:
        """Remember a data message; ignores acks, replays and malformed frames."""
        if len(header) != HEADER_SIZE or header[0] & _NOT_DATA or not topic.endswith(TERMINATOR):
            return False
        self.store(topic, header, payload)
        return True

    def store(self, topic: bytes, header: bytes, payload: bytes) -> None:
        """:meth:`put` without the checks, for a publisher's own well-formed messages."""
        last = self.last
        if last.pop(topic, None) is None:
            self.make_room()
        last[topic] = (topic, header, payload)

    def make_room(self) -> None:
        """Evict the least recently updated topic when full (before a new topic goes in)."""
        last = self.last
        while len(last) >= self.max_topics:
            del last[next(iter(last))]

    def update(self, frames: list[bytes]) -> bool:
        """:meth:`put` for a received multipart message (any frame count)."""
        if len(frames) != 3:
            return False
        return self.put(frames[0], frames[1], frames[2])

    def matching(self, prefix: bytes) -> Iterator[Frames]:
        """Cached messages a subscription to ``prefix`` would receive, marked as replays."""
        for topic, (_, header, payload) in list(self.last.items()):
            if topic.startswith(prefix):
                h = Header.unpack(header)
                yield topic, Header(h.flags | FLAG_REPLAY, h.epoch, h.seq).pack(), payload
