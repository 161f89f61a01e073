"""History on request, the ingestor's half: take work from the relay, fetch, write to Kafka.

``HistoryWorker.run(stop)`` subscribes to the relay's work queue with its exchanges'
prefixes (``BINANCE:``) and serves each ``HistoryRequest`` in turn:

1. **validate**: the market must be listed by the exchange (else ``UNKNOWN_MARKET:``), the
   range must have begun, and is served only up to ``now - settle`` (trades of the last
   seconds may still be arriving; else ``TIME_RANGE_IN_FUTURE:``); candles only for closed
   windows of timeframes the candles table holds (else ``NOT_SUPPORTED:``);
2. **skip what the lake has**: the parts of the range covered by earlier requests
   (``catalog/coverage.py``) are not fetched again, and trade ids already in the Iceberg
   trades table (live stream, earlier requests) are not produced again;
3. **fetch** the rest through CCXT ``fetch_trades(symbol, since, limit, {"until": ...})``,
   window by window (Binance serves at most one hour per call) and page by page, on CCXT's
   rate limiter, backing off with jitter on 429/418 (``Retry-After`` honoured) and network
   errors (``EXCHANGE_UNAVAILABLE:`` once the budget is spent); candles are the exchange's
   klines (``fetch_ohlcv``, exact strings: ``history_klines.py``);
4. **produce** the new trades to the raw-trades topic with the request's ``request_id``
   (klines to the history-candles topic, which ``jobs/history_candles.py`` writes to the
   Iceberg candles table; bad records to the dead-letter topic, as the realtime ingestor
   does), flush, and then a
   ``HistoryFetch`` record on ``ticklake.history.fetches`` saying how many distinct trades of
   the range the lake must hold. The history notifier (``relay/history_ready.py``) answers
   the client once a committed Iceberg snapshot holds them.

A failure is a ``HistoryFetch`` with ``status="failed"`` and a message starting with a code;
the notifier turns it into a failed ``HistoryReady`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt
from pydantic import BaseModel, ConfigDict, Field

from ticklake.catalog.coverage import LakeIndex, subtract
from ticklake.catalog.tables import DEFAULT_NAMESPACE
from ticklake.errors import TickLakeError
from ticklake.ingestors.backoff import Backoff, parse_retry_after
from ticklake.ingestors.exchanges import ExchangeAdapter
from ticklake.ingestors.history_claims import Claim, ClaimBook
from ticklake.ingestors.history_klines import candle_timeframe_us, fetch_klines
from ticklake.ingestors.kafka_sink import KafkaSink
from ticklake.ingestors.metrics import IngestorMetrics
from ticklake.ingestors.normalize import TradeNormalizer, now_us
from ticklake.relay.errors import RelayUnavailableError
from ticklake.relay.settings import RelaySettings
from ticklake.relay.work import WorkQueueConsumer
from ticklake.schemas import (
    HISTORY_FETCHES,
    Candle,
    DeadLetter,
    HistoryFetch,
    HistoryRequest,
    Trade,
)
from ticklake.schemas.topics import HISTORY_CANDLES, TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Codes at the start of a failed fetch's message (the SDK maps them to typed errors).
UNKNOWN_MARKET = "UNKNOWN_MARKET"
TIME_RANGE_IN_FUTURE = "TIME_RANGE_IN_FUTURE"
EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
NOT_SUPPORTED = "NOT_SUPPORTED"
RANGE_TOO_LARGE = "RANGE_TOO_LARGE"
PAGE_OVERFLOW = "PAGE_OVERFLOW"
LAKE_UNAVAILABLE = "LAKE_UNAVAILABLE"


class HistorySettings(BaseModel):
    """How an ingestor serves history requests (``TICKLAKE_INGESTOR__HISTORY__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=False, description="take history work from the relay")
    namespace: str = Field(default=DEFAULT_NAMESPACE, description="Iceberg namespace of trades")
    page_limit: int = Field(default=1000, ge=1, le=1000)
    window_ms: int = Field(
        default=3_600_000, gt=0, description="longest since..until span per call (Binance: 1 h)"
    )
    settle_ms: int = Field(
        default=2_000, ge=0, description="serve only up to now minus this (trades still arriving)"
    )
    max_range_days: float = Field(
        default=1.0, gt=0, description="longer ranges are refused (a request is held in memory)"
    )
    fetches_topic: str = HISTORY_FETCHES.name
    candles_topic: str = HISTORY_CANDLES.name
    claims: bool = Field(
        default=True,
        description="claim each request in PostgreSQL, so that of several workers of one"
        " exchange exactly one serves it (history_claims.py)",
    )
    claim_lease_s: float = Field(
        default=30.0, gt=0, description="a claim's lease, renewed every third of it"
    )


