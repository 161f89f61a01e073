"""Critical risk events (halt, kill switch) from Kafka to the owning user container, acked.

The risk job (``jobs/risk.py``) runs in Flink, which cannot hold ZeroMQ sockets; it writes
every :class:`~ticklake.schemas.risk.AccountEvent` to Kafka. This forwarder reads the live
account-events topic and hands each critical one to an :class:`EventSender` (DEALER ->
ROUTER with ``EventAck``, retries with backoff, unacknowledged events persisted on stop):

- the endpoint is the account's own (``endpoints``) or the gateway's (``default_endpoint``),
  which routes it on to the account's user container;
- the critical event's id is the AccountEvent's ``event_id``, derived from the cause, so a
  copy (the live topic is at-least-once, a replay, a forwarder restart) is acknowledged by
  the receiver without being delivered twice;
- Kafka offsets are committed only after every event of the batch was acknowledged: a
  forwarder that dies loses nothing, it sends again (and the receiver deduplicates).

    forwarder = RiskEventForwarder(bootstrap, default_endpoint="tcp://gateway:5570",
                                   store_dir=Path("/var/lib/ticklake/risk-forwarder"))
    forwarder.run(stop_event)

The process: ``ticklake risk forward --endpoint tcp://gateway:5570
[--account-endpoint ACCOUNT=tcp://container:5570 ...]`` (:func:`forward_command`, settings
:class:`ForwarderSettings`, ``TICKLAKE_RISK_FORWARDER__*``); it stops cleanly on SIGTERM.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import click
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ticklake.errors import ConfigError, TickLakeError
from ticklake.home import state_home
from ticklake.relay.events import EventSender
from ticklake.relay.sockets import Context
from ticklake.schemas.kafka_poll import consume_ready
from ticklake.schemas.risk import AccountEvent
from ticklake.schemas.serde import DecodeError, decode
from ticklake.schemas.topics import RISK_EVENTS_LIVE

log = logging.getLogger(__name__)

#: ZeroMQ endpoints a DEALER can connect to: tcp://host:port, ipc://path, inproc://name.
_ENDPOINT = re.compile(
    r"^(tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}|ipc://.+|inproc://.+)$"
)


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is a ZeroMQ endpoint a DEALER can connect to; ValueError if not."""
    text = endpoint.strip()
    if not _ENDPOINT.match(text) or (
        text.startswith("tcp://") and int(text.rsplit(":", 1)[1]) > 65535
    ):
        raise ValueError(
            f"{endpoint!r} is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH, inproc://NAME)"
        )
    return text


