"""Errors of the relay and its SDK; every one says what failed and what to do."""

from __future__ import annotations

from ticklake.errors import TickLakeError


class RelayError(TickLakeError):
    """Base of the relay's and the SDK's errors."""

    exit_code = 10


class RelayTimeoutError(RelayError):
    """The relay, or the answer to a request, did not arrive in time."""


class RelayUnavailableError(RelayTimeoutError):
    """The relay did not confirm a subscription in time: it is down or unreachable."""


class InvalidRequestError(RelayError):
    """A request is malformed (bad symbol, timeframe, or range)."""


class TimeRangeInFutureError(InvalidRequestError):
    """A history request starts in the future."""


class UnknownMarketError(RelayError):
    """The exchange does not list the requested market."""


class ExchangeUnavailableError(RelayError):
    """No ingestor of that exchange is taking work, or the exchange itself failed."""


class HistoryFailedError(RelayError):
    """The history request was accepted but its data could not be fetched or stored."""


class FramingError(RelayError):
    """A ZMQ message does not have the relay's framing (topic, header, payload)."""


class EventStoreError(RelayError):
    """Undelivered critical events could not be persisted or read back."""
