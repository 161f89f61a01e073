"""Flink configuration shared by the jobs: network buffers and ``--flink-conf KEY=VALUE``.

**Why the jobs raise the network buffers.** On the embedded MiniCluster every channel is
local, so the only queue in front of a task is its sender's output buffers, and Flink caps
those at 10 per channel (``taskmanager.network.memory.max-buffers-per-channel``). With a
small buffer timeout each flush takes a whole 32 KB buffer however few records it holds,
so 10 buffers are as little as 50 ms of output. At every checkpoint a sink task (an Iceberg
writer closing and uploading its files, an exactly-once Kafka sink flushing its
transaction) reads no input for a while; once its sender's buffers are full, the sender
stops too, and every output chained to it. 500 buffers per channel (and as many floating
buffers per gate) absorb that; the pool they come from is ``network_memory``.
Measured: ``bench/README.md`` (freshness, session 6; risk, session 8).
"""

from __future__ import annotations

import argparse
from typing import Any

#: Buffers per output channel (and floating buffers per input gate); Flink's default is 10.
CHANNEL_BUFFERS = 500
#: Network memory of the embedded MiniCluster (Flink's local default is 64 MB).
NETWORK_MEMORY = "256mb"


def network_config(channel_buffers: int, network_memory: str) -> dict[str, str]:
    """The Flink options behind ``--channel-buffers`` and ``--network-memory``."""
    return {
        "taskmanager.network.memory.max-buffers-per-channel": str(channel_buffers),
        "taskmanager.network.memory.floating-buffers-per-gate": str(channel_buffers),
        "taskmanager.memory.network.min": network_memory,
        "taskmanager.memory.network.max": network_memory,
    }


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (an argparse type)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--channel-buffers``, ``--network-memory`` and ``--flink-conf`` on a job's parser."""
    p.add_argument(
        "--channel-buffers",
        type=int,
        help=f"network buffers an output channel may hold (default {CHANNEL_BUFFERS}; Flink's 10)",
    )
    p.add_argument(
        "--network-memory",
        help=f"network memory of the embedded MiniCluster (default {NETWORK_MEMORY})",
    )
    p.add_argument(
        "--flink-conf",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="more Flink configuration, applied last (repeatable)",
    )


def given_arguments(args: argparse.Namespace, *skip: str) -> dict[str, Any]:
    """The flags that were given (``None``: not given, so the environment or the default
    holds), ``--flink-conf`` pairs as a dict; ``skip`` names flags that are not settings."""
    given = {k: v for k, v in vars(args).items() if v is not None and k not in skip}
    if "flink_conf" in given:
        given["flink_conf"] = dict(given["flink_conf"])
    return given
