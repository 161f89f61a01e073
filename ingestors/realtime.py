"""Realtime trades of one exchange into Kafka: websocket with a watchdog, or REST polling.

``RealtimeIngestor.run(stop)`` keeps every market's feed going until ``stop`` is set:

- **websocket** (``watch_trades``, when CCXT supports it for the exchange): one watcher per
  market on one ccxt.pro client. A socket error, or the **watchdog** finding a market silent
  for longer than ``stale_after_s`` while REST shows newer trades (a dead feed, not a quiet
  market), closes the client and reconnects; then every market's gap is **filled from REST**
  (``fetch_after`` the last trade sent, paging until caught up). Live trades that arrive
  during a fill wait and are then deduplicated by trade id. With contiguous ids (Binance) a
  jump in the live ids triggers a fill at once.
- **polling** (``fetch_trades`` with a cursor every ``poll_interval_s``): the same fill code.
- A gap the REST history cannot reach, or REST that stays unavailable, becomes a ``FeedGap``
  event, never a silent hole. A ``FeedHeartbeat`` per market every ``heartbeat_interval_s``.
- Bad records are dead-lettered (``normalize.py``); REST calls back off with jitter on
  rate limits (``Retry-After`` honoured) and network errors, on top of CCXT's own limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import ccxt

from ticklake.errors import ConfigError, TickLakeError
from ticklake.ingestors.backoff import Backoff, parse_retry_after
from ticklake.ingestors.exchanges import ExchangeAdapter
from ticklake.ingestors.feed import MarketFeed
from ticklake.ingestors.kafka_sink import KafkaSink
from ticklake.ingestors.metrics import IngestorMetrics
from ticklake.ingestors.normalize import TradeNormalizer, now_us
from ticklake.schemas import DeadLetter, FeedGap

log = logging.getLogger(__name__)
T = TypeVar("T")

Mode = Literal["auto", "websocket", "poll"]


class RestUnavailableError(TickLakeError):
    """The exchange's REST API kept failing past the retry budget."""


@dataclass(frozen=True)
class FeedOptions:
    """How an ingestor follows its markets (``IngestorSettings`` builds it)."""

    mode: Mode = "auto"
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 10.0
    page_limit: int = 1000
    max_fill_pages: int = 200
    since_ms: int | None = None
    rest_backoff: Backoff = field(default_factory=lambda: Backoff(0.2, 10.0, 6))
    reconnect_backoff: Backoff = field(default_factory=lambda: Backoff(0.1, 5.0, 1_000_000))


