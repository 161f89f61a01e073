"""`ticklake jobs` against the standalone cluster: submit, list, savepoint, resubmit, cancel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ticklake.jobs.rest import FlinkRestClient
from ticklake.settings import Connections
from ticklake.stack.manager import Stack

TICKLAKE = str(Path(sys.executable).parent / "ticklake")

SCRIPT = """
CREATE TEMPORARY TABLE gen (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '50');
CREATE TEMPORARY TABLE sink (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT id FROM gen;
"""


def tl(*args: str) -> str:
    proc = subprocess.run(
        [TICKLAKE, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def job_id_of(out: str) -> str:
    match = re.search(r"JobID ([0-9a-f]{32})", out)
    assert match, out
    return match.group(1)


def test_submit_savepoint_resubmit_cancel(
    flink_cluster: Stack, conn: Connections, tmp_path: Path
) -> None:
    script = tmp_path / "gen.sql"
    script.write_text(SCRIPT)
    job_args = ["--", "--file", str(script), "--no-catalog", "--checkpoint-interval", "2s"]
    first = job_id_of(tl("jobs", "submit", "sql_script", "--target", "cluster", "--detached",
                         *job_args))  # fmt: skip
    rest = FlinkRestClient(conn.flink.rest_url)
    rest.wait_for_state(first, {"RUNNING"}, timeout_s=60)
    listed = {j["job_id"]: j["state"] for j in json.loads(tl("jobs", "list", "-o", "json"))}
    assert listed.get(first) == "RUNNING"

    savepoint = tl("jobs", "savepoint", first, "--cancel").strip()
    assert savepoint.startswith(f"s3://{conn.s3.bucket}/flink/savepoints/"), savepoint
    assert rest.wait_for_state(first, {"CANCELED"}, timeout_s=60) == "CANCELED"

    second = job_id_of(tl("jobs", "submit", "sql_script", "--target", "cluster", "--detached",
                          "--from-savepoint", savepoint, *job_args))  # fmt: skip
    assert second != first
    rest.wait_for_state(second, {"RUNNING"}, timeout_s=60)
    restored = rest.checkpoints(second).get("latest", {}).get("restored") or {}
    assert restored.get("external_path", "").rstrip("/") == savepoint.rstrip("/"), restored
    assert tl("jobs", "cancel", second).strip() == "CANCELED"
