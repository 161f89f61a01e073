"""The wire contract: Avro schemas (``*.avsc``), their models, and the Kafka topics.

Importable in both environments (pydantic only). The Avro codec lives in
``ticklake.schemas.serde`` (fastavro, platform environment); Flink table DDL derived from
the schemas in ``ticklake.schemas.flink``. See ``docs/wire-format.md``.
"""

from ticklake.schemas.models import (
    MODELS,
    Candle,
    DeadLetter,
    DecimalSpec,
    FeedGap,
    FeedHeartbeat,
    HistoryReady,
    HistoryRequest,
    Trade,
    WireModel,
    load_avsc,
    market_key,
)
from ticklake.schemas.topics import (
    CANDLES,
    DEAD_LETTERS,
    FEED_GAPS,
    FEED_HEARTBEATS,
    HISTORY_READY,
    HISTORY_REQUESTS,
    PRODUCER_CONFIG,
    RAW_TRADES,
    TOPICS,
    TopicError,
    TopicSpec,
)

__all__ = [
    "CANDLES",
    "DEAD_LETTERS",
    "FEED_GAPS",
    "FEED_HEARTBEATS",
    "HISTORY_READY",
    "HISTORY_REQUESTS",
    "MODELS",
    "PRODUCER_CONFIG",
    "RAW_TRADES",
    "TOPICS",
    "Candle",
    "DeadLetter",
    "DecimalSpec",
    "FeedGap",
    "FeedHeartbeat",
    "HistoryReady",
    "HistoryRequest",
    "TopicError",
    "TopicSpec",
    "Trade",
    "WireModel",
    "load_avsc",
    "market_key",
]