class RealtimeIngestor:
    """One exchange, several markets, one sink."""

    def __init__(
        self,
        adapter: ExchangeAdapter,
        markets: list[str],
        sink: KafkaSink,
        *,
        ingestor_id: str,
        options: FeedOptions | None = None,
        metrics: IngestorMetrics | None = None,
    ) -> None:
        self.adapter = adapter
        self.sink = sink
        self.ingestor_id = ingestor_id
        self.options = options or FeedOptions()
        self.metrics = metrics or sink.metrics
        self.exchange = adapter.name
        self.normalizer = TradeNormalizer(self.exchange, ingestor_id, markets, adapter.raw_fields)
        self.feeds = {s: MarketFeed(self.exchange, s, adapter) for s in markets}
        self.rest: Any = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fatal: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Ingest until ``stop`` is set; raises what made the ingestor give up."""
        self._stop = stop
        self.rest = self.adapter.rest_client()
        try:
            await self._load_markets()
            self._spawn(self._heartbeats())
            self._spawn(self._poll_sink())
            streaming = self.options.mode != "poll" and await self._can_stream()
            if streaming:
                self._spawn(self._stream())
            else:
                for feed in self.feeds.values():
                    self._spawn(self._poll(feed))
            log.info(
                "ingesting %s %s by %s",
                self.exchange,
                ",".join(self.feeds),
                "websocket" if streaming else "REST polling",
            )
            await stop.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.rest.close()
            for feed in self.feeds.values():
                feed.state = "down"
        if self._fatal is not None:
            raise self._fatal

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self._fatal is None:
            self._fatal = task.exception()
            log.error("%s ingestor stops: %r", self.exchange, self._fatal)
        self._stop.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if stop was requested."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))
        return self._stop.is_set()

    async def _load_markets(self) -> None:
        markets = await self._rest_call(self.rest.load_markets)
        unknown = sorted(set(self.feeds) - set(markets))
        if unknown:
            raise ConfigError(
                f"{self.exchange} has no market(s) {', '.join(unknown)}",
                hint="use CCXT's unified symbols (BASE/QUOTE), e.g. BTC/USDT",
            )

    async def _can_stream(self) -> bool:
        probe = self.adapter.stream_client(self._bad_frame, frozenset(self.feeds))
        if probe is None:
            if self.options.mode == "websocket":
                raise ConfigError(f"CCXT cannot watch trades on {self.exchange}")
            return False
        await probe.close()
        return True

    # -- REST with backoff -----------------------------------------------------------------

    async def _rest_call(self, call: Callable[[], Awaitable[T]]) -> T:
        backoff, attempt = self.options.rest_backoff, 0
        while True:
            try:
                return await call()
            except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
                self.metrics.rate_limited.labels(self.exchange).inc()
                retry_after = parse_retry_after(self.adapter.retry_after_s(self.rest))
                error: Exception = exc
            except ccxt.NetworkError as exc:
                retry_after, error = None, exc
            if backoff.exhausted(attempt):
                raise RestUnavailableError(
                    f"{self.exchange} REST failed {attempt + 1} times: {error}"
                ) from error
            delay = backoff.delay(attempt, retry_after)
            log.warning("%s REST call failed (%s); retry in %.2fs", self.exchange, error, delay)
            if await self._sleep(delay):
                raise asyncio.CancelledError
            attempt += 1

    # -- websocket -------------------------------------------------------------------------

    async def _stream(self) -> None:
        attempt, first = 0, True
        while not self._stop.is_set():
            began = time.monotonic()
            reason = await self._connect_once(first)
            first = False
            for feed in self.feeds.values():
                feed.state = "reconnecting"
            self.metrics.reconnects.labels(self.exchange, reason).inc()
            attempt = 0 if time.monotonic() - began > 10 * self.options.stale_after_s else attempt
            delay = self.options.reconnect_backoff.delay(attempt)
            log.warning("%s reconnecting (%s) in %.2fs", self.exchange, reason, delay)
            attempt += 1
            if await self._sleep(delay):
                return

    async def _connect_once(self, first: bool) -> str:
        """One websocket session; returns why it ended (``error`` or ``stale``)."""
        client = self.adapter.stream_client(self._bad_frame, frozenset(self.feeds))
        if client is None:
            raise ConfigError(f"CCXT cannot watch trades on {self.exchange}")
        client.set_markets(self.rest.markets, self.rest.currencies)
        loop = asyncio.get_running_loop()
        watchers = [loop.create_task(self._watch(client, f)) for f in self.feeds.values()]
        watchdog = loop.create_task(self._watchdog())
        try:
            for feed in self.feeds.values():
                feed.last_frame = time.monotonic()
                if (first and self.options.since_ms is not None) or (not first and feed.cursor):
                    feed.filling = True
                    self._spawn(self._fill(feed, "startup" if first else "reconnect"))
            done, _ = await asyncio.wait([*watchers, watchdog], return_when="FIRST_COMPLETED")
            for task in done:
                exc = None if task.cancelled() else task.exception()
                if isinstance(exc, TickLakeError):
                    raise exc
                if exc is not None:
                    log.warning("%s stream failed: %r", self.exchange, exc)
            return "stale" if watchdog in done else "error"
        finally:
            for task in [*watchers, watchdog]:
                task.cancel()
            await asyncio.gather(*watchers, watchdog, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)

    async def _watch(self, client: Any, feed: MarketFeed) -> None:
        params = self.adapter.watch_params()
        while True:
            trades = await client.watch_trades(feed.symbol, None, None, dict(params))
            feed.last_frame = time.monotonic()
            if feed.state == "reconnecting":
                feed.state = "live"
            self._on_live(feed, list(trades))

    async def _watchdog(self) -> None:
        """Returns when a market is silent too long while REST has newer trades."""
        stale = self.options.stale_after_s
        while True:
            await asyncio.sleep(min(1.0, stale / 4))
            now = time.monotonic()
            for feed in self.feeds.values():
                if feed.filling or now - feed.last_frame < stale:
                    continue
                try:
                    newer = await self._newer_on_rest(feed)
                except RestUnavailableError as exc:
                    log.warning("%s %s: feed silent and REST down: %s", *self._ids(feed), exc)
                    feed.state = "down"
                    continue
                if newer:
                    silent = now - feed.last_frame
                    log.warning("%s %s: silent %.1fs, REST has newer", *self._ids(feed), silent)
                    return
                feed.last_frame = now  # a quiet market; look again after another period
                if feed.state != "live":
                    feed.state = "live"

    async def _newer_on_rest(self, feed: MarketFeed) -> bool:
        if feed.cursor is None:
            page = await self._rest_call(
                lambda: self.adapter.fetch_recent(self.rest, feed.symbol, 1)
            )
            started_ms = int((time.time() - self.options.stale_after_s) * 1000)
            return any(t.get("timestamp", 0) > started_ms for t in page)
        cursor = feed.cursor
        page = await self._rest_call(
            lambda: self.adapter.fetch_after(self.rest, feed.symbol, cursor, 5)
        )
        return any(feed.newer_than_cursor(t) for t in page)

    def _on_live(self, feed: MarketFeed, trades: list[dict[str, Any]]) -> None:
        if feed.filling:
            feed.pending.extend(trades)
            return
        for i, trade in enumerate(trades):
            if feed.jumps(trade.get("id")):
                feed.filling = True
                feed.pending.extend(trades[i:])
                self._spawn(self._fill(feed, "id jump"))
                return
            self._accept(feed, trade, live=True)

    # -- polling and gap fills -------------------------------------------------------------

    async def _poll(self, feed: MarketFeed) -> None:
        if feed.cursor is None and self.options.since_ms is None:
            recent = await self._rest_call(
                lambda: self.adapter.fetch_recent(self.rest, feed.symbol, 1)
            )
            for trade in recent:  # start after the newest trade: it is not re-sent
                record = self.normalizer.normalize(trade)
                if not isinstance(record, DeadLetter):
                    feed.sent(record)
                    feed.trades_since_heartbeat = 0
        while not self._stop.is_set():
            feed.filling = True
            await self._fill(feed, "poll")
            if feed.state != "down":
                feed.state = "polling"
            if await self._sleep(self.options.poll_interval_s):
                return

    async def _fill(self, feed: MarketFeed, why: str) -> None:
        """Send the trades after the cursor from REST, paging until caught up."""
        async with feed.lock:
            feed.filling = True
            try:
                await self._fill_pages(feed, why)
            except RestUnavailableError as exc:
                feed.state = "down"
                self._gap(feed, "REST_UNAVAILABLE", str(exc))
            finally:
                pending, feed.pending = feed.pending, []
                feed.filling = False
                self._on_live(feed, pending)

    async def _fill_pages(self, feed: MarketFeed, why: str) -> None:
        limit, pages, filled = self.options.page_limit, 0, 0
        since_ms = self.options.since_ms
        while not self._stop.is_set():
            cursor = feed.cursor
            if cursor is None:
                if since_ms is None:
                    return
                page = await self._rest_call(
                    functools.partial(self.rest.fetch_trades, feed.symbol, since_ms, limit)
                )
            else:
                page = await self._rest_call(
                    functools.partial(
                        self.adapter.fetch_after, self.rest, feed.symbol, cursor, limit
                    )
                )
            pages += 1
            new = [t for t in page if feed.newer_than_cursor(t)]
            if new and not feed.reaches(new[0], len(page) >= limit):
                self._gap(
                    feed,
                    "HISTORY_LIMIT",
                    f"REST history starts at trade {new[0].get('id')}, after the last one sent",
                    first=new[0],
                )
            for trade in new:
                filled += self._accept(feed, trade, live=False)
            if feed.state == "down":
                feed.state = "live" if why != "poll" else "polling"
            if not new or len(page) < limit or self._caught_up(feed):
                break
            if pages >= self.options.max_fill_pages:
                self._gap(feed, "FILL_LIMIT", f"stopped filling after {pages} pages")
                break
        if filled and why != "poll":
            self.metrics.gap_fills.labels(*self._ids(feed)).inc(filled)
            log.info("%s %s: filled %d trade(s) from REST (%s)", *self._ids(feed), filled, why)

    def _caught_up(self, feed: MarketFeed) -> bool:
        """Whether the fill reached the first live trade waiting behind it."""
        first = next((t for t in feed.pending if t.get("id") is not None), None)
        if first is None or feed.cursor is None:
            return False
        if self.adapter.contiguous_ids:
            return not feed.jumps(first.get("id"))
        ts = first.get("timestamp")
        return isinstance(ts, int) and feed.cursor.ts_ms >= ts

    def _gap(
        self, feed: MarketFeed, code: str, message: str, first: dict[str, Any] | None = None
    ) -> None:
        """Record a gap from the cursor to ``first`` (or the first waiting live trade, or now)."""
        now = now_us()
        if first is None:
            first = next((t for t in feed.pending if isinstance(t.get("timestamp"), int)), None)
        end_us = first["timestamp"] * 1000 if first is not None else now
        start_us = feed.cursor.ts_ms * 1000 if feed.cursor else end_us
        gap = FeedGap(
            exchange=self.exchange,
            symbol=feed.symbol,
            gap_start_ts_us=min(start_us, end_us),
            gap_end_ts_us=end_us,
            receipt_ts_us=now,
            ingestor_id=self.ingestor_id,
            last_trade_id_before=feed.cursor.trade_id if feed.cursor else None,
            first_trade_id_after=str(first["id"]) if first and first.get("id") else None,
            reason_code=code,
            reason_message=message,
        )
        self.sink.gap(gap)
        self.metrics.gaps.labels(*self._ids(feed)).inc()
        log.warning("%s %s: unfillable gap (%s): %s", *self._ids(feed), code, message)

    # -- records ---------------------------------------------------------------------------

    def _accept(self, feed: MarketFeed, trade: dict[str, Any], *, live: bool) -> int:
        """Normalize, deduplicate and send one trade; 1 if it was sent."""
        receipt = now_us()
        self.metrics.trades_in.labels(*self._ids(feed)).inc()
        record = self.normalizer.normalize(trade, receipt)
        if isinstance(record, DeadLetter):
            self._dead(record)
            return 0
        if feed.already_sent(record):
            self.metrics.duplicates.labels(*self._ids(feed)).inc()
            return 0
        self.sink.trade(record)
        feed.sent(record)
        self.metrics.last_trade_ts.labels(*self._ids(feed)).set(record.exchange_ts_us / 1e6)
        if live:
            self.metrics.lag.labels(*self._ids(feed)).observe(
                max(0.0, (receipt - record.exchange_ts_us) / 1e6)
            )
        return 1

    def _bad_frame(self, code: str, message: str, raw: Any, symbol: str | None) -> None:
        """A frame the stream guard kept from CCXT."""
        if symbol in self.feeds:
            self.feeds[symbol].last_frame = time.monotonic()
        try:
            self._dead(self.normalizer.dead_letter(code, message, raw, symbol=symbol))
        except TickLakeError as exc:  # raised inside CCXT's callback: stop from here instead
            if self._fatal is None:
                self._fatal = exc
            self._stop.set()

    def _dead(self, record: DeadLetter) -> None:
        self.metrics.dead_lettered.labels(self.exchange, record.reason_code).inc()
        log.debug("dead letter %s: %s", record.reason_code, record.reason_message)
        self.sink.dead_letter(record)

    # -- heartbeats and sink ---------------------------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self.options.heartbeat_interval_s
        interval_ms = max(1, int(interval * 1000))
        while not await self._sleep(interval):
            for feed in self.feeds.values():
                up = feed.state in ("live", "polling")
                self.metrics.feed_up.labels(*self._ids(feed)).set(1 if up else 0)
                self.sink.heartbeat(feed.heartbeat(self.ingestor_id, interval_ms, now_us()))

    async def _poll_sink(self) -> None:
        while not await self._sleep(0.1):
            self.sink.poll(0)
            self.sink.check()

    def _ids(self, feed: MarketFeed) -> tuple[str, str]:
        return self.exchange, feed.symbol
