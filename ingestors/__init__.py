"""CCXT ingestors: realtime trades from exchanges into Kafka. See docs/ingestors.md."""

from ticklake.ingestors.backoff import Backoff
from ticklake.ingestors.exchanges import ADAPTERS, ExchangeAdapter, adapter_for
from ticklake.ingestors.kafka_sink import KafkaSink, SinkError, SinkTopics
from ticklake.ingestors.metrics import IngestorMetrics
from ticklake.ingestors.normalize import RejectedError, TradeNormalizer
from ticklake.ingestors.realtime import FeedOptions, RealtimeIngestor, RestUnavailableError
from ticklake.ingestors.service import (
    ExchangeFeed,
    IngestorService,
    IngestorSettings,
    TopicNames,
)

__all__ = [
    "ADAPTERS",
    "Backoff",
    "ExchangeAdapter",
    "ExchangeFeed",
    "FeedOptions",
    "IngestorMetrics",
    "IngestorService",
    "IngestorSettings",
    "KafkaSink",
    "RealtimeIngestor",
    "RejectedError",
    "RestUnavailableError",
    "SinkError",
    "SinkTopics",
    "TopicNames",
    "TradeNormalizer",
    "adapter_for",
]
