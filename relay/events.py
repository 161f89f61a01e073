"""Critical user events: DEALER (user container) -> ROUTER (gateway), acked, exactly once.

:class:`EventSender` gives each event an id and keeps it until an :class:`EventAck` comes
back; unacknowledged events are resent with exponential backoff and jitter. Every event is
in the sender's write-ahead journal (fsynced) before ``send()`` returns, so a sender killed
at any point (``kill -9`` included) resends its unacknowledged events on the next
``start()``; ``stop()`` compacts the journal to just those.
:class:`EventReceiver` delivers each event id to the application once (it remembers the
last ``max_seen`` ids it delivered, optionally on disk, and acknowledges duplicates without
redelivering).

Frames: sender -> receiver ``[CriticalEvent]`` (the ROUTER prepends the sender's identity);
receiver -> sender ``[EventAck]``. Both raw Avro (``relay/schemas/*.avsc``).
"""

from __future__ import annotations

import errno
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import zmq

from ticklake.relay.event_store import EventJournal
from ticklake.relay.sockets import Context, shared_context
from ticklake.relay.wire import CriticalEvent, EventAck, decode_message, encode_message
from ticklake.schemas.serde import DecodeError

log = logging.getLogger(__name__)

_TICK_MS = 10
#: Journal records after which an idle sender (nothing pending) rewrites it empty.
_COMPACT_RECORDS = 10_000
#: How long a receiver retries binding an endpoint that is still being released.
BIND_RETRY_S = 3.0


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class _Pending:
    event: CriticalEvent
    due: float


