"""Binance's spot market streams: ``/ws`` (raw events) and ``/stream`` (combined wrapper).

Clients subscribe with ``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}``
(as ``ccxt.pro`` does on ``<ws url>/<n>``) or by naming streams in the path
(``/ws/btcusdt@trade``, ``/stream?streams=btcusdt@trade/ethusdt@aggTrade``). A feed task pushes,
every ``ws_tick_ms``, each trade whose timestamp has passed, one frame per trade, in the order of
the tape. Every connection has its own bounded queue and writer, so a slow client never stalls
the others; a client whose queue overflows is disconnected, as Binance does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from ticklake.exchange import wire
from ticklake.exchange.faults import Faults, MalformedRecord, malformed_payload
from ticklake.exchange.market import Tape
from ticklake.exchange.settings import ExchangeSettings

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"^([a-z0-9]+)@(trade|aggTrade)$")
_METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
_REPLAY_DEPTH = 1000


class Connection:
    """One websocket client: its streams and its outgoing queue."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, combined: bool, size: int):
        self.ws = ws
        self.transport = request.transport
        self.combined = combined
        self.streams: set[str] = set()
        self.queue: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def send(self, frame: str | bytes) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True
            log.warning(
                "websocket client too slow (%d frames queued), disconnecting", self.queue.qsize()
            )
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def write(self) -> None:
        while (frame := await self.queue.get()) is not None:
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_str(frame)


