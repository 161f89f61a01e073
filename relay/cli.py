"""Click commands of the relay; ``ticklake/cli.py`` registers them (commands, not groups)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ticklake.relay.client import RelayClient
from ticklake.relay.service import Relay
from ticklake.relay.settings import RelaySettings
from ticklake.relay.subscription import Message, Subscription
from ticklake.schemas import Candle, Trade


def _serve(metrics_port: int | None) -> None:
    settings = RelaySettings()
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    Relay(settings).serve()


@click.group("relay", invoke_without_command=True)
@click.option("--metrics-port", type=int, default=None, help="serve /metrics (0: off)")
@click.pass_context
def relay_group(ctx: click.Context, metrics_port: int | None) -> None:
    """Run the relay until SIGTERM/SIGINT (ports from TICKLAKE_RELAY__*); or a subcommand."""
    if ctx.invoked_subcommand is None:
        _serve(metrics_port)


@relay_group.command("serve")
@click.option("--metrics-port", type=int, default=None, help="serve /metrics (0: off)")
def serve_subcommand(metrics_port: int | None) -> None:
    """Run the relay until SIGTERM/SIGINT (ports from TICKLAKE_RELAY__*)."""
    _serve(metrics_port)


@relay_group.command("bridge")
@click.option("--topic", "routes", multiple=True, metavar="KAFKA_TOPIC=DATA_TYPE",
              help="route (repeatable), e.g. ticklake.trades.live=tick, "
              "ticklake.candles.live=ohlc:{1} ({1}: 2nd '|' part of the Kafka key); "
              "default: the dedup_ohlc job's live topics")  # fmt: skip
@click.option("--group-id", default=None, help="Kafka consumer group (spreads partitions)")
@click.option("--metrics-port", type=int, default=None, help="serve /metrics (0: off)")
def bridge_command(routes: tuple[str, ...], group_id: str | None, metrics_port: int | None) -> None:
    """Forward live Kafka topics to the relay's XSUB side until SIGTERM/SIGINT.

    Values are forwarded as they are (Avro); the relay topic is {market}|{data type}, the
    market being the Kafka key's first '|'-separated part. Unroutable records go to the
    dead-letter topic. Kafka from TICKLAKE_KAFKA__*, the relay from TICKLAKE_RELAY__*.
    """
    from ticklake.relay.bridge import BridgeSettings, KafkaRelayBridge
    from ticklake.settings import Connections

    overrides: dict[str, object] = {}
    if routes:
        overrides["routes"] = list(routes)
    if group_id is not None:
        overrides["group_id"] = group_id
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    try:
        settings = BridgeSettings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--topic") from exc
    KafkaRelayBridge(Connections.load().kafka.bootstrap_servers, settings).serve()


#: ``ticklake relay`` (registered by name in ticklake/cli.py) is the group: without a
#: subcommand it serves the relay, as before; ``ticklake relay bridge`` runs the bridge.
serve_command = relay_group


def _row(message: Message) -> tuple[str, ...]:
    m = message.model
    if isinstance(m, Trade):
        return (message.topic, str(message.seq), m.side, str(m.price), str(m.amount), "", "")
    if isinstance(m, Candle):
        return (
            message.topic,
            str(message.seq),
            "final" if m.final else "open",
            str(m.open),
            str(m.high),
            str(m.low),
            str(m.close),
        )
    return (message.topic, str(message.seq), type(m).__name__, "", "", "", "")


def _table(latest: dict[str, Message], sub: Subscription) -> Table:
    st = sub.stats
    table = Table(
        title=f"{sub.describe()}",
        caption=f"received {st.received}  gaps {st.gaps}  replays dropped {st.duplicates}",
    )
    for name in ("topic", "seq", "side/state", "price/open", "amount/high", "low", "close"):
        table.add_column(name)
    for topic in sorted(latest):
        table.add_row(*_row(latest[topic]))
    return table


@click.command("subscribe")
@click.argument("markets", nargs=-1, required=True)
@click.option("--ohlc", "timeframes", multiple=True, help="candle timeframe (repeatable): 1m, 1h")
@click.option("--ticks/--no-ticks", default=None, help="trades (default: on unless --ohlc)")
@click.option("--seconds", type=float, default=None, help="stop after this long")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: live table; json: one line per message")  # fmt: skip
def subscribe_command(
    markets: tuple[str, ...],
    timeframes: tuple[str, ...],
    ticks: bool | None,
    seconds: float | None,
    output: str,
) -> None:
    """Print live messages of MARKETS (EXCHANGE:BASE/QUOTE), e.g. BINANCE:BTC/USDT --ohlc 1m."""
    want_ticks = ticks if ticks is not None else not timeframes
    client = RelayClient()
    deadline = None if seconds is None else time.monotonic() + seconds
    with client.subscribe(list(markets), ticks=want_ticks, timeframes=timeframes) as sub:
        if output == "json":
            while deadline is None or time.monotonic() < deadline:
                message = sub.recv(0.2)
                if message is not None:
                    record = {"topic": message.topic, "seq": message.seq}
                    record |= message.model.model_dump(mode="json")
                    click.echo(json.dumps(record))
            return
        latest: dict[str, Message] = {}
        with Live(_table(latest, sub), console=Console(), refresh_per_second=4) as live:
            while deadline is None or time.monotonic() < deadline:
                message = sub.recv(0.25)
                if message is not None:
                    latest[message.topic] = message
                live.update(_table(latest, sub))


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@click.command("history")
@click.argument("market")
@click.option("--timeframe", default="trades", show_default=True, help="trades, or 1m, 1h, ...")
@click.option("--start", required=True, help="ISO time (UTC if no zone)")
@click.option("--end", required=True, help="ISO time (UTC if no zone), exclusive")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json for scripts")  # fmt: skip
def history_command(  # noqa: PLR0917
    market: str, timeframe: str, start: str, end: str, timeout: float, output: str
) -> None:
    """Ask for the history of MARKET (EXCHANGE:BASE/QUOTE) and print what Iceberg returns."""
    exchange, _, symbol = market.partition(":")
    result = RelayClient().request_history(
        exchange, symbol, timeframe, _when(start), _when(end), timeout=timeout
    )
    ready = result.ready
    if output == "json":
        click.echo(json.dumps({"ready": ready.model_dump(mode="json"), "rows": len(result.rows)}))
        return
    click.echo(
        f"{ready.status}: {ready.row_count} rows in {ready.iceberg_table} "
        f"(snapshot {ready.snapshot_id}); read {len(result.rows)}"
    )
    click.echo(str(result.rows.slice(0, 20).to_pandas()))
