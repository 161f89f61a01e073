"""Faults the local exchange injects on request: what they are and their pending state.

REST faults (an error status such as 429 for the next N requests, added latency) are applied
by the REST middleware; websocket faults (drops, stalls, duplicates, replays, malformed records)
by the stream hub. Requests arrive as a ``FaultRequest`` from ``POST /_control/faults`` or from
Python (``LocalExchange.inject``).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

MalformedKind = Literal[
    "missing_id",
    "missing_price",
    "zero_price",
    "negative_price",
    "nan_price",
    "infinite_price",
    "zero_amount",
    "negative_amount",
    "nan_amount",
    "unknown_symbol",
    "undecodable",
    "binary",
]
MALFORMED_KINDS: tuple[str, ...] = MalformedKind.__args__  # type: ignore[attr-defined]
UNKNOWN_SYMBOL = "NOSUCHCOINUSDT"


class MalformedRecord(BaseModel):
    """One bad record to push on ``<market>@<stream>`` (after the real ones, in addition)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MalformedKind
    symbol: str = Field(description="BTC/USDT or BTCUSDT: whose stream carries the record")
    stream: Literal["trade", "aggTrade"] = "trade"


class FaultRequest(BaseModel):
    """Everything ``POST /_control/faults`` accepts; omitted fields leave their fault as is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rest_errors: int | None = Field(default=None, ge=0, description="fail the next N requests")
    rest_error_status: int = Field(default=429, ge=400, le=599)
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After of 429/418 answers")
    rest_latency_ms: int | None = Field(default=None, ge=0, description="delay every request")
    drop_ws: Literal["close", "abort"] | None = Field(
        default=None, description="drop every websocket now: close frame, or TCP abort"
    )
    drop_ws_every_s: float | None = Field(default=None, ge=0, description="0 turns it off")
    duplicate_next: int | None = Field(default=None, ge=0, description="send N events twice")
    replay_last: int | None = Field(default=None, ge=0, description="resend the last N events")
    stall_ws_s: float | None = Field(default=None, ge=0, description="push nothing for S s")
    stall_skip: bool = Field(default=True, description="trades of a stall are never pushed")
    malformed: tuple[MalformedRecord, ...] = ()


@dataclass
class RestError:
    status: int
    retry_after_s: int


class Faults:
    """Pending fault state shared by the REST middleware and the stream hub (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rest_errors = 0
        self.rest_error_status = 429
        self.retry_after_s = 1
        self.rest_latency_ms = 0
        self.drop_ws_every_s = 0.0
        self.duplicate_next = 0
        self.stall_until_ms = 0
        self.stall_skip = True
        self.rest_errors_sent = 0

    def update(self, request: FaultRequest, now_ms: int) -> None:
        """Record the REST and periodic parts of ``request`` (one-shot ws parts are the hub's)."""
        with self._lock:
            if request.rest_errors is not None:
                self.rest_errors = request.rest_errors
                self.rest_error_status = request.rest_error_status
                self.retry_after_s = request.retry_after_s
            if request.rest_latency_ms is not None:
                self.rest_latency_ms = request.rest_latency_ms
            if request.drop_ws_every_s is not None:
                self.drop_ws_every_s = request.drop_ws_every_s
            if request.duplicate_next is not None:
                self.duplicate_next = request.duplicate_next
            if request.stall_ws_s is not None:
                self.stall_until_ms = now_ms + int(request.stall_ws_s * 1000)
                self.stall_skip = request.stall_skip

    def clear(self) -> None:
        with self._lock:
            self.rest_errors = 0
            self.rest_latency_ms = 0
            self.drop_ws_every_s = 0.0
            self.duplicate_next = 0
            self.stall_until_ms = 0

    def take_rest_error(self) -> RestError | None:
        """The error to answer the current REST request with, if one is pending."""
        with self._lock:
            if self.rest_errors <= 0:
                return None
            self.rest_errors -= 1
            self.rest_errors_sent += 1
            return RestError(self.rest_error_status, self.retry_after_s)

    def take_duplicate(self) -> bool:
        """Whether the next event goes out twice."""
        with self._lock:
            if self.duplicate_next <= 0:
                return False
            self.duplicate_next -= 1
            return True

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rest_errors": self.rest_errors,
                "rest_error_status": self.rest_error_status,
                "retry_after_s": self.retry_after_s,
                "rest_latency_ms": self.rest_latency_ms,
                "rest_errors_sent": self.rest_errors_sent,
                "drop_ws_every_s": self.drop_ws_every_s,
                "duplicate_next": self.duplicate_next,
                "stall_until_ms": self.stall_until_ms,
                "stall_skip": self.stall_skip,
            }


def malformed_payload(kind: str, event: dict[str, Any]) -> str | bytes:
    """A corrupted copy of a real stream event, as the frame to send (bytes: binary frame)."""
    bad = dict(event)
    id_key = "t" if bad.get("e") == "trade" else "a"
    if kind == "missing_id":
        bad.pop(id_key, None)
        bad.pop("f", None)
        bad.pop("l", None)
    elif kind == "missing_price":
        bad.pop("p", None)
    elif kind == "zero_price":
        bad["p"] = "0.00000000"
    elif kind == "negative_price":
        bad["p"] = "-" + str(bad["p"])
    elif kind == "nan_price":
        bad["p"] = "NaN"
    elif kind == "infinite_price":
        bad["p"] = "Infinity"
    elif kind == "zero_amount":
        bad["q"] = "0.00000000"
    elif kind == "negative_amount":
        bad["q"] = "-" + str(bad["q"])
    elif kind == "nan_amount":
        bad["q"] = "NaN"
    elif kind == "unknown_symbol":
        bad["s"] = UNKNOWN_SYMBOL
    text = json.dumps(bad, separators=(",", ":"))
    if kind == "undecodable":
        return text[: len(text) // 2]  # a JSON object cut in half
    if kind == "binary":
        return b"\xff\xfe\x00" + text.encode()[:16]  # not UTF-8, not JSON
    return text
