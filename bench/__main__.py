"""``python -m ticklake.bench NAME``: run one benchmark and print its table."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from rich.console import Console

from ticklake.bench.risk import add_arguments as risk_arguments


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915
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
    p = sub.add_parser("candles", help="candles from trades: ticklake vs Quix Streams vs a loop")
    p.add_argument("--records", type=int, default=5_000_000, help="tape size (default 5M)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--contenders",
        default="raw,dict,p1,p2,quix,p1:kafka,p2:kafka,p1:iceberg,p2:iceberg",
        help="in run order: raw, dict, quix, pN[:all|kafka|iceberg][:nolive] (the job)",
    )
    p = sub.add_parser("freshness", help="trade produced -> live trade/candle/subscriber latency")
    p.add_argument("--rates", default="1000,10000,50000", help="trades/s, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="per rate")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--checkpoint-interval", default="10s", help="of the job (default 10s)")
    p.add_argument(
        "--warmup-seconds",
        type=float,
        default=0.0,
        help="first produce the top rate this long, not measured (a warm JVM; default 0)",
    )
    p.add_argument(
        "--live-path",
        choices=["kafka", "relay"],
        default="kafka",
        help="kafka (default): live topics -> `ticklake relay bridge` -> relay; relay: the"
        " job publishes straight to the relay (--live-relay --no-live-kafka, no bridge)",
    )
    p.add_argument(
        "--sinks",
        choices=["all", "kafka", "iceberg"],
        default="all",
        help="experiments: the job with only its Kafka or Iceberg sinks",
    )
    p.add_argument(
        "--job-arg",
        action="append",
        default=[],
        help="an extra flag of the dedup + OHLC job, e.g. --job-arg=--no-live (repeatable)",
    )
    p.add_argument(
        "--producer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiments: a librdkafka setting of the bench's trade producer over the"
        " ingestors' own (ticklake.ingestors.kafka_sink), e.g. linger.ms=20 (repeatable)",
    )
    risk_arguments(sub.add_parser("risk", help="risk job: decision and breach -> halt latency"))
    p = sub.add_parser("kafka-poll", help="record wait in consume(n, timeout) vs consume_ready")
    p.add_argument("--rates", default="100,1000,10000", help="records/s, comma-separated")
    p.add_argument("--seconds", type=float, default=5.0, help="per rate and call")
    p.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.name == "freshness":
        bad = [c for c in args.producer_config if "=" not in c or c.startswith("=")]
        if bad:
            parser.error(f"--producer-config takes KEY=VALUE, got {bad[0]!r}")
    if args.name == "freshness" and args.sinks == "iceberg":
        parser.error(
            "freshness measures the live outputs, and --sinks iceberg has none: "
            "use --sinks all or kafka (bench candles measures the Iceberg path)"
        )
    # A benchmark owns a scratch stack, a job and child processes: SIGTERM (timeout, kill)
    # must unwind through their ``finally`` blocks like Ctrl-C does, not leave them running.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
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
    elif args.name == "candles":
        from ticklake.bench import candles

        order = tuple(s for s in args.contenders.split(",") if s)
        Console(width=180).print(candles.run(args.records, args.runs, order))

    elif args.name == "kafka-poll":
        from ticklake.bench import kafka_poll

        rates = [int(r) for r in args.rates.split(",") if r]
        Console().print(kafka_poll.run(rates, args.seconds, args.runs))
    elif args.name == "risk":
        from ticklake.bench import risk

        Console().print(risk.run_from(args))
    elif args.name == "freshness":
        from ticklake.bench import freshness

        rates = [int(r) for r in args.rates.split(",") if r]
        Console().print(
            freshness.run(
                rates,
                args.seconds,
                args.runs,
                checkpoint=args.checkpoint_interval,
                job_args=args.job_arg,
                sinks=args.sinks,
                warmup_s=args.warmup_seconds,
                live_path=args.live_path,
                producer_config=args.producer_config,
            )
        )


if __name__ == "__main__":
    main()
