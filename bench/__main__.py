"""``python -m ticklake.bench NAME``: run one benchmark and print its table."""

from __future__ import annotations

import argparse

from rich.console import Console

from ticklake.bench import stack_up


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ticklake.bench")
    sub = parser.add_subparsers(dest="name", required=True)
    p = sub.add_parser("stack", help="local stack: up time and idle memory")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--no-flink-cluster", action="store_true")
    args = parser.parse_args()
    if args.name == "stack":
        table = stack_up.run(args.runs, args.idle_seconds, not args.no_flink_cluster)
        Console().print(table)


if __name__ == "__main__":
    main()
