"""The history notifier: ``HistoryReady`` once the lake really holds a request's rows.

    ticklake history-notifier        # or HistoryNotifier(...).serve()

It reads the ingestors' ``HistoryFetch`` reports (``ticklake.history.fetches``) and, per
request:

- ``failed`` -> a failed ``HistoryReady`` at once, the message keeps its code
  (``UNKNOWN_MARKET: ...``), which the SDK turns into a typed error;
- ``fetched`` -> polls the Iceberg table the report names: each time its current snapshot
  changes, it counts the distinct trade ids (candles: window starts of the timeframe) of
  ``[start, served_end)`` in that committed snapshot (partition-pruned scan). When the
  count reaches ``expected_rows`` it records the range as covered
  (``<namespace>.history_coverage``: never fetched again) and publishes ``HistoryReady``
  (``complete``, or ``partial`` when the worker served less than asked) with the snapshot
  id, on the relay topic ``HISTORY_READY:{request_id}`` and the Kafka topic
  ``ticklake.history.ready``;
- not there within ``timeout_s`` -> a failed ``HistoryReady`` with ``TIMEOUT: ...``.

Counting by range, not by ``request_id``, is deliberate: a trade the live stream (or an
earlier request) delivered first is kept by the dedup job under *its* request id (or none),
and it still answers this request. Offsets are committed once a request is answered; after
a restart, unanswered requests are checked again (a second ``HistoryReady`` is harmless: the
client takes the first one).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ticklake.errors import TickLakeError
from ticklake.relay.publisher import RelayPublisher
from ticklake.relay.settings import RelaySettings
from ticklake.relay.sockets import Context
from ticklake.relay.topics import history_ready_topic
from ticklake.schemas import HISTORY_FETCHES, HISTORY_READY, HistoryFetch, HistoryReady
from ticklake.schemas.serde import DecodeError, decode
from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from ticklake.catalog.coverage import LakeIndex

log = logging.getLogger(__name__)

TIMEOUT = "TIMEOUT"


class NotifierSettings(BaseSettings):
    """Settings of the history notifier (env prefix ``TICKLAKE_HISTORY_NOTIFIER__``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_HISTORY_NOTIFIER__",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    fetches_topic: str = HISTORY_FETCHES.name
    ready_topic: str = HISTORY_READY.name
    group_id: str = "ticklake-history-notifier"
    poll_interval_s: float = Field(default=0.5, gt=0, description="Iceberg snapshot polling")
    timeout_s: float = Field(default=600.0, gt=0, description="fail requests not committed by then")
    create_topics: bool = True


@dataclass
class Pending:
    fetch: HistoryFetch
    partition: int
    offset: int
    deadline: float
    checked_snapshot: int | None = -1


class HistoryNotifier:
    """start() -> run(stop) -> close(); ``serve()`` adds signal handling."""

    def __init__(
        self,
        settings: NotifierSettings | None = None,
        connections: Connections | None = None,
        relay: RelaySettings | None = None,
        *,
        catalog: Catalog | None = None,
        context: Context | None = None,
    ) -> None:
        self.settings = settings or NotifierSettings()
        self.connections = connections or Connections.load()
        self.relay = relay or RelaySettings()
        self.context = context
        self._catalog = catalog
        self.pending: dict[str, Pending] = {}
        self.answered: list[HistoryReady] = []
        self._lakes: dict[str, LakeIndex] = {}
        self._consumer: Any = None
        self._producer: Any = None
        self._publisher: RelayPublisher | None = None

    def start(self, timeout: float = 30.0) -> None:
        from confluent_kafka import Consumer, Producer

        from ticklake.schemas import PRODUCER_CONFIG
        from ticklake.schemas.topics import ensure_topics

        bootstrap = self.connections.kafka.bootstrap_servers
        if self.settings.create_topics:
            ensure_topics(
                bootstrap,
                [
                    HISTORY_FETCHES.renamed(self.settings.fetches_topic),
                    HISTORY_READY.renamed(self.settings.ready_topic),
                ],
            )
        if self._catalog is None:
            from ticklake.catalog.connection import load_catalog

            self._catalog = load_catalog(self.connections)
        self._publisher = RelayPublisher(self.relay, context=self.context)
        self._publisher.wait_ready(timeout)
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, **PRODUCER_CONFIG}
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": self.settings.group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.subscribe([self.settings.fetches_topic])

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: read reports, poll the lake, answer."""
        if self._consumer is None:
            self.start()
        next_check = 0.0
        while not stop.is_set():
            message = self._consumer.poll(min(0.2, self.settings.poll_interval_s))
            if message is not None:
                self._on_message(message)
            if time.monotonic() >= next_check:
                self.check_pending()
                next_check = time.monotonic() + self.settings.poll_interval_s
            self._producer.poll(0)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            left = self._producer.flush(10)
            if left:
                log.error("%d HistoryReady record(s) not delivered to Kafka", left)
            self._producer = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def serve(self) -> None:
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("%s received; stopping", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        self.start()
        try:
            self.run(stop)
        finally:
            self.close()

    # -- reports ---------------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        if message.error():
            log.warning("fetches topic: %s", message.error())
            return
        try:
            fetch = decode(HistoryFetch, message.value())
        except DecodeError as exc:
            log.warning("undecodable HistoryFetch at offset %d: %s", message.offset(), exc)
            self._done(message.partition(), message.offset())
            return
        if fetch.status == "failed":
            self._answer(fetch, "failed", 0, None, fetch.message or "failed")
            self._done(message.partition(), message.offset())
            return
        age_s = max(0.0, (time.time_ns() // 1000 - fetch.fetched_ts_us) / 1e6)
        self.pending[fetch.request_id] = Pending(
            fetch,
            message.partition(),
            message.offset(),
            deadline=time.monotonic() + self.settings.timeout_s - age_s,
        )
        self.check_pending(fetch.request_id)

    def check_pending(self, only: str | None = None) -> None:
        """Answer every pending request whose rows a committed snapshot now holds."""
        for request_id in [only] if only else list(self.pending):
            pending = self.pending.get(request_id)
            if pending is None:
                continue
            try:
                done = self._check(pending)
            except Exception as exc:  # catalog or object store down: retry until the deadline
                log.warning("history %s: cannot read the lake yet: %s", request_id, exc)
                done = False
            if not done and time.monotonic() > pending.deadline:
                fetch = pending.fetch
                self._answer(
                    fetch, "failed", 0, None,
                    f"{TIMEOUT}: {fetch.expected_rows} rows not committed to "
                    f"{fetch.iceberg_table} within {self.settings.timeout_s:.0f}s "
                    "(is the dedup_ohlc job running?)",
                )  # fmt: skip
                done = True
            if done:
                del self.pending[request_id]
                self._done(pending.partition, pending.offset)

    def _lake(self, table: str) -> LakeIndex:
        from ticklake.catalog.coverage import LakeIndex

        namespace = table.rsplit(".", 1)[0]
        lake = self._lakes.get(namespace)
        if lake is None:
            assert self._catalog is not None
            lake = self._lakes[namespace] = LakeIndex(self._catalog, namespace)
        return lake

    def _check(self, pending: Pending) -> bool:
        fetch = pending.fetch
        if fetch.iceberg_table is None:
            self._answer(fetch, "failed", 0, None, "INVALID_REQUEST: no table named")
            return True
        lake = self._lake(fetch.iceberg_table)
        table = lake.table(fetch.iceberg_table)
        snapshot = table.current_snapshot() if table is not None else None
        snapshot_id = snapshot.snapshot_id if snapshot is not None else None
        if fetch.expected_rows and (snapshot_id is None or snapshot_id == pending.checked_snapshot):
            return False
        pending.checked_snapshot = snapshot_id
        ids: set[str] | set[int]
        if fetch.data_type == "candles" and fetch.timeframe is not None:
            ids = lake.candle_windows(
                fetch.exchange, fetch.symbol, fetch.timeframe, fetch.start_ts_us,
                fetch.served_end_ts_us, table=table, snapshot_id=snapshot_id,
            )  # fmt: skip
        else:
            ids = lake.trade_ids(
                fetch.exchange, fetch.symbol, fetch.start_ts_us, fetch.served_end_ts_us,
                table=table, snapshot_id=snapshot_id,
            )  # fmt: skip
        if len(ids) < fetch.expected_rows:
            log.debug("history %s: %d of %d rows", fetch.request_id, len(ids), fetch.expected_rows)
            return False
        lake.record(
            exchange=fetch.exchange,
            symbol=fetch.symbol,
            data_type=fetch.data_type,
            timeframe=fetch.timeframe,
            start_us=fetch.start_ts_us,
            end_us=fetch.served_end_ts_us,
            row_count=len(ids),
            request_id=fetch.request_id,
            snapshot_id=snapshot_id,
        )
        partial = fetch.served_end_ts_us < fetch.end_ts_us
        self._answer(
            fetch, "partial" if partial else "complete", len(ids), snapshot_id, fetch.message
        )
        return True

    def _answer(
        self,
        fetch: HistoryFetch,
        status: str,
        rows: int,
        snapshot_id: int | None,
        message: str | None,
    ) -> None:
        ready = HistoryReady(
            **fetch.model_dump(
                include={
                    "request_id", "client_id", "exchange", "symbol", "data_type",
                    "timeframe", "start_ts_us", "end_ts_us",
                }
            ),
            status=status,  # type: ignore[arg-type]
            row_count=rows,
            iceberg_table=fetch.iceberg_table if status != "failed" else None,
            snapshot_id=snapshot_id,
            message=message,
            ready_ts_us=time.time_ns() // 1000,
        )  # fmt: skip
        assert self._publisher is not None and self._producer is not None
        self._publisher.publish(history_ready_topic(fetch.request_id), ready)
        spec = HISTORY_READY.renamed(self.settings.ready_topic)
        from ticklake.schemas.serde import encode, schema_header

        self._producer.produce(
            spec.name,
            value=encode(ready),
            key=spec.key(ready),
            headers=[schema_header(HistoryReady)],
        )
        self.answered.append(ready)
        log.info(
            "history %s %s: %s, %d rows, snapshot %s",
            fetch.request_id, fetch.market, status, rows, snapshot_id,
        )  # fmt: skip

    def _done(self, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.store_offsets(
            offsets=[TopicPartition(self.settings.fetches_topic, partition, offset + 1)]
        )


@click.command("history-notifier", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--timeout", type=float, default=None, help="seconds before a request fails")
def notifier_command(timeout: float | None) -> None:
    """Answer history requests with HistoryReady once Iceberg holds their rows.

    Reads the ingestors' reports (ticklake.history.fetches), polls the committed Iceberg
    snapshots, publishes HistoryReady on the relay (HISTORY_READY:{request_id}) and on
    Kafka (ticklake.history.ready). Settings: TICKLAKE_HISTORY_NOTIFIER__*, the relay's
    TICKLAKE_RELAY__*, the stack's connections. docs/history.md.
    """
    import sys

    overrides = {"timeout_s": timeout} if timeout is not None else {}
    try:
        HistoryNotifier(NotifierSettings(**overrides)).serve()  # type: ignore[arg-type]
    except TickLakeError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
