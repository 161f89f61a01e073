"""Where ticklake keeps its state: one directory for downloads, data, logs and pids."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TICKLAKE_HOME"
CACHE_ENV = "TICKLAKE_CACHE_DIR"


def project_root() -> Path | None:
    """The source checkout this package runs from, if it runs from one (editable install)."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "pyproject.toml").is_file() and (candidate / "jobs").is_dir():
        return candidate
    return None


def state_home() -> Path:
    """``$TICKLAKE_HOME``, else ``.ticklake/`` in the checkout, else ``./.ticklake``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().resolve()
    root = project_root()
    return (root if root is not None else Path.cwd()) / ".ticklake"


def cache_dir() -> Path:
    """Downloads and builds: ``$TICKLAKE_CACHE_DIR``, else ``<state home>/cache``.

    Several state homes (e.g. one per test run) may share one cache.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return state_home() / "cache"