class EventSender:
    """The user-container side. ``start()``, ``send()`` from any thread, ``stop()`` persists."""

    def __init__(
        self,
        endpoint: str,
        store_path: Path,
        *,
        source_id: str,
        context: Context | None = None,
        ack_timeout: float = 0.5,
        max_backoff: float = 5.0,
        fsync: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.store_path = store_path
        self._journal = EventJournal(store_path, fsync=fsync)
        self.source_id = source_id
        self.ack_timeout = ack_timeout
        self.max_backoff = max_backoff
        self.sent = 0
        self.retries = 0
        self.acked = 0
        self._ctx = shared_context(context)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Load events a previous run left undelivered, start sending; returns how many."""
        with self._lock:
            restored = self._journal.open()
            for event in restored:
                self._pending[event.event_id] = _Pending(event, 0.0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()
        if restored:
            log.info("resending %d events persisted by a previous run", len(restored))
        return len(restored)

    def send(self, event_type: str, payload: bytes, *, event_id: str | None = None) -> str:
        """Queue an event; returns its id. Delivery happens in the background."""
        event = CriticalEvent(
            event_id=event_id or uuid.uuid4().hex,
            source_id=self.source_id,
            event_type=event_type,
            payload=payload,
            created_ts_us=_now_us(),
            attempt=1,
        )
        with self._lock:
            self._journal.append(event)  # durable before the caller hears "sent"
            self._pending[event.event_id] = _Pending(event, 0.0)
        return event.event_id

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, timeout: float) -> bool:
        """Wait until every event is acknowledged; False if some are not after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def stop(self) -> int:
        """Stop sending; persist what is unacknowledged; returns how many were persisted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self._lock:
            events = [p.event for p in self._pending.values()]
            self._pending.clear()
            if events:
                saved = self._journal.compact(events)
                self._journal.close()
            else:
                saved = 0
                self._journal.remove()
        if saved:
            log.warning("persisted %d undelivered events to %s", saved, self.store_path)
        return saved

    def _backoff(self, attempt: int) -> float:
        base = min(self.max_backoff, self.ack_timeout * 2 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # Queue nothing for a receiver that is not connected: retries happen here, not in ZMQ.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.connect(self.endpoint)
        try:
            while not self._stop.is_set():
                if sock.poll(_TICK_MS):
                    self._on_ack(sock.recv_multipart(zmq.NOBLOCK))
                self._send_due(sock)
        finally:
            sock.close(linger=0)

    def _on_ack(self, frames: list[bytes]) -> None:
        try:
            ack = decode_message(EventAck, frames[-1])
        except DecodeError:
            log.warning("discarding a malformed EventAck")
            return
        with self._lock:
            if self._pending.pop(ack.event_id, None) is not None:
                self.acked += 1
                self._journal.ack(ack.event_id)
                if self._journal.records > _COMPACT_RECORDS and not self._pending:
                    self._journal.compact([])
            self._lock.notify_all()

    def _send_due(self, sock: zmq.Socket[bytes]) -> None:
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending.values() if p.due <= now]
        for p in due:
            event = p.event
            try:
                sock.send(encode_message(event), zmq.NOBLOCK)
            except zmq.Again:
                p.due = now + self.ack_timeout  # receiver not connected: try again later
                continue
            self.sent += 1
            if event.attempt > 1:
                self.retries += 1
            p.due = now + self._backoff(event.attempt)
            p.event = event.model_copy(update={"attempt": event.attempt + 1})


class EventReceiver:
    """The gateway side: bind a ROUTER, deliver each event id once, acknowledge every copy.

    ``handler`` runs on the receiver's thread; when it raises, the event is not acknowledged
    and the sender retries it later. The last ``max_seen`` delivered ids are kept in memory
    and, with ``seen_path``, appended to a file (rewritten to those ids when it grows past
    twice as many) so that a restarted receiver still deduplicates. A sender resends only
    until it is acknowledged, so the window needs to cover the ids acknowledged while a
    sender may still be retrying them, not history.
    """

    def __init__(
        self,
        endpoint: str,
        handler: Callable[[CriticalEvent], None],
        *,
        receiver_id: str = "gateway",
        seen_path: Path | None = None,
        context: Context | None = None,
        max_seen: int = 1_000_000,
    ) -> None:
        self.endpoint = endpoint
        self.handler = handler
        self.receiver_id = receiver_id
        self.seen_path = seen_path
        self.max_seen = max_seen
        self.delivered = 0
        self.duplicates = 0
        #: Delivered ids, oldest first (dict: ordered, O(1) membership and eviction).
        self._seen: dict[str, None] = {}
        self._seen_lines = 0
        self._seen_file: TextIO | None = None
        if seen_path is not None and seen_path.exists():
            ids = seen_path.read_text().split()
            self._seen = dict.fromkeys(ids[-max_seen:])
            self._seen_lines = len(ids)
        self._ctx = shared_context(context)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 5.0) -> None:
        """Bind and serve on a background thread; returns once bound."""
        self._stop.clear()
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="event-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"event receiver could not bind {self.endpoint}: {self._error}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A receiver restarted on the same endpoint can find it still bound: libzmq closes
        # the old listener in its I/O thread, after close() returned. Retry that briefly.
        deadline = time.monotonic() + BIND_RETRY_S
        while True:
            try:
                sock.bind(self.endpoint)
                break
            except zmq.ZMQError as exc:
                if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                self._error = exc
                sock.close(linger=0)
                self._ready.set()
                return
        self._ready.set()
        self._seen_file = self._open_seen()
        try:
            while not self._stop.is_set():
                if sock.poll(50):
                    identity, *frames = sock.recv_multipart(zmq.NOBLOCK)
                    ack = self._on_event(frames)
                    if ack is not None:
                        sock.send_multipart([identity, encode_message(ack)])
        finally:
            sock.close(linger=0)
            if self._seen_file is not None:
                self._seen_file.close()
                self._seen_file = None

    def _on_event(self, frames: list[bytes]) -> EventAck | None:
        try:
            event = decode_message(CriticalEvent, frames[-1])
        except (DecodeError, IndexError):
            log.warning("discarding a malformed critical event")
            return None
        duplicate = event.event_id in self._seen
        if duplicate:
            self.duplicates += 1
        else:
            try:
                self.handler(event)
            except Exception:
                log.exception("handler failed on event %s; the sender will retry", event.event_id)
                return None
            self._remember(event.event_id)
            self.delivered += 1
        return EventAck(
            event_id=event.event_id,
            receiver_id=self.receiver_id,
            duplicate=duplicate,
            acked_ts_us=_now_us(),
        )

    def _open_seen(self) -> TextIO | None:
        if self.seen_path is None:
            return None
        if self._seen_lines > 2 * self.max_seen:  # rewrite with the ids still remembered
            tmp = self.seen_path.with_name(self.seen_path.name + ".tmp")
            tmp.write_text("".join(f"{i}\n" for i in self._seen))
            tmp.replace(self.seen_path)
            self._seen_lines = len(self._seen)
        return self.seen_path.open("a")

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self.max_seen:
            del self._seen[next(iter(self._seen))]
        if self._seen_file is not None:
            self._seen_file.write(event_id + "\n")
            self._seen_file.flush()
            self._seen_lines += 1
            if self._seen_lines > 2 * self.max_seen:
                self._seen_file.close()
                self._seen_file = self._open_seen()
