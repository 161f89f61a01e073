"""The one exception hierarchy of ticklake.

Library code raises these (``raise ... from exc``); only the CLI turns them into a message
and an exit code. Every error says what failed and, in ``hint``, what to do about it.
"""

from __future__ import annotations


class TickLakeError(Exception):
    """Base class of every error ticklake raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

    def render(self) -> str:
        """The full human message: what failed, details, and what to do."""
        parts = [f"error: {self.message}"]
        if self.detail:
            parts.append(self.detail.rstrip())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class ConfigError(TickLakeError):
    """Settings are missing or invalid."""

    exit_code = 3


class ToolMissingError(TickLakeError):
    """A tool the platform needs (java, go, mvn, PostgreSQL) is not installed."""

    exit_code = 4


class DownloadError(TickLakeError):
    """A download or build of a pinned dependency failed."""

    exit_code = 5


class ChecksumMismatchError(DownloadError):
    """A downloaded artifact does not match its pinned checksum."""


class StackError(TickLakeError):
    """A local stack component could not be started, stopped or inspected."""

    exit_code = 6


class PortInUseError(StackError):
    """A port the stack needs is taken by a process the stack did not start."""


class ComponentUnhealthyError(StackError):
    """A component started but did not become healthy in time."""

    exit_code = 7


class StackNotRunningError(StackError):
    """An operation needs the local stack, and it is not up."""

    exit_code = 8


class JobError(TickLakeError):
    """A Flink job failed to build, submit or run."""

    exit_code = 9
