"""PostgreSQL from Debian's packages, one cluster inside the state directory.

The server refuses to run as root, so when ticklake runs as root the cluster is owned by and
run as an unprivileged system user (``ticklake`` by default), created on first use.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
from pathlib import Path

from ticklake.errors import StackError, ToolMissingError
from ticklake.stack.components.base import Component, Health
from ticklake.stack.process import ManagedProcess, ensure_port_free
from ticklake.stack.settings import LOOPBACK

log = logging.getLogger(__name__)

DEBIAN_PACKAGE = "postgresql-15"


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server binary directory, if one is installed."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def apt_install(*packages: str) -> None:
    """Install Debian packages (root only); ``apt-get update`` first when the lists are old."""
    if os.geteuid() != 0:
        raise ToolMissingError(
            f"{', '.join(packages)} not installed and ticklake is not root",
            hint=f"run `sudo apt-get install -y {' '.join(packages)}` once",
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise ToolMissingError(
                f"`{' '.join(cmd)}` failed", detail=tail,
                hint="check that Debian's package mirror is reachable",
            )  # fmt: skip


class PostgresComponent(Component):
    name = "postgres"

    @property
    def processes(self) -> list[ManagedProcess]:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave;
        # SIGINT is "fast": roll back open transactions, disconnect, checkpoint, exit.
        return [ManagedProcess(self.name, self.ctx.run_dir, self.ctx.log_dir, signal.SIGINT)]

    @property
    def address(self) -> str:
        return f"postgresql://{LOOPBACK}:{self.ctx.settings.postgres.port}"

    @property
    def data(self) -> Path:
        return self.ctx.data_dir("postgres") / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.ctx.run_dir / "pgsock"

    def _os_user(self) -> tuple[str, int, int] | None:
        """(name, uid, gid) to run the server as, or None to run as ourselves (not root)."""
        if os.geteuid() != 0:
            return None
        name = self.ctx.settings.postgres.os_user
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--shell", "/usr/sbin/nologin", name],
                check=True, capture_output=True,
            )  # fmt: skip
            entry = pwd.getpwnam(name)
        return name, entry.pw_uid, entry.pw_gid

    def _bin(self, tool: str) -> str:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise ToolMissingError(
                "PostgreSQL server binaries not found under /usr/lib/postgresql",
                hint=f"run `ticklake setup` (installs {DEBIAN_PACKAGE}) or apt-get install it",
            )
        return str(bin_dir / tool)

    def _run_as(self, argv: list[str], user: tuple[str, int, int] | None) -> None:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False,
            user=user[1] if user else None, group=user[2] if user else None,
            extra_groups=[] if user else None, cwd="/",
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(
                f"`{' '.join(argv[:2])}` failed for the stack's PostgreSQL",
                detail=(proc.stdout + proc.stderr)[-2000:],
                hint=f"remove {self.data} to start from an empty cluster",
            )

    def install(self) -> None:
        if find_bin_dir() is None:
            log.info("installing %s from Debian's packages", DEBIAN_PACKAGE)
            apt_install(DEBIAN_PACKAGE)
        user = self._os_user()
        if (self.data / "PG_VERSION").is_file():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        pwfile = self.data.parent / ".initdb-pw"
        pwfile.write_text(self.ctx.credentials.postgres_password.get_secret_value() + "\n")
        if user is not None:
            self._check_traversable(user[1])
            for path in (self.data.parent, self.data, pwfile):
                os.chown(path, user[1], user[2])
        os.chmod(self.data, 0o700)
        os.chmod(pwfile, 0o600)
        try:
            self._run_as(
                [self._bin("initdb"), "-D", str(self.data), "-U", self.ctx.settings.postgres.user,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"],
                user,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _check_traversable(self, uid: int) -> None:
        """The unprivileged server user must be able to reach the data directory."""
        for parent in reversed(self.data.parents):
            st = parent.stat()
            if st.st_uid != uid and not st.st_mode & 0o001:
                raise StackError(
                    f"PostgreSQL runs as user {self.ctx.settings.postgres.os_user}, which cannot "
                    f"enter {parent} (mode {oct(st.st_mode & 0o777)})",
                    hint="put the state directory elsewhere with TICKLAKE_HOME=/path",
                )

    def start(self) -> None:
        s = self.ctx.settings.postgres
        ensure_port_free("PostgreSQL", LOOPBACK, s.port, "TICKLAKE_STACK__POSTGRES__PORT")
        user = self._os_user()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.socket_dir, user[1], user[2])
        argv = [
            self._bin("postgres"), "-D", str(self.data), "-p", str(s.port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "max_connections=100", "-c", "shared_buffers=64MB", "-c", "fsync=on",
        ]  # fmt: skip
        self.processes[0].start(
            argv, cwd=Path("/"), env={"LC_ALL": "C"},
            user=user[1] if user else None, group=user[2] if user else None,
        )  # fmt: skip

    def health(self) -> Health:
        import psycopg

        s = self.ctx.settings.postgres
        try:
            with psycopg.connect(
                host=LOOPBACK, port=s.port, user=s.user, dbname="postgres", connect_timeout=2,
                password=self.ctx.credentials.postgres_password.get_secret_value(),
            ) as conn:  # fmt: skip
                version = conn.execute("show server_version").fetchone()
        except psycopg.OperationalError as exc:
            return Health(False, str(exc).strip().splitlines()[0] if str(exc) else "no answer")
        return Health(True, f"PostgreSQL {version[0] if version else '?'}")

    def prepare(self) -> None:
        """Create the Iceberg catalog database if it does not exist."""
        import psycopg

        s = self.ctx.settings.postgres
        with psycopg.connect(
            host=LOOPBACK, port=s.port, user=s.user, dbname="postgres", autocommit=True,
            password=self.ctx.credentials.postgres_password.get_secret_value(),
        ) as conn:  # fmt: skip
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (s.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'create database "{s.database}"')
