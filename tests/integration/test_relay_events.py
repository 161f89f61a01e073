"""Critical events over real loopback sockets: receiver down, sender restart, duplicates."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from ticklake.relay import EventReceiver, EventSender
from ticklake.relay.wire import CriticalEvent
from ticklake.stack.process import free_port


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


class App:
    """The application behind the receiver: records what it was given, thread-safe."""

    def __init__(self) -> None:
        self.events: list[CriticalEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: CriticalEvent) -> None:
        with self.lock:
            self.events.append(event)

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(e.event_id for e in self.events)


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    flag = threading.Event()
    while not check():
        if time.monotonic() >= deadline:
            return False
        flag.wait(0.01)
    return True


def test_receiver_down_for_a_while_then_up(tmp_path: Path, ctx) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sender = EventSender(
        endpoint, tmp_path / "pending.avro", source_id="user-1", context=ctx, ack_timeout=0.1
    )
    sender.start()
    ids = [sender.send("order_fill", f"fill {i}".encode()) for i in range(20)]
    assert not sender.flush(0.3)  # nobody there: nothing is acknowledged
    app = App()
    receiver = EventReceiver(endpoint, app, context=ctx)
    receiver.start()
    try:
        assert sender.flush(20)
        assert app.ids() == Counter(ids)  # each exactly once
        assert [e.payload for e in app.events if e.event_id == ids[3]] == [b"fill 3"]
    finally:
        receiver.stop()
        assert sender.stop() == 0
    assert not (tmp_path / "pending.avro").exists()


def test_sender_restart_resends_persisted_events(tmp_path: Path, ctx) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    store = tmp_path / "pending.avro"
    first = EventSender(endpoint, store, source_id="user-1", context=ctx, ack_timeout=0.1)
    first.start()
    ids = [first.send("risk_alert", f"alert {i}".encode()) for i in range(10)]
    assert first.stop() == 10
    assert store.exists()
    second = EventSender(endpoint, store, source_id="user-1", context=ctx, ack_timeout=0.1)
    assert second.start() == 10
    app = App()
    receiver = EventReceiver(endpoint, app, context=ctx)
    receiver.start()
    try:
        assert second.flush(20)
        assert app.ids() == Counter(ids)
    finally:
        receiver.stop()
        assert second.stop() == 0
    assert not store.exists()


def test_retries_are_deduplicated_by_event_id(tmp_path: Path, ctx) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sender = EventSender(
        endpoint, tmp_path / "p.avro", source_id="user-1", context=ctx, ack_timeout=0.05
    )
    release = threading.Event()
    app = App()

    def slow_app(event: CriticalEvent) -> None:
        release.wait(10)  # holds the first delivery until the sender has retried
        app(event)

    receiver = EventReceiver(endpoint, slow_app, context=ctx, seen_path=tmp_path / "seen")
    receiver.start()
    sender.start()
    try:
        event_id = sender.send("order_fill", b"x")
        assert wait_until(lambda: sender.retries >= 2, 10)
        release.set()
        assert sender.flush(10)
        assert wait_until(lambda: receiver.duplicates >= 1, 10)
        assert app.ids() == Counter([event_id])
    finally:
        receiver.stop()
        sender.stop()
    # A restarted receiver still knows the id (seen_path) and does not redeliver it.
    again = App()
    receiver2 = EventReceiver(endpoint, again, context=ctx, seen_path=tmp_path / "seen")
    receiver2.start()
    sender2 = EventSender(endpoint, tmp_path / "p2.avro", source_id="user-1", context=ctx)
    sender2.start()
    try:
        sender2.send("order_fill", b"x", event_id=event_id)
        assert sender2.flush(10)
        assert receiver2.duplicates == 1
        assert again.ids() == Counter()
    finally:
        receiver2.stop()
        sender2.stop()


_KILLED_SENDER = """
import sys, time
from pathlib import Path
from ticklake.relay.events import EventSender
sender = EventSender(sys.argv[1], Path(sys.argv[2]), source_id="user-9", ack_timeout=0.1)
sender.start()
for i in range(5):
    sender.send("order_fill", f"fill {i}".encode(), event_id=f"fill-{i}")
print("sent", flush=True)
time.sleep(60)
"""


def test_events_survive_a_sender_killed_with_sigkill(tmp_path: Path, ctx) -> None:
    """send() returned means the event is on disk: kill -9 loses nothing."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # no receiver yet: nothing can be acked
    journal = tmp_path / "journal"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SENDER, endpoint, str(journal)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
    finally:
        proc.kill()  # SIGKILL: no stop(), no flush, no atexit
        proc.wait(10)
    app = App()
    receiver = EventReceiver(endpoint, app, context=ctx)
    receiver.start()
    sender = EventSender(endpoint, journal, source_id="user-9", context=ctx, ack_timeout=0.1)
    try:
        assert sender.start() == 5
        assert sender.flush(20)
        assert app.ids() == Counter(f"fill-{i}" for i in range(5))
    finally:
        receiver.stop()
        assert sender.stop() == 0
    assert not journal.exists()
