"""Logging set-up: stdlib logging, human text by default, one JSON object per line on request."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once for a process.

    ``level`` defaults to ``TICKLAKE_LOG_LEVEL`` (WARNING), ``fmt`` to ``TICKLAKE_LOG_FORMAT``
    (``text`` or ``json``). Logs go to stderr so that data on stdout stays machine-readable.
    """
    level = (level or os.environ.get("TICKLAKE_LOG_LEVEL") or "WARNING").upper()
    fmt = (fmt or os.environ.get("TICKLAKE_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
