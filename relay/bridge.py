"""The Kafka -> relay bridge: live topics of the Flink jobs into the relay's XSUB side.

    Flink job --Kafka (at-least-once, no transaction)--> KafkaRelayBridge --XPUB--> relay XSUB
        --> relay XPUB --> subscribers

The Flink job environment has no pyzmq, and a ZMQ socket inside a Flink sink would be one
socket per subtask with no back-pressure, no replay and no restart story; Kafka is already
the job's output, so the bridge is one small consumer process (``ticklake relay bridge``).

Each Kafka topic maps to a relay data type (``--topic KAFKA_TOPIC=DATA_TYPE``). The relay
topic is ``{market}|{data type}``, where ``market`` is the first ``|``-separated part of the
Kafka key and the data type may name other key parts as ``{1}``, ``{2}``:

    ticklake.trades.live=tick          key BINANCE:BTC/USDT           -> BINANCE:BTC/USDT|tick
    ticklake.candles.live=ohlc:{1}     key BINANCE:BTC/USDT|1m|<us>   -> BINANCE:BTC/USDT|ohlc:1m
    ticklake.alerts=alert              key BINANCE:BTC/USDT           -> BINANCE:BTC/USDT|alert

The value bytes are forwarded as they are (the Avro record, the relay's payload format):
nothing is decoded or re-encoded. A record whose key cannot be routed goes to the dead-letter
topic with the reason; a tombstone (no value) is skipped. Nothing a record carries stops the
bridge.

Offsets: the bridge starts at the end of each partition and commits nothing. It feeds a
fire-and-forget fan-out, where a record minutes old is no longer live; after a restart it
goes on from "now", and the relay's last-value cache is refilled by the next update of each
topic. The consumer group only spreads partitions over several bridges.
"""

from __future__ import annotations

import json
import logging
import signal
import string
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticklake.errors import TickLakeError
from ticklake.relay import topics
from ticklake.relay.publisher import RelayPublisher
from ticklake.relay.settings import RelaySettings
from ticklake.schemas.kafka_poll import consume_ready
from ticklake.schemas.models import DeadLetter
from ticklake.schemas.serde import encode, schema_header
from ticklake.schemas.topics import DEAD_LETTERS, LIVE_CANDLES, LIVE_TRADES, PRODUCER_CONFIG

log = logging.getLogger(__name__)

COMPONENT = "relay:bridge"
_TOPIC_CACHE = 100_000
DEFAULT_ROUTES = {LIVE_TRADES.name: topics.TICK, LIVE_CANDLES.name: "ohlc:{1}"}


class BridgeError(TickLakeError):
    """The bridge cannot run as configured (bad route, Kafka or relay unreachable)."""


class RouteError(ValueError):
    """A record's key does not give a relay topic (the record is dead-lettered)."""


@dataclass(frozen=True)
class Route:
    """Kafka topic -> relay data type template (``tick``, ``ohlc:{1}``, ``alert``)."""

    kafka_topic: str
    data_type: str

    def __post_init__(self) -> None:
        fields = [f for _, f, _, _ in string.Formatter().parse(self.data_type) if f is not None]
        if not self.kafka_topic or not self.data_type:
            raise ValueError("a route needs a Kafka topic and a data type")
        if any(not f.isdigit() or f == "0" for f in fields):
            raise ValueError(
                f"data type {self.data_type!r}: placeholders are key parts {{1}}, {{2}}, ..."
            )
        if "|" in self.data_type:
            raise ValueError(f"data type {self.data_type!r} must not contain '|'")

    @classmethod
    def parse(cls, text: str) -> Route:
        """``KAFKA_TOPIC=DATA_TYPE``."""
        kafka_topic, sep, data_type = text.partition("=")
        if not sep:
            raise ValueError(f"route {text!r} must be KAFKA_TOPIC=DATA_TYPE, e.g. t=tick")
        return cls(kafka_topic.strip(), data_type.strip())

    def relay_topic(self, key: bytes | None) -> str:
        """The relay topic of a record with this Kafka key; RouteError when it has none."""
        if not key:
            raise RouteError("record has no key")
        try:
            text = key.decode()
        except UnicodeDecodeError as exc:
            raise RouteError(f"key is not UTF-8: {exc}") from exc
        parts = text.split("|")
        try:
            data_type = self.data_type.format(*parts)
        except IndexError as exc:
            raise RouteError(
                f"key {text[:200]!r} has {len(parts)} '|'-separated parts; "
                f"data type {self.data_type!r} needs more"
            ) from exc
        try:
            if data_type.startswith(topics.OHLC_PREFIX):
                topics.ohlc(data_type.removeprefix(topics.OHLC_PREFIX))
            return topics.topic(parts[0], data_type)
        except ValueError as exc:
            raise RouteError(f"key {text[:200]!r}: {exc}") from exc


def _parse_routes(value: object) -> object:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return {r.kafka_topic: r.data_type for r in map(Route.parse, value)}
    return value


