"""``python -m ticklake.exchange``: run the local exchange until SIGTERM or SIGINT.

The first line on stdout is the bound base URL (``http://127.0.0.1:PORT``); logs go to stderr.
Settings come from ``TICKLAKE_EXCHANGE__*`` variables; flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ticklake import logs
from ticklake.errors import TickLakeError
from ticklake.exchange.faults import FaultRequest
from ticklake.exchange.server import LocalExchange
from ticklake.exchange.settings import ExchangeSettings


def _genesis(value: str) -> int:
    """Epoch milliseconds, or an ISO-8601 instant (``2026-11-19T00:00:00Z``)."""
    if value.isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r}: give a time zone, e.g. a trailing Z")
    return int(parsed.timestamp() * 1000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ticklake.exchange",
        description="A local exchange speaking Binance spot public market data (REST + "
        "websocket streams) over a deterministic, seeded trade tape.",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--seed", type=int, help="tape seed (default 42)")
    parser.add_argument(
        "--genesis",
        type=_genesis,
        help="first instant with trades: epoch ms or ISO-8601 (default: midnight UTC two days ago)",
    )
    parser.add_argument(
        "--rate-multiplier",
        type=float,
        help="scale every market's trade rate (default 1; ~19 trades/s total)",
    )
    parser.add_argument("--ws-tick-ms", type=int, help="live push interval (default 10)")
    parser.add_argument(
        "--weight-limit",
        type=int,
        dest="weight_limit_per_minute",
        help="answer 429 above this REST weight per minute (default off)",
    )
    parser.add_argument(
        "--faults",
        default=None,
        help="standing faults as JSON, as POST /_control/faults takes: '{\"drop_ws_every_s\": 30}'",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default)")
    return parser.parse_args(argv)


async def serve(settings: ExchangeSettings, faults: FaultRequest | None) -> None:
    exchange = LocalExchange(settings, faults=faults)
    await exchange.start()
    print(exchange.url, flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await exchange.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "host",
            "port",
            "seed",
            "rate_multiplier",
            "ws_tick_ms",
            "weight_limit_per_minute",
        )
        if getattr(args, key) is not None
    }
    if args.genesis is not None:
        overrides["genesis_ms"] = args.genesis
    try:
        settings = ExchangeSettings(**overrides)
        faults = None if args.faults is None else FaultRequest.model_validate_json(args.faults)
        asyncio.run(serve(settings, faults))
    except ValidationError as exc:
        print(f"error: invalid exchange settings or faults\n{exc}", file=sys.stderr)
        return 3
    except TickLakeError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
