"""What history requests have already put into the lake, and which trades it holds.

Two questions the history chain asks the lake (``docs/history.md``):

- **Which parts of a range are covered?** ``<namespace>.history_coverage`` has one row per
  answered history request: market, data type, timeframe and the half-open range
  ``[start_ts_us, end_ts_us)``. The history notifier writes a row only after a committed
  snapshot of the data table held every row the exchange had in that range, so a covered
  range never needs fetching again. Workers fetch only :func:`subtract` of the request and
  the covered ranges.
- **Which trades of a range are there?** :meth:`LakeIndex.trade_ids`: the distinct trade ids
  of a market in a range, at a snapshot, read partition-pruned (day and market) through
  ``catalog.query.market_scan``. Workers skip ids already present (the live stream, an
  earlier partial request), and the notifier counts them to know when a request is complete.

Platform environment only (pyiceberg, pyarrow), imported lazily.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ticklake.catalog.tables import (
    CANDLES,
    COVERAGE_TABLE,
    DEFAULT_NAMESPACE,
    TRADES,
    ensure_coverage_table,
)

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

log = logging.getLogger(__name__)

#: A half-open range of epoch microseconds.
Interval = tuple[int, int]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_datetime(us: int) -> datetime:
    """Epoch microseconds as an exact aware datetime."""
    return _EPOCH + timedelta(microseconds=us)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals covering the same points (touching ones joined)."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(start: int, end: int, covered: Iterable[Interval]) -> list[Interval]:
    """The parts of ``[start, end)`` that no interval of ``covered`` contains, in order."""
    gaps: list[Interval] = []
    cursor = start
    for c_start, c_end in merge(covered):
        if c_end <= cursor or c_start >= end:
            continue
        if c_start > cursor:
            gaps.append((cursor, c_start))
        cursor = max(cursor, c_end)
        if cursor >= end:
            break
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


class LakeIndex:
    """Coverage and trade ids of one namespace's tables (blocking pyiceberg calls)."""

    def __init__(self, catalog: Catalog, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self._coverage_ready = False

    @property
    def trades_table(self) -> str:
        return f"{self.namespace}.{TRADES}"

    @property
    def candles_table(self) -> str:
        return f"{self.namespace}.{CANDLES}"

    @property
    def coverage_table(self) -> str:
        return f"{self.namespace}.{COVERAGE_TABLE.name}"

    def _coverage(self) -> Table:
        if not self._coverage_ready:
            ensure_coverage_table(self.catalog, self.namespace)
            self._coverage_ready = True
        return self.catalog.load_table(self.coverage_table)

    def covered(
        self,
        exchange: str,
        symbol: str,
        *,
        data_type: str,
        timeframe: str | None,
        start_us: int,
        end_us: int,
    ) -> list[Interval]:
        """Covered intervals overlapping ``[start_us, end_us)`` (merged, in order)."""
        from pyiceberg.expressions import And, EqualTo, GreaterThan, IsNull, LessThan, Reference

        from ticklake.catalog.query import predicate

        timeframe_filter = (
            IsNull(Reference("timeframe"))  # type: ignore[call-arg]
            if timeframe is None
            else predicate(EqualTo, "timeframe", timeframe)
        )
        row_filter = And(
            And(predicate(EqualTo, "exchange", exchange), predicate(EqualTo, "symbol", symbol)),
            And(predicate(EqualTo, "data_type", data_type), timeframe_filter),
            And(
                predicate(LessThan, "start_ts", end_us),
                predicate(GreaterThan, "end_ts_us", start_us),
            ),
        )
        rows = (
            self._coverage()
            .scan(row_filter=row_filter, selected_fields=("start_ts_us", "end_ts_us"))
            .to_arrow()
            .to_pylist()
        )
        return merge((int(r["start_ts_us"]), int(r["end_ts_us"])) for r in rows)

    def record(
        self,
        *,
        exchange: str,
        symbol: str,
        data_type: str,
        timeframe: str | None,
        start_us: int,
        end_us: int,
        row_count: int,
        request_id: str,
        snapshot_id: int | None,
        attempts: int = 5,
    ) -> None:
        """Append one coverage row (retried on concurrent commits)."""
        import pyarrow as pa
        from pyiceberg.exceptions import CommitFailedException

        row = {
            "exchange": exchange,
            "symbol": symbol,
            "data_type": data_type,
            "timeframe": timeframe,
            "start_ts": as_datetime(start_us),
            "start_ts_us": start_us,
            "end_ts_us": end_us,
            "row_count": row_count,
            "request_id": request_id,
            "snapshot_id": snapshot_id,
            "recorded_ts_us": time.time_ns() // 1000,
        }
        for attempt in range(attempts):
            table = self._coverage()
            data = pa.Table.from_pylist([row], schema=table.schema().as_arrow())
            try:
                table.append(data)
                return
            except CommitFailedException:
                if attempt == attempts - 1:
                    raise
                log.info("coverage commit conflicted; retrying (%d)", attempt + 1)
                time.sleep(0.1 * (attempt + 1))

    def trades(self) -> Table | None:
        """The trades table, or None while it does not exist."""
        return self.table(self.trades_table)

    def table(self, identifier: str) -> Table | None:
        """A table of the lake (current metadata), or None while it does not exist."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        try:
            return self.catalog.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def candle_windows(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        start_us: int,
        end_us: int,
        *,
        table: Table | None = None,
        snapshot_id: int | None = None,
    ) -> set[int]:
        """Distinct window starts of a market's ``timeframe`` candles in ``[start_us, end_us)``."""
        from ticklake.catalog.query import Market, market_scan

        table = table if table is not None else self.table(self.candles_table)
        if table is None or end_us <= start_us:
            return set()
        if snapshot_id is None and table.current_snapshot() is None:
            return set()
        scan = market_scan(
            table,
            Market(exchange, symbol),
            as_datetime(start_us),
            as_datetime(end_us),
            timeframe=timeframe,
            columns=("window_start_us",),
            snapshot_id=snapshot_id,
        )
        column = scan.to_arrow().column("window_start_us").to_pylist()
        return {int(v) for v in column if v is not None}

    def trade_ids(
        self,
        exchange: str,
        symbol: str,
        start_us: int,
        end_us: int,
        *,
        table: Table | None = None,
        snapshot_id: int | None = None,
    ) -> set[str]:
        """Distinct trade ids of a market in ``[start_us, end_us)``, at a snapshot."""
        from ticklake.catalog.query import Market, market_scan

        table = table if table is not None else self.trades()
        if table is None or end_us <= start_us:
            return set()
        if snapshot_id is None and table.current_snapshot() is None:
            return set()
        scan = market_scan(
            table,
            Market(exchange, symbol),
            as_datetime(start_us),
            as_datetime(end_us),
            columns=("trade_id",),
            snapshot_id=snapshot_id,
        )
        return {str(v) for v in scan.to_arrow().column("trade_id").to_pylist() if v is not None}
