"""The shape every local stack component has: install, start, health, stop."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ticklake.errors import ComponentUnhealthyError, StackError
from ticklake.stack.context import StackContext
from ticklake.stack.process import ManagedProcess


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class Component(ABC):
    """One part of the local stack, run as plain processes on loopback."""

    name: str = ""
    #: components started only on request (e.g. the standalone Flink cluster)
    optional: bool = False

    def __init__(self, ctx: StackContext):
        self.ctx = ctx

    @property
    def processes(self) -> list[ManagedProcess]:
        return [ManagedProcess(self.name, self.ctx.run_dir, self.ctx.log_dir)]

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach it (shown by ``ticklake status``)."""

    @abstractmethod
    def install(self) -> None:
        """Download or build what it needs; idempotent and fast when cached."""

    @abstractmethod
    def start(self) -> None:
        """Start its processes (the caller has checked it is not running)."""

    @abstractmethod
    def health(self) -> Health:
        """Probe it for real (a client request, not only an open port)."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """After it is healthy: create buckets, databases, ... (idempotent)."""

    def running(self) -> bool:
        return all(p.running() is not None for p in self.processes)

    def partly_running(self) -> bool:
        return any(p.running() is not None for p in self.processes)

    def stop(self) -> bool:
        stopped = False
        for proc in reversed(self.processes):
            stopped = proc.stop() or stopped
        return stopped

    def wait_healthy(self, timeout_s: float, on_wait: Callable[[str], None] | None = None) -> None:
        """Probe until healthy; on timeout or early exit raise with the tail of the log."""
        deadline = time.monotonic() + timeout_s
        last = Health(False, "not probed yet")
        while time.monotonic() < deadline:
            for proc in self.processes:
                code = proc.exited_code()
                if code is not None or (proc.record() is not None and proc.running() is None):
                    raise ComponentUnhealthyError(
                        f"{self.name} exited during start-up"
                        + (f" with code {code}" if code not in (None, -1) else ""),
                        detail=f"last lines of {proc.log_file}:\n{proc.log_tail()}",
                        hint=f"read {proc.log_file}; `ticklake down` then `ticklake up` retries",
                    )
            try:
                last = self.health()
            except StackError as exc:
                last = Health(False, exc.message)
            if last.ok:
                return
            if on_wait:
                on_wait(last.detail)
            time.sleep(0.25)
        tails = "\n".join(f"last lines of {p.log_file}:\n{p.log_tail()}" for p in self.processes)
        raise ComponentUnhealthyError(
            f"{self.name} did not become healthy within {timeout_s:.0f}s ({last.detail})",
            detail=tails,
            hint="read the log above; raise TICKLAKE_STACK__STARTUP_TIMEOUT_S on a slow machine",
        )
