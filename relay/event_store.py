"""Undelivered critical events on disk: the sender's write-ahead journal (and a snapshot file)."""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import fastavro

from ticklake.relay.errors import EventStoreError
from ticklake.relay.wire import CriticalEvent, decode_message, encode_message
from ticklake.schemas.serde import DecodeError

log = logging.getLogger(__name__)


def _schema() -> Any:
    text = (resources.files("ticklake.relay") / "schemas" / "critical_event.avsc").read_text()
    return fastavro.parse_schema(json.loads(text))


def save_events(path: Path, events: Iterable[CriticalEvent]) -> int:
    """Write ``events`` (or remove the file when there are none); returns how many."""
    records = [e.model_dump() for e in events]
    try:
        if not records:
            path.unlink(missing_ok=True)
            return 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            fastavro.writer(f, _schema(), records)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise EventStoreError(
            f"could not persist {len(records)} undelivered events to {path}: {exc}",
            hint="check free space and permissions of the directory",
        ) from exc
    return len(records)


def load_events(path: Path) -> list[CriticalEvent]:
    if not path.exists():
        return []
    try:
        with path.open("rb") as f:
            return [CriticalEvent.model_validate(r) for r in fastavro.reader(f)]
    except Exception as exc:
        raise EventStoreError(
            f"could not read undelivered events from {path}: {exc}",
            hint="move the file away to start without them (they would be lost)",
        ) from exc


_EVENT, _ACK = b"E", b"A"
_FRAME = struct.Struct(">cI")
_AVRO_MAGIC = b"Obj\x01"


class EventJournal:
    """Write-ahead journal of a sender's critical events: nothing acknowledged-to-the-caller
    is lost, even on ``kill -9``.

    Append-only records ``[kind (1 byte), length (4 bytes, big endian), body]``: ``E`` with
    the raw-Avro :class:`CriticalEvent` is written (and fsynced) before ``send()`` returns;
    ``A`` with the event id when its ack arrives (not fsynced: a lost ack record only means
    one more resend, which the receiver deduplicates by id). Opening replays the journal
    (a torn last record from a crash is ignored), keeps the unacknowledged events and
    rewrites the file with just those (atomic replace), so it never grows without bound
    across restarts; :meth:`compact` does the same while running.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self._file: BinaryIO | None = None
        self.records = 0

    def open(self) -> list[CriticalEvent]:
        """Replay the journal; returns the unacknowledged events, oldest first."""
        pending = self._replay()
        self.compact(pending)
        return pending

    def append(self, event: CriticalEvent) -> None:
        self._write(_EVENT, encode_message(event), sync=self.fsync)

    def ack(self, event_id: str) -> None:
        self._write(_ACK, event_id.encode(), sync=False)

    def compact(self, pending: Iterable[CriticalEvent]) -> int:
        """Rewrite the journal with only ``pending``; returns how many it holds."""
        events = list(pending)
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("wb") as f:
                for event in events:
                    body = encode_message(event)
                    f.write(_FRAME.pack(_EVENT, len(body)) + body)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            self._file = self.path.open("ab")
        except OSError as exc:
            raise EventStoreError(
                f"could not write the event journal {self.path}: {exc}",
                hint="check free space and permissions of the directory",
            ) from exc
        self.records = len(events)
        return len(events)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Delete the journal (nothing is pending)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def _write(self, kind: bytes, body: bytes, *, sync: bool) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        try:
            self._file.write(_FRAME.pack(kind, len(body)) + body)
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise EventStoreError(
                f"could not append to the event journal {self.path}: {exc}",
                hint="check free space and permissions of the directory",
            ) from exc
        self.records += 1

    def _replay(self) -> list[CriticalEvent]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if data.startswith(_AVRO_MAGIC):  # written by save_events (before the journal)
            return load_events(self.path)
        events: dict[str, CriticalEvent] = {}
        offset = 0
        while offset + _FRAME.size <= len(data):
            kind, length = _FRAME.unpack_from(data, offset)
            body = data[offset + _FRAME.size : offset + _FRAME.size + length]
            if len(body) < length:
                log.warning("ignoring a torn record at the end of %s", self.path)
                break
            offset += _FRAME.size + length
            if kind == _EVENT:
                try:
                    event = decode_message(CriticalEvent, body)
                except DecodeError:
                    log.warning("ignoring an undecodable event record in %s", self.path)
                    continue
                events[event.event_id] = event
            elif kind == _ACK:
                events.pop(body.decode(errors="replace"), None)
        return list(events.values())
