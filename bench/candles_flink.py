"""The candles benchmark's ticklake contender: the dedup + OHLC job, bounded, on the
embedded MiniCluster, optionally with only some of its sinks.

    $TICKLAKE_HOME/venvs/flink/bin/python -m ticklake.bench.candles_flink \
        --sinks all|kafka|iceberg -- <ticklake.jobs.dedup_ohlc flags>

The job's own settings, SQL and tables (``ticklake.jobs.dedup_ohlc.plan``); ``--sinks``
keeps the INSERTs into every sink (``all``: the job as deployed), only the Kafka ones
(``kafka``: candles and late trades, exactly-once, plus the live outputs if on), or only the
Iceberg ones (``iceberg``: candles, trades, late trades). Prints one JSON line: the wall-clock
time when the job was submitted (its tasks start deploying) and when it finished (every
window fired and the final checkpoint committed every sink).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from ticklake.jobs import dedup_ohlc
from ticklake.jobs.execution import statement_set
from ticklake.settings import Connections


def keep(insert: str, sinks: str, catalog: str) -> bool:
    """Whether an ``INSERT INTO <target>`` belongs to the selected sinks."""
    target = insert.split(None, 3)[2]
    iceberg = target.startswith(f"`{catalog}`")
    return sinks == "all" or (sinks == "iceberg") == iceberg


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ticklake.bench.candles_flink")
    p.add_argument("--sinks", choices=["all", "kafka", "iceberg"], default="all")
    p.add_argument("job_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    job_args = [x for x in a.job_args if x != "--"]
    args = dedup_ohlc.parser().parse_args(job_args)
    settings = dedup_ohlc.DedupOhlcSettings(
        **{k: v for k, v in vars(args).items() if v is not None and k != "print_sql"}
    )
    conn = Connections.load()
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from ticklake.jobs.gateway_output import drain_gateway_stderr

    sql = dedup_ohlc.plan(settings, conn)
    drain_gateway_stderr()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    ensure_live = getattr(dedup_ohlc, "ensure_live_topics", None)
    if ensure_live is not None and a.sinks != "iceberg":
        ensure_live(settings, conn.kafka.bootstrap_servers)
    inserts = [i for i in sql.inserts if keep(i, a.sinks, conn.catalog.name)]
    result = statement_set(t_env, dataclasses.replace(sql, inserts=inserts)).execute()
    t_submitted = time.time()
    result.wait()
    t_finished = time.time()
    targets = [i.split(None, 3)[2] for i in inserts]
    print(json.dumps({"t_first": t_submitted, "t_last": t_finished, "sinks": targets}),
          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