class StreamHub:
    """Subscriptions, the live feed task, and the websocket faults."""

    def __init__(
        self, tape: Tape, faults: Faults, settings: ExchangeSettings, clock: Callable[[], int]
    ):
        self.tape = tape
        self.faults = faults
        self.settings = settings
        self.clock = clock
        self.connections: set[Connection] = set()
        self.subscribers: dict[str, set[Connection]] = {}
        self.cursors: dict[str, int] = {}  # market id -> every trade up to here was pushed
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        self.changed = asyncio.Condition()
        self.sent_frames = 0
        self.drops = 0
        self._next_drop_ms = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- subscriptions ---------------------------------------------------------------------

    def _subscribe(self, conn: Connection, stream: str) -> None:
        conn.streams.add(stream)
        self.subscribers.setdefault(stream, set()).add(conn)
        market_id = stream.split("@", maxsplit=1)[0].upper()
        if market_id in self.tape.markets and market_id not in self.cursors:
            self.cursors[market_id] = self.clock()

    def _unsubscribe(self, conn: Connection, stream: str) -> None:
        conn.streams.discard(stream)
        subs = self.subscribers.get(stream)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.subscribers[stream]
        market_id = stream.split("@", maxsplit=1)[0].upper()
        if not any(s.split("@", maxsplit=1)[0].upper() == market_id for s in self.subscribers):
            self.cursors.pop(market_id, None)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_subscribed(self, stream: str, count: int = 1) -> None:
        """Until ``stream`` (e.g. ``btcusdt@trade``) has at least ``count`` subscribers."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.subscribers.get(stream, ())) >= count)

    async def wait_connections(self, count: int) -> None:
        """Until exactly ``count`` websocket clients are connected."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.connections) == count)

    # -- the websocket endpoint ------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.settings.ws_heartbeat_s, max_msg_size=1 << 20)
        await ws.prepare(request)
        combined = request.path.startswith("/stream")
        conn = Connection(ws, request, combined, self.settings.ws_queue_size)
        names = request.query.get("streams", "") if combined else request.match_info.get("rest", "")
        for name in filter(STREAM_NAME.match, names.split("/")):
            self._subscribe(conn, name)
        self.connections.add(conn)
        writer = asyncio.create_task(conn.write())
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._command(conn, msg.data)
        finally:
            for stream in list(conn.streams):
                self._unsubscribe(conn, stream)
            self.connections.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await self._notify()
        return ws

    def _command(self, conn: Connection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError as exc:
            conn.send(_dumps({"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None}))
            return
        if not isinstance(message, dict):
            conn.send(_dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        ident, method, params = message.get("id"), message.get("method"), message.get("params")
        reply: dict[str, Any] = {"result": None, "id": ident}
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(
                isinstance(p, str) and STREAM_NAME.match(p) for p in params
            ):
                reply = {
                    "error": {"code": 2, "msg": "Invalid request: invalid stream"},
                    "id": ident,
                }
            else:
                for stream in params:
                    (self._subscribe if method == "SUBSCRIBE" else self._unsubscribe)(conn, stream)
                self._spawn(self._notify())
        elif method == "LIST_SUBSCRIPTIONS":
            reply["result"] = sorted(conn.streams)
        elif method == "SET_PROPERTY" and isinstance(params, list) and len(params) == 2:
            if params[0] != "combined" or not isinstance(params[1], bool):
                reply = {"error": {"code": 0, "msg": "Unknown property"}, "id": ident}
            else:
                conn.combined = params[1]
        elif method == "GET_PROPERTY" and params == ["combined"]:
            reply["result"] = conn.combined
        else:
            msg = f"Invalid request: unknown variant `{method}`, expected one of {_METHODS}"
            reply = {"error": {"code": 2, "msg": msg}, "id": ident}
        conn.send(_dumps(reply))

    # -- pushing ---------------------------------------------------------------------------

    def _publish(self, stream: str, frame_data: str, raw: bytes | None = None) -> None:
        """Send one event (JSON text) or raw frame to every subscriber of ``stream``."""
        for conn in tuple(self.subscribers.get(stream, ())):
            if raw is not None:
                conn.send(raw)
            elif conn.combined:
                conn.send(f'{{"stream":"{stream}","data":{frame_data}}}')
            else:
                conn.send(frame_data)
            self.sent_frames += 1

    def _push(self, now: int) -> None:
        for market_id, cursor in list(self.cursors.items()):
            if now <= cursor:
                continue
            market = self.tape.markets[market_id]
            self.cursors[market_id] = now
            if now < self.faults.stall_until_ms and self.faults.stall_skip:
                continue
            if now < self.faults.stall_until_ms:
                self.cursors[market_id] = cursor
                continue
            trades = market.trades(cursor + 1, now)
            if not len(trades):
                continue
            for name in ("trade", "aggTrade"):
                stream = f"{market_id.lower()}@{name}"
                if stream not in self.subscribers:
                    continue
                recent = self.recent.setdefault(stream, deque(maxlen=_REPLAY_DEPTH))
                for event in wire.stream_events(market, trades, name, now):
                    text = _dumps(event)
                    self._publish(stream, text)
                    if self.faults.take_duplicate():
                        self._publish(stream, text)
                    recent.append(event)

    async def run(self) -> None:
        """The feed: push due trades every tick; drop connections on the periodic fault."""
        tick = self.settings.ws_tick_ms / 1000
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            every = self.faults.drop_ws_every_s
            if every > 0:
                if self._next_drop_ms == 0:
                    self._next_drop_ms = now + int(every * 1000)
                elif now >= self._next_drop_ms:
                    self.drop("close")
                    self._next_drop_ms = now + int(every * 1000)
            else:
                self._next_drop_ms = 0
            try:
                self._push(now)
            except Exception:
                log.exception("pushing live trades failed")

    # -- websocket faults ------------------------------------------------------------------

    def drop(self, mode: str) -> int:
        """Drop every connection: ``close`` (close frame 1001) or ``abort`` (TCP reset)."""
        dropped = 0
        for conn in list(self.connections):
            dropped += 1
            if mode == "abort":
                conn.abort()
            else:
                self._spawn(self._close(conn))
        self.drops += dropped
        log.info("dropped %d websocket connections (%s)", dropped, mode)
        return dropped

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, conn: Connection, reason: bytes = b"dropped by fault injection") -> None:
        """Close frame 1001 (going away); a client that does not answer within 2 s is cut."""
        try:
            await asyncio.wait_for(conn.ws.close(code=1001, message=reason), 2.0)
        except (TimeoutError, OSError, RuntimeError):
            conn.abort()

    def replay(self, count: int) -> int:
        """Resend the last ``count`` events of every subscribed stream (old, duplicate ids)."""
        sent = 0
        for stream, recent in self.recent.items():
            if stream in self.subscribers:
                for event in list(recent)[-count:]:
                    self._publish(stream, _dumps(event))
                    sent += 1
        return sent

    def inject(self, record: MalformedRecord) -> dict[str, Any]:
        """Push one malformed record on its stream; returns what was sent."""
        market = self.tape.market(record.symbol)
        stream = f"{market.spec.market_id.lower()}@{record.stream}"
        recent = self.recent.get(stream)
        if recent:
            base = dict(recent[-1])
        else:
            now = self.clock()
            last = market.latest_trades(market.genesis_ms, now, 1)
            base = wire.stream_events(market, last, record.stream, now)[0]
        payload = malformed_payload(record.kind, base)
        if isinstance(payload, bytes):
            self._publish(stream, "", raw=payload)
            shown: dict[str, Any] = {
                "kind": record.kind,
                "stream": stream,
                "binary_hex": payload.hex(),
            }
        else:
            self._publish(stream, payload)
            shown = {"kind": record.kind, "stream": stream, "text": payload}
        return {**shown, "subscribers": len(self.subscribers.get(stream, ()))}

    async def close_all(self) -> None:
        """Say goodbye to every client (on shutdown)."""
        await asyncio.gather(*(self._close(c, b"server shutdown") for c in list(self.connections)))

    def state(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "subscriptions": {s: len(c) for s, c in sorted(self.subscribers.items())},
            "sent_frames": self.sent_frames,
            "drops": self.drops,
        }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
