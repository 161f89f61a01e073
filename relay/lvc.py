"""The last-value cache: the newest message of every topic, re-sent to late joiners.

Pure data structure (no sockets), so it is unit-tested on its own. The relay feeds it a copy
of every message that passes the fan-out and asks it, on every new subscription, for the
cached messages whose topic frame starts with the subscription's filter (ZMQ's own rule).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from ticklake.relay.topics import FLAG_ACK, FLAG_REPLAY, Header

Frames = tuple[bytes, bytes, bytes]


class LastValueCache:
    """Topic frame -> last (topic, header, payload); evicts the least recently updated."""

    def __init__(self, max_topics: int = 100_000) -> None:
        self.max_topics = max_topics
        self._last: OrderedDict[bytes, Frames] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def update(self, frames: list[bytes]) -> bool:
        """Remember a data message; ignores acks, replays and malformed messages."""
        if len(frames) != 3:
            return False
        topic, header, payload = frames
        try:
            flags = Header.unpack(header).flags
        except Exception:
            return False
        if flags & (FLAG_ACK | FLAG_REPLAY):
            return False
        self._last[topic] = (topic, header, payload)
        self._last.move_to_end(topic)
        while len(self._last) > self.max_topics:
            self._last.popitem(last=False)
        return True

    def matching(self, prefix: bytes) -> Iterator[Frames]:
        """Cached messages a subscription to ``prefix`` would receive, marked as replays."""
        for topic, (_, header, payload) in list(self._last.items()):
            if topic.startswith(prefix):
                h = Header.unpack(header)
                yield topic, Header(h.flags | FLAG_REPLAY, h.epoch, h.seq).pack(), payload
