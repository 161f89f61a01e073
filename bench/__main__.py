"""``python -m ticklake.bench NAME``: run one benchmark and print its table."""

from __future__ import annotations

import argparse

from rich.console import Console


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ticklake bench", description="Run one benchmark and print its table."
    )
    sub = parser.add_subparsers(dest="name", required=True)
    p = sub.add_parser("stack", help="local stack: up time and idle memory")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--no-flink-cluster", action="store_true")
    p = sub.add_parser("replay", help="tape replay into Kafka vs a bare producer loop")
    p.add_argument("--trades", type=int, default=2_000_000)
    p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("fanout", help="relay fan-out vs a bare zmq.proxy, 1/10/100 subscribers")
    p.add_argument("--runs", type=int, default=3)
    p = sub.add_parser("queries", help="Iceberg candle queries before/after maintain vs Parquet")
    p.add_argument("--markets", type=int, default=50)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--hours-per-append", type=int, default=6)
    p.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.name == "stack":
        from ticklake.bench import stack_up

        table = stack_up.run(args.runs, args.idle_seconds, not args.no_flink_cluster)
        Console().print(table)
    elif args.name == "replay":
        from ticklake.bench import replay

        Console().print(replay.run(args.trades, args.runs))
    elif args.name == "queries":
        from ticklake.bench import queries

        Console().print(queries.run(args.markets, args.days, args.hours_per_append, args.runs))
    elif args.name == "fanout":
        from ticklake.bench import fanout

        Console().print(fanout.run(args.runs))


if __name__ == "__main__":
    main()
