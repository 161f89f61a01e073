"""The two environments: job code imports nothing that only the platform environment has."""

from __future__ import annotations

import os
import pkgutil
import subprocess
from pathlib import Path

import pytest

import ticklake.jobs

ROOT = Path(__file__).resolve().parents[2]
FLINK_PYTHON = Path(
    os.environ.get("TICKLAKE_FLINK_PYTHON")
    or (ROOT / ".ticklake" / "venvs" / "flink" / "bin" / "python")
)
PLATFORM_ONLY = ["pyiceberg", "confluent_kafka", "duckdb", "ccxt", "zmq", "boto3", "psycopg"]

CHECK = """
import importlib, importlib.util, sys
mods = sys.argv[1].split(",")
platform_only = sys.argv[2].split(",")
present = [m for m in platform_only if importlib.util.find_spec(m) is not None]
assert not present, f"platform-only packages in the Flink env: {present}"
for m in mods:
    importlib.import_module(m)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in platform_only)
assert not leaked, f"job modules imported platform-only packages: {leaked}"
import pyarrow, pyflink
print("pyarrow", pyarrow.__version__)
"""


def job_modules() -> list[str]:
    return [
        f"ticklake.jobs.{m.name}"
        for m in pkgutil.iter_modules(ticklake.jobs.__path__)
        if m.name != "runner"
    ]


@pytest.mark.skipif(not FLINK_PYTHON.exists(), reason="Flink env not created (bin/ticklake does)")
def test_job_modules_import_in_the_flink_environment() -> None:
    mods = [*job_modules(), "ticklake.jobs.runner", "ticklake.catalog.connection"]
    assert "ticklake.jobs.catalog_roundtrip" in mods
    proc = subprocess.run(
        [str(FLINK_PYTHON), "-c", CHECK, ",".join(mods), ",".join(PLATFORM_ONLY)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # PyFlink's pinned pyarrow is the reason for two environments.
    assert proc.stdout.startswith("pyarrow 11.")


def test_platform_environment_has_a_modern_pyarrow() -> None:
    import pyarrow

    assert int(pyarrow.__version__.split(".")[0]) >= 18
