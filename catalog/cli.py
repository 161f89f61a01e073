"""``ticklake query``, ``ticklake chart`` and ``ticklake maintain``: the analysts' commands.

Plain click commands, registered by ``ticklake.cli``. Library errors become one message on
stderr and the error's exit code (see ``docs/analysts.md`` for the table of codes).
"""

from __future__ import annotations

import functools
import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from ticklake.catalog.tables import DEFAULT_NAMESPACE
from ticklake.errors import TickLakeError

if TYPE_CHECKING:
    import pyarrow as pa

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True, highlight=False, soft_wrap=True)


class CommandFailed(click.ClickException):
    """A TickLakeError on its way out of a command: its message and its exit code."""

    def __init__(self, error: TickLakeError):
        super().__init__(error.message)
        self.error = error
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        err.print(self.error.render(), markup=False, highlight=False)


def _errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TickLakeError as exc:
            raise CommandFailed(exc) from exc

    return wrapper  # type: ignore[return-value]


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; UTC when no offset is given."""
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is not an ISO date or date-time (e.g. 2024-03-01 or 2024-03-01T12:00)"
        ) from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class _Time(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if isinstance(value, datetime) else parse_time(str(value))


NAMESPACE = click.option(
    "--namespace", default=DEFAULT_NAMESPACE, show_default=True,
    help="Iceberg namespace of the market tables",
)  # fmt: skip


# -- query ------------------------------------------------------------------------------------


def write_result(result: pa.Table, output: str, out: Path | None) -> None:
    """Write a query result in the chosen format to ``out`` or stdout."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if output == "parquet":
        if out is None:
            raise click.UsageError("--output parquet needs --out FILE")
        pq.write_table(result, out)
        return
    if output == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(result, buf)
        data = buf.getvalue().decode()
    elif output == "json":
        data = json.dumps(result.to_pylist(), default=str, indent=1) + "\n"
    else:
        data = _render_table(result)
    if out is None:
        sys.stdout.write(data)
    else:
        out.write_text(data)


def _render_table(result: pa.Table) -> str:
    from rich.table import Table

    table = Table(show_edge=False)
    for name in result.column_names:
        table.add_column(name)
    for row in result.to_pylist():
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    console = Console(file=io.StringIO(), width=200, highlight=False)
    console.print(table)
    console.print(f"({result.num_rows} rows)")
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


@click.command("query")
@click.argument("sql")
@click.option("--output", "-o", type=click.Choice(["table", "csv", "json", "parquet"]),
              default="table", show_default=True, help="result format")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the result to FILE instead of stdout (required for parquet)")  # fmt: skip
@NAMESPACE
@_errors
def query_command(sql: str, output: str, out: Path | None, namespace: str) -> None:
    """Run SQL (DuckDB dialect) over the Iceberg tables trades, candles and late_trades.

    Example: ticklake query "SELECT symbol, count(*) FROM candles WHERE timeframe='1h'
    GROUP BY symbol" --output csv
    """
    from ticklake.catalog.query import run_sql

    if output == "parquet" and out is None:
        raise click.UsageError("--output parquet needs --out FILE")
    write_result(run_sql(sql, namespace=namespace), output, out)


# -- chart ------------------------------------------------------------------------------------


@click.command("chart")
@click.argument("market")
@click.option("--tf", "timeframe", default="1m", show_default=True, help="candle timeframe")
@click.option("--from", "start", type=_Time(), required=True, help="start (ISO, UTC default)")
@click.option("--to", "end", type=_Time(), required=True, help="end, exclusive")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file to write")  # fmt: skip
@NAMESPACE
@_errors
def chart_command(  # noqa: PLR0917 (click passes options as arguments)
    market: str, timeframe: str, start: datetime, end: datetime, out: Path, namespace: str
) -> None:
    """Write a candlestick chart with volume (PNG) of MARKET, e.g. BINANCE:BTC/USDT."""
    from ticklake.catalog.chart import chart_candles

    path, count = chart_candles(market, timeframe, start, end, out, namespace=namespace)
    err.print(f"wrote {path} ({count} candles)")


# -- maintain ---------------------------------------------------------------------------------


@click.command("maintain")
@click.option("--table", "tables", multiple=True,
              help="table to maintain (repeatable; default: all market tables)")  # fmt: skip
@click.option("--retention", default="7d", show_default=True,
              help="expire snapshots older than this (time travel horizon)")  # fmt: skip
@click.option("--orphan-age", default="3d", show_default=True,
              help="only delete unreferenced files older than this")  # fmt: skip
@click.option("--target-file-size", default=None,
              help="compaction target, e.g. 128MiB (default: the table property)")  # fmt: skip
@click.option("--partitions-per-commit", default=16, show_default=True, type=click.IntRange(1),
              help="partitions rewritten per commit")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="report what would be done, change nothing")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json for scripts")  # fmt: skip
@NAMESPACE
@_errors
def maintain_command(  # noqa: PLR0917 (click passes options as arguments)
    tables: tuple[str, ...],
    retention: str,
    orphan_age: str,
    target_file_size: str | None,
    partitions_per_commit: int,
    dry_run: bool,
    output: str,
    namespace: str,
) -> None:
    """Compact small files, expire old snapshots and delete orphan files.

    Safe while the Flink jobs write: compaction replaces exactly the files it read, and
    retries on commit conflicts. Schedule it hourly or daily (docs/analysts.md).
    """
    from dataclasses import asdict

    from rich.progress import Progress

    from ticklake.catalog.maintenance import maintain, parse_duration, parse_size
    from ticklake.catalog.query import load_market_table, open_catalog
    from ticklake.catalog.tables import TABLES

    names = list(tables) or [t.name for t in TABLES]
    catalog = open_catalog()
    loaded = [load_market_table(n, namespace=namespace, catalog=catalog) for n in names]
    with Progress(console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=max(total, 1))
            bar.update(tasks[step], completed=done, total=max(total, 1))

        report = maintain(
            loaded,
            target_file_size=parse_size(target_file_size) if target_file_size else None,
            retention=parse_duration(retention),
            orphan_age=parse_duration(orphan_age),
            partitions_per_commit=partitions_per_commit,
            dry_run=dry_run,
            progress=progress,
        )
    if output == "json":
        sys.stdout.write(json.dumps(asdict(report), default=str, indent=1) + "\n")
        return
    verb = "would" if dry_run else "did"
    for c, e, o in zip(report.compaction, report.expiry, report.orphans, strict=True):
        click.echo(
            f"{c.table}: {verb} compact {c.partitions} partitions, {c.files_before} -> "
            f"{c.files_after} files ({c.rows} rows, {c.commits} commits, {c.conflicts} "
            f"conflicts retried); expire {e.snapshots_expired} snapshots (keep "
            f"{e.snapshots_kept}), delete {e.files_deleted} files; orphans {len(o.orphans)} "
            f"({o.bytes} bytes), deleted {o.deleted}"
        )
