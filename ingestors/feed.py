"""Per-market feed state: the cursor, deduplication of what was already sent, heartbeats.

Pure bookkeeping (no I/O), so it is unit-tested on its own. ``realtime.py`` drives it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ticklake.ingestors.exchanges import Cursor, ExchangeAdapter
from ticklake.schemas import FeedHeartbeat, Trade
from ticklake.schemas.models import FeedState

#: How many recent trade ids each market remembers for deduplication.
RECENT_IDS = 20_000


@dataclass
class MarketFeed:
    """What one ingestor knows about one market's feed."""

    exchange: str
    symbol: str
    adapter: ExchangeAdapter
    state: FeedState = "reconnecting"
    cursor: Cursor | None = None
    last_receipt_us: int | None = None
    trades_since_heartbeat: int = 0
    #: ``time.monotonic()`` of the last frame (trade or dead letter) seen for this market.
    last_frame: float = field(default_factory=time.monotonic)
    #: While a gap fill runs, live trades wait here (then go through deduplication).
    filling: bool = False
    pending: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _recent: deque[str] = field(default_factory=deque)
    _recent_set: set[str] = field(default_factory=set)

    # -- deduplication ---------------------------------------------------------------------

    def id_number(self, trade_id: str) -> int | None:
        return self.adapter.id_number(trade_id)

    def already_sent(self, trade: Trade) -> bool:
        """True for a trade this ingestor has sent before (by id, and by order if ids are)."""
        if trade.trade_id in self._recent_set:
            return True
        if self.cursor is None:
            return False
        mine, last = self.id_number(trade.trade_id), self.id_number(self.cursor.trade_id)
        if mine is not None and last is not None:
            return mine <= last
        return trade.exchange_ts_us // 1000 < self.cursor.ts_ms

    def sent(self, trade: Trade) -> None:
        """Record ``trade`` as sent: remember its id and advance the cursor."""
        self._recent.append(trade.trade_id)
        self._recent_set.add(trade.trade_id)
        while len(self._recent) > RECENT_IDS:
            self._recent_set.discard(self._recent.popleft())
        ts_ms = trade.exchange_ts_us // 1000
        if self.cursor is None or self._after_cursor(trade.trade_id, ts_ms):
            self.cursor = Cursor(ts_ms, trade.trade_id)
        self.last_receipt_us = trade.receipt_ts_us
        self.trades_since_heartbeat += 1

    def _after_cursor(self, trade_id: str, ts_ms: int) -> bool:
        assert self.cursor is not None
        mine, last = self.id_number(trade_id), self.id_number(self.cursor.trade_id)
        if mine is not None and last is not None:
            return mine > last
        return ts_ms >= self.cursor.ts_ms

    def jumps(self, trade_id: str | None) -> bool:
        """True when ids are contiguous and ``trade_id`` skips at least one after the cursor."""
        if not self.adapter.contiguous_ids or self.cursor is None or trade_id is None:
            return False
        mine, last = self.id_number(str(trade_id)), self.id_number(self.cursor.trade_id)
        return mine is not None and last is not None and mine > last + 1

    def reaches(self, first: dict[str, Any], page_full: bool) -> bool:
        """Whether a REST page whose oldest new trade is ``first`` connects to the cursor."""
        if self.cursor is None:
            return True
        if self.adapter.contiguous_ids:
            mine = self.id_number(str(first.get("id")))
            last = self.id_number(self.cursor.trade_id)
            if mine is not None and last is not None:
                return mine <= last + 1
        # without contiguous ids: only a full page that starts after the cursor may hide trades
        ts = first.get("timestamp")
        return not (page_full and isinstance(ts, int) and ts > self.cursor.ts_ms)

    def newer_than_cursor(self, trade: dict[str, Any]) -> bool:
        """Whether a unified trade from REST is after the cursor (used by the watchdog)."""
        if self.cursor is None:
            return True
        mine, last = self.id_number(str(trade.get("id"))), self.id_number(self.cursor.trade_id)
        if mine is not None and last is not None:
            return mine > last
        ts = trade.get("timestamp")
        return isinstance(ts, int) and ts > self.cursor.ts_ms

    # -- heartbeats ------------------------------------------------------------------------

    def heartbeat(self, ingestor_id: str, interval_ms: int, now_us: int) -> FeedHeartbeat:
        """The heartbeat for now; resets the trade count."""
        beat = FeedHeartbeat(
            exchange=self.exchange,
            symbol=self.symbol,
            exchange_ts_us=self.cursor.ts_ms * 1000 if self.cursor else None,
            receipt_ts_us=now_us,
            ingestor_id=ingestor_id,
            state=self.state,
            interval_ms=interval_ms,
            trades_since_last=self.trades_since_heartbeat,
            last_trade_id=self.cursor.trade_id if self.cursor else None,
            last_receipt_ts_us=self.last_receipt_us,
        )
        self.trades_since_heartbeat = 0
        return beat
