"""A small client of Flink's REST API (standard library only, so both environments use it).

Covers what ticklake needs to operate jobs on a standalone or Kubernetes session cluster:
list jobs, inspect checkpoints, cancel, and take savepoints.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ticklake.errors import JobError


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    name: str
    state: str
    start_time_ms: int


class FlinkRestClient:
    def __init__(self, rest_url: str, timeout_s: float = 10.0):
        self.base = rest_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - URL from settings
            f"{self.base}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise JobError(
                f"Flink REST {method} {path} answered {exc.code}",
                detail=detail,
                hint="check the job id with `ticklake jobs list`",
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise JobError(
                f"Flink REST API at {self.base} is unreachable ({exc})",
                hint="start the cluster with `ticklake up --flink-cluster` or set "
                "TICKLAKE_FLINK__REST_URL",
            ) from exc
        return json.loads(raw) if raw else {}

    def overview(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/overview")
        return result

    def jobs(self) -> list[JobSummary]:
        data = self._call("GET", "/jobs/overview")
        return [
            JobSummary(j["jid"], j["name"], j["state"], int(j.get("start-time", 0)))
            for j in data.get("jobs", [])
        ]

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/jobs/{job_id}")
        return result

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/jobs/{job_id}/checkpoints")
        return result

    def cancel(self, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")

    def wait_for_state(self, job_id: str, states: set[str], timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            state = str(self.job(job_id)["state"])
            if state in states:
                return state
            time.sleep(0.25)
        raise JobError(f"job {job_id} is {state}, not {sorted(states)}, after {timeout_s:.0f}s")

    def wait_for_checkpoint(self, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The latest completed checkpoint, once there is one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            latest = (self.checkpoints(job_id).get("latest") or {}).get("completed")
            if latest:
                result: dict[str, Any] = latest
                return result
            time.sleep(0.5)
        raise JobError(f"job {job_id} completed no checkpoint within {timeout_s:.0f}s")

    def savepoint(
        self, job_id: str, target_dir: str | None = None, *, cancel_job: bool = False,
        timeout_s: float = 120.0,
    ) -> str:  # fmt: skip
        """Trigger a savepoint (optionally cancelling the job) and return its location."""
        body: dict[str, Any] = {"cancel-job": cancel_job, "formatType": "CANONICAL"}
        if target_dir:
            body["target-directory"] = target_dir
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            trigger = self._call("POST", f"/jobs/{job_id}/savepoints", body)["request-id"]
            while time.monotonic() < deadline:
                status = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
                if status["status"]["id"] == "COMPLETED":
                    break
                time.sleep(0.5)
            else:
                break
            op = status.get("operation", {})
            if "failure-cause" not in op:
                return str(op["location"])
            cause = op["failure-cause"].get("stack-trace", "")
            if "Not all required tasks are currently running" not in cause:
                raise JobError(f"savepoint of {job_id} failed", detail=cause[:2000])
            time.sleep(1)  # a job still deploying its tasks: try again
        raise JobError(f"savepoint of {job_id} did not complete within {timeout_s:.0f}s")
