"""Start, find and stop the stack's own processes, by pid file, never by name.

A pid file records the pid and the process start time (from /proc), so a pid the kernel
reused for somebody else's process is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ticklake.errors import PortInUseError, StackError

log = logging.getLogger(__name__)


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot, or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is as good as dead
        return None
    return int(fields[19])


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int
    argv: tuple[str, ...]

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


class ManagedProcess:
    """One long-running process of the stack: its pid file and its log file."""

    def __init__(
        self, name: str, run_dir: Path, log_dir: Path, stop_signal: signal.Signals = signal.SIGTERM
    ):
        self.name = name
        #: what asks it to stop cleanly (PostgreSQL: SIGINT, "fast" shutdown)
        self.stop_signal = stop_signal
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"

    def record(self) -> PidRecord | None:
        try:
            data = json.loads(self.pid_file.read_text())
            return PidRecord(int(data["pid"]), int(data["start_ticks"]), tuple(data["argv"]))
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def running(self) -> PidRecord | None:
        rec = self.record()
        if rec is not None and rec.alive():
            return rec
        return None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
    ) -> PidRecord:
        """Start ``argv`` detached (own session), stdout and stderr appended to the log file."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with self.log_file.open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {self.name}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=full_env,
                    cwd=cwd,
                    start_new_session=True,
                    user=user,
                    group=group,
                    extra_groups=[] if user is not None else None,
                )
            except OSError as exc:
                raise StackError(
                    f"could not start {self.name}: {exc}",
                    hint=f"check that {argv[0]} exists and is executable",
                ) from exc
        ticks = None
        for _ in range(100):
            ticks = _start_ticks(proc.pid)
            if ticks is not None:
                break
            time.sleep(0.01)
        rec = PidRecord(proc.pid, ticks or 0, tuple(argv))
        self.pid_file.write_text(
            json.dumps({"pid": rec.pid, "start_ticks": rec.start_ticks, "argv": list(rec.argv)})
        )
        log.info("started %s pid=%d", self.name, rec.pid)
        return rec

    def exited_code(self) -> int | None:
        """Reap the child if it is ours and has exited; None while it runs."""
        rec = self.record()
        if rec is None:
            return None
        try:
            pid, status = os.waitpid(rec.pid, os.WNOHANG)
        except ChildProcessError:
            return None if rec.alive() else -1
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout_s``. True if something stopped."""
        rec = self.running()
        if rec is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal(rec, self.stop_signal)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._reap(rec.pid)
            if not rec.alive():
                break
            time.sleep(0.1)
        else:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout_s)
            self._signal(rec, signal.SIGKILL)
            for _ in range(50):
                self._reap(rec.pid)
                if not rec.alive():
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal(rec: PidRecord, sig: signal.Signals) -> None:
        # The process leads its own session; signal the group so helpers it forked stop too.
        try:
            if os.getpgid(rec.pid) == rec.pid:
                os.killpg(rec.pid, sig)
            else:
                os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return "\n".join(text.splitlines()[-lines:])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_port_free(component: str, host: str, port: int, setting: str) -> None:
    """Raise PortInUseError if host:port is bound by someone else."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"{component} needs {host}:{port}, which is already in use ({exc.strerror})",
                hint=f"stop whatever listens there (e.g. `ss -ltnp 'sport = :{port}'`) or "
                f"choose another port with {setting}=<port>",
            ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on host (for tests and ad-hoc stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
