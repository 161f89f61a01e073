"""``KafkaSink``: the ingestors' only way out, an idempotent confluent-kafka producer.

Every record is Avro (``schemas.serde.encode``) with the ``ticklake-schema`` header, keyed by
its topic spec (``EXCHANGE:BASE/QUOTE`` for trades). The producer runs with
``enable.idempotence`` (hence ``acks=all`` and ordered retries per partition) and the
contract's ``PRODUCER_CONFIG`` (murmur2 partitioner, the one Flink uses).

Failures are never swallowed:

- a full local queue (``BufferError``) is drained with ``poll()`` and retried with bounded
  exponential backoff and jitter; when the budget is spent, the record counts as failed;
- a delivery error (after librdkafka's own retries) is counted, logged, and remembered; after
  ``max_failures`` of them :meth:`KafkaSink.check` raises :class:`SinkError`, which stops the
  service (its health turns unhealthy before that);
- ``close()`` flushes with a timeout and raises if records were left undelivered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from ticklake.errors import TickLakeError
from ticklake.ingestors.backoff import Backoff
from ticklake.ingestors.metrics import IngestorMetrics
from ticklake.schemas import (
    DEAD_LETTERS,
    FEED_GAPS,
    FEED_HEARTBEATS,
    PRODUCER_CONFIG,
    RAW_TRADES,
    DeadLetter,
    FeedGap,
    FeedHeartbeat,
    TopicSpec,
    Trade,
    WireModel,
)
from ticklake.schemas.serde import encode, schema_header

log = logging.getLogger(__name__)


#: The ingestors' producer settings (idempotent, every replica, 20 ms batches, lz4); the
#: benchmarks that stand in for an ingestor use the same.
#:
#: Why 20 ms and not 5: librdkafka sends one produce request per partition, and an
#: idempotent librdkafka producer holds back a partition's next request while 5 or more of
#: its *messages* are in flight (``RD_KAFKA_IDEMP_MAX_INFLIGHT`` compared with
#: ``rktp_msgs_inflight``; librdkafka PR #4989). Once that partition's linger has expired,
#: its broker thread then polls with a zero timeout until the response comes: it spins.
#: At 10,000 trades/s over 8 partitions, 5 ms meant about 800 requests/s, which cost the
#: broker about 0.32 of the machine's 2 cores, and a spinning producer whenever the broker
#: answered slower than 5 ms. 20 ms: about 230 requests/s, the broker about 0.19 cores,
#: the producer 0.12 instead of 0.19, and the subscriber p99 lower in 3 of 4 paired runs,
#: for about 8 ms more at the median (bench/README.md, session 19).
INGEST_PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "compression.type": "lz4",
    "delivery.timeout.ms": 120_000,
    **PRODUCER_CONFIG,
}


class SinkError(TickLakeError):
    """Kafka did not accept records (delivery errors, queue full, unflushed on close)."""

    exit_code = 10


@dataclass(frozen=True)
class SinkTopics:
    """The four topics an ingestor writes; rename them for tests or per-environment prefixes."""

    trades: TopicSpec[Trade] = RAW_TRADES
    dead_letters: TopicSpec[DeadLetter] = DEAD_LETTERS
    heartbeats: TopicSpec[FeedHeartbeat] = FEED_HEARTBEATS
    gaps: TopicSpec[FeedGap] = FEED_GAPS

    @classmethod
    def named(
        cls,
        *,
        trades: str | None = None,
        dead_letters: str | None = None,
        heartbeats: str | None = None,
        gaps: str | None = None,
    ) -> SinkTopics:
        """The contract's topics, with any of the names replaced."""
        return cls(
            RAW_TRADES.renamed(trades or RAW_TRADES.name),
            DEAD_LETTERS.renamed(dead_letters or DEAD_LETTERS.name),
            FEED_HEARTBEATS.renamed(heartbeats or FEED_HEARTBEATS.name),
            FEED_GAPS.renamed(gaps or FEED_GAPS.name),
        )

    def all(self) -> tuple[TopicSpec[Any], ...]:
        return (self.trades, self.dead_letters, self.heartbeats, self.gaps)


@dataclass
class SinkHealth:
    """What the sink knows about its own state (read by the service's health check)."""

    in_flight: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None
    errors_by_topic: dict[str, int] = field(default_factory=dict)


