"""The risk job's source SQL: one Kafka source for the five account inputs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ticklake.jobs.flink_conf import given_arguments
from ticklake.jobs.risk import (
    RiskSettings,
    input_topics,
    parser,
    raw_inputs_query,
    sinks,
    source_ddls,
)
from ticklake.jobs.risk_inputs import ACCOUNT_INPUTS


def test_one_source_table_reads_every_account_input_topic() -> None:
    s = RiskSettings(proposals_topic="p", fills_topic="f", broker_positions_topic="b",
                     commands_topic="c", limits_topic="l")  # fmt: skip
    ddls = source_ddls(s, "localhost:9092")
    raw = [d for d in ddls if "raw_inputs" in d]
    assert len(ddls) == 2 and len(raw) == 1
    topics = ";".join(input_topics(s)[k] for k in ACCOUNT_INPUTS)
    assert f"'topic' = '{topics}'" in raw[0]
    assert sorted(topics.split(";")) == ["b", "c", "f", "l", "p"]


def test_the_kind_of_each_record_comes_from_its_topic() -> None:
    s = RiskSettings(proposals_topic="t.p", fills_topic="t.f", broker_positions_topic="t.b",
                     commands_topic="t.c", limits_topic="t'l")  # fmt: skip
    query = raw_inputs_query(s)
    for topic, kind in [("t.p", "proposal"), ("t.f", "fill"), ("t.b", "broker_position"),
                        ("t.c", "command"), ("t''l", "limits")]:  # fmt: skip
        assert f"WHEN '{topic}' THEN '{kind}'" in query
    assert query.endswith(" FROM raw_inputs") and "UNION" not in query


def test_two_inputs_on_one_topic_are_refused() -> None:
    with pytest.raises(ValidationError, match="topic of its own"):
        RiskSettings(fills_topic="same", proposals_topic="same")


def test_network_buffers_and_flink_conf_reach_the_job_config() -> None:
    from ticklake.jobs.risk import _overrides, parser

    default = RiskSettings().flink_config()
    assert default["taskmanager.network.memory.max-buffers-per-channel"] == "500"
    assert default["taskmanager.memory.network.max"] == "256mb"
    args = parser().parse_args(
        ["--channel-buffers", "20", "--flink-conf", "taskmanager.memory.network.max=64mb",
         "--flink-conf", "state.backend.type=rocksdb"]
    )  # fmt: skip
    config = RiskSettings(**_overrides(args)).flink_config()
    assert config["taskmanager.network.memory.max-buffers-per-channel"] == "20"
    assert config["taskmanager.network.memory.floating-buffers-per-gate"] == "20"
    assert config["taskmanager.memory.network.max"] == "64mb"  # applied last
    assert config["state.backend.type"] == "rocksdb"
    with pytest.raises(SystemExit):
        parser().parse_args(["--flink-conf", "no-equals-sign"])


def test_checkpoints_are_unaligned_unless_turned_off() -> None:
    from ticklake.jobs.risk import _overrides, parser

    assert RiskSettings().flink_config()["execution.checkpointing.unaligned.enabled"] == "true"
    args = parser().parse_args(["--no-unaligned-checkpoints"])
    config = RiskSettings(**_overrides(args)).flink_config()
    assert config["execution.checkpointing.unaligned.enabled"] == "false"
    forced = parser().parse_args(
        ["--flink-conf", "execution.checkpointing.unaligned.enabled=false"]
    )
    assert (
        RiskSettings(**_overrides(forced)).flink_config()[
            "execution.checkpointing.unaligned.enabled"
        ]
        == "false"
    )  # --flink-conf is applied last


def test_fetch_and_linger_settings_reach_the_sources_and_the_live_sinks() -> None:
    args = parser().parse_args(
        [
            "--source-fetch-wait=5ms",
            "--source-fetch-min-bytes=65536",
            "--live-linger=2ms",
            "--record-linger=250ms",
        ]
    )
    s = RiskSettings(**given_arguments(args))
    for ddl in source_ddls(s, "localhost:9092"):
        assert "'properties.fetch.max.wait.ms' = '5'" in ddl
        assert "'properties.fetch.min.bytes' = '65536'" in ddl
    by_table = {ddl.split()[3]: ddl for ddl in sinks(s, "localhost:9092")}
    for live in ("live_decisions", "live_events"):
        assert "'properties.linger.ms' = '2'" in by_table[live]
    for record in ("out_decisions", "out_violations", "out_events", "out_dead_letters"):
        assert "'properties.linger.ms' = '250'" in by_table[record]
    defaults = RiskSettings()
    assert "'properties.fetch.min.bytes' = '1'" in source_ddls(defaults, "b:1")[0]
    by_table = {ddl.split()[3]: ddl for ddl in sinks(defaults, "b:1")}
    assert "'properties.linger.ms' = '0'" in by_table["live_decisions"]
    # The exactly-once topics batch: nobody sees their records before the commit.
    assert "'properties.linger.ms' = '100'" in by_table["out_decisions"]


def test_negative_linger_is_refused() -> None:
    with pytest.raises(ValidationError, match="live_linger"):
        RiskSettings(live_linger="-1ms")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="record_linger"):
        RiskSettings(record_linger="-1ms")  # type: ignore[arg-type]
