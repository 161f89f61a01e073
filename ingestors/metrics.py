"""Prometheus metrics of an ingestor process, on their own registry.

Each ``IngestorMetrics`` owns a ``CollectorRegistry`` (two ingestors in one process, as in
the tests, never collide); ``serve(port)`` exposes it on ``/metrics`` (port 0 = off).
Labels: ``exchange`` (upper case) and ``market`` (``BASE/QUOTE``); sink metrics by ``topic``.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.17, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class IngestorMetrics:
    """Counters, gauges and histograms of one ingestor (see docs/ingestors.md)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        market = ("exchange", "market")
        self.trades_in = Counter(
            "ticklake_ingestor_trades_received",
            "Trades received from the exchange (websocket or REST), before deduplication",
            market,
            registry=r,
        )
        self.duplicates = Counter(
            "ticklake_ingestor_duplicates_dropped",
            "Trades dropped because this ingestor already sent them (reconnects, gap fills)",
            market,
            registry=r,
        )
        self.produced = Counter(
            "ticklake_ingestor_records_produced",
            "Records acknowledged by Kafka (delivery callback without error)",
            ("topic",),
            registry=r,
        )
        self.produce_failures = Counter(
            "ticklake_ingestor_produce_failures",
            "Records Kafka did not accept: delivery errors after librdkafka's retries, or "
            "local queue full past the retry budget",
            ("topic",),
            registry=r,
        )
        self.dead_lettered = Counter(
            "ticklake_ingestor_dead_lettered",
            "Bad exchange records sent to the dead-letter topic",
            ("exchange", "reason"),
            registry=r,
        )
        self.gaps = Counter(
            "ticklake_ingestor_feed_gaps",
            "Gaps that could not be filled from REST history (FeedGap events)",
            market,
            registry=r,
        )
        self.gap_fills = Counter(
            "ticklake_ingestor_gap_fill_trades",
            "Trades recovered from REST history after a disconnect, stall or id jump",
            market,
            registry=r,
        )
        self.reconnects = Counter(
            "ticklake_ingestor_reconnects",
            "Websocket reconnects (errors, stale feed detected by the watchdog)",
            ("exchange", "reason"),
            registry=r,
        )
        self.rate_limited = Counter(
            "ticklake_ingestor_rate_limited",
            "REST calls answered with a rate limit (429/418, DDoSProtection)",
            ("exchange",),
            registry=r,
        )
        self.lag = Histogram(
            "ticklake_ingestor_lag_seconds",
            "Receipt time minus exchange time of each trade received live",
            market,
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.last_trade_ts = Gauge(
            "ticklake_ingestor_last_trade_timestamp_seconds",
            "Exchange time of the last trade sent, epoch seconds",
            market,
            registry=r,
        )
        self.feed_up = Gauge(
            "ticklake_ingestor_feed_up",
            "1 while the market's feed is live or polling, 0 while reconnecting or down",
            market,
            registry=r,
        )
        self._server: Any = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``port`` (0 = off); returns the bound port or 0."""
        if port <= 0:
            return 0
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        bound = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