def parse_account_endpoints(value: object) -> object:
    """``ACCOUNT=ENDPOINT`` items (a list, or one comma-separated string) -> a dict."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        return value
    out: dict[str, str] = {}
    for item in value:
        account, sep, endpoint = str(item).partition("=")
        if not sep or not account.strip():
            raise ValueError(f"{item!r} must be ACCOUNT=ENDPOINT, e.g. acct-1=tcp://user-1:5570")
        out[account.strip()] = endpoint.strip()
    return out


class ForwarderSettings(BaseSettings):
    """Settings of the risk event forwarder (env prefix ``TICKLAKE_RISK_FORWARDER__``)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKLAKE_RISK_FORWARDER__",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    #: The gateway's ROUTER (routes each event on to the account's user container).
    endpoint: str
    #: Accounts whose events go straight to their own container: ``ACCT=tcp://...,...``.
    account_endpoints: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: Journals of unacknowledged events (resent after a restart).
    store_dir: Path = Field(default_factory=lambda: state_home() / "data" / "risk-forwarder")
    topic: str = RISK_EVENTS_LIVE.name
    group_id: str = "ticklake-risk-forwarder"
    source_id: str = "ticklake-risk"
    ack_timeout_s: float = Field(default=0.5, gt=0)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no /metrics server")
    #: Create the topic (contract partitions) if it does not exist yet.
    create_topic: bool = True

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)

    @field_validator("account_endpoints", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        return parse_account_endpoints(value)

    @field_validator("account_endpoints")
    @classmethod
    def _check(cls, value: dict[str, str]) -> dict[str, str]:
        return {account: check_endpoint(ep) for account, ep in value.items()}


class ForwarderMetrics:
    """Prometheus metrics of one forwarder, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.forwarded = Counter(
            "ticklake_risk_forwarder_forwarded", "Critical events handed to a sender", registry=r
        )
        self.skipped = Counter(
            "ticklake_risk_forwarder_skipped", "Account events that are not critical", registry=r
        )
        self.malformed = Counter(
            "ticklake_risk_forwarder_malformed", "Undecodable account events", registry=r
        )
        self.unacked = Gauge(
            "ticklake_risk_forwarder_unacked", "Events waiting for their ack", registry=r
        )
        self._server: Any = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        if port == 0:
            return 0
        self._server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class RiskEventForwarder:
    """Kafka account events -> acknowledged critical events, one sender per endpoint."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        default_endpoint: str,
        store_dir: Path,
        endpoints: Mapping[str, str] | None = None,
        topic: str = RISK_EVENTS_LIVE.name,
        group_id: str = "ticklake-risk-forwarder",
        source_id: str = "ticklake-risk",
        ack_timeout: float = 0.5,
        context: Context | None = None,
        metrics: ForwarderMetrics | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.default_endpoint = default_endpoint
        self.endpoints = dict(endpoints or {})
        self.store_dir = store_dir
        self.topic = topic
        self.group_id = group_id
        self.source_id = source_id
        self.ack_timeout = ack_timeout
        self.context = context
        self.metrics = metrics or ForwarderMetrics()
        self.forwarded = 0
        self.skipped = 0
        self.malformed = 0
        self._senders: dict[str, EventSender] = {}

    @classmethod
    def from_settings(
        cls,
        settings: ForwarderSettings,
        bootstrap_servers: str,
        *,
        context: Context | None = None,
        metrics: ForwarderMetrics | None = None,
    ) -> RiskEventForwarder:
        return cls(
            bootstrap_servers,
            default_endpoint=settings.endpoint,
            endpoints=settings.account_endpoints,
            store_dir=settings.store_dir,
            topic=settings.topic,
            group_id=settings.group_id,
            source_id=settings.source_id,
            ack_timeout=settings.ack_timeout_s,
            context=context,
            metrics=metrics,
        )

    def endpoint_of(self, account: str) -> str:
        return self.endpoints.get(account, self.default_endpoint)

    def _sender(self, endpoint: str) -> EventSender:
        sender = self._senders.get(endpoint)
        if sender is None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            name = "".join(c if c.isalnum() else "_" for c in endpoint)
            sender = EventSender(
                endpoint,
                self.store_dir / f"{name}.avro",
                source_id=self.source_id,
                context=self.context,
                ack_timeout=self.ack_timeout,
            )
            sender.start()
            self._senders[endpoint] = sender
        return sender

    def handle(self, value: bytes) -> str | None:
        """Forward one Kafka record's value; returns the event id sent, None if skipped."""
        try:
            event = decode(AccountEvent, value)
        except DecodeError as exc:
            self.malformed += 1
            self.metrics.malformed.inc()
            log.warning("skipping a malformed account event: %s", exc)
            return None
        if not event.critical:
            self.skipped += 1
            self.metrics.skipped.inc()
            return None
        sender = self._sender(self.endpoint_of(event.account))
        sender.send(f"risk.{event.event}", value, event_id=event.event_id)
        self.forwarded += 1
        self.metrics.forwarded.inc()
        return event.event_id

    def flush(self, timeout: float) -> bool:
        """Wait until every sender has all its events acknowledged."""
        done = all(s.flush(timeout) for s in self._senders.values())
        self.metrics.unacked.set(sum(s.pending for s in self._senders.values()))
        return done

    def stop(self) -> int:
        """Stop the senders; returns how many unacknowledged events were persisted."""
        persisted = sum(s.stop() for s in self._senders.values())
        self._senders.clear()
        return persisted

    def run(self, stop: threading.Event, *, poll_s: float = 0.1, ack_wait_s: float = 5.0) -> None:
        """Consume until ``stop`` is set; commit a batch once all its events are acked."""
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([self.topic])
        log.info("forwarding critical events of %s to %s (%d account endpoints)",
                 self.topic, self.default_endpoint, len(self.endpoints))  # fmt: skip
        try:
            while not stop.is_set():
                messages: list[Any] = consume_ready(consumer, 500, poll_s)
                if not messages:
                    continue
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("kafka error on %s: %s", self.topic, msg.error())
                        continue
                    self.handle(msg.value())
                while not self.flush(ack_wait_s):
                    if stop.is_set():
                        return  # uncommitted: resent after a restart, deduplicated there
                    log.warning("critical risk events not yet acknowledged; still trying")
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
            persisted = self.stop()
            log.info(
                "risk forwarder stopped: %d forwarded, %d skipped, %d malformed, %d unacked kept",
                self.forwarded, self.skipped, self.malformed, persisted,
            )  # fmt: skip

    def serve(self, metrics_port: int = 0) -> None:
        """``run`` until SIGTERM/SIGINT, then stop cleanly: the process entry point."""
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        self.metrics.serve(metrics_port)
        try:
            self.run(stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.metrics.close()


class ForwarderError(TickLakeError):
    """The forwarder cannot start (Kafka unreachable)."""


def topic_exists(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> bool:
    """Whether ``topic`` exists; :class:`ForwarderError` when Kafka does not answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # quiet: one connection error per retry would flood stderr; the error below says it all
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    try:
        return topic in admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise ForwarderError(
            f"Kafka at {bootstrap_servers} did not answer within {timeout_s:.0f}s: {exc}",
            hint="check TICKLAKE_KAFKA__BOOTSTRAP_SERVERS and that Kafka is up (`ticklake status`)",
        ) from exc


@click.group("risk")
def risk_group() -> None:
    """Risk services around the risk job (docs/risk.md)."""


@risk_group.command("forward")
@click.option("--endpoint", default=None, metavar="ENDPOINT",
              help="the gateway's ROUTER, e.g. tcp://gateway:5570 "
              "(env TICKLAKE_RISK_FORWARDER__ENDPOINT)")  # fmt: skip
@click.option("--account-endpoint", "account_endpoints", multiple=True,
              metavar="ACCOUNT=ENDPOINT",
              help="an account's own container, bypassing the gateway (repeatable)")  # fmt: skip
@click.option("--store-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="journals of unacknowledged events "
              "(default $TICKLAKE_HOME/data/risk-forwarder)")  # fmt: skip
@click.option(
    "--topic", default=None, help=f"account events topic (default {RISK_EVENTS_LIVE.name})"
)
@click.option(
    "--group-id", default=None, help="Kafka consumer group (default ticklake-risk-forwarder)"
)
@click.option(
    "--ack-timeout", type=float, default=None, help="seconds before a resend (default 0.5)"
)
@click.option("--metrics-port", type=int, default=None, help="serve /metrics (0: off)")
def forward_command(
    *,
    endpoint: str | None,
    account_endpoints: tuple[str, ...],
    store_dir: Path | None,
    topic: str | None,
    group_id: str | None,
    ack_timeout: float | None,
    metrics_port: int | None,
) -> None:
    """Forward critical risk events (halt, kill switch) to user containers until SIGTERM.

    Reads the risk job's live account-events topic and sends each halt and kill-switch event
    over the critical channel (DEALER -> ROUTER, acknowledged, resent until acked, once per
    event id at the receiver); Kafka offsets are committed after the acks. Kafka from
    TICKLAKE_KAFKA__*, the rest from TICKLAKE_RISK_FORWARDER__* or these flags.
    """
    from pydantic import ValidationError

    from ticklake.schemas.topics import ensure_topics
    from ticklake.settings import Connections

    flags = {
        "endpoint": endpoint, "store_dir": store_dir, "topic": topic, "group_id": group_id,
        "ack_timeout_s": ack_timeout, "metrics_port": metrics_port,
        "account_endpoints": list(account_endpoints) or None,
    }  # fmt: skip
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        settings = ForwarderSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            "invalid risk forwarder settings",
            detail=problems,
            hint="pass --endpoint tcp://HOST:PORT (or TICKLAKE_RISK_FORWARDER__ENDPOINT) and "
            "--account-endpoint ACCOUNT=tcp://HOST:PORT; see --help",
        ) from exc
    bootstrap = Connections.load().kafka.bootstrap_servers
    if settings.create_topic and not topic_exists(bootstrap, settings.topic):
        ensure_topics(bootstrap, [RISK_EVENTS_LIVE.renamed(settings.topic)], timeout_s=30)
    RiskEventForwarder.from_settings(settings, bootstrap).serve(settings.metrics_port)


@risk_group.command("tables")
@click.option("--namespace", default=None, help="Iceberg namespace (default risk)")
def tables_command(namespace: str | None) -> None:
    """Create the risk audit tables (decisions, violations, account_events) that are missing.

    The risk_audit job writes them (`ticklake jobs submit risk_audit`); existing tables are
    left as they are (missing table properties are added). Idempotent.
    """
    from ticklake.catalog.connection import load_catalog
    from ticklake.catalog.tables import RISK_NAMESPACE, ensure_risk_tables

    created = ensure_risk_tables(load_catalog(), namespace or RISK_NAMESPACE)
    for identifier, new in created.items():
        click.echo(f"{identifier}: {'created' if new else 'exists'}")
