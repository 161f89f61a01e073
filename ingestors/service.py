"""The ingestor service: settings, and start / run / stop with a clean flush on SIGTERM.

``IngestorSettings`` (env prefix ``TICKLAKE_INGESTOR__``, ``__`` between nested names) says
which exchanges and markets to follow and how; Kafka's address comes from the shared
``Connections``. ``IngestorService`` runs one ``RealtimeIngestor`` per exchange on one event
loop and one ``KafkaSink``; SIGTERM/SIGINT stop the feeds, then the sink flushes. With
``history.enabled`` it also serves history requests from the relay's work queue
(``HistoryWorker``, ``ingestors/history.py``); ``realtime=False`` serves history only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.ingestors.exchanges import ExchangeAdapter, GapFill, adapter_for
from ticklake.ingestors.history import HistorySettings, HistoryWorker
from ticklake.ingestors.kafka_sink import INGEST_PRODUCER_CONFIG, KafkaSink, SinkTopics
from ticklake.ingestors.metrics import IngestorMetrics
from ticklake.ingestors.realtime import FeedOptions, Mode, RealtimeIngestor
from ticklake.relay.settings import RelaySettings
from ticklake.schemas import DEAD_LETTERS, FEED_GAPS, FEED_HEARTBEATS, HISTORY_FETCHES, RAW_TRADES
from ticklake.schemas.topics import HISTORY_CANDLES, TopicSpec, ensure_topics
from ticklake.settings import Connections

log = logging.getLogger(__name__)


def default_ingestor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class TopicNames(BaseModel):
    """Topic names (the contract's by default; tests and environments may rename them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trades: str = RAW_TRADES.name
    dead_letters: str = DEAD_LETTERS.name
    heartbeats: str = FEED_HEARTBEATS.name
    gaps: str = FEED_GAPS.name

    def specs(self) -> SinkTopics:
        return SinkTopics.named(
            trades=self.trades,
            dead_letters=self.dead_letters,
            heartbeats=self.heartbeats,
            gaps=self.gaps,
        )


class ExchangeFeed(BaseModel):
    """One exchange to follow: its CCXT id, markets, and an optional URL override."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="binance", description="CCXT exchange id")
    markets: tuple[str, ...] = Field(default=("BTC/USDT",), min_length=1)
    url: str | None = Field(
        default=None, description="base URL of a stand-in (the local exchange); None: the real one"
    )
    gap_fill: GapFill = Field(
        default="history",
        description="history: fill gaps from REST history after the last trade; "
        "recent: only the exchange's most recent trades can be had (gaps may remain)",
    )
    guard_stream: bool = Field(
        default=True, description="keep bad frames from wedging ccxt.pro (see exchanges/)"
    )

    @field_validator("markets")
    @classmethod
    def _symbols(cls, markets: tuple[str, ...]) -> tuple[str, ...]:
        for market in markets:
            if market.count("/") != 1:
                raise ValueError(f"market {market!r} must be a unified symbol BASE/QUOTE")
        if len(set(markets)) != len(markets):
            raise ValueError("markets must be unique")
        return markets


class IngestorSettings(BaseSettings):
    """Everything an ingestor process needs besides the Kafka address."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_INGESTOR__",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    exchanges: tuple[ExchangeFeed, ...] = Field(default=(ExchangeFeed(),), min_length=1)
    ingestor_id: str = Field(default_factory=default_ingestor_id, min_length=1, max_length=200)
    mode: Mode = Field(default="auto", description="auto: websocket if CCXT can, else polling")
    poll_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    stale_after_s: float = Field(default=10.0, gt=0, description="silence that wakes the watchdog")
    page_limit: int = Field(default=1000, ge=1, le=1000)
    since_ms: int | None = Field(default=None, description="backfill from here at start")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no /metrics server")
    max_produce_failures: int = Field(default=1, ge=1, description="stop after this many")
    producer_linger_ms: int = Field(
        default=INGEST_PRODUCER_CONFIG["linger.ms"],
        ge=0,
        le=1000,
        description="how long a trade may wait in the producer to share a request"
        " (docs/ingestors.md, Kafka: fewer requests cost the broker less CPU)",
    )
    create_topics: bool = Field(default=True, description="ensure_topics() at start")
    topics: TopicNames = Field(default_factory=TopicNames)
    realtime: bool = Field(default=True, description="follow the markets live")
    history: HistorySettings = Field(default_factory=HistorySettings)

    def feed_options(self) -> FeedOptions:
        return FeedOptions(
            mode=self.mode,
            poll_interval_s=self.poll_interval_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
            stale_after_s=self.stale_after_s,
            page_limit=self.page_limit,
            since_ms=self.since_ms,
        )


class IngestorService:
    """start() -> run() -> stop(); ``serve()`` does all three with signal handling."""

    def __init__(
        self,
        settings: IngestorSettings,
        connections: Connections | None = None,
        *,
        metrics: IngestorMetrics | None = None,
        relay: RelaySettings | None = None,
    ) -> None:
        self.settings = settings
        self.relay = relay
        self.connections = connections or Connections.load()
        self.metrics = metrics or IngestorMetrics()
        self.sink: KafkaSink | None = None
        self.adapters: list[ExchangeAdapter] = []
        self.history: HistoryWorker | None = None
        self.metrics_port = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False

    def start(self) -> None:
        """Check the exchanges, create the topics (if asked), the sink and the metrics server."""
        self.adapters = [
            adapter_for(
                feed.name, url=feed.url, gap_fill=feed.gap_fill, guard_stream=feed.guard_stream
            )
            for feed in self.settings.exchanges
        ]
        topics = self.settings.topics.specs()
        bootstrap = self.connections.kafka.bootstrap_servers
        history = self.settings.history
        extra: list[TopicSpec[Any]] = [
            HISTORY_FETCHES.renamed(history.fetches_topic),
            HISTORY_CANDLES.renamed(history.candles_topic),
        ]
        if self.settings.create_topics:
            ensure_topics(bootstrap, (*topics.all(), *(extra if history.enabled else [])))
        self.sink = KafkaSink(
            bootstrap,
            topics=topics,
            metrics=self.metrics,
            client_id=f"ticklake-ingestor-{self.settings.ingestor_id}",
            max_failures=self.settings.max_produce_failures,
            extra_config={"linger.ms": self.settings.producer_linger_ms},
        )
        if history.enabled:
            from ticklake.catalog.connection import load_catalog
            from ticklake.catalog.coverage import LakeIndex
            from ticklake.catalog.tables import ensure_coverage_table

            catalog = load_catalog(self.connections)
            ensure_coverage_table(catalog, history.namespace)
            claims = None
            if history.claims:
                from ticklake.ingestors.history_claims import PostgresClaims

                claims = PostgresClaims(self.connections.catalog, lease_s=history.claim_lease_s)
            self.history = HistoryWorker(
                self.adapters,
                self.sink,
                LakeIndex(catalog, history.namespace),
                ingestor_id=self.settings.ingestor_id,
                settings=history,
                relay=self.relay,
                metrics=self.metrics,
                claims=claims,
            )
        self.metrics_port = self.metrics.serve(self.settings.metrics_port)

    async def run(self) -> None:
        """Run every exchange's feeds until :meth:`stop`; then flush. Raises on failure."""
        if self.sink is None:
            self.start()
        assert self.sink is not None
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        options = self.settings.feed_options()
        ingestors = [
            RealtimeIngestor(
                adapter,
                list(feed.markets),
                self.sink,
                ingestor_id=self.settings.ingestor_id,
                options=options,
                metrics=self.metrics,
            )
            for adapter, feed in zip(self.adapters, self.settings.exchanges, strict=True)
            if self.settings.realtime
        ]
        tasks = [i.run(self._stop) for i in ingestors]
        if self.history is not None:
            tasks.append(self.history.run(self._stop))
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe, idempotent)."""
        self._stop_requested = True
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)

    def close(self) -> None:
        """Flush the sink (raises if records were left) and stop the metrics server."""
        try:
            if self.sink is not None:
                self.sink.close()
                self.sink.check()
        finally:
            self.metrics.close()

    def health(self) -> dict[str, Any]:
        """healthy, and the sink's counts (for probes and logs)."""
        sink = self.sink
        return {
            "healthy": sink is not None and sink.healthy,
            "delivered": sink.health.delivered if sink else 0,
            "failed": sink.health.failed if sink else 0,
            "last_error": sink.health.last_error if sink else None,
        }

    def serve(self) -> None:
        """Blocking: start, run until SIGTERM/SIGINT, flush, return (or raise)."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            try:
                await self.run()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

        self.start()
        asyncio.run(main())

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received; stopping and flushing", sig.name)
        self.stop()
