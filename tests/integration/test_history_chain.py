"""History on request, the real chain: relay -> ingestor -> Kafka -> Flink -> Iceberg -> client.

Local exchange (seeded tape) + relay (in-process) + the ingestor's history worker (CCXT
against the local exchange) + the dedup_ohlc job (embedded MiniCluster, unbounded, 2 s
checkpoints) + the history notifier. The truth is the exchange's own tape over its HTTP
control API, never our code. Unique topics, namespace and consumer groups per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.integration.test_relay import make_settings, running
from ticklake.catalog.connection import load_catalog
from ticklake.catalog.tables import ensure_market_tables
from ticklake.exchange import BackgroundExchange, ExchangeSettings
from ticklake.ingestors.history import HistorySettings
from ticklake.ingestors.service import ExchangeFeed, IngestorService, IngestorSettings, TopicNames
from ticklake.relay import RelayClient, TimeRangeInFutureError, UnknownMarketError
from ticklake.relay.history_ready import HistoryNotifier, NotifierSettings
from ticklake.relay.settings import RelaySettings
from ticklake.schemas import (
    CANDLES,
    DEAD_LETTERS,
    FEED_GAPS,
    FEED_HEARTBEATS,
    HISTORY_FETCHES,
    HISTORY_READY,
    RAW_TRADES,
    HistoryFetch,
    HistoryReady,
)
from ticklake.schemas.serde import decode
from ticklake.schemas.topics import ensure_topics
from ticklake.settings import Connections

pytestmark = pytest.mark.timeout(900)

MINUTE_MS = 60_000


def truth(
    url: str, market_id: str, start_ms: int, end_ms: int
) -> list[tuple[str, Decimal, Decimal, int]]:
    """The exchange's own trades of [start_ms, end_ms) from its control API."""
    query = f"symbol={market_id}&startTime={start_ms}&endTime={end_ms - 1}"
    with urllib.request.urlopen(f"{url}/_control/trades?{query}", timeout=30) as response:
        rows = json.load(response)
    return sorted(
        (str(r["id"]), Decimal(r["price"]), Decimal(r["qty"]), int(r["time"]) * 1000) for r in rows
    )


def exchange_klines(url: str, first_ms: int, last_ms: int) -> list[tuple[Any, ...]]:
    """1m klines of BTC/USDT opening in [first_ms, last_ms], from the exchange's REST API."""
    query = f"symbol=BTCUSDT&interval=1m&startTime={first_ms}&endTime={last_ms}&limit=1000"
    with urllib.request.urlopen(f"{url}/api/v3/klines?{query}", timeout=30) as response:
        rows = json.load(response)
    return sorted(
        (int(k[0]) * 1000, *(Decimal(v) for v in k[1:6]))
        for k in rows
        if first_ms <= int(k[0]) <= last_ms
    )


#: Paths of the local exchange that serve market metadata, not data: a worker lists the
#: markets once, on its first request (with two workers, which one serves first varies).
METADATA_PATHS = {"/api/v3/exchangeInfo", "/api/v3/ping", "/api/v3/time"}


def data_requests(exchange: Any) -> int:
    """REST requests for trades or klines the local exchange has served so far."""
    return sum(n for path, n in exchange.rest.by_path.items() if path not in METADATA_PATHS)


def lake_rows(rows: Any) -> list[tuple[str, Decimal, Decimal, int]]:
    return sorted(
        (r["trade_id"], r["price"], r["amount"], r["exchange_ts_us"]) for r in rows.to_pylist()
    )


class Job:
    """A job on the embedded MiniCluster, as a background process."""

    def __init__(self, module: str, args: list[str], log: Path) -> None:
        from ticklake.stack.components.flink import flink_python, job_environment
        from ticklake.stack.context import StackContext
        from ticklake.stack.settings import StackSettings

        ctx = StackContext(StackSettings())
        env = dict(os.environ) | job_environment(ctx)
        self.log = log
        self.proc = subprocess.Popen(
            [str(flink_python(ctx)), "-m", module, *args],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.log.name} exited:\n" + self.log.read_text()[-4000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


class Worker:
    """The ingestor service with only its history worker, on its own event loop thread."""

    def __init__(self, settings: IngestorSettings, conn: Connections, relay: RelaySettings):
        self.service = IngestorService(settings, conn, relay=relay)
        self.service.start()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.service.history is not None
        assert self.service.history.ready.wait(30), "work-queue subscription not acknowledged"

    def _run(self) -> None:
        try:
            asyncio.run(self.service.run())
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(30)
        if self.error is not None:
            raise self.error


