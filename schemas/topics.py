"""Kafka topics of the platform: names, keys, partitions, retention, in one place.

One topic per message type (Flink reads a topic as one table with one schema), keyed by
market (``EXCHANGE:BASE/QUOTE``) wherever per-market order matters, so that every record of
a market lands in the same partition, in order. ``docs/wire-format.md`` explains the choices.

Partition counts are chosen once: adding partitions later moves keys to other partitions and
breaks per-market order across the change. Retention: raw data 7 days, aggregates and
audit records 30 days; Iceberg keeps history beyond that.

This module needs only pydantic; :func:`ensure_topics` imports confluent-kafka when called.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ticklake.errors import TickLakeError
from ticklake.schemas.models import (
    Candle,
    DeadLetter,
    FeedGap,
    FeedHeartbeat,
    HistoryReady,
    HistoryRequest,
    Trade,
    WireModel,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=WireModel)

#: Producer settings every writer of these topics must use. librdkafka (confluent-kafka)
#: partitions keys with CRC32 by default, Java clients (Flink's Kafka sink, Kafka Streams)
#: with murmur2: mixed producers would put one market in two partitions. murmur2_random
#: is librdkafka's Java-compatible partitioner.
PRODUCER_CONFIG: dict[str, str] = {"partitioner": "murmur2_random"}

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class TopicError(TickLakeError):
    """A topic could not be created, or exists with a layout the contract does not allow."""


@dataclass(frozen=True)
class TopicSpec(Generic[M]):
    """A Kafka topic of the contract: its name, message model, key, partitions and retention."""

    name: str
    model: type[M]
    #: The key format, as documented (``EXCHANGE:BASE/QUOTE``).
    key_format: str
    #: The key of a record (UTF-8 encoded on the wire).
    key_of: Callable[[M], str]
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"

    def key(self, record: M) -> bytes:
        """The Kafka key bytes of ``record``."""
        return self.key_of(record).encode()

    def config(self) -> dict[str, str]:
        """Topic-level Kafka configuration."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}

    def renamed(self, name: str) -> TopicSpec[M]:
        """The same topic under another name (tests, per-environment prefixes)."""
        return dataclasses.replace(self, name=name)


def _market(record: Trade | Candle | FeedHeartbeat | FeedGap | HistoryRequest) -> str:
    return record.market


def _component(record: DeadLetter) -> str:
    return record.source_component


def _request(record: HistoryReady) -> str:
    return record.request_id


MARKET_KEY = "EXCHANGE:BASE/QUOTE"

RAW_TRADES = TopicSpec(
    "ticklake.trades.raw", Trade, MARKET_KEY, _market, partitions=12, retention_ms=7 * DAY_MS
)
CANDLES = TopicSpec(
    "ticklake.candles", Candle, MARKET_KEY, _market, partitions=12, retention_ms=30 * DAY_MS
)
FEED_HEARTBEATS = TopicSpec(
    "ticklake.feed.heartbeats",
    FeedHeartbeat,
    MARKET_KEY,
    _market,
    partitions=3,
    retention_ms=1 * DAY_MS,
)
FEED_GAPS = TopicSpec(
    "ticklake.feed.gaps", FeedGap, MARKET_KEY, _market, partitions=3, retention_ms=30 * DAY_MS
)
HISTORY_REQUESTS = TopicSpec(
    "ticklake.history.requests",
    HistoryRequest,
    MARKET_KEY,
    _market,
    partitions=3,
    retention_ms=1 * DAY_MS,
)
HISTORY_READY = TopicSpec(
    "ticklake.history.ready",
    HistoryReady,
    "request_id",
    _request,
    partitions=3,
    retention_ms=1 * DAY_MS,
)
DEAD_LETTERS = TopicSpec(
    "ticklake.deadletter",
    DeadLetter,
    "source_component",
    _component,
    partitions=3,
    retention_ms=30 * DAY_MS,
)

#: Every topic of the contract.
TOPICS: tuple[TopicSpec[Any], ...] = (
    RAW_TRADES,
    CANDLES,
    FEED_HEARTBEATS,
    FEED_GAPS,
    HISTORY_REQUESTS,
    HISTORY_READY,
    DEAD_LETTERS,
)


def ensure_topics(
    bootstrap_servers: str,
    specs: Iterable[TopicSpec[Any]] = TOPICS,
    *,
    replication_factor: int = -1,
    timeout_s: float = 30.0,
) -> dict[str, bool]:
    """Create the topics that do not exist yet; returns ``{name: created}``.

    Idempotent: an existing topic is left as it is, but one whose partition count differs
    from the contract raises :class:`TopicError` (its keys would map to other partitions).
    ``replication_factor=-1`` uses the broker's ``default.replication.factor``.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    wanted = list(specs)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=replication_factor,
            config=s.config(),
        )
        for s in wanted
    ]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    created: dict[str, bool] = {}
    for spec in wanted:
        try:
            futures[spec.name].result(timeout=timeout_s)
            created[spec.name] = True
            log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(
                    f"could not create topic {spec.name}: {error.str()}",
                    hint=f"check that Kafka at {bootstrap_servers} is up (`ticklake status`)",
                ) from exc
            created[spec.name] = False
        except TimeoutError as exc:
            raise TopicError(
                f"creating topic {spec.name} timed out after {timeout_s:.0f}s",
                hint=f"check that Kafka at {bootstrap_servers} is up (`ticklake status`)",
            ) from exc
    existing = [s for s in wanted if not created[s.name]]
    if existing:
        metadata = admin.list_topics(timeout=timeout_s).topics
        for spec in existing:
            have = len(metadata[spec.name].partitions) if spec.name in metadata else 0
            if have != spec.partitions:
                raise TopicError(
                    f"topic {spec.name} has {have} partitions, the contract says {spec.partitions}",
                    hint="keys map to partitions by count; change the contract "
                    "(schemas/topics.py) and migrate deliberately, never by accident",
                )
    return created