class KafkaSink:
    """Writes wire records to their topics through one idempotent producer."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: SinkTopics | None = None,
        metrics: IngestorMetrics | None = None,
        client_id: str = "ticklake-ingestor",
        max_failures: int = 1,
        backoff: Backoff | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.topics = topics or SinkTopics()
        self.metrics = metrics or IngestorMetrics()
        self.max_failures = max_failures
        self.backoff = backoff or Backoff(base_s=0.01, cap_s=1.0, max_attempts=10)
        self.health = SinkHealth()
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            **INGEST_PRODUCER_CONFIG,
            **(extra_config or {}),
        }
        self._producer = Producer(config)
        self._closed = False

    # -- producing -------------------------------------------------------------------------

    def send(self, spec: TopicSpec[Any], record: WireModel) -> None:
        """Queue ``record`` on ``spec``'s topic; raises :class:`SinkError` if it cannot."""
        self.check()
        key = spec.key(record)
        value = encode(record)
        headers: list[tuple[str, str | bytes | None]] = [schema_header(type(record))]
        topic = spec.name
        attempt = 0
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=self._callback(topic),
                )
                self.health.in_flight += 1
                break
            except BufferError as exc:
                if self.backoff.exhausted(attempt):
                    self._fail(topic, f"local queue full after {attempt + 1} attempts: {exc}")
                    raise SinkError(
                        f"Kafka producer queue stayed full; record for {topic} not sent",
                        hint="Kafka is slow or unreachable; check `ticklake status`",
                    ) from exc
                # serve delivery callbacks, which frees queue space, then retry
                self._producer.poll(self.backoff.delay(attempt))
                attempt += 1
        self._producer.poll(0)

    def trade(self, record: Trade) -> None:
        self.send(self.topics.trades, record)

    def dead_letter(self, record: DeadLetter) -> None:
        self.send(self.topics.dead_letters, record)

    def heartbeat(self, record: FeedHeartbeat) -> None:
        self.send(self.topics.heartbeats, record)

    def gap(self, record: FeedGap) -> None:
        self.send(self.topics.gaps, record)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks (call regularly; ``send`` does it too)."""
        self._producer.poll(timeout_s)

    # -- delivery --------------------------------------------------------------------------

    def _callback(self, topic: str) -> Callable[[KafkaError | None, Message], None]:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            self._delivered(topic, err, msg)

        return delivered

    def _delivered(self, topic: str, err: KafkaError | None, msg: Message) -> None:
        self.health.in_flight -= 1
        if err is None:
            self.health.delivered += 1
            self.metrics.produced.labels(topic).inc()
            return
        self._fail(topic, f"{err.name()}: {err.str()}")

    def _fail(self, topic: str, why: str) -> None:
        self.health.failed += 1
        self.health.last_error = f"{topic}: {why}"
        self.health.errors_by_topic[topic] = self.health.errors_by_topic.get(topic, 0) + 1
        self.metrics.produce_failures.labels(topic).inc()
        log.error("Kafka did not accept a record for %s: %s", topic, why)

    @property
    def healthy(self) -> bool:
        return self.health.failed == 0

    def check(self) -> None:
        """Raise :class:`SinkError` once ``max_failures`` records failed."""
        if self.health.failed >= self.max_failures:
            raise SinkError(
                f"{self.health.failed} record(s) were not accepted by Kafka "
                f"(last: {self.health.last_error})",
                hint="check Kafka (`ticklake status`) and the topics (`ensure_topics`); "
                "the ingestor stops rather than lose data silently",
            )

    # -- shutdown --------------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until every queued record is delivered or failed; returns what is left."""
        deadline = time.monotonic() + timeout_s
        left = len(self._producer)
        while left and time.monotonic() < deadline:
            left = self._producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        return int(left)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, then raise :class:`SinkError` if anything was left or failed."""
        if self._closed:
            return
        self._closed = True
        left = self.flush(timeout_s)
        self._producer.close()
        if left:
            raise SinkError(
                f"{left} record(s) still queued after {timeout_s:.0f}s flush",
                hint="Kafka is slow or unreachable; those records were not written",
            )
        log.info("sink closed: %d delivered, %d failed", self.health.delivered, self.health.failed)
