"""The stack's process handling: pid files, exact stops, ports, health timeouts."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from ticklake.errors import ComponentUnhealthyError, PortInUseError
from ticklake.stack.components.base import Component, Health
from ticklake.stack.context import StackContext
from ticklake.stack.process import ManagedProcess, ensure_port_free, free_port, port_open
from ticklake.stack.settings import StackSettings


def sleeper(tmp_path: Path, name: str = "sleeper") -> ManagedProcess:
    return ManagedProcess(name, tmp_path / "run", tmp_path / "logs")


def wait_for_log(proc: ManagedProcess, text: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.log_tail():
        assert time.monotonic() < deadline, f"{text!r} never appeared in {proc.log_file}"
        time.sleep(0.05)


def test_start_records_pid_and_stop_ends_exactly_that_process(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    rec = proc.start([sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"])
    assert proc.running() == rec
    assert json.loads(proc.pid_file.read_text())["pid"] == rec.pid
    wait_for_log(proc, "hi")
    assert proc.stop(timeout_s=10)
    assert proc.running() is None
    assert not proc.pid_file.exists()
    assert "hi" in proc.log_tail()


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc.start([sys.executable, "-c", code])
    wait_for_log(proc, "ready")
    t0 = time.monotonic()
    assert proc.stop(timeout_s=1)
    assert time.monotonic() - t0 < 8
    assert proc.running() is None


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    """A pid file whose start time does not match the live process is treated as stale."""
    proc = sleeper(tmp_path, "stale")
    other = sleeper(tmp_path, "other")
    rec = other.start([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.pid_file.parent.mkdir(parents=True, exist_ok=True)
        proc.pid_file.write_text(
            json.dumps({"pid": rec.pid, "start_ticks": rec.start_ticks + 1, "argv": ["x"]})
        )
        assert proc.running() is None
        assert proc.stop() is False  # nothing of ours to stop
        assert other.running() == rec  # the other process is untouched
    finally:
        other.stop(timeout_s=5)


def test_port_in_use_is_explained(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_open("127.0.0.1", port)
        with pytest.raises(PortInUseError) as info:
            ensure_port_free("Kafka", "127.0.0.1", port, "TICKLAKE_STACK__KAFKA__PORT")
    text = info.value.render()
    assert f"127.0.0.1:{port}" in text
    assert "TICKLAKE_STACK__KAFKA__PORT" in text
    assert info.value.exit_code != 0
    ensure_port_free("Kafka", "127.0.0.1", free_port(), "X")  # a free port passes


class _Crashing(Component):
    name = "crasher"

    @property
    def address(self) -> str:
        return "nowhere"

    def install(self) -> None:
        pass

    def start(self) -> None:
        self.processes[0].start(
            [sys.executable, "-c", "import sys; print('bad config: port'); sys.exit(3)"]
        )

    def health(self) -> Health:
        return Health(False, "never healthy")


class _Hanging(_Crashing):
    name = "hanger"

    def start(self) -> None:
        self.processes[0].start([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_component_that_exits_reports_its_log_tail(tmp_path: Path) -> None:
    comp = _Crashing(StackContext(StackSettings(home=tmp_path, cache=tmp_path / "c")))
    comp.start()
    with pytest.raises(ComponentUnhealthyError) as info:
        comp.wait_healthy(timeout_s=10)
    assert "exited during start-up" in info.value.message
    assert "bad config: port" in (info.value.detail or "")


def test_a_component_that_never_gets_healthy_times_out(tmp_path: Path) -> None:
    comp = _Hanging(StackContext(StackSettings(home=tmp_path, cache=tmp_path / "c")))
    comp.start()
    try:
        with pytest.raises(ComponentUnhealthyError) as info:
            comp.wait_healthy(timeout_s=1)
        assert "did not become healthy within 1s" in info.value.message
        assert "never healthy" in info.value.message
    finally:
        comp.stop()
