"""The ZeroMQ relay and its client SDK (see docs/relay.md)."""

from ticklake.relay.bridge import KafkaRelayBridge
from ticklake.relay.client import RelayClient
from ticklake.relay.errors import (
    ExchangeUnavailableError,
    HistoryFailedError,
    InvalidRequestError,
    RelayError,
    RelayTimeoutError,
    RelayUnavailableError,
    TimeRangeInFutureError,
    UnknownMarketError,
)
from ticklake.relay.events import EventReceiver, EventSender
from ticklake.relay.history import HistoryResult
from ticklake.relay.history_ready import HistoryNotifier
from ticklake.relay.publisher import RelayPublisher
from ticklake.relay.service import Relay
from ticklake.relay.settings import RelaySettings
from ticklake.relay.subscription import Message, Subscription
from ticklake.relay.work import WorkQueueConsumer

__all__ = [
    "EventReceiver",
    "EventSender",
    "ExchangeUnavailableError",
    "HistoryFailedError",
    "HistoryNotifier",
    "HistoryResult",
    "InvalidRequestError",
    "KafkaRelayBridge",
    "Message",
    "Relay",
    "RelayClient",
    "RelayError",
    "RelayPublisher",
    "RelaySettings",
    "RelayTimeoutError",
    "RelayUnavailableError",
    "Subscription",
    "TimeRangeInFutureError",
    "UnknownMarketError",
    "WorkQueueConsumer",
]
