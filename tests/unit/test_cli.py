"""The CLI: --help everywhere, one clear message and a trustworthy exit code on errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TICKLAKE = str(Path(sys.executable).parent / "ticklake")


def run(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TICKLAKE_")}
    full.update(TICKLAKE_HOME=str(home), **env)
    return subprocess.run(
        [TICKLAKE, *args], capture_output=True, text=True, env=full, timeout=60, check=False
    )


COMMANDS = """
    up | down | status | logs | setup | run | check | env | ingest | ingest run | ingest replay
    | jobs | jobs submit | jobs list | jobs cancel | jobs savepoint | relay | subscribe | history
    | query | chart | maintain
"""


@pytest.mark.parametrize("args", [[], *(c.split() for c in COMMANDS.split("|"))])
def test_every_command_has_help(args: list[str], tmp_path: Path) -> None:
    proc = run([*args, "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: ticklake" in proc.stdout


def test_exchange_passes_help_through(tmp_path: Path) -> None:
    proc = run(["exchange", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--rate-multiplier" in proc.stdout


def test_bench_passes_help_through(tmp_path: Path) -> None:
    proc = run(["bench", "stack", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage: ticklake bench stack" in proc.stdout


def test_unknown_component_is_a_clear_error(tmp_path: Path) -> None:
    proc = run(["logs", "zookeeper"], tmp_path)
    assert proc.returncode == 6
    assert "error: no stack component named 'zookeeper'" in proc.stderr
    assert "hint: one of: postgres, minio, kafka, flink, flink-cluster" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_setting_is_a_clear_error(tmp_path: Path) -> None:
    proc = run(["status"], tmp_path, TICKLAKE_STACK__KAFKA__PORT="ninety")
    assert proc.returncode == 3
    assert "error: invalid settings" in proc.stderr
    assert "kafka.port" in proc.stderr
    assert "'ninety'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_status_of_a_stopped_stack(tmp_path: Path) -> None:
    proc = run(["status", "--output", "json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"state": "stopped"' in proc.stdout


def test_down_with_nothing_running(tmp_path: Path) -> None:
    proc = run(["down"], tmp_path)
    assert proc.returncode == 0
    assert "nothing was running" in proc.stderr


def test_env_masks_secrets_unless_asked(tmp_path: Path) -> None:
    masked = run(["env"], tmp_path).stdout
    assert "TICKLAKE_CATALOG__PASSWORD=**********" in masked
    shown = run(["env", "--show-secrets"], tmp_path).stdout
    assert "TICKLAKE_CATALOG__PASSWORD=**********" not in shown
    secret = (tmp_path / "secrets.env").read_text()
    password = next(line.split("=", 1)[1] for line in secret.splitlines() if "POSTGRES" in line)
    assert f"TICKLAKE_CATALOG__PASSWORD={password}" in shown
    assert oct((tmp_path / "secrets.env").stat().st_mode & 0o777) == "0o600"
