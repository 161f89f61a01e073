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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ticklake.errors import TickLakeError
from ticklake.schemas.alerts import Alert
from ticklake.schemas.models import (
    Candle,
    DeadLetter,
    FeedGap,
    FeedHeartbeat,
    HistoryFetch,
    HistoryReady,
    HistoryRequest,
    Trade,
    WireModel,
)
from ticklake.schemas.risk import (
    AccountCommand,
    AccountEvent,
    AccountLimits,
    BrokerPosition,
    Fill,
    OrderProposal,
    RiskDecision,
    RiskViolation,
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


def _request(record: HistoryReady | HistoryFetch) -> str:
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
HISTORY_FETCHES = TopicSpec(
    "ticklake.history.fetches",
    HistoryFetch,
    "request_id",
    _request,
    partitions=3,
    retention_ms=1 * DAY_MS,
)


def _alert_market(record: Alert) -> str:
    return record.market


#: Pattern matches of the CEP job (jobs/cep.py), exactly-once; the relay bridge publishes
#: them live as ``EXCHANGE:BASE/QUOTE|alert``.
ALERTS = TopicSpec(
    "ticklake.alerts", Alert, MARKET_KEY, _alert_market, partitions=3, retention_ms=30 * DAY_MS
)
DEAD_LETTERS = TopicSpec(
    "ticklake.deadletter",
    DeadLetter,
    "source_component",
    _component,
    partitions=3,
    retention_ms=30 * DAY_MS,
)


def _candle(record: Candle) -> str:
    return f"{record.market}|{record.timeframe}|{record.window_start_us}"


#: Trades the dedup + OHLC job found behind the watermark (Trade layout; in no candle).
LATE_TRADES = TopicSpec(
    "ticklake.trades.late", Trade, MARKET_KEY, _market, partitions=12, retention_ms=30 * DAY_MS
)
#: Live outputs of the dedup + OHLC job: at-least-once, visible at once (no transaction).
#: Deduplicated on-time trades, keyed by market.
LIVE_TRADES = TopicSpec(
    "ticklake.trades.live", Trade, MARKET_KEY, _market, partitions=12, retention_ms=1 * DAY_MS
)
#: Forming (``final = false``, rising ``version``) and final candles, one key per candle: an
#: upsert stream, so compaction keeps the newest record of each candle.
LIVE_CANDLES = TopicSpec(
    "ticklake.candles.live",
    Candle,
    "EXCHANGE:BASE/QUOTE|TIMEFRAME|WINDOW_START_US",
    _candle,
    partitions=12,
    retention_ms=1 * DAY_MS,
    cleanup_policy="compact,delete",
)

RiskRecord = (
    OrderProposal
    | Fill
    | RiskDecision
    | RiskViolation
    | AccountCommand
    | AccountEvent
    | BrokerPosition
    | AccountLimits
)


def _account(record: RiskRecord) -> str:
    return record.account


ACCOUNT_KEY = "account"


def _risk_topic(
    name: str, model: type[M], retention_ms: int = 30 * DAY_MS, cleanup: str = "delete"
) -> TopicSpec[M]:
    return TopicSpec(name, model, ACCOUNT_KEY, _account, 6, retention_ms, cleanup)  # type: ignore[arg-type]


#: Risk topics (jobs/risk.py, docs/risk.md), all keyed by account: an account's records stay
#: in order on one partition, and the job's keyed state is per account.
RISK_PROPOSALS = _risk_topic("ticklake.risk.proposals", OrderProposal, 7 * DAY_MS)
RISK_FILLS = _risk_topic("ticklake.risk.fills", Fill)
RISK_BROKER_POSITIONS = _risk_topic("ticklake.risk.broker_positions", BrokerPosition, 7 * DAY_MS)
RISK_COMMANDS = _risk_topic("ticklake.risk.commands", AccountCommand)
#: The configuration topic: compacted, the newest limits of each account are in force.
RISK_LIMITS = _risk_topic("ticklake.risk.limits", AccountLimits, cleanup="compact")
#: Exactly-once outputs (transactions, visible to read_committed at each checkpoint).
RISK_DECISIONS = _risk_topic("ticklake.risk.decisions", RiskDecision)
RISK_VIOLATIONS = _risk_topic("ticklake.risk.violations", RiskViolation)
RISK_EVENTS = _risk_topic("ticklake.risk.account_events", AccountEvent)
#: At-least-once live copies, visible at once; deduplicate by proposal_id / event_id.
RISK_DECISIONS_LIVE = _risk_topic("ticklake.risk.decisions.live", RiskDecision, DAY_MS)
RISK_EVENTS_LIVE = _risk_topic("ticklake.risk.account_events.live", AccountEvent, DAY_MS)
RISK_TOPICS: tuple[TopicSpec[Any], ...] = (
    RISK_PROPOSALS,
    RISK_FILLS,
    RISK_BROKER_POSITIONS,
    RISK_COMMANDS,
    RISK_LIMITS,
    RISK_DECISIONS,
    RISK_VIOLATIONS,
    RISK_EVENTS,
)

#: Topics that carry a model of another topic again (job outputs: late and live copies).
#: Not in TOPICS, which holds exactly one topic per model (the contract's home topics).
DERIVED_TOPICS: tuple[TopicSpec[Any], ...] = (
    LATE_TRADES,
    LIVE_TRADES,
    LIVE_CANDLES,
    RISK_DECISIONS_LIVE,
    RISK_EVENTS_LIVE,
)

#: Exchange klines fetched for history requests (``Candle`` layout, ``ingestor_id`` = the
#: ingestor): ``ingestors/history.py`` writes it, ``jobs/history_candles.py`` reads it into
#: the Iceberg candles table. Not in ``TOPICS``, which holds one topic per message type.
HISTORY_CANDLES = CANDLES.renamed("ticklake.history.candles")

#: Every topic of the contract.
TOPICS: tuple[TopicSpec[Any], ...] = (
    RAW_TRADES,
    CANDLES,
    FEED_HEARTBEATS,
    FEED_GAPS,
    HISTORY_REQUESTS,
    HISTORY_READY,
    HISTORY_FETCHES,
    DEAD_LETTERS,
    ALERTS,
    *RISK_TOPICS,
)


def _partition_counts(admin: Any, names: list[str], timeout_s: float) -> dict[str, int]:
    """Partitions of each topic in the broker's metadata.

    A topic another process has just created can answer "already exists" before the
    broker's metadata lists its partitions (0 for a moment): such a count is read again,
    every 0.1 s up to ``timeout_s``, until it is not 0. Any other count is final.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        have = {name: len(metadata[name].partitions) if name in metadata else 0 for name in names}
        if all(have.values()) or time.monotonic() >= deadline:
            return have
        time.sleep(0.1)


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
    ``replication_factor=-1`` uses the broker's ``default.replication.factor``. Safe when
    several processes ensure the same topics at once: exactly one creates each, and the
    others wait for the broker's metadata to list its partitions.
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
        have = _partition_counts(admin, [s.name for s in existing], timeout_s)
        for spec in existing:
            if have[spec.name] != spec.partitions:
                raise TopicError(
                    f"topic {spec.name} has {have[spec.name]} partitions, the contract says"
                    f" {spec.partitions}",
                    hint="keys map to partitions by count; change the contract "
                    "(schemas/topics.py) and migrate deliberately, never by accident",
                )
    return created
