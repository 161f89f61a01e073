"""``ticklake ingest run`` (live markets into Kafka) and ``ticklake ingest history-worker``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from ticklake import logs
from ticklake.errors import ConfigError, TickLakeError


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--exchange", default="binance", show_default=True, help="CCXT exchange id")
@click.option(
    "--markets",
    required=True,
    help="comma-separated unified symbols, e.g. BTC/USDT,ETH/USDT",
)
@click.option(
    "--exchange-url",
    default=None,
    help="base URL of a stand-in exchange (the local exchange: http://127.0.0.1:PORT)",
)
@click.option("--ingestor-id", default=None, help="id stamped on every record (default host-pid)")
@click.option("--poll", is_flag=True, help="REST polling even where websockets are supported")
@click.option(
    "--gap-fill",
    type=click.Choice(["history", "recent"]),
    default="history",
    show_default=True,
    help="how far REST reaches back when filling gaps",
)
@click.option("--since-ms", type=int, default=None, help="backfill from this epoch ms at start")
@click.option("--metrics-port", type=int, default=None, help="serve /metrics here (0: off)")
@click.option("--history", is_flag=True, help="also serve history requests from the relay")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (env TICKLAKE_LOG_LEVEL)")
def run_command(
    *,
    exchange: str,
    markets: str,
    exchange_url: str | None,
    ingestor_id: str | None,
    poll: bool,
    gap_fill: str,
    since_ms: int | None,
    metrics_port: int | None,
    history: bool,
    log_level: str | None,
) -> None:
    """Ingest realtime trades of one exchange into Kafka until SIGTERM or Ctrl-C.

    Websocket where CCXT supports it (REST polling otherwise, or with --poll); gaps after
    reconnects are filled from REST, unfillable ones recorded on the feed-gaps topic; bad
    records go to the dead-letter topic; heartbeats every few seconds. Other settings come
    from TICKLAKE_INGESTOR__* variables (docs/ingestors.md); Kafka from the local stack's
    stack.env or TICKLAKE_KAFKA__BOOTSTRAP_SERVERS. With --history the same process also
    takes history work from the relay (docs/history.md).
    """
    if log_level is not None:
        logs.configure(log_level, None)
    _guarded(
        _run,
        exchange=exchange,
        markets=markets,
        exchange_url=exchange_url,
        ingestor_id=ingestor_id,
        poll=poll,
        gap_fill=gap_fill,
        since_ms=since_ms,
        metrics_port=metrics_port,
        history=history,
    )


def _guarded(func: Callable[..., None], **kwargs: Any) -> None:
    try:
        func(**kwargs)
    except TickLakeError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:
        config = ConfigError("invalid ingestor settings", detail=str(exc))
        click.echo(config.render(), err=True)
        sys.exit(config.exit_code)


def _run(
    *,
    exchange: str,
    markets: str,
    exchange_url: str | None,
    ingestor_id: str | None,
    poll: bool,
    gap_fill: str,
    since_ms: int | None,
    metrics_port: int | None,
    history: bool,
) -> None:
    from ticklake.ingestors.service import ExchangeFeed, IngestorService, IngestorSettings

    base = IngestorSettings()
    feed = ExchangeFeed(
        name=exchange,
        markets=tuple(m.strip() for m in markets.split(",") if m.strip()),
        url=exchange_url,
        gap_fill=gap_fill,  # type: ignore[arg-type]
    )
    overrides: dict[str, object] = {"exchanges": (feed,)}
    if ingestor_id:
        overrides["ingestor_id"] = ingestor_id
    if poll:
        overrides["mode"] = "poll"
    if since_ms is not None:
        overrides["since_ms"] = since_ms
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if history:
        overrides["history"] = base.history.model_copy(update={"enabled": True})
    settings = IngestorSettings.model_validate({**base.model_dump(), **overrides})
    IngestorService(settings).serve()


@click.command("history-worker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--exchange", default="binance", show_default=True, help="CCXT exchange id")
@click.option("--exchange-url", default=None, help="base URL of a stand-in exchange")
@click.option("--ingestor-id", default=None, help="id stamped on every record (default host-pid)")
@click.option("--namespace", default=None, help="Iceberg namespace of the trades (default market)")
@click.option("--metrics-port", type=int, default=None, help="serve /metrics here (0: off)")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (env TICKLAKE_LOG_LEVEL)")
def history_worker_command(
    *,
    exchange: str,
    exchange_url: str | None,
    ingestor_id: str | None,
    namespace: str | None,
    metrics_port: int | None,
    log_level: str | None,
) -> None:
    """Serve history requests of one exchange from the relay's work queue (no live feed).

    Fetches each requested range through CCXT (paged, rate-limit aware), skips what the
    lake already holds, writes the trades to Kafka with the request id and reports to
    ticklake.history.fetches; `ticklake history-notifier` answers the client once Iceberg
    holds the rows. Relay address: TICKLAKE_RELAY__*; docs/history.md.
    """
    if log_level is not None:
        logs.configure(log_level, None)
    _guarded(
        _history,
        exchange=exchange,
        exchange_url=exchange_url,
        ingestor_id=ingestor_id,
        namespace=namespace,
        metrics_port=metrics_port,
    )


def _history(
    *,
    exchange: str,
    exchange_url: str | None,
    ingestor_id: str | None,
    namespace: str | None,
    metrics_port: int | None,
) -> None:
    from ticklake.ingestors.service import ExchangeFeed, IngestorService, IngestorSettings

    base = IngestorSettings()
    history = base.history.model_copy(
        update={"enabled": True, **({"namespace": namespace} if namespace else {})}
    )
    overrides: dict[str, object] = {
        "exchanges": (ExchangeFeed(name=exchange, url=exchange_url),),
        "realtime": False,
        "history": history,
    }
    if ingestor_id:
        overrides["ingestor_id"] = ingestor_id
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    settings = IngestorSettings.model_validate({**base.model_dump(), **overrides})
    IngestorService(settings).serve()
