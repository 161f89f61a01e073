"""The risk audit job's SQL: committed topics in, one INSERT per audit table."""

from __future__ import annotations

import os
import re

import pytest
from pydantic import ValidationError

from ticklake.catalog.tables import RISK_TABLES
from ticklake.jobs.risk import RiskSettings
from ticklake.jobs.risk_audit import (
    RiskAuditSettings,
    _overrides,
    job_sql,
    lower_own_priority,
    parser,
)
from ticklake.settings import Connections

INSERT = re.compile(r"INSERT INTO `(\w+)`\.`(\w+)`\.`(\w+)` /\*\+ (.*?) \*/ SELECT (.*) FROM (\w+)")


def _plan(**kw: object) -> tuple[RiskAuditSettings, list[str], list[str]]:
    s = RiskAuditSettings(**kw)  # type: ignore[arg-type]
    sql = job_sql(s, Connections.load())
    return s, sql.setup, sql.inserts


def test_each_table_gets_its_columns_in_the_catalogs_order() -> None:
    """The SELECT lists are checked against the tables ``catalog/tables.py`` creates, not
    against the code that writes them."""
    _, _, inserts = _plan(namespace="audit_ns")
    by_table = {}
    for insert in inserts:
        m = INSERT.fullmatch(insert)
        assert m, insert
        catalog, namespace, table, _, select, source = m.groups()
        assert (catalog, namespace, source) == (Connections.load().catalog.name, "audit_ns",
                                                f"in_{table}")  # fmt: skip
        by_table[table] = [c.rsplit("AS ", 1)[-1].strip(" `") for c in select.split(", ")]
    assert by_table == {t.name: list(t.column_names()) for t in RISK_TABLES}
    assert by_table["decisions"][0] == "decision_ts"
    assert "TICKLAKE_MICROS_TO_LTZ(`decision_ts_us`) AS `decision_ts`" in inserts[0]


def test_sources_read_only_committed_records_of_the_risk_jobs_topics() -> None:
    _, setup, _ = _plan(decisions_topic="d", violations_topic="v", events_topic="e")
    sources = [d for d in setup if "'connector' = 'kafka'" in d]
    assert len(sources) == 3
    for ddl, topic in zip(sources, ["d", "v", "e"], strict=True):
        assert f"'topic' = '{topic}'" in ddl
        assert "'properties.isolation.level' = 'read_committed'" in ddl
        assert "'scan.startup.mode' = 'group-offsets'" in ddl
        assert "'properties.auto.offset.reset' = 'earliest'" in ddl
        assert "'properties.group.id' = 'ticklake-risk-audit'" in ddl
        assert "scan.bounded.mode" not in ddl
    # The defaults are the risk job's own exactly-once topics.
    r, a = RiskSettings(), RiskAuditSettings()
    assert (a.decisions_topic, a.violations_topic, a.events_topic) == (
        r.decisions_topic, r.violations_topic, r.events_topic)  # fmt: skip
    assert a.decisions_topic != r.decisions_live_topic


def test_bounded_stops_at_the_end_offsets() -> None:
    _, setup, _ = _plan(bounded=True, startup_mode="earliest-offset")
    sources = [d for d in setup if "'connector' = 'kafka'" in d]
    assert all("'scan.bounded.mode' = 'latest-offset'" in d for d in sources)
    assert all("auto.offset.reset" not in d for d in sources)


def test_flags_reach_the_settings_and_the_config() -> None:
    args = parser().parse_args(
        ["--namespace", "x", "--checkpoint-interval", "2s", "--from-checkpoint", "s3://b/chk-3",
         "--distribution", "hash", "--nice", "0", "--flink-conf", "a.b=c", "--print-sql"]
    )  # fmt: skip
    s = RiskAuditSettings(**_overrides(args))
    assert (s.namespace, s.nice, s.distribution) == ("x", 0, "hash")
    config = s.table_config()
    assert config["execution.checkpointing.interval"] == "2000 ms"
    assert config["execution.savepoint.path"] == "s3://b/chk-3"
    assert config["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert config["a.b"] == "c"
    _, _, inserts = _plan(distribution="hash")
    assert all("'distribution-mode'='hash'" in i for i in inserts)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="a topic each"):
        RiskAuditSettings(decisions_topic="t", events_topic="t")
    with pytest.raises(ValidationError):
        RiskAuditSettings(namespace="")
    with pytest.raises(ValidationError):
        RiskAuditSettings(nice=20)


def test_the_process_priority_is_only_ever_lowered() -> None:
    """In a child process: a nice value raised cannot be lowered again without privilege."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read)
        start = os.nice(0)
        got = [lower_own_priority(start + 3), lower_own_priority(start + 1), os.nice(0) - start]
        os.write(write, " ".join(map(str, [start, *got])).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        start, first, second, delta = map(int, f.read().split())
    os.waitpid(pid, 0)
    assert (first, second, delta) == (start + 3, start + 3, 3)
