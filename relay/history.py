"""History on request, the client's half: notification first, then the request, then Iceberg.

1. subscribe to ``HISTORY_READY:{request_id}`` and wait for the relay's ACK (so the answer
   can never race ahead of the subscription);
2. send the ``HistoryRequest`` over DEALER to the relay's ROUTER; the relay answers
   ACCEPTED (on the work queue) or REJECTED with a code;
3. wait, bounded, for the ``HistoryReady`` notification;
4. read the rows with a pluggable reader (default: the shared Iceberg catalog).

A failed ``HistoryReady`` whose ``message`` starts with a code (``UNKNOWN_MARKET: ...``,
``EXCHANGE_UNAVAILABLE: ...``) becomes the matching typed error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import zmq

from ticklake.relay import requests, topics
from ticklake.relay.errors import (
    ExchangeUnavailableError,
    HistoryFailedError,
    InvalidRequestError,
    RelayError,
    RelayTimeoutError,
    TimeRangeInFutureError,
    UnknownMarketError,
)
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context, client_socket, shared_context
from ticklake.relay.subscription import Subscription
from ticklake.schemas import HistoryReady, HistoryRequest
from ticklake.schemas.serde import encode

#: Reads the rows a HistoryReady points at (pyarrow Table, pandas frame, ...).
HistoryReader = Callable[[HistoryReady], Any]

_ERRORS: dict[str, type[RelayError]] = {
    requests.INVALID_REQUEST: InvalidRequestError,
    requests.TIME_RANGE_IN_FUTURE: TimeRangeInFutureError,
    requests.EXCHANGE_UNAVAILABLE: ExchangeUnavailableError,
    requests.UNKNOWN_MARKET: UnknownMarketError,
}


@dataclass(frozen=True)
class HistoryResult:
    ready: HistoryReady
    rows: Any


def to_us(value: datetime | int) -> int:
    """Epoch microseconds from an aware datetime or an int already in microseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidRequestError(
                f"{value} has no time zone", hint="use datetime(..., tzinfo=UTC)"
            )
        return int(value.timestamp() * 1_000_000)
    return value


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def iceberg_reader(ready: HistoryReady) -> Any:
    """Default reader: the rows of the request's range from the shared Iceberg catalog."""
    from ticklake.catalog.connection import load_catalog

    if ready.iceberg_table is None:
        raise HistoryFailedError(f"history {ready.request_id} names no Iceberg table")
    table = load_catalog().load_table(ready.iceberg_table)
    ts = "exchange_ts_us" if ready.data_type == "trades" else "window_start_us"
    parts = [
        f"exchange = {_quote(ready.exchange)}",
        f"symbol = {_quote(ready.symbol)}",
        f"{ts} >= {ready.start_ts_us}",
        f"{ts} < {ready.end_ts_us}",
    ]
    if ready.timeframe is not None:
        parts.append(f"timeframe = {_quote(ready.timeframe)}")
    row_filter = " AND ".join(parts)
    scan = table.scan(row_filter=row_filter, snapshot_id=ready.snapshot_id)
    return scan.to_arrow()


def build_request(
    client_id: str,
    exchange: str,
    symbol: str,
    *,
    timeframe: str,
    start: datetime | int,
    end: datetime | int,
    now_us: int,
) -> HistoryRequest:
    """Validate the arguments into a request; typed errors for what the client got wrong."""
    try:
        topics.market(exchange, symbol)
        if timeframe != "trades":
            topics.ohlc(timeframe)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    start_us, end_us = to_us(start), to_us(end)
    if start_us >= now_us:
        raise TimeRangeInFutureError(
            f"history range starts at {start_us} us, which is in the future (now {now_us} us)",
            hint="ask for a range that has begun; live data comes from subscribe()",
        )
    if end_us <= start_us:
        raise InvalidRequestError(f"history range end {end_us} is not after its start {start_us}")
    try:
        return HistoryRequest(
            request_id=uuid.uuid4().hex,
            client_id=client_id,
            exchange=exchange,
            symbol=symbol,
            data_type="trades" if timeframe == "trades" else "candles",
            timeframe=None if timeframe == "trades" else timeframe,
            start_ts_us=start_us,
            end_ts_us=end_us,
            requested_ts_us=now_us,
        )
    except ValueError as exc:
        raise InvalidRequestError(f"invalid history request: {exc}") from exc


def request_history(
    settings: RelaySettings,
    request: HistoryRequest,
    *,
    timeout: float,
    reader: HistoryReader | None,
    context: Context | None = None,
) -> HistoryResult:
    deadline = time.monotonic() + timeout
    ctx = shared_context(context)
    topic = topics.history_ready_topic(request.request_id)
    with Subscription(settings, [topics.exact_filter(topic)], context=ctx) as sub:
        sub.wait_confirmed(timeout)
        _send(settings, ctx, request, deadline)
        while True:
            left = deadline - time.monotonic()
            message = sub.recv(left) if left > 0 else None
            if message is None:
                raise RelayTimeoutError(
                    f"history {request.request_id} ({request.market} {request.data_type} "
                    f"{request.timeframe or ''}) not ready within {timeout:.1f}s",
                    hint="the ingestor or the Flink jobs may be behind; retry with a longer "
                    "timeout (repeating a request does not duplicate data)",
                )
            if isinstance(message.model, HistoryReady):
                ready = message.model
                break
    if ready.status == "failed":
        code, sep, text = (ready.message or "").partition(":")
        error = _ERRORS.get(code.strip(), HistoryFailedError) if sep else HistoryFailedError
        raise error(
            f"history {request.request_id} for {request.market} failed: "
            f"{(text if sep else ready.message) or 'no reason given'}".strip()
        )
    rows = (reader or iceberg_reader)(ready)
    return HistoryResult(ready, rows)


def _send(settings: RelaySettings, ctx: Context, request: HistoryRequest, deadline: float) -> None:
    dealer = client_socket(ctx, zmq.DEALER, settings, settings.request_port)
    try:
        dealer.send_multipart([requests.KIND_HISTORY, encode(request)], zmq.NOBLOCK)
        left = deadline - time.monotonic()
        if left <= 0 or not dealer.poll(int(left * 1000)):
            raise RelayTimeoutError(
                f"relay at {settings.connect(settings.request_port)} did not answer "
                f"history request {request.request_id}",
                hint="is the relay running? (`ticklake relay serve`)",
            )
        reply = dealer.recv_multipart()
    except zmq.Again as exc:
        raise RelayTimeoutError(
            f"relay at {settings.connect(settings.request_port)} is not accepting requests"
        ) from exc
    finally:
        dealer.close(linger=0)
    if reply[0] == requests.ACCEPTED:
        return
    code = reply[2].decode() if len(reply) > 2 else requests.INVALID_REQUEST
    text = reply[3].decode() if len(reply) > 3 else "rejected"
    raise _ERRORS.get(code, RelayError)(f"relay rejected history request: {text}")
