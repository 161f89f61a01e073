"""Run a file of Flink SQL statements as one job, on the embedded MiniCluster or a cluster.

    python -m ticklake.jobs.sql_script --file pipeline.sql [--mode batch|streaming]
        [--var NAME=VALUE ...] [--parallelism N] [--checkpoint-interval 10s] [--no-catalog]

The file holds statements separated by ``;`` at the end of a line; ``--`` line comments and
``/* */`` block comments are ignored (not inside quoted strings). ``SET 'key' = 'value';``
sets a table configuration option; every ``INSERT`` is collected into one statement set, so
all of them run as a single Flink job, started after every other statement (``CREATE``,
``USE``, ...) has run; the script waits for that job to finish (for a streaming job: until
it is cancelled or fails).

Placeholders ``${NAME}`` are filled before a statement runs, from the shared connection
settings (``ticklake.settings.Connections``) and from ``--var NAME=VALUE`` (which wins):

    ${KAFKA_BOOTSTRAP}   Kafka bootstrap servers
    ${S3_ENDPOINT}       S3 (MinIO) endpoint URL
    ${S3_ACCESS_KEY}     S3 access key
    ${S3_SECRET_KEY}     S3 secret key
    ${S3_REGION}         S3 region
    ${S3_BUCKET}         the platform's bucket
    ${CATALOG}           name of the shared Iceberg catalog (registered unless --no-catalog)
    ${WAREHOUSE}         the catalog's warehouse location

Values go in verbatim except that single quotes are doubled, so ``'${NAME}'`` is always
a well-formed SQL string. An unknown placeholder is an error, never an empty string.

Imports only PyFlink and the shared settings, so it runs in the Flink job environment.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ticklake.catalog.connection import flink_catalog_ddl
from ticklake.errors import JobError
from ticklake.jobs.execution import execute_and_wait
from ticklake.jobs.functions import function_ddl
from ticklake.jobs.gateway_output import drain_gateway_stderr
from ticklake.settings import Connections

if TYPE_CHECKING:
    from pyflink.table import TableEnvironment

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SET = re.compile(r"^SET\s+'((?:[^']|'')+)'\s*=\s*'((?:[^']|'')*)'$", re.I | re.S)
_INSERT = re.compile(r"^INSERT\s+(INTO|OVERWRITE)\b", re.I)


def _ends_line(text: str, start: int) -> bool:
    """Only blanks, or a ``--`` comment, between ``start`` and the end of its line."""
    rest = text[start:].split("\n", 1)[0].strip()
    return not rest or rest.startswith("--")


def split_statements(text: str) -> list[str]:
    """Statements of a SQL script: split on ``;`` at line ends, comments removed.

    Quotes (``'...'``, `` `...` ``, ``"..."``) are respected: a ``;`` or ``--`` inside
    them is text. A ``;`` followed by more SQL on the same line does not split. ``/*+ */``
    hints are kept.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    quote: str | None = None
    while i < n:
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
            i += 1
        elif ch in "'`\"":
            quote = ch
            current.append(ch)
            i += 1
        elif text.startswith("--", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise JobError("unterminated /* comment in the SQL script")
            # /*+ ... */ is a Flink hint (OPTIONS, ...), not a comment: keep it.
            current.append(text[i : end + 2] if text.startswith("/*+", i) else " ")
            i = end + 2
        elif ch == ";" and _ends_line(text, i + 1):
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    if quote:
        raise JobError(f"unterminated {quote} quote in the SQL script")
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def placeholders(conn: Connections, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Values of the ``${NAME}`` placeholders: the connection settings, then ``extra``."""
    values = {
        "KAFKA_BOOTSTRAP": conn.kafka.bootstrap_servers,
        "S3_ENDPOINT": conn.s3.endpoint,
        "S3_ACCESS_KEY": conn.s3.access_key,
        "S3_SECRET_KEY": conn.s3.secret_key.get_secret_value(),
        "S3_REGION": conn.s3.region,
        "S3_BUCKET": conn.s3.bucket,
        "CATALOG": conn.catalog.name,
        "WAREHOUSE": conn.catalog.warehouse,
    }
    return values | dict(extra or {})


def substitute(statement: str, values: Mapping[str, str]) -> str:
    """Fill ``${NAME}`` placeholders (single quotes in values doubled)."""
    missing = sorted({m for m in _PLACEHOLDER.findall(statement) if m not in values})
    if missing:
        raise JobError(
            f"unknown placeholder(s) in the SQL script: {', '.join(missing)}",
            hint=f"known: {', '.join(sorted(values))}; add others with --var NAME=VALUE",
        )
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)].replace("'", "''"), statement)


def build(
    conn: Connections,
    script: str,
    *,
    streaming: bool,
    variables: Mapping[str, str] | None = None,
    parallelism: int | None = None,
    checkpoint_interval: str | None = None,
    register_catalog: bool = True,
) -> tuple[TableEnvironment, list[str]]:
    """Run the script's non-INSERT statements; return the environment and the INSERTs."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    settings = (
        EnvironmentSettings.in_streaming_mode()
        if streaming
        else EnvironmentSettings.in_batch_mode()
    )
    drain_gateway_stderr()
    t_env = TableEnvironment.create(settings)
    config = t_env.get_config()
    if parallelism:
        config.set("parallelism.default", str(parallelism))
    if streaming and checkpoint_interval:
        # Iceberg commits and exactly-once Kafka sinks only complete on checkpoints.
        config.set("execution.checkpointing.interval", checkpoint_interval)
    for ddl in function_ddl():  # ticklake's functions, callable like built-ins
        t_env.execute_sql(ddl)
    if register_catalog:
        t_env.execute_sql(flink_catalog_ddl(conn))
    values = placeholders(conn, variables)
    inserts: list[str] = []
    for statement in split_statements(script):
        sql = substitute(statement, values)
        if match := _SET.match(sql):
            key, value = (g.replace("''", "'") for g in match.groups())
            config.set(key, value)
        elif _INSERT.match(sql):
            inserts.append(sql)
        else:
            t_env.execute_sql(sql)
    return t_env, inserts


def run(t_env: TableEnvironment, inserts: Sequence[str]) -> str | None:
    """Run all INSERTs as one job, wait for it unless detached; returns the job id."""
    if not inserts:
        return None
    statements = t_env.create_statement_set()
    for sql in inserts:
        statements.add_insert_sql(sql)
    return execute_and_wait(statements, f"{len(inserts)} INSERT(s)")


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ticklake.jobs.sql_script",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", required=True, type=Path, help="the SQL script to run")
    parser.add_argument(
        "--mode",
        choices=["batch", "streaming"],
        default="streaming",
        help="Flink runtime mode (default: streaming)",
    )
    parser.add_argument(
        "--var",
        action="append",
        type=_variable,
        default=[],
        metavar="NAME=VALUE",
        help="extra or overriding ${NAME} placeholder value (repeatable)",
    )
    parser.add_argument("--parallelism", type=int, help="default parallelism of the job")
    parser.add_argument(
        "--checkpoint-interval",
        default="10s",
        help="checkpoint interval in streaming mode (default 10s; Iceberg commits on it)",
    )
    parser.add_argument(
        "--no-catalog",
        action="store_true",
        help="do not register the shared Iceberg catalog (no PostgreSQL needed)",
    )
    args = parser.parse_args(argv)
    t_env, inserts = build(
        Connections.load(),
        args.file.read_text(encoding="utf-8"),
        streaming=args.mode == "streaming",
        variables=dict(args.var),
        parallelism=args.parallelism,
        checkpoint_interval=args.checkpoint_interval,
        register_catalog=not args.no_catalog,
    )
    run(t_env, inserts)


if __name__ == "__main__":
    main()
