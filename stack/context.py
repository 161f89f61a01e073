"""What every stack component needs: settings, directories, and the stack's credentials."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import SecretStr

from ticklake.stack.settings import StackSettings


@dataclass(frozen=True)
class Credentials:
    minio_password: SecretStr
    postgres_password: SecretStr


def _quiet(_msg: str) -> None:
    pass


class StackContext:
    def __init__(self, settings: StackSettings, progress: Callable[[str], None] | None = None):
        self.settings = settings
        #: where long work reports what it is doing (the CLI prints it)
        self.progress: Callable[[str], None] = progress or _quiet

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def cache(self) -> Path:
        return self.settings.cache

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def data_dir(self, component: str) -> Path:
        return self.home / "data" / component

    def ensure_dirs(self) -> None:
        for d in (self.home, self.cache, self.log_dir, self.run_dir, self.home / "data"):
            d.mkdir(parents=True, exist_ok=True)

    @cached_property
    def credentials(self) -> Credentials:
        """Configured passwords, else ones generated once and kept in ``secrets.env``."""
        path = self.home / "secrets.env"
        stored: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if "=" in line:
                    key, value = line.split("=", 1)
                    stored[key.strip()] = value.strip()
        changed = False
        for key in ("MINIO_PASSWORD", "POSTGRES_PASSWORD"):
            if key not in stored:
                stored[key] = secrets.token_urlsafe(18)
                changed = True
        if changed:
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.writelines(f"{k}={v}\n" for k, v in sorted(stored.items()))
        s = self.settings
        return Credentials(
            minio_password=s.minio.root_password or SecretStr(stored["MINIO_PASSWORD"]),
            postgres_password=s.postgres.password or SecretStr(stored["POSTGRES_PASSWORD"]),
        )