@pytest.fixture
def chain(conn: Connections, tmp_path: Path) -> Iterator[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    names = {
        "raw": f"it.hist.{run}.raw",
        "candles": f"it.hist.{run}.candles",
        "late": f"it.hist.{run}.late",
        "dead": f"it.hist.{run}.dead",
        "heartbeats": f"it.hist.{run}.hb",
        "gaps": f"it.hist.{run}.gaps",
        "fetches": f"it.hist.{run}.fetches",
        "ready": f"it.hist.{run}.ready",
        "klines": f"it.hist.{run}.klines",
    }
    namespace = f"it_hist_{run}"
    ensure_market_tables(load_catalog(conn), namespace)
    ensure_topics(
        conn.kafka.bootstrap_servers,
        [
            RAW_TRADES.renamed(names["raw"]),
            RAW_TRADES.renamed(names["late"]),
            CANDLES.renamed(names["candles"]),
            DEAD_LETTERS.renamed(names["dead"]),
            FEED_HEARTBEATS.renamed(names["heartbeats"]),
            FEED_GAPS.renamed(names["gaps"]),
            HISTORY_FETCHES.renamed(names["fetches"]),
            HISTORY_READY.renamed(names["ready"]),
            CANDLES.renamed(names["klines"]),
        ],
    )
    candles_job = Job(
        "ticklake.jobs.history_candles",
        [
            "--topic", names["klines"], "--namespace", namespace,
            "--group-id", f"it-hist-klines-{run}", "--checkpoint-interval-ms", "2000",
            "--checkpoint-dir", (tmp_path / "cp-klines").as_uri(),
        ],
        tmp_path / "history_candles.log",
    )  # fmt: skip
    job = Job(
        "ticklake.jobs.dedup_ohlc",
        [
            "--raw-topic", names["raw"], "--candles-topic", names["candles"],
            "--late-topic", names["late"], "--namespace", namespace, "--timeframes", "1m",
            "--checkpoint-interval", "2s", "--checkpoint-dir", (tmp_path / "cp").as_uri(),
            "--group-id", f"it-hist-{run}", "--transactional-id-prefix", f"it-hist-{run}",
        ],
        tmp_path / "dedup_ohlc.log",
    )  # fmt: skip
    relay_settings = make_settings()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    stop = threading.Event()
    with BackgroundExchange(ExchangeSettings(seed=23)) as exchange, running(relay_settings):
        settings = IngestorSettings(
            exchanges=(ExchangeFeed(url=exchange.url),),
            ingestor_id=f"it-hist-{run}",
            realtime=False,
            create_topics=False,
            topics=TopicNames(
                trades=names["raw"], dead_letters=names["dead"],
                heartbeats=names["heartbeats"], gaps=names["gaps"],
            ),
            history=HistorySettings(
                enabled=True, namespace=namespace, page_limit=500,
                fetches_topic=names["fetches"], candles_topic=names["klines"],
            ),
        )  # fmt: skip
        worker = Worker(settings, conn, relay_settings)
        # A second worker of the same exchange: both receive every request (PUB/SUB); the
        # claim in PostgreSQL lets exactly one of them serve it (history_claims.py).
        worker_b = Worker(
            settings.model_copy(update={"ingestor_id": f"it-hist-{run}-b"}), conn, relay_settings
        )
        notifier = HistoryNotifier(
            NotifierSettings(
                fetches_topic=names["fetches"],
                ready_topic=names["ready"],
                group_id=f"it-hist-notifier-{run}",
                timeout_s=420,
                create_topics=False,
            ),
            conn,
            relay_settings,
            context=context,
        )
        notifier.start()
        notifier_thread = threading.Thread(target=notifier.run, args=(stop,), daemon=True)
        notifier_thread.start()
        try:
            yield {
                "exchange": exchange,
                "workers": [worker.service.history, worker_b.service.history],
                "notifier": notifier,
                "client": RelayClient(relay_settings, client_id=f"it-{run}", context=context),
                "job": job,
                "candles_job": candles_job,
                "names": names,
                "namespace": namespace,
            }
        finally:
            stop.set()
            notifier_thread.join(30)
            notifier.close()
            worker.stop()
            worker_b.stop()
            job.stop()
            candles_job.stop()
            context.destroy(linger=0)


def check_candles(chain: dict[str, Any], conn: Connections, now_ms: int) -> None:
    """Candles: the exchange's own klines of the closed windows, once, through the
    history_candles job; asked again, nothing is fetched."""
    exchange, client = chain["exchange"], chain["client"]
    ids = {w.ingestor_id for w in chain["workers"]}
    c_start = (now_ms - 40 * MINUTE_MS) // MINUTE_MS * MINUTE_MS + 5_000
    c_end = c_start + 10 * MINUTE_MS
    chain["candles_job"].check()
    candles = client.request_history(
        "BINANCE", "BTC/USDT", "1m", c_start * 1000, c_end * 1000, timeout=480
    )
    klines = exchange_klines(exchange.url, c_start + MINUTE_MS - 5_000, c_end - 1)
    assert len(klines) == 10
    assert candles.ready.status == "complete" and candles.ready.row_count == 10
    got = sorted(
        (r["window_start_us"], r["open"], r["high"], r["low"], r["close"], r["volume"])
        for r in candles.rows.to_pylist()
    )
    assert got == klines
    served_before = data_requests(exchange)
    again_c = client.request_history(
        "BINANCE", "BTC/USDT", "1m", c_start * 1000, c_end * 1000, timeout=120
    )
    assert again_c.rows.num_rows == 10 and data_requests(exchange) == served_before
    c_table = load_catalog(conn).load_table(f"{chain['namespace']}.candles")
    windows = Counter(
        (r["timeframe"], r["window_start_us"])
        for r in c_table.scan(selected_fields=("timeframe", "window_start_us", "ingestor_id"))
        .to_arrow()
        .to_pylist()
        if r["ingestor_id"] in ids
    )
    assert len(windows) == 10 and max(windows.values()) == 1


def test_history_request_end_to_end(chain: dict[str, Any], conn: Connections) -> None:
    exchange, client, workers, job = (
        chain["exchange"],
        chain["client"],
        chain["workers"],
        chain["job"],
    )

    def total(stat: str) -> int:
        """A count over both workers (each request is served by one of them)."""
        return sum(getattr(w.stats, stat) for w in workers)

    now_ms = time.time_ns() // 1_000_000
    start_ms = (now_ms - 15 * MINUTE_MS) // MINUTE_MS * MINUTE_MS + 17_123  # mid-minute
    end_ms = start_ms + 4 * MINUTE_MS
    expected = truth(exchange.url, "BTCUSDT", start_ms, end_ms)
    assert len(expected) > 1000  # several pages of 500

    job.check()
    first = client.request_history(
        "BINANCE", "BTC/USDT", "trades", start_ms * 1000, end_ms * 1000, timeout=480
    )
    job.check()
    assert first.ready.status == "complete"
    assert first.ready.row_count == len(expected)
    assert lake_rows(first.rows) == expected
    assert total("fetched") == len(expected) and total("produced") == len(expected)

    # Again: same rows, nothing fetched from the exchange, nothing produced, no duplicates.
    served_before = data_requests(exchange)
    again = client.request_history(
        "BINANCE", "BTC/USDT", "trades", start_ms * 1000, end_ms * 1000, timeout=120
    )
    assert again.ready.status == "complete"
    assert lake_rows(again.rows) == expected
    assert data_requests(exchange) == served_before
    assert total("fetched") == len(expected) and total("produced") == len(expected)

    # An overlapping range: only its uncovered part is fetched.
    later_end = end_ms + MINUTE_MS
    overlap = client.request_history(
        "BINANCE", "BTC/USDT", "trades", (end_ms - MINUTE_MS) * 1000, later_end * 1000, timeout=480
    )
    tail = truth(exchange.url, "BTCUSDT", end_ms, later_end)
    assert lake_rows(overlap.rows) == truth(exchange.url, "BTCUSDT", end_ms - MINUTE_MS, later_end)
    assert total("fetched") == len(expected) + len(tail)

    table = load_catalog(conn).load_table(f"{chain['namespace']}.trades")
    ids = Counter(
        table.scan(selected_fields=("trade_id",)).to_arrow().column("trade_id").to_pylist()
    )
    assert ids and max(ids.values()) == 1, "duplicates in Iceberg"
    assert len(ids) == len(expected) + len(tail)

    # Typed failures, from the worker through the notifier.
    with pytest.raises(UnknownMarketError, match="NOPE/USDT"):
        client.request_history("BINANCE", "NOPE/USDT", "trades", start_ms * 1000,
                               end_ms * 1000, timeout=60)  # fmt: skip
    now_us = time.time_ns() // 1000
    with pytest.raises(TimeRangeInFutureError):
        client.request_history("BINANCE", "BTC/USDT", "trades", now_us - 200_000,
                               now_us + 3_600_000_000, timeout=60)  # fmt: skip

    check_candles(chain, conn, now_ms)

    # Every answer also went to the Kafka topic.
    from tests.integration.test_dedup_ohlc import consume_to_end

    records = consume_to_end(conn, chain["names"]["ready"], "read_committed")
    statuses = Counter(decode(HistoryReady, m.value()).status for m in records)
    assert statuses == {"complete": 5, "failed": 2}
    # Two workers received each of the 7 requests; exactly one served each (one fetch
    # report per request), and the other stood by or found it served.
    fetches = Counter(
        decode(HistoryFetch, m.value()).request_id
        for m in consume_to_end(conn, chain["names"]["fetches"], "read_committed")
    )
    assert len(fetches) == 7 and set(fetches.values()) == {1}, fetches
    assert total("requests") == 7
    assert total("deferred") + total("served_elsewhere") >= 7
    assert HISTORY_READY.name != chain["names"]["ready"]
