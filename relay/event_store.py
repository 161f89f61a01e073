"""Undelivered critical events on disk: an Avro container file, replaced atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro

from ticklake.relay.errors import EventStoreError
from ticklake.relay.wire import CriticalEvent


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
