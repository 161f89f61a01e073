"""The local stack: set up, start, inspect and stop every component as plain processes."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ticklake.errors import StackError
from ticklake.stack.components.base import Component
from ticklake.stack.components.flink import FlinkClusterComponent, FlinkEmbeddedComponent
from ticklake.stack.components.kafka import KafkaComponent
from ticklake.stack.components.minio import MinioComponent
from ticklake.stack.components.postgres import PostgresComponent
from ticklake.stack.context import StackContext
from ticklake.stack.settings import LOOPBACK, StackSettings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # running | stopped | unhealthy | ready | missing
    address: str
    detail: str
    pids: tuple[int, ...]
    rss_mib: float


def _rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB."""
    total = 0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in open(f"/proc/{p}/status"):  # noqa: SIM115
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = open(f"/proc/{p}/task/{p}/children").read().split()  # noqa: SIM115
            todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


class Stack:
    """Kafka, MinIO, PostgreSQL and Flink (embedded, optionally a standalone cluster)."""

    def __init__(self, settings: StackSettings | None = None):
        self.ctx = StackContext(settings or StackSettings())
        self.postgres = PostgresComponent(self.ctx)
        self.minio = MinioComponent(self.ctx)
        self.kafka = KafkaComponent(self.ctx)
        self.flink = FlinkEmbeddedComponent(self.ctx)
        self.flink_cluster = FlinkClusterComponent(self.ctx)

    @property
    def components(self) -> list[Component]:
        return [self.postgres, self.minio, self.kafka, self.flink, self.flink_cluster]

    def component(self, name: str) -> Component:
        for comp in self.components:
            if comp.name == name:
                return comp
        names = ", ".join(c.name for c in self.components)
        raise StackError(f"no stack component named {name!r}", hint=f"one of: {names}")

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.ctx.ensure_dirs()
        with (self.ctx.run_dir / "stack.lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another ticklake up/down holds the stack lock; waiting")
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def setup(self, progress: Progress | None = None, *, flink_cluster: bool = True) -> None:
        """Download, build and initialise everything; touches no running process."""
        say = progress or (lambda _msg: None)
        self.ctx.progress = say
        with self._lock():
            for comp in self.components:
                if comp is self.flink_cluster and not flink_cluster:
                    continue
                say(f"setting up {comp.name}")
                comp.install()

    def up(self, progress: Progress | None = None, *, flink_cluster: bool = False) -> None:
        """Start what is not running, wait until each one is healthy; idempotent."""
        say = progress or (lambda _msg: None)
        self.ctx.progress = say
        wanted = [c for c in self.components if c is not self.flink_cluster or flink_cluster]
        with self._lock():
            for comp in wanted:
                say(f"setting up {comp.name}")
                comp.install()
            self.write_stack_env()
            started: list[Component] = []
            for comp in wanted:
                if comp is self.flink_cluster:
                    continue  # needs MinIO healthy first (checkpoints on S3)
                if comp.running():
                    continue
                if comp.partly_running():
                    comp.stop()
                say(f"starting {comp.name}")
                comp.start()
                started.append(comp)
            for comp in wanted:
                if comp is self.flink_cluster:
                    continue
                t0 = time.monotonic()
                comp.wait_healthy(self.ctx.settings.startup_timeout_s)
                comp.prepare()
                if comp in started:
                    say(f"{comp.name} healthy in {time.monotonic() - t0:.1f}s at {comp.address}")
            if flink_cluster:
                comp = self.flink_cluster
                if not comp.running():
                    if comp.partly_running():
                        comp.stop()
                    say("starting flink-cluster (JobManager + TaskManager)")
                    comp.start()
                comp.wait_healthy(self.ctx.settings.startup_timeout_s)
                comp.prepare()
                say(f"flink-cluster healthy at {comp.address}")

    def down(self, progress: Progress | None = None) -> list[str]:
        """Stop exactly the processes this stack started (by pid file); returns their names."""
        say = progress or (lambda _msg: None)
        stopped: list[str] = []
        with self._lock():
            for comp in reversed(self.components):
                if comp.partly_running():
                    say(f"stopping {comp.name}")
                if comp.stop():
                    stopped.append(comp.name)
        return stopped

    def status(self) -> list[ComponentStatus]:
        rows: list[ComponentStatus] = []
        for comp in self.components:
            pids = tuple(r.pid for p in comp.processes if (r := p.running()) is not None)
            if comp.processes and not pids:
                state, detail = "stopped", "-"
            else:
                try:
                    health = comp.health()
                except StackError as exc:
                    health_ok, detail = False, exc.message
                else:
                    health_ok, detail = health.ok, health.detail
                if not comp.processes:
                    state = "ready" if health_ok else "missing"
                else:
                    state = "running" if health_ok else "unhealthy"
            rss = sum(_rss_mib(pid) for pid in pids)
            rows.append(ComponentStatus(comp.name, state, comp.address, detail, pids, rss))
        return rows

    def connection_env(self) -> dict[str, str]:
        """The TICKLAKE_* variables through which every service finds this stack."""
        s = self.ctx.settings
        creds = self.ctx.credentials
        return {
            "TICKLAKE_KAFKA__BOOTSTRAP_SERVERS": self.kafka.address,
            "TICKLAKE_S3__ENDPOINT": self.minio.address,
            "TICKLAKE_S3__ACCESS_KEY": s.minio.root_user,
            "TICKLAKE_S3__SECRET_KEY": creds.minio_password.get_secret_value(),
            "TICKLAKE_S3__BUCKET": s.minio.buckets[0],
            "TICKLAKE_CATALOG__HOST": LOOPBACK,
            "TICKLAKE_CATALOG__PORT": str(s.postgres.port),
            "TICKLAKE_CATALOG__DATABASE": s.postgres.database,
            "TICKLAKE_CATALOG__USER": s.postgres.user,
            "TICKLAKE_CATALOG__PASSWORD": creds.postgres_password.get_secret_value(),
            "TICKLAKE_CATALOG__WAREHOUSE": f"s3://{s.minio.buckets[0]}/warehouse",
            "TICKLAKE_FLINK__REST_URL": self.flink_cluster.address,
        }

    def write_stack_env(self) -> None:
        path = self.ctx.home / "stack.env"
        body = "".join(f"{k}={v}\n" for k, v in self.connection_env().items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# written by `ticklake up`: how services find this local stack\n" + body)
