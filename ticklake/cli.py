"""The ``ticklake`` command line: one entry point, ``--help`` on every command.

Only this module turns errors into messages and exit codes; library code raises.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ticklake import logs
from ticklake.errors import ConfigError, TickLakeError

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)

OUTPUT = click.option(
    "--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="text for people, json for scripts",
)  # fmt: skip


class Steps:
    """Progress lines on stderr with elapsed time, so long work is visible."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        err.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim] {msg}")


class LazyGroup(click.Group):
    """A group whose commands live in heavy modules, imported only when used."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy={
        "query": "ticklake.catalog.cli:query_command",
        "chart": "ticklake.catalog.cli:chart_command",
        "maintain": "ticklake.catalog.cli:maintain_command",
        "relay": "ticklake.relay.cli:relay_group",
        "subscribe": "ticklake.relay.cli:subscribe_command",
        "history": "ticklake.relay.cli:history_command",
        "history-notifier": "ticklake.relay.history_ready:notifier_command",
        "risk": "ticklake.relay.risk_forwarder:risk_group",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (env TICKLAKE_LOG_LEVEL)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="log line format (env TICKLAKE_LOG_FORMAT)")  # fmt: skip
def cli(log_level: str | None, log_format: str | None) -> None:
    """ticklake: streaming-first market data (Kafka, Flink, Iceberg on MinIO, ZeroMQ).

    State lives in $TICKLAKE_HOME (default .ticklake/ in the checkout).
    """
    logs.configure(log_level, log_format)


@cli.command()
@click.option(
    "--flink-cluster/--no-flink-cluster",
    default=True,
    show_default=True,
    help="also prepare the standalone Flink cluster (S3 filesystem plugin)",
)
@click.option(
    "--update-pins",
    is_flag=True,
    hidden=True,
    help="maintainers: rewrite stack/maven/*.sha256 from what Maven fetched",
)
def setup(flink_cluster: bool, update_pins: bool) -> None:  # fmt: skip
    """Download, build and verify everything the local stack needs (idempotent)."""
    from ticklake.stack.downloads import maven_jar_set
    from ticklake.stack.manager import Stack

    stack = Stack()
    if update_pins:
        for name in ("kafka", "flink-connectors", "flink-s3-plugin"):
            maven_jar_set(name, stack.ctx.cache, update_pins=True)
    stack.setup(Steps(), flink_cluster=flink_cluster)
    err.print("[green]setup complete[/green]")


@cli.command()
@click.option(
    "--flink-cluster",
    is_flag=True,
    help="also start a standalone Flink JobManager + TaskManager (S3 checkpoints)",
)
def up(flink_cluster: bool) -> None:
    """Start the local stack (Kafka, MinIO, PostgreSQL, Flink) and wait until healthy."""
    from ticklake.stack.manager import Stack

    steps = Steps()
    stack = Stack()
    stack.up(steps, flink_cluster=flink_cluster)
    steps(f"stack up; connection settings in {stack.ctx.home / 'stack.env'}")
    _print_status(stack, "text")


@cli.command()
def down() -> None:
    """Stop exactly the processes `ticklake up` started (by pid file, never by name)."""
    from ticklake.stack.manager import Stack

    stopped = Stack().down(Steps())
    err.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@cli.command()
@OUTPUT
def status(output: str) -> None:
    """Show each component with its address, health, pids and memory.

    Exit code 0 when every started component is healthy, 1 otherwise.
    """
    from ticklake.stack.manager import Stack

    rows = _print_status(Stack(), output)
    if any(r.state == "unhealthy" for r in rows):
        sys.exit(1)


def _print_status(stack: Any, output: str) -> list[Any]:
    rows = stack.status()
    if output == "json":
        out.print_json(json.dumps([asdict(r) for r in rows]))
        return rows  # type: ignore[no-any-return]
    table = Table(title=f"ticklake stack ({stack.ctx.home})")
    for col in ("component", "state", "address", "health", "pid", "RSS MiB"):
        table.add_column(col)
    colors = {"running": "green", "ready": "green", "stopped": "dim", "unhealthy": "red"}
    for r in rows:
        color = colors.get(r.state, "yellow")
        table.add_row(
            r.name, f"[{color}]{r.state}[/{color}]", r.address, r.detail,
            ",".join(map(str, r.pids)) or "-", f"{r.rss_mib:.0f}" if r.pids else "-",
        )  # fmt: skip
    out.print(table)
    return rows  # type: ignore[no-any-return]


@cli.command("logs")
@click.argument("component")
@click.option("-n", "--lines", default=50, show_default=True, help="lines to show")
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
def logs_cmd(component: str, lines: int, follow: bool) -> None:
    """Print the log of a stack component (kafka, minio, postgres, flink-cluster)."""
    from ticklake.stack.manager import Stack

    comp = Stack().component(component)
    for proc in comp.processes:
        if len(comp.processes) > 1:
            out.print(f"[bold]== {proc.log_file}[/bold]")
        out.print(proc.log_tail(lines), markup=False, highlight=False)
    if follow:
        files = [p.log_file.open("r", errors="replace") for p in comp.processes]
        for fh in files:
            fh.seek(0, 2)
        try:
            while True:
                for fh in files:
                    chunk = fh.read()
                    if chunk:
                        sys.stdout.write(chunk)
                        sys.stdout.flush()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@cli.command("env")
@click.option("--show-secrets", is_flag=True, help="print passwords instead of masking them")
def env_cmd(show_secrets: bool) -> None:
    """Print the TICKLAKE_* variables that point a process at the local stack."""
    from ticklake.stack.manager import Stack

    for key, value in Stack().connection_env().items():
        secret = key.endswith(("PASSWORD", "SECRET_KEY"))
        click.echo(f"{key}={value if show_secrets or not secret else '**********'}")


@cli.command()
@click.option("--keep-running", is_flag=True, help="leave the stack up afterwards")
@click.option("--rows", default=1000, show_default=True, help="rows in the round trip")
def check(keep_running: bool, rows: int) -> None:
    """Prove every seam of the local stack, for real.

    Kafka produce/consume, an S3 object on MinIO, and an Iceberg table written by a Flink
    SQL job on the embedded MiniCluster through the shared catalog, read back with pyiceberg.
    """
    from ticklake.stack.manager import Stack
    from ticklake.stack.smoke import run_smoke

    steps = Steps()
    stack = Stack()
    try:
        stack.up(steps)
        report = run_smoke(stack, rows=rows, progress=steps)
    finally:
        if not keep_running:
            stack.down(steps)
    out.print(report.table())


@cli.command()
@click.option("--keep-running", is_flag=True, help="leave the stack up afterwards")
@click.option("--markets", default="BTC/USDT,ETH/USDT,SOL/USDT,QUIET/USDT", show_default=True)
@click.option("--history-minutes", default=10, show_default=True, help="backfill per ingestor")
@click.option("--live-seconds", default=20.0, show_default=True, help="live ingest after start")
def run(keep_running: bool, markets: str, history_minutes: int, live_seconds: float) -> None:
    """Run the platform's main job end to end on the embedded default (a bounded run).

    Starts the local stack and a local exchange, runs two CCXT ingestors on the same markets
    (so duplicates really happen), runs the Flink dedup + OHLC job on the embedded
    MiniCluster into Iceberg and Kafka, then reads the candles back from Iceberg and checks
    them against the exchange's own klines fetched through CCXT.
    """
    from ticklake.pipeline import run_pipeline
    from ticklake.stack.manager import Stack

    steps = Steps()
    stack = Stack()
    try:
        stack.up(steps)
        report = run_pipeline(
            tuple(m.strip() for m in markets.split(",") if m.strip()),
            history_minutes=history_minutes,
            live_seconds=live_seconds,
            progress=steps,
        )
    finally:
        if not keep_running:
            stack.down(steps)
    table = Table(title="1m candles read back from Iceberg (demo.candles, last 3 per market)")
    for col in ("market", "window start (UTC)", "open", "high", "low", "close", "volume", "trades"):
        table.add_column(col, justify="left" if col.startswith(("market", "window")) else "right")
    for symbol in sorted({c.symbol for c in report.candles_1m}):
        for c in [c for c in report.candles_1m if c.symbol == symbol][-3:]:
            start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(c.window_start_us / 1e6))
            table.add_row(
                symbol, start, f"{c.open}", f"{c.high}", f"{c.low}", f"{c.close}",
                f"{c.volume}", str(c.trade_count),
            )  # fmt: skip
    out.print(table)
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    out.print(
        f"raw trades on Kafka: {report.raw_messages}; unique trades in Iceberg: "
        f"{report.unique_trades}; 1m candles: {len(report.candles_1m)}; {timing}"
    )
    out.print(
        f"closed 1m candles equal to the exchange's klines (CCXT fetch_ohlcv): "
        f"{report.matched}/{report.compared}"
    )
    if report.mismatches:
        for line in report.mismatches[:10]:
            err.print(f"mismatch: {line}")
        sys.exit(1)


@cli.group(
    cls=LazyGroup,
    lazy={
        "run": "ticklake.ingestors.cli:run_command",
        "replay": "ticklake.ingestors.replay:replay_command",
        "history-worker": "ticklake.ingestors.cli:history_worker_command",
    },
)
def ingest() -> None:
    """Bring market data into Kafka: realtime CCXT ingestors and tape replay."""


@cli.command(
    "exchange",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def exchange_cmd(ctx: click.Context) -> None:
    """Run the local Binance-compatible exchange (see `ticklake exchange --help`)."""
    from ticklake.exchange.__main__ import main as exchange_main

    sys.exit(exchange_main(list(ctx.args)))


@cli.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def bench_cmd(ctx: click.Context) -> None:
    """Benchmarks against a local stack of their own (`ticklake bench --help`)."""
    from ticklake.bench.__main__ import main as bench_main

    bench_main(list(ctx.args))


def _register_jobs() -> None:
    from ticklake.jobs_cli import jobs_group

    cli.add_command(jobs_group)


_register_jobs()


def main() -> None:
    """Console entry point: map ticklake errors to one message and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TickLakeError as exc:
        err.print(exc.render(), markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        config = ConfigError(
            f"invalid settings ({exc.error_count()} problem(s))",
            detail=problems,
            hint="fix the TICKLAKE_* environment variable(s) or stack.env named above",
        )
        err.print(config.render(), markup=False, highlight=False)
        sys.exit(config.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
