"""History claims on the real PostgreSQL: of several workers of one exchange, exactly one
serves a request, and a worker that dies holding a claim is taken over after its lease.

The workers run against the local exchange (in-process) and a SQLite lake, with the
recording sink of the unit tests (the claim is under test, not Kafka); the exchange's own
REST request count is the truth of how often a range was fetched.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.unit.test_history_worker import NS, SETTINGS, RecordingSink, request, truth
from ticklake.catalog.coverage import LakeIndex
from ticklake.catalog.tables import ensure_market_tables
from ticklake.exchange import LocalExchange
from ticklake.ingestors.backoff import Backoff
from ticklake.ingestors.exchanges import BinanceAdapter
from ticklake.ingestors.history import HistorySettings, HistoryWorker
from ticklake.ingestors.history_claims import PostgresClaims
from ticklake.ingestors.kafka_sink import KafkaSink
from ticklake.schemas import HistoryFetch
from ticklake.settings import Connections

pytestmark = pytest.mark.timeout(300)

MINUTE_MS = 60_000


@pytest.fixture
def table(conn: Connections) -> Iterator[str]:
    """A claims table of its own per test, dropped afterwards."""
    name = f"it_claims_{uuid.uuid4().hex[:8]}"
    yield name
    book = PostgresClaims(conn.catalog, table=name)
    book._execute(f"DROP TABLE IF EXISTS {name}")
    book.close()


def books(conn: Connections, table: str, n: int, lease_s: float = 30.0) -> list[PostgresClaims]:
    return [PostgresClaims(conn.catalog, table=table, lease_s=lease_s) for _ in range(n)]


def test_of_eight_workers_claiming_at_once_exactly_one_wins(conn: Connections, table: str) -> None:
    claimants = books(conn, table, 8)
    barrier = threading.Barrier(len(claimants))
    results: dict[str, object] = {}

    def claim(i: int) -> None:
        barrier.wait()
        results[f"w{i}"] = claimants[i].claim("req-1", f"w{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    states = {w: getattr(c, "state", None) for w, c in results.items()}
    winners = [w for w, s in states.items() if s == "mine"]
    assert len(winners) == 1, states
    for w, c in results.items():
        if w != winners[0]:
            assert getattr(c, "state", None) == "held" and getattr(c, "holder", None) == winners[0]
            assert 25.0 < getattr(c, "wait_s", 0.0) <= 30.0
    for b in claimants:
        b.close()


def test_an_expired_lease_is_taken_over_and_done_is_final(conn: Connections, table: str) -> None:
    a, b, c = books(conn, table, 3, lease_s=1.0)
    assert a.claim("req-2", "a").state == "mine"
    held = b.claim("req-2", "b")
    assert (held.state, held.holder) == ("held", "a") and 0.0 < held.wait_s <= 1.0
    assert a.renew("req-2", "a")  # renewing pushes the lease on
    time.sleep(1.3)  # a stops renewing: it "died"
    assert b.claim("req-2", "b").state == "mine"
    assert not a.renew("req-2", "a")  # a learns it lost the claim
    a.finish("req-2", "a", done=True)  # and cannot close b's claim
    assert c.claim("req-2", "c").state == "held"
    b.finish("req-2", "b", done=True)
    time.sleep(1.3)  # long after any lease: done stays done
    assert (c.claim("req-2", "c").state, c.claim("req-2", "c").holder) == ("done", "b")
    for x in (a, b, c):
        x.close()


def test_a_released_claim_is_free_at_once(conn: Connections, table: str) -> None:
    a, b = books(conn, table, 2)
    assert a.claim("req-3", "a").state == "mine"
    assert b.claim("req-3", "b").state == "held"
    a.finish("req-3", "a", done=False)  # a gave up (its fetch raised): no lease to wait out
    assert b.claim("req-3", "b").state == "mine"
    a.close()
    b.close()


@pytest.fixture
def lake(tmp_path: Path) -> LakeIndex:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    ensure_market_tables(cat, NS)
    return LakeIndex(cat, NS)


def worker(
    ex: LocalExchange, lake: LakeIndex, book: PostgresClaims, name: str
) -> tuple[HistoryWorker, RecordingSink]:
    sink = RecordingSink()
    w = HistoryWorker(
        [BinanceAdapter(url=ex.url)],
        cast(KafkaSink, sink),
        lake,
        ingestor_id=name,
        settings=HistorySettings(enabled=True, namespace=NS, page_limit=200),
        rest_backoff=Backoff(0.01, 0.05, 4),
        claims=book,
    )
    return w, sink


def test_two_workers_one_request_one_fetch_and_failover(
    conn: Connections, table: str, lake: LakeIndex
) -> None:
    now_ms = time.time_ns() // 1_000_000
    start = (now_ms - 30 * MINUTE_MS) // MINUTE_MS * MINUTE_MS + 4321
    end = start + MINUTE_MS
    expected = truth("BTC/USDT", start, end)
    assert len(expected) > 200  # more than one page

    async def main() -> None:
        async with LocalExchange(SETTINGS) as ex:
            (wa, sa), (wb, sb) = (
                worker(ex, lake, PostgresClaims(conn.catalog, table=table, lease_s=2.0), n)
                for n in ("a", "b")
            )
            try:
                # Both receive the same request at once: one fetches, the other stands by.
                req = request("BTC/USDT", start, end)
                before = ex.rest.requests
                fa, fb = await asyncio.gather(wa.handle(req), wb.handle(req))
                served = [f for f in (fa, fb) if f is not None]
                assert len(served) == 1 and isinstance(served[0], HistoryFetch)
                assert served[0].fetched_rows == len(expected)
                assert len(sa.trades) + len(sb.trades) == len(expected)
                assert sa.other + sb.other == served  # one HistoryFetch reported
                standing_by = wb if fa is not None else wa
                assert list(standing_by.standby) == [req.request_id]
                calls = ex.rest.requests - before
                # Asked again at the end of the lease: served already, dropped, no fetch.
                assert await standing_by.handle(req) is None
                assert standing_by.standby == {} and standing_by.stats.served_elsewhere == 1
                assert ex.rest.requests - before == calls

                # A worker claims a request and dies (never renews, never finishes): the
                # other takes it over once the 2 s lease has run out, and serves it.
                ghost = PostgresClaims(conn.catalog, table=table, lease_s=2.0)
                again = request("BTC/USDT", start, end)
                assert ghost.claim(again.request_id, "ghost").state == "mine"
                t0 = time.monotonic()
                assert await wb.handle(again) is None and again.request_id in wb.standby
                _, due = wb.standby[again.request_id]
                assert 1.0 < due - t0 <= 2.5
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                fetch = await wb.handle(again)
                assert isinstance(fetch, HistoryFetch) and fetch.fetched_rows == len(expected)
                assert wb.standby == {}
                assert ghost.claim(again.request_id, "ghost").state == "done"
                ghost.close()
            finally:
                await wa.close()
                await wb.close()

    asyncio.run(main())
