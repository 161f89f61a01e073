"""Relay topics and framing: what travels in each ZMQ frame.

A topic is ``{EXCHANGE}:{BASE}/{QUOTE}|{data_type}`` (``BINANCE:BTC/USDT|tick``,
``BINANCE:BTC/USDT|ohlc:1m``) or a notification topic (``RESPONSE:{client_id}``,
``HISTORY_READY:{request_id}``). Every message is three frames::

    [topic + TERMINATOR, header (flags, epoch, seq), payload (raw Avro, schemas/ contract)]

ZMQ matches subscriptions as byte prefixes of frame 1. The terminator (``\\x00``, which no
topic contains) makes a subscription to one topic exact: ``...BTC/USDT|tick\\x00`` is not a
prefix of ``...BTC/USDTX|tick\\x00``. A market filter (all data types of one market) ends in
``|`` and a work-queue filter (one exchange) in ``:``, which are delimiters just as exact.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ticklake.relay.errors import FramingError

TERMINATOR = b"\x00"
TICK = "tick"
HISTORY = "history"
OHLC_PREFIX = "ohlc:"
RESPONSE_PREFIX = "RESPONSE:"
HISTORY_READY_PREFIX = "HISTORY_READY:"

#: Header flags. ACK: the relay confirms a subscription (frame 1 is the filter itself).
#: REPLAY: a last-value-cache copy of a message sent before (same epoch and seq).
FLAG_ACK = 0x01
FLAG_REPLAY = 0x02

_HEADER = struct.Struct(">BQQ")
HEADER_SIZE = _HEADER.size
#: The packer of frame 2, for hot paths that skip the :class:`Header` object.
HEADER_STRUCT = _HEADER

_EXCHANGE = re.compile(r"^[A-Z0-9][A-Z0-9_-]*$")
_SYMBOL = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")
_TIMEFRAME = re.compile(r"^[1-9][0-9]*[smhdwM]$")


@dataclass(frozen=True)
class Header:
    """Frame 2: flags, the sender's epoch (random per process start) and per-topic sequence.

    A subscriber counts a gap when ``seq`` jumps within one epoch (messages the relay dropped
    for it at the high-water mark) and discards a ``seq`` it has already seen (a replay).
    """

    flags: int
    epoch: int
    seq: int

    def pack(self) -> bytes:
        return _HEADER.pack(self.flags, self.epoch, self.seq)

    @classmethod
    def unpack(cls, frame: bytes) -> Header:
        if len(frame) != HEADER_SIZE:
            raise FramingError(f"header frame has {len(frame)} bytes, expected {HEADER_SIZE}")
        flags, epoch, seq = _HEADER.unpack(frame)
        return cls(flags, epoch, seq)

    @property
    def is_ack(self) -> bool:
        return bool(self.flags & FLAG_ACK)

    @property
    def is_replay(self) -> bool:
        return bool(self.flags & FLAG_REPLAY)


def market(exchange: str, symbol: str) -> str:
    """``BINANCE:BTC/USDT``; raises ValueError on a malformed exchange or symbol."""
    if not _EXCHANGE.match(exchange):
        raise ValueError(f"exchange {exchange!r} must be upper case, e.g. BINANCE")
    if not _SYMBOL.match(symbol):
        raise ValueError(f"symbol {symbol!r} must be BASE/QUOTE, e.g. BTC/USDT")
    return f"{exchange}:{symbol}"


def parse_market(text: str) -> tuple[str, str]:
    """``BINANCE:BTC/USDT`` -> (``BINANCE``, ``BTC/USDT``); ValueError when malformed."""
    exchange, sep, symbol = text.partition(":")
    if not sep:
        raise ValueError(f"market {text!r} must be EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")
    market(exchange, symbol)
    return exchange, symbol


def ohlc(timeframe: str) -> str:
    if not _TIMEFRAME.match(timeframe):
        raise ValueError(f"timeframe {timeframe!r} must look like 1m, 5m, 1h, 1d")
    return f"{OHLC_PREFIX}{timeframe}"


def topic(market_: str, data_type: str) -> str:
    """``BINANCE:BTC/USDT|tick``."""
    parse_market(market_)
    if not data_type or "|" in data_type or "\x00" in data_type:
        raise ValueError(f"data type {data_type!r} must be non-empty, without '|'")
    return f"{market_}|{data_type}"


def response_topic(client_id: str) -> str:
    return f"{RESPONSE_PREFIX}{client_id}"


def history_ready_topic(request_id: str) -> str:
    return f"{HISTORY_READY_PREFIX}{request_id}"


def work_topic(exchange: str, symbol: str) -> str:
    """Work-queue topic of a history request: ``BINANCE:BTC/USDT|history``."""
    return topic(market(exchange, symbol), HISTORY)


def exact_filter(topic_: str) -> bytes:
    """The subscription that matches exactly one topic."""
    return topic_.encode() + TERMINATOR


def market_filter(market_: str) -> bytes:
    """The subscription to every data type of one market (``BINANCE:BTC/USDT|``)."""
    parse_market(market_)
    return f"{market_}|".encode()


def exchange_filter(exchange: str) -> bytes:
    """A work-queue subscription: every work item of one exchange (``BINANCE:``)."""
    if not _EXCHANGE.match(exchange):
        raise ValueError(f"exchange {exchange!r} must be upper case, e.g. BINANCE")
    return f"{exchange}:".encode()


def topic_frame(topic_: str) -> bytes:
    return exact_filter(topic_)


def topic_of(frame: bytes) -> str:
    """Frame 1 of a data message back to its topic."""
    if not frame.endswith(TERMINATOR):
        raise FramingError(f"topic frame {frame[:80]!r} lacks the terminator")
    return frame[:-1].decode()


def data_type_of(topic_: str) -> str:
    """``tick``, ``ohlc:1m``, ``history`` for market topics; the prefix for notifications."""
    if topic_.startswith((RESPONSE_PREFIX, HISTORY_READY_PREFIX)):
        return topic_.split(":", 1)[0]
    return topic_.rpartition("|")[2]
