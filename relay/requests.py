"""Client requests on the ROUTER channel: validation and the reply frames.

Frames from a client (DEALER): ``[b"HISTORY", HistoryRequest (raw Avro)]``. The relay
answers ``[b"ACCEPTED", request_id]`` once the work item is on the work queue, or
``[b"REJECTED", request_id, code, message]``. The relay keeps no state about the request:
the answer to the client comes later as a ``HistoryReady`` on ``HISTORY_READY:{request_id}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ticklake.schemas import HistoryRequest
from ticklake.schemas.serde import DecodeError, decode

KIND_HISTORY = b"HISTORY"
ACCEPTED = b"ACCEPTED"
REJECTED = b"REJECTED"

#: Rejection codes; the SDK maps each to a typed error.
INVALID_REQUEST = "INVALID_REQUEST"
TIME_RANGE_IN_FUTURE = "TIME_RANGE_IN_FUTURE"
EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
UNKNOWN_MARKET = "UNKNOWN_MARKET"


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str
    request_id: str = ""

    def frames(self) -> list[bytes]:
        return [REJECTED, self.request_id.encode(), self.code.encode(), self.message.encode()]


def parse_request(frames: list[bytes], now_us: int | None = None) -> HistoryRequest | Rejection:
    """A valid history request, or why it is not one (never raises)."""
    if len(frames) != 2 or frames[0] != KIND_HISTORY:
        kind = frames[0][:32] if frames else b""
        return Rejection(INVALID_REQUEST, f"expected [HISTORY, payload], got {kind!r}")
    try:
        request = decode(HistoryRequest, frames[1])
    except DecodeError as exc:
        return Rejection(INVALID_REQUEST, exc.message)
    now = now_us if now_us is not None else time.time_ns() // 1000
    if request.start_ts_us >= now:
        return Rejection(
            TIME_RANGE_IN_FUTURE,
            f"range starts at {request.start_ts_us} us, after now ({now} us)",
            request.request_id,
        )
    return request
