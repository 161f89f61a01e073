"""Candlestick charts (PNG, price panel over a volume panel) from the Iceberg candles.

Rendered with matplotlib's Agg backend (no display needed). matplotlib is an optional
dependency of the platform environment: without it :func:`render_candles` raises
:class:`ChartError` saying what to install.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticklake.catalog.query import Market, read_candles
from ticklake.catalog.tables import DEFAULT_NAMESPACE
from ticklake.errors import TickLakeError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.catalog import Catalog

    from ticklake.settings import Connections

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"
#: Above this many candles the chart stops being readable; ask for a longer timeframe.
MAX_CANDLES = 5000


class ChartError(TickLakeError):
    """A chart could not be drawn (plotting library missing, too many candles)."""

    exit_code = 16


def _pyplot() -> Any:
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ChartError(
            "matplotlib not installed: charts need it",
            hint="add matplotlib to the platform dependencies (pyproject.toml, extra "
            "'platform') and run `uv sync`",
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    return plt


def render_candles(candles: pa.Table, out: Path | str, *, title: str = "") -> Path:
    """Draw ``candles`` (rows of one market and timeframe) to a PNG file at ``out``."""
    plt = _pyplot()
    if candles.num_rows > MAX_CANDLES:
        raise ChartError(
            f"{candles.num_rows} candles are too many for one chart (max {MAX_CANDLES})",
            hint="narrow --from/--to or use a longer --tf",
        )
    rows = candles.sort_by("window_start_us").to_pylist()
    times = [r["window_start"] for r in rows]
    width_s = (rows[0]["window_end_us"] - rows[0]["window_start_us"]) / 1e6 if rows else 60.0
    width_days = width_s / 86400 * 0.7

    from matplotlib import dates as mdates  # type: ignore[import-not-found,unused-ignore]

    fig, (ax_price, ax_vol) = plt.subplots(
        2, 1, sharex=True, figsize=(12, 7), gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        xs = mdates.date2num(times)  # type: ignore[no-untyped-call]
        for x, r in zip(xs, rows, strict=True):
            o, h, lo, c = (float(r[k]) for k in ("open", "high", "low", "close"))
            color = UP_COLOR if c >= o else DOWN_COLOR
            ax_price.vlines(x, lo, h, color=color, linewidth=0.8)
            body = max(abs(c - o), (h - lo) * 0.002 or 1e-12)
            ax_price.bar(x, body, width_days, bottom=min(o, c), color=color, edgecolor=color)
            ax_vol.bar(x, float(r["volume"]), width_days, color=color)
        ax_price.set_title(title)
        ax_price.set_ylabel("price")
        ax_vol.set_ylabel("volume")
        ax_price.grid(alpha=0.2)
        ax_vol.grid(alpha=0.2)
        ax_vol.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d %H:%M"))  # type: ignore[no-untyped-call]
        fig.autofmt_xdate()
        fig.tight_layout()
        path = Path(out)
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def chart_candles(
    market: str | Market,
    timeframe: str,
    start: datetime,
    end: datetime,
    out: Path | str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    conn: Connections | None = None,
    catalog: Catalog | None = None,
) -> tuple[Path, int]:
    """Read the candles of one market and write the chart; returns (path, candle count)."""
    _pyplot()  # fail before reading anything when matplotlib is missing
    m = market if isinstance(market, Market) else Market.parse(market)
    candles = read_candles([m], timeframe, start, end, namespace=namespace, conn=conn,
                           catalog=catalog)  # fmt: skip
    title = f"{m} {timeframe}  {start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} UTC"
    return render_candles(candles, out, title=title), candles.num_rows
