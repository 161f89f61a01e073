"""The real local stack, started once per test run on free loopback ports.

Each run gets its own state directory (data, logs, pids) and shares the download cache, so a
run never touches a developer's own stack and a warm run downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ticklake.settings import Connections
from ticklake.stack.manager import Stack
from ticklake.stack.process import free_port

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    base = Path(os.environ.get("TICKLAKE_HOME") or ROOT / ".ticklake")
    # Not under /tmp/pytest-of-*: PostgreSQL runs as an unprivileged user that must enter it.
    home = base / "test-stacks" / uuid.uuid4().hex[:10]
    home.mkdir(parents=True)
    ports = {
        "TICKLAKE_STACK__KAFKA__PORT": free_port(),
        "TICKLAKE_STACK__KAFKA__CONTROLLER_PORT": free_port(),
        "TICKLAKE_STACK__MINIO__PORT": free_port(),
        "TICKLAKE_STACK__MINIO__CONSOLE_PORT": free_port(),
        "TICKLAKE_STACK__POSTGRES__PORT": free_port(),
        "TICKLAKE_STACK__FLINK__REST_PORT": free_port(),
        "TICKLAKE_STACK__FLINK__JOBMANAGER_RPC_PORT": free_port(),
    }
    saved = dict(os.environ)
    os.environ["TICKLAKE_CACHE_DIR"] = str(
        Path(os.environ.get("TICKLAKE_CACHE_DIR") or base / "cache")
    )
    os.environ.setdefault("TICKLAKE_FLINK_PYTHON", str(base / "venvs" / "flink" / "bin" / "python"))
    os.environ["TICKLAKE_HOME"] = str(home)
    os.environ.update({k: str(v) for k, v in ports.items()})
    for key in list(os.environ):
        # Connection variables come from this stack's stack.env, not from the caller.
        if key.split("__")[0] in {"TICKLAKE_KAFKA", "TICKLAKE_S3", "TICKLAKE_CATALOG"}:
            del os.environ[key]
    the_stack = Stack()
    failed = True
    try:
        the_stack.up()
        failed = False
        yield the_stack
    finally:
        the_stack.down()
        os.environ.clear()
        os.environ.update(saved)
        if not failed and not os.environ.get("TICKLAKE_KEEP_TEST_STACK"):
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def flink_cluster(stack: Stack) -> Stack:
    """The same stack plus the standalone Flink cluster (checkpoints on MinIO)."""
    stack.up(flink_cluster=True)
    return stack


@pytest.fixture(scope="session")
def conn(stack: Stack) -> Connections:
    return Connections.load()