class FetchFailedError(TickLakeError):
    """A history request cannot be served; ``code`` starts the failed fetch's message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.text = message


@dataclass
class WorkerStats:
    """What the worker did (tests and logs read it)."""

    requests: int = 0
    failed: int = 0
    rest_calls: int = 0
    fetched: int = 0
    produced: int = 0
    skipped_present: int = 0
    #: Requests another worker held when they arrived (kept on standby).
    deferred: int = 0
    #: Requests another worker had served (dropped).
    served_elsewhere: int = 0


class HistoryWorker:
    """Serves the relay's history work for some exchanges (one request at a time)."""

    def __init__(
        self,
        adapters: Sequence[ExchangeAdapter],
        sink: KafkaSink,
        lake: LakeIndex,
        *,
        ingestor_id: str,
        settings: HistorySettings | None = None,
        relay: RelaySettings | None = None,
        metrics: IngestorMetrics | None = None,
        rest_backoff: Backoff | None = None,
        clock_us: Callable[[], int] = now_us,
        claims: ClaimBook | None = None,
    ) -> None:
        self.adapters = {a.name: a for a in adapters}
        self.sink = sink
        self.lake = lake
        self.ingestor_id = ingestor_id
        self.settings = settings or HistorySettings(enabled=True)
        self.relay = relay or RelaySettings()
        self.metrics = metrics or IngestorMetrics()
        self.backoff = rest_backoff or Backoff(0.2, 10.0, 6)
        self.clock_us = clock_us
        self.fetches: TopicSpec[HistoryFetch] = HISTORY_FETCHES.renamed(self.settings.fetches_topic)
        self.candles: TopicSpec[Candle] = HISTORY_CANDLES.renamed(self.settings.candles_topic)
        self.stats = WorkerStats()
        self.claims = claims
        #: Requests another worker holds: request id -> (request, when to ask again).
        self.standby: dict[str, tuple[HistoryRequest, float]] = {}
        #: Set once the relay acknowledged the work-queue subscription.
        self.ready = threading.Event()
        self._clients: dict[str, Any] = {}
        self._kline_clients: dict[str, Any] = {}
        self._markets: dict[str, set[str]] = {}

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve requests until ``stop`` is set; the relay socket lives in its own thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[HistoryRequest] = asyncio.Queue()
        halt = threading.Event()
        receiver = threading.Thread(
            target=self._receive, args=(loop, queue, halt), name="history-work", daemon=True
        )
        receiver.start()
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                due = min((at for _, at in self.standby.values()), default=None)
                timeout = None if due is None else max(0.0, due - time.monotonic())
                done, _ = await asyncio.wait(
                    {getter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                for task in (getter, stopper):
                    if task not in done:
                        task.cancel()
                if getter in done:
                    await self.handle(getter.result())
                now = time.monotonic()
                for request, at in list(self.standby.values()):
                    if at <= now and not stop.is_set():
                        await self.handle(request)
        finally:
            halt.set()
            await asyncio.to_thread(receiver.join, 10)
            await self.close()

    async def close(self) -> None:
        """Close the CCXT clients."""
        for client in [*self._clients.values(), *self._kline_clients.values()]:
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()
        self._kline_clients.clear()
        if self.claims is not None:
            self.claims.close()

    def _receive(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[HistoryRequest],
        halt: threading.Event,
    ) -> None:
        """Own the work-queue socket: subscribe, wait for the ACK, pass requests to the loop."""
        consumer = WorkQueueConsumer(self.adapters, self.relay)
        try:
            while not halt.is_set() and not self.ready.is_set():
                try:
                    consumer.wait_confirmed(1.0)
                    self.ready.set()
                    log.info("taking history work for %s", ", ".join(sorted(self.adapters)))
                except RelayUnavailableError:
                    log.debug("relay work queue not confirmed yet; waiting")
            while not halt.is_set():
                request = consumer.recv(0.2)
                if request is not None:
                    loop.call_soon_threadsafe(queue.put_nowait, request)
        finally:
            consumer.close()

    async def handle(self, request: HistoryRequest) -> HistoryFetch | None:
        """Serve one request and report it on the fetches topic (never raises for bad input).

        With a claim book, only the worker that claims the request serves it; the others
        keep it on standby (``self.standby``) and return None (``history_claims.py``).
        """
        claim = await self._claim(request)
        if claim is not None and claim.state != "mine":
            if claim.state == "held":
                self.stats.deferred += 1
                due = time.monotonic() + claim.wait_s + 0.2
                self.standby[request.request_id] = (request, due)
                log.info("history %s: held by %s, asking again in %.1fs", request.request_id,
                         claim.holder, claim.wait_s + 0.2)  # fmt: skip
            else:
                self.stats.served_elsewhere += 1
                self.standby.pop(request.request_id, None)
                log.info("history %s: served by %s", request.request_id, claim.holder)
            return None
        self.standby.pop(request.request_id, None)
        renewer = asyncio.ensure_future(self._renew(request)) if claim is not None else None
        served = False
        try:
            fetch = await self._serve_and_report(request)
            served = True
            return fetch
        finally:
            if renewer is not None:
                renewer.cancel()
            if claim is not None and self.claims is not None:
                try:
                    await asyncio.to_thread(
                        self.claims.finish, request.request_id, self.ingestor_id, done=served
                    )
                except Exception as exc:  # the lease runs out by itself
                    log.warning("history %s: cannot close the claim: %s", request.request_id, exc)

    async def _claim(self, request: HistoryRequest) -> Claim | None:
        """The claim of ``request``; None without a claim book or when it cannot be asked
        (then this worker serves: a request fetched twice is harmless, one lost is not)."""
        if self.claims is None:
            return None
        try:
            return await asyncio.to_thread(self.claims.claim, request.request_id, self.ingestor_id)
        except Exception as exc:
            log.warning("history %s: claims unavailable (%s); serving it unclaimed",
                        request.request_id, exc)  # fmt: skip
            return None

    async def _renew(self, request: HistoryRequest) -> None:
        """Renew the lease every third of it while the request is being served."""
        assert self.claims is not None
        while True:
            await asyncio.sleep(self.claims.lease_s / 3)
            try:
                mine = await asyncio.to_thread(
                    self.claims.renew, request.request_id, self.ingestor_id
                )
            except Exception as exc:
                log.warning("history %s: cannot renew the claim: %s", request.request_id, exc)
                continue
            if not mine:
                log.warning("history %s: the claim was taken over (this worker was too slow"
                            " to renew it); finishing anyway", request.request_id)  # fmt: skip
                return

    async def _serve_and_report(self, request: HistoryRequest) -> HistoryFetch:
        self.stats.requests += 1
        t0 = time.monotonic()
        try:
            fetch = await self.serve(request)
        except FetchFailedError as exc:
            self.stats.failed += 1
            fetch = self._failed(request, exc.code, exc.text)
        log.info(
            "history %s %s [%d, %d): %s, %d expected, %d fetched, %d produced (%.1fs)",
            request.request_id, request.market, request.start_ts_us, request.end_ts_us,
            fetch.status, fetch.expected_rows, fetch.fetched_rows, fetch.produced_rows,
            time.monotonic() - t0,
        )  # fmt: skip
        self.sink.send(self.fetches, fetch)
        await asyncio.to_thread(self.sink.flush, 30.0)
        self.sink.check()
        return fetch

    # -- one request -----------------------------------------------------------------------

    async def serve(self, request: HistoryRequest) -> HistoryFetch:
        adapter = self.adapters.get(request.exchange)
        if adapter is None:
            raise FetchFailedError(
                EXCHANGE_UNAVAILABLE, f"this ingestor does not serve {request.exchange}"
            )
        served_end = self._served_end(request)
        client = await self._client(adapter)
        if request.symbol not in await self._listed(adapter, client):
            raise FetchFailedError(
                UNKNOWN_MARKET, f"{request.exchange} lists no market {request.symbol}"
            )
        try:
            covered = await asyncio.to_thread(
                functools.partial(
                    self.lake.covered, request.exchange, request.symbol,
                    data_type=request.data_type, timeframe=request.timeframe,
                    start_us=request.start_ts_us, end_us=served_end,
                )
            )  # fmt: skip
        except Exception as exc:  # catalog or object store down: say so, do not hang
            raise FetchFailedError(LAKE_UNAVAILABLE, f"cannot read coverage: {exc}") from exc
        gaps = subtract(request.start_ts_us, served_end, covered)
        normalizer = TradeNormalizer(
            request.exchange, self.ingestor_id, {request.symbol}, adapter.raw_fields
        )
        if request.data_type == "candles":
            fetched, present, table = await self._candles(
                adapter, normalizer, request, gaps=gaps, served_end=served_end
            )
        else:
            fetched, present, table = await self._trades(
                adapter, client, normalizer, request, gaps=gaps, served_end=served_end
            )
        new = [record for key, record in fetched.items() if key not in present]
        for record in new:
            if isinstance(record, Trade):
                self.sink.trade(record.model_copy(update={"request_id": request.request_id}))
            else:
                self.sink.send(self.candles, record)
        self.stats.fetched += len(fetched)
        self.stats.produced += len(new)
        self.stats.skipped_present += len(fetched) - len(new)
        await asyncio.to_thread(self.sink.flush, 30.0)
        self.sink.check()
        message = None
        if served_end < request.end_ts_us:
            message = (
                f"served up to {served_end} us; the last {self.settings.settle_ms} ms before "
                "the request are still settling"
            )
        return HistoryFetch(
            **request.model_dump(exclude={"requested_ts_us"}),
            served_end_ts_us=served_end,
            ingestor_id=self.ingestor_id,
            status="fetched",
            expected_rows=len(present | fetched.keys()),
            fetched_rows=len(fetched),
            produced_rows=len(new),
            iceberg_table=table,
            message=message,
            fetched_ts_us=self.clock_us(),
        )

    def _served_end(self, request: HistoryRequest) -> int:
        """Where serving the range ends: now minus ``settle_ms``, for candles at the last
        closed window; raises when nothing of it can be served."""
        now = self.clock_us()
        if request.start_ts_us >= now:
            raise FetchFailedError(
                TIME_RANGE_IN_FUTURE, f"range starts at {request.start_ts_us} us, after now"
            )
        settled = now - self.settings.settle_ms * 1000
        if request.data_type == "candles":
            tf_us = candle_timeframe_us(request.timeframe)
            if tf_us is None:
                raise FetchFailedError(
                    NOT_SUPPORTED,
                    f"timeframe {request.timeframe} is not a candle timeframe here "
                    "(whole minutes that divide a day: 1m, 5m, 15m, 1h, 4h, 1d)",
                )
            settled = settled // tf_us * tf_us  # windows starting before this are closed
        served_end = min(request.end_ts_us, settled)
        if served_end <= request.start_ts_us:
            raise FetchFailedError(
                TIME_RANGE_IN_FUTURE,
                "nothing of the range has settled yet: its trades are still arriving, or "
                "its first window has not closed (ask again later)",
            )
        if served_end - request.start_ts_us > self.settings.max_range_days * 86_400e6:
            raise FetchFailedError(
                RANGE_TOO_LARGE,
                f"at most {self.settings.max_range_days:g} days per request; split the range",
            )
        return served_end

    async def _trades(
        self,
        adapter: ExchangeAdapter,
        client: Any,
        normalizer: TradeNormalizer,
        request: HistoryRequest,
        *,
        gaps: list[tuple[int, int]],
        served_end: int,
    ) -> tuple[dict[Any, Trade | Candle], set[Any], str]:
        """Trades of the gaps by id, the ids the lake has in the range, the table."""
        fetched: dict[str, Trade] = {}
        for gap_start, gap_end in gaps:
            await self._fetch_range(
                adapter, client, normalizer,
                symbol=request.symbol, start_us=gap_start, end_us=gap_end, into=fetched,
            )  # fmt: skip
        try:
            present = await asyncio.to_thread(
                self.lake.trade_ids,
                request.exchange, request.symbol, request.start_ts_us, served_end,
            )  # fmt: skip
        except Exception as exc:
            raise FetchFailedError(LAKE_UNAVAILABLE, f"cannot read trades: {exc}") from exc
        return dict(fetched), set(present), self.lake.trades_table

    async def _candles(
        self,
        adapter: ExchangeAdapter,
        normalizer: TradeNormalizer,
        request: HistoryRequest,
        *,
        gaps: list[tuple[int, int]],
        served_end: int,
    ) -> tuple[dict[Any, Trade | Candle], set[Any], str]:
        """Exchange klines of the gaps by window start, the windows the lake has, the table."""
        assert request.timeframe is not None
        client = self._kline_clients.get(adapter.name)
        if client is None:
            client = self._kline_clients[adapter.name] = adapter.rest_client()
            client.number = str  # exact numbers: CCXT returns strings, never floats

        async def rest(call: Callable[[], Awaitable[Any]]) -> Any:
            return await self._rest(adapter, client, call)

        def bad(record: DeadLetter) -> None:
            self.metrics.dead_lettered.labels(adapter.name, record.reason_code).inc()
            self.sink.dead_letter(record)

        fetched: dict[int, Candle] = {}
        for gap_start, gap_end in gaps:
            fetched |= await fetch_klines(
                rest, client, normalizer, symbol=request.symbol, timeframe=request.timeframe,
                start_us=gap_start, end_us=gap_end, limit=self.settings.page_limit,
                receipt_us=self.clock_us(), on_bad=bad,
            )  # fmt: skip
        try:
            present = await asyncio.to_thread(
                self.lake.candle_windows,
                request.exchange, request.symbol, request.timeframe,
                request.start_ts_us, served_end,
            )  # fmt: skip
        except Exception as exc:
            raise FetchFailedError(LAKE_UNAVAILABLE, f"cannot read candles: {exc}") from exc
        return dict(fetched), set(present), self.lake.candles_table

    async def _fetch_range(
        self,
        adapter: ExchangeAdapter,
        client: Any,
        normalizer: TradeNormalizer,
        *,
        symbol: str,
        start_us: int,
        end_us: int,
        into: dict[str, Trade],
    ) -> None:
        """Every trade of ``[start_us, end_us)``: windows of ``window_ms``, pages of ``limit``.

        A full page continues from its last trade's millisecond (that millisecond again:
        trades share milliseconds; ids deduplicate); a short page ends its window.
        """
        limit, window = self.settings.page_limit, self.settings.window_ms
        start_ms = start_us // 1000
        end_ms = -(-end_us // 1000)  # exclusive, rounded up: the last partial millisecond
        cursor = start_ms
        while cursor < end_ms:
            until = min(cursor + window, end_ms) - 1  # inclusive
            page: list[dict[str, Any]] = await self._rest(
                adapter,
                client,
                functools.partial(client.fetch_trades, symbol, cursor, limit, {"until": until}),
            )
            receipt = self.clock_us()
            for unified in page:
                ts = unified.get("timestamp")
                if isinstance(ts, int) and not start_us <= ts * 1000 < end_us:
                    continue
                record = normalizer.normalize(unified, receipt)
                if isinstance(record, DeadLetter):
                    self.metrics.dead_lettered.labels(adapter.name, record.reason_code).inc()
                    self.sink.dead_letter(record)
                    continue
                into.setdefault(record.trade_id, record)
            if len(page) < limit:
                cursor = until + 1
                continue
            last = max((t["timestamp"] for t in page if isinstance(t.get("timestamp"), int)),
                       default=cursor)  # fmt: skip
            if last <= cursor:
                raise FetchFailedError(
                    PAGE_OVERFLOW,
                    f"more than {limit} trades in millisecond {cursor}; cannot page by time",
                )
            cursor = last

    # -- exchange access -------------------------------------------------------------------

    async def _client(self, adapter: ExchangeAdapter) -> Any:
        client = self._clients.get(adapter.name)
        if client is None:
            client = self._clients[adapter.name] = adapter.rest_client()
        return client

    async def _listed(self, adapter: ExchangeAdapter, client: Any) -> set[str]:
        markets = self._markets.get(adapter.name)
        if markets is None:
            loaded = await self._rest(adapter, client, client.load_markets)
            markets = self._markets[adapter.name] = set(loaded)
        return markets

    async def _rest(
        self, adapter: ExchangeAdapter, client: Any, call: Callable[[], Awaitable[T]]
    ) -> T:
        attempt = 0
        while True:
            self.stats.rest_calls += 1
            try:
                return await call()
            except ccxt.BadSymbol as exc:
                raise FetchFailedError(UNKNOWN_MARKET, str(exc)) from exc
            except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
                self.metrics.rate_limited.labels(adapter.name).inc()
                retry_after = parse_retry_after(adapter.retry_after_s(client))
                error: Exception = exc
            except ccxt.OperationFailed as exc:  # network errors, 5xx: worth retrying
                retry_after, error = None, exc
            except ccxt.ExchangeError as exc:
                raise FetchFailedError(EXCHANGE_UNAVAILABLE, str(exc)) from exc
            if self.backoff.exhausted(attempt):
                raise FetchFailedError(
                    EXCHANGE_UNAVAILABLE,
                    f"{adapter.name} REST failed {attempt + 1} times: {error}",
                ) from error
            delay = self.backoff.delay(attempt, retry_after)
            log.warning(
                "%s history REST call failed (%s); retry in %.2fs", adapter.name, error, delay
            )
            await asyncio.sleep(delay)
            attempt += 1

    def _failed(self, request: HistoryRequest, code: str, text: str) -> HistoryFetch:
        return HistoryFetch(
            **request.model_dump(exclude={"requested_ts_us"}),
            served_end_ts_us=request.start_ts_us,
            ingestor_id=self.ingestor_id,
            status="failed",
            expected_rows=0,
            fetched_rows=0,
            produced_rows=0,
            message=f"{code}: {text}",
            fetched_ts_us=self.clock_us(),
        )
