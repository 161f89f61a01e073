"""Prometheus metrics of the relay, on their own registry (two relays in one test process).

Channels: ``publish`` (XSUB, publishers in), ``fanout`` (XPUB, subscribers out), ``request``
(ROUTER), ``work`` (XPUB work queue), ``ack`` (subscription acks).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger(__name__)


class RelayMetrics:
    """Counters and gauges of one relay (see docs/relay.md for each one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._server: Any = None
        r = self.registry
        self.messages_in = Counter(
            "ticklake_relay_messages_in",
            "Messages received per channel (fanout: subscriptions; request: client requests; "
            "work: ingestor subscriptions); data messages: see ticklake_relay_frames_in",
            ("channel",),
            registry=r,
        )
        self.messages_out = Counter(
            "ticklake_relay_messages_out",
            "Messages the relay itself sent per channel (reply, work, ack); fan-out "
            "data: see ticklake_relay_frames_out",
            ("channel",),
            registry=r,
        )
        self.frames_in = Counter(
            "ticklake_relay_frames_in",
            "Frames the fan-out proxy received (libzmq proxy statistics): publish = data "
            "(3 frames per message), fanout = subscription messages (1 frame each)",
            ("channel",),
            registry=r,
        )
        self.frames_out = Counter(
            "ticklake_relay_frames_out",
            "Frames the fan-out proxy sent: fanout = data to subscribers (3 frames per "
            "message, counted once, not per subscriber), publish = subscriptions upstream",
            ("channel",),
            registry=r,
        )
        self.bytes_in = Counter(
            "ticklake_relay_bytes_in", "Bytes received per channel", ("channel",), registry=r
        )
        self.bytes_out = Counter(
            "ticklake_relay_bytes_out", "Bytes sent per channel", ("channel",), registry=r
        )
        self.subscriptions = Gauge(
            "ticklake_relay_subscriptions",
            "Active subscriptions (filters x subscribers) per channel",
            ("channel",),
            registry=r,
        )
        self.connections = Gauge(
            "ticklake_relay_connections",
            "Connected peers per channel (socket monitor: accepted minus disconnected)",
            ("channel",),
            registry=r,
        )
        self.rejected = Counter(
            "ticklake_relay_requests_rejected",
            "Client requests answered with an error, by reason",
            ("reason",),
            registry=r,
        )
        self.capture_backlog = Gauge(
            "ticklake_relay_capture_backlog",
            "Subscriptions the proxy copied that the control loop has not read yet",
            registry=r,
        )
        self.hwm = Gauge(
            "ticklake_relay_hwm",
            "Configured high-water mark per channel (messages queued per peer before drops)",
            ("channel",),
            registry=r,
        )
        self.malformed = Counter(
            "ticklake_relay_malformed",
            "Messages that did not have the relay framing, by channel",
            ("channel",),
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Expose ``/metrics`` on ``port`` (0: do not serve); returns the bound port."""
        if port == 0:
            return 0
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        bound = int(server.server_port)
        log.info("relay metrics on http://%s:%d/metrics", addr, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
