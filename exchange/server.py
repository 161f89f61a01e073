"""The local exchange as one aiohttp server: Binance REST + streams + a control API.

In-process use (tests)::

    async with LocalExchange(ExchangeSettings(seed=7)) as ex:
        binance = ccxt.async_support.binance(ex.ccxt_config())
        ...

or, for blocking clients such as ``ccxt.binance``, ``with BackgroundExchange() as ex:`` which
runs the same server on its own event loop in a thread. ``python -m ticklake.exchange`` runs it
as a process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from ticklake.errors import TickLakeError
from ticklake.exchange import wire
from ticklake.exchange.binance_rest import BinanceRest
from ticklake.exchange.binance_ws import StreamHub
from ticklake.exchange.faults import FaultRequest, Faults
from ticklake.exchange.market import Tape
from ticklake.exchange.settings import ExchangeSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class ExchangeError(TickLakeError):
    """The local exchange could not start or stop."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalExchange:
    """A Binance-spot-speaking exchange over a deterministic simulated tape."""

    def __init__(
        self,
        settings: ExchangeSettings | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        faults: FaultRequest | None = None,
    ):
        """``faults``: standing faults from the start (e.g. ``drop_ws_every_s``,
        ``rest_errors``); one-shot websocket faults in it have nothing to act on yet."""
        self.settings = settings or ExchangeSettings()
        self.initial_faults = faults
        self.clock = clock
        self.tape = Tape(self.settings, now_ms=clock())
        self.faults = Faults()
        self.rest = BinanceRest(self.tape, self.faults, self.settings, clock)
        self.streams = StreamHub(self.tape, self.faults, self.settings, clock)
        self.host = self.settings.host
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._feed: asyncio.Task[None] | None = None

    # -- addresses and client configuration ------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The raw-stream endpoint CCXT pro connects to (it appends ``/<n>``)."""
        return f"ws://{self.host}:{self.port}/ws"

    def ccxt_config(self, **extra: Any) -> dict[str, Any]:
        """Constructor config for ``ccxt.binance`` / ``ccxt.async_support.binance`` /
        ``ccxt.pro.binance`` that points it here (spot only, no credentials needed)."""
        return ccxt_config(self.url, self.ws_url, **extra)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self.rest.middleware])
        app.add_routes(self.rest.routes())
        handle = self.streams.handle
        app.add_routes(
            [
                web.get("/ws", handle),
                web.get("/ws/{rest:.*}", handle),
                web.get("/stream", handle),
                web.get("/_control/state", self._state),
                web.get("/_control/trades", self._trades),
                web.post("/_control/faults", self._post_faults),
                web.delete("/_control/faults", self._clear_faults),
            ]
        )
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ExchangeError(
                f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}",
                hint="choose another --port (0 picks a free one)",
            ) from exc
        self.port = int(self._runner.addresses[0][1])
        if self.initial_faults is not None:
            self.inject(self.initial_faults)
        self._feed = asyncio.get_running_loop().create_task(self.streams.run())
        log.info(
            "local exchange listening on %s (seed %d, genesis %d, %d markets)",
            self.url,
            self.settings.seed,
            self.tape.genesis_ms,
            len(self.tape.markets),
        )

    async def stop(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
            self._feed = None
        if self._runner is not None:
            await self.streams.close_all()
            await self._runner.cleanup()
            self._runner = None
        log.info("local exchange stopped")

    async def __aenter__(self) -> LocalExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults ----------------------------------------------------------------------------

    def inject(self, request: FaultRequest) -> dict[str, Any]:
        """Apply a fault request (call on the server's event loop); returns what happened."""
        self.faults.update(request, self.clock())
        result: dict[str, Any] = {}
        if request.drop_ws is not None:
            result["dropped"] = self.streams.drop(request.drop_ws)
        if request.replay_last:
            result["replayed"] = self.streams.replay(request.replay_last)
        if request.malformed:
            result["injected"] = [self.streams.inject(r) for r in request.malformed]
        result["state"] = self.state()
        return result

    def state(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ws_url": self.ws_url,
            "seed": self.settings.seed,
            "genesis_ms": self.tape.genesis_ms,
            "server_time": self.clock(),
            "markets": [m.spec.symbol for m in self.tape.markets.values()],
            "rest_requests": self.rest.requests,
            "faults": self.faults.state(),
            "streams": self.streams.state(),
        }

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            fault = FaultRequest.model_validate_json(await request.read())
            return web.json_response(self.inject(fault))
        except (ValidationError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response(self.state())

    async def _trades(self, request: web.Request) -> web.Response:
        """Ground truth over HTTP: ``?symbol=BTCUSDT&startTime=..&endTime=..`` (inclusive)."""
        try:
            market = self.tape.market(request.query["symbol"])
            start, end = int(request.query["startTime"]), int(request.query["endTime"])
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": f"bad query: {exc}"}, status=400)
        return web.json_response(wire.trades(market, market.trades(start, end)))


def ccxt_config(url: str, ws_url: str, **extra: Any) -> dict[str, Any]:
    """The CCXT binance constructor config for an exchange at ``url`` / ``ws_url``."""
    config: dict[str, Any] = {
        "urls": {"api": {"public": f"{url}/api/v3", "v1": f"{url}/api/v1", "ws": {"spot": ws_url}}},
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "fetchMargins": False,
            "fetchCurrencies": False,
        },
    }
    config.update(extra)
    return config


class BackgroundExchange:
    """A ``LocalExchange`` on its own event loop in a daemon thread, for blocking callers."""

    def __init__(
        self,
        settings: ExchangeSettings | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        faults: FaultRequest | None = None,
    ):
        self.exchange = LocalExchange(settings, clock=clock, faults=faults)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="local-exchange", daemon=True
        )

    def start(self, timeout: float = 30.0) -> LocalExchange:
        self._thread.start()
        self.submit(self.exchange.start()).result(timeout)
        return self.exchange

    def stop(self, timeout: float = 30.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.submit(self.exchange.stop()).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the exchange's loop; ``.result(timeout)`` waits for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the exchange's loop from another event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def inject(self, request: FaultRequest, timeout: float = 10.0) -> dict[str, Any]:
        """``LocalExchange.inject`` from any thread."""

        async def apply() -> dict[str, Any]:
            return self.exchange.inject(request)

        return self.submit(apply()).result(timeout)

    def __enter__(self) -> LocalExchange:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
