"""The wire contract: Avro schemas (``*.avsc``), their models, and the Kafka topics.

Importable in both environments (pydantic only). The Avro codec lives in
``ticklake.schemas.serde`` (fastavro, platform environment); Flink table DDL derived from
the schemas in ``ticklake.schemas.flink``. See ``docs/wire-format.md``.
"""

from ticklake.schemas.alerts import Alert, alert_id
from ticklake.schemas.models import MODELS as _MARKET_MODELS
from ticklake.schemas.models import (
    Candle,
    DeadLetter,
    DecimalSpec,
    FeedGap,
    FeedHeartbeat,
    HistoryFetch,
    HistoryReady,
    HistoryRequest,
    Trade,
    WireModel,
    load_avsc,
    market_key,
)
from ticklake.schemas.risk import (
    RISK_MODELS,
    AccountCommand,
    AccountEvent,
    AccountLimits,
    BrokerPosition,
    Fill,
    OrderProposal,
    RiskDecision,
    RiskViolation,
)
from ticklake.schemas.topics import (
    ALERTS,
    CANDLES,
    DEAD_LETTERS,
    FEED_GAPS,
    FEED_HEARTBEATS,
    HISTORY_FETCHES,
    HISTORY_READY,
    HISTORY_REQUESTS,
    PRODUCER_CONFIG,
    RAW_TRADES,
    RISK_TOPICS,
    TOPICS,
    TopicError,
    TopicSpec,
)

#: Every wire message: the market models (``models.MODELS``), the alert, the risk models.
MODELS: tuple[type[WireModel], ...] = (*_MARKET_MODELS, Alert, *RISK_MODELS)

__all__ = [
    "ALERTS",
    "CANDLES",
    "DEAD_LETTERS",
    "FEED_GAPS",
    "FEED_HEARTBEATS",
    "HISTORY_FETCHES",
    "HISTORY_READY",
    "HISTORY_REQUESTS",
    "MODELS",
    "PRODUCER_CONFIG",
    "RAW_TRADES",
    "RISK_MODELS",
    "RISK_TOPICS",
    "TOPICS",
    "AccountCommand",
    "AccountEvent",
    "AccountLimits",
    "Alert",
    "BrokerPosition",
    "Candle",
    "DeadLetter",
    "DecimalSpec",
    "FeedGap",
    "FeedHeartbeat",
    "Fill",
    "HistoryFetch",
    "HistoryReady",
    "HistoryRequest",
    "OrderProposal",
    "RiskDecision",
    "RiskViolation",
    "TopicError",
    "TopicSpec",
    "Trade",
    "WireModel",
    "alert_id",
    "load_avsc",
    "market_key",
]