class BridgeSettings(BaseSettings):
    """Settings of the bridge (env prefix ``TICKLAKE_BRIDGE__``; Kafka from Connections)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_BRIDGE__", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    #: Kafka topic -> relay data type; ``TOPIC=TYPE,TOPIC=TYPE`` in the environment.
    routes: Annotated[dict[str, str], NoDecode] = Field(default_factory=lambda: DEFAULT_ROUTES)
    group_id: str = "ticklake-relay-bridge"
    dead_letter_topic: str = DEAD_LETTERS.name
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no /metrics server")
    #: Records taken per loop turn (those already fetched), and the longest wait for the
    #: first (``consume_ready``: the turn never waits for a full batch).
    batch: int = Field(default=1_000, ge=1)
    poll_timeout_s: float = Field(default=0.1, gt=0)
    #: librdkafka statistics (consumer lag) interval.
    stats_interval_ms: int = Field(default=2_000, ge=100)
    relay_ready_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, value: object) -> object:
        return _parse_routes(value)

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one route")
        for kafka_topic, data_type in value.items():
            Route(kafka_topic, data_type)
        return value

    def route_list(self) -> list[Route]:
        return [Route(k, v) for k, v in self.routes.items()]


class BridgeMetrics:
    """Prometheus metrics of one bridge, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._server: Any = None
        r = self.registry
        self.messages_in = Counter(
            "ticklake_bridge_messages_in", "Kafka records consumed", ("topic",), registry=r
        )
        self.messages_out = Counter(
            "ticklake_bridge_messages_out",
            "Messages published to the relay",
            ("topic",),
            registry=r,
        )
        self.dead_letters = Counter(
            "ticklake_bridge_dead_letters",
            "Records sent to the dead-letter topic, by reason",
            ("reason",),
            registry=r,
        )
        self.skipped = Counter(
            "ticklake_bridge_skipped", "Tombstones (no value) skipped", ("topic",), registry=r
        )
        self.errors = Counter(
            "ticklake_bridge_kafka_errors", "Kafka consumer/producer errors", registry=r
        )
        self.lag = Gauge(
            "ticklake_bridge_consumer_lag",
            "Records behind the end of the partition (librdkafka statistics)",
            ("topic", "partition"),
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        if port == 0:
            return 0
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class KafkaRelayBridge:
    """Consume the routed Kafka topics and publish every record on its relay topic.

    ``start()`` connects (and waits for the relay to subscribe to the publisher), ``run()``
    forwards until ``stop()``, ``serve()`` does both with SIGTERM/SIGINT handling.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        settings: BridgeSettings | None = None,
        *,
        relay: RelaySettings | None = None,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.settings = settings or BridgeSettings()
        self.relay = relay or RelaySettings()
        self.metrics = metrics or BridgeMetrics()
        self.routes: dict[str, Route] = {r.kafka_topic: r for r in self.settings.route_list()}
        self.forwarded = 0
        self.dead_lettered = 0
        self._stop = threading.Event()
        self._consumer: Any = None
        self._producer: Any = None
        self._publisher: RelayPublisher | None = None
        self._assigned = threading.Event()
        #: Next offset per (topic, partition) this bridge has seen, for rebalances.
        self._positions: dict[tuple[str, int], int] = {}
        #: (Kafka topic, key) -> relay topic: keys repeat (markets, candles), parsing once.
        self._topics: dict[tuple[str, bytes | None], str] = {}
        self._counters: dict[str, tuple[Any, Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        from confluent_kafka import Consumer, Producer

        self._publisher = RelayPublisher(self.relay)
        try:
            self._publisher.wait_ready(self.settings.relay_ready_timeout_s)
        except Exception:
            self._publisher.close()
            raise
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 50,
                "statistics.interval.ms": self.settings.stats_interval_ms,
                "stats_cb": self._on_stats,
                "error_cb": self._on_error,
            }
        )
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                **PRODUCER_CONFIG,
                "error_cb": self._on_error,
            }
        )
        self._consumer.subscribe(list(self.routes), on_assign=self._on_assign)
        self.metrics.serve(self.settings.metrics_port)
        log.info("bridge: %s -> relay %s", self.routes, self.relay.connect(self.relay.publish_port))

    def wait_assigned(self, timeout: float = 30.0) -> bool:
        """True once partitions are assigned and positioned at their end (tests, bench)."""
        return self._assigned.wait(timeout)

    def run(self) -> None:
        """Forward records until :meth:`stop`."""
        if self._consumer is None:
            raise BridgeError("bridge not started", hint="call start() before run()")
        assert self._publisher is not None
        consumer, publish_many = self._consumer, self._publisher.publish_many
        batch, timeout = self.settings.batch, self.settings.poll_timeout_s
        while not self._stop.is_set():
            out: list[tuple[str, bytes]] = []
            for msg in consume_ready(consumer, batch, timeout):
                self._route(msg, out)
            if out:  # the whole batch under one publisher lock, in Kafka order
                publish_many(out)
                self.forwarded += len(out)
            self._producer.poll(0)

    def stop(self) -> None:
        """Ask ``run()`` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    def close(self) -> None:
        """Flush dead letters and close the consumer, producer, publisher and metrics."""
        if self._producer is not None:
            left = self._producer.flush(10)
            if left:
                log.error("bridge: %d dead letters not delivered at close", left)
            self._producer = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        self.metrics.close()

    def serve(self) -> None:
        """start, run until SIGTERM/SIGINT, close: the process entry point."""
        self.start()
        previous = {
            sig: signal.signal(sig, lambda *_: self.stop())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        log.info(
            "bridge stopped: %d forwarded, %d dead-lettered", self.forwarded, self.dead_lettered
        )

    # -- records -----------------------------------------------------------------------

    def _route(self, msg: Any, out: list[tuple[str, bytes]]) -> None:
        """Append ``(relay topic, value)`` for a routable record; count or dead-letter the rest."""
        error = msg.error()
        if error is not None:  # partition EOF is off (enable.partition.eof): a real error
            self.metrics.errors.inc()
            log.warning("bridge: consume error %s", error)
            return
        kafka_topic = msg.topic()
        counters = self._counters.get(kafka_topic)
        if counters is None:
            counters = self._counters[kafka_topic] = (
                self.metrics.messages_in.labels(kafka_topic),
                self.metrics.messages_out.labels(kafka_topic),
            )
        counters[0].inc()
        self._positions[kafka_topic, msg.partition()] = msg.offset() + 1
        value = msg.value()
        if value is None:
            self.metrics.skipped.labels(kafka_topic).inc()
            return
        key = msg.key()
        relay_topic = self._topics.get((kafka_topic, key))
        if relay_topic is None:
            route = self.routes.get(kafka_topic)
            try:
                if route is None:
                    raise RouteError(f"no route for Kafka topic {kafka_topic}")
                relay_topic = route.relay_topic(key)
            except RouteError as exc:
                self._dead_letter(msg, "UNROUTABLE_KEY", str(exc))
                return
            if len(self._topics) >= _TOPIC_CACHE:
                self._topics.clear()
            self._topics[kafka_topic, key] = relay_topic
        out.append((relay_topic, value))
        counters[1].inc()

    def _dead_letter(self, msg: Any, code: str, reason: str) -> None:
        ts_type, ts_ms = msg.timestamp()
        letter = DeadLetter(
            source_component=COMPONENT,
            reason_code=code,
            reason_message=reason[:1000],
            payload=msg.value() or b"",
            original_key=msg.key(),
            source_topic=msg.topic(),
            source_partition=msg.partition(),
            source_offset=msg.offset(),
            original_ts_us=ts_ms * 1000 if ts_type and ts_ms > 0 else None,
            dead_lettered_ts_us=time.time_ns() // 1000,
        )
        self.metrics.dead_letters.labels(code).inc()
        self.dead_lettered += 1
        log.warning("bridge: dead letter %s from %s: %s", code, msg.topic(), reason)
        try:
            self._producer.produce(
                self.settings.dead_letter_topic,
                key=DEAD_LETTERS.key(letter),
                value=encode(letter),
                headers=dict([schema_header(DeadLetter)]),
                on_delivery=self._on_delivery,
            )
        except BufferError:
            self._producer.poll(1.0)
            self.metrics.errors.inc()
            log.error("bridge: producer queue full; dead letter of %s lost", msg.topic())

    # -- callbacks ---------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Start each partition at its current end, resolved now (not at the first fetch),
        so that everything produced after ``wait_assigned()`` returns is forwarded."""
        from confluent_kafka import OFFSET_END, KafkaException

        for p in partitions:
            resume = self._positions.get((p.topic, p.partition))
            if resume is not None:  # a rebalance gave it back: go on where this bridge was
                p.offset = resume
                continue
            try:
                p.offset = consumer.get_watermark_offsets(p, timeout=10)[1]
            except KafkaException as exc:
                log.warning("bridge: end offset of %s[%d] unknown (%s)", p.topic, p.partition, exc)
                p.offset = OFFSET_END
        consumer.assign(partitions)
        log.info("bridge: assigned %s", [(p.topic, p.partition, p.offset) for p in partitions])
        self._assigned.set()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.metrics.errors.inc()
            log.error("bridge: dead letter not delivered: %s", err)

    def _on_error(self, err: Any) -> None:
        self.metrics.errors.inc()
        log.warning("bridge: Kafka error %s", err)

    def _on_stats(self, text: str) -> None:
        try:
            stats = json.loads(text)
            for name, t in stats.get("topics", {}).items():
                for pid, p in t.get("partitions", {}).items():
                    if pid != "-1" and p.get("consumer_lag", -1) >= 0:
                        self.metrics.lag.labels(name, pid).set(p["consumer_lag"])
        except (ValueError, AttributeError, TypeError):
            log.debug("bridge: unreadable statistics")
