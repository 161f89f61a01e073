"""Critical risk events (halt, kill switch) from Kafka to the owning user container, acked.

The risk job (``jobs/risk.py``) runs in Flink, which cannot hold ZeroMQ sockets; it writes
every :class:`~ticklake.schemas.risk.AccountEvent` to Kafka. This forwarder reads the live
account-events topic and hands each critical one to an :class:`EventSender` (DEALER ->
ROUTER with ``EventAck``, retries with backoff, unacknowledged events persisted on stop):

- the endpoint is the account's own (``endpoints``) or the gateway's (``default_endpoint``),
  which routes it on to the account's user container;
- the critical event's id is the AccountEvent's ``event_id``, derived from the cause, so a
  copy (the live topic is at-least-once, a replay, a forwarder restart) is acknowledged by
  the receiver without being delivered twice;
- Kafka offsets are committed only after every event of the batch was acknowledged: a
  forwarder that dies loses nothing, it sends again (and the receiver deduplicates).

    forwarder = RiskEventForwarder(bootstrap, default_endpoint="tcp://gateway:5570",
                                   store_dir=Path("/var/lib/ticklake/risk-forwarder"))
    forwarder.run(stop_event)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ticklake.relay.events import EventSender
from ticklake.relay.sockets import Context
from ticklake.schemas.risk import AccountEvent
from ticklake.schemas.serde import DecodeError, decode
from ticklake.schemas.topics import RISK_EVENTS_LIVE

log = logging.getLogger(__name__)


class RiskEventForwarder:
    """Kafka account events -> acknowledged critical events, one sender per endpoint."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        default_endpoint: str,
        store_dir: Path,
        endpoints: Mapping[str, str] | None = None,
        topic: str = RISK_EVENTS_LIVE.name,
        group_id: str = "ticklake-risk-forwarder",
        source_id: str = "ticklake-risk",
        ack_timeout: float = 0.5,
        context: Context | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.default_endpoint = default_endpoint
        self.endpoints = dict(endpoints or {})
        self.store_dir = store_dir
        self.topic = topic
        self.group_id = group_id
        self.source_id = source_id
        self.ack_timeout = ack_timeout
        self.context = context
        self.forwarded = 0
        self.skipped = 0
        self.malformed = 0
        self._senders: dict[str, EventSender] = {}

    def endpoint_of(self, account: str) -> str:
        return self.endpoints.get(account, self.default_endpoint)

    def _sender(self, endpoint: str) -> EventSender:
        sender = self._senders.get(endpoint)
        if sender is None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            name = "".join(c if c.isalnum() else "_" for c in endpoint)
            sender = EventSender(
                endpoint,
                self.store_dir / f"{name}.avro",
                source_id=self.source_id,
                context=self.context,
                ack_timeout=self.ack_timeout,
            )
            sender.start()
            self._senders[endpoint] = sender
        return sender

    def handle(self, value: bytes) -> str | None:
        """Forward one Kafka record's value; returns the event id sent, None if skipped."""
        try:
            event = decode(AccountEvent, value)
        except DecodeError as exc:
            self.malformed += 1
            log.warning("skipping a malformed account event: %s", exc)
            return None
        if not event.critical:
            self.skipped += 1
            return None
        sender = self._sender(self.endpoint_of(event.account))
        sender.send(f"risk.{event.event}", value, event_id=event.event_id)
        self.forwarded += 1
        return event.event_id

    def flush(self, timeout: float) -> bool:
        """Wait until every sender has all its events acknowledged."""
        return all(s.flush(timeout) for s in self._senders.values())

    def stop(self) -> int:
        """Stop the senders; returns how many unacknowledged events were persisted."""
        persisted = sum(s.stop() for s in self._senders.values())
        self._senders.clear()
        return persisted

    def run(self, stop: threading.Event, *, poll_s: float = 0.1, ack_wait_s: float = 5.0) -> None:
        """Consume until ``stop`` is set; commit a batch once all its events are acked."""
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([self.topic])
        try:
            while not stop.is_set():
                messages: list[Any] = consumer.consume(500, timeout=poll_s)
                if not messages:
                    continue
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("kafka error on %s: %s", self.topic, msg.error())
                        continue
                    self.handle(msg.value())
                while not self.flush(ack_wait_s):
                    if stop.is_set():
                        return  # uncommitted: resent after a restart, deduplicated there
                    log.warning("critical risk events not yet acknowledged; still trying")
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
            self.stop()
