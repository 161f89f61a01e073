"""Which history worker serves a request when several workers of one exchange receive it.

The relay's work queue is PUB/SUB (``docs/relay.md``): every worker subscribed to
``BINANCE:`` receives every ``BINANCE:`` request. Without a claim each of them would fetch
the range from the exchange (the lake stays right, Flink deduplicates, but the exchange's
rate limit is spent twice). With one:

- **A claim is a row in PostgreSQL** (the catalog's database, which every history worker
  already reaches): ``request_id`` is the primary key, so of the workers that insert it at
  once exactly one succeeds. It serves the request and holds a **lease** (``lease_s``,
  default 30 s) that it renews while it works, and marks the claim **done** once its
  ``HistoryFetch`` is on Kafka.
- **The others keep the request on standby** until the lease would end. Then they ask
  again: done, they drop it; still held (renewed), they wait again; expired (the holder
  crashed or hung without renewing), the first of them to re-claim it serves it. A worker
  that dies mid-request costs the client one lease of delay, not the request.
- **Lease times are the database's clock** (``now()``), never the workers': hosts need not
  agree on the time.
- **If PostgreSQL cannot be reached**, the worker serves the request anyway (logged): a
  request fetched twice is harmless, a request nobody serves is not.

Rows older than ``keep_days`` are deleted when a book opens.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ticklake.settings import CatalogConnection

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: ``mine`` (serve it), ``held`` by another worker for
    ``wait_s`` more seconds, or ``done`` (served already)."""

    state: Literal["mine", "held", "done"]
    holder: str
    wait_s: float = 0.0


class ClaimBook(Protocol):
    """Where workers claim requests (``PostgresClaims``; tests may use any other)."""

    lease_s: float

    def claim(self, request_id: str, worker_id: str) -> Claim: ...

    def renew(self, request_id: str, worker_id: str) -> bool: ...

    def finish(self, request_id: str, worker_id: str, *, done: bool) -> None: ...

    def close(self) -> None: ...


class PostgresClaims:
    """Claims as rows of one PostgreSQL table (created when missing)."""

    def __init__(
        self,
        catalog: CatalogConnection,
        *,
        lease_s: float = 30.0,
        table: str = "ticklake_history_claims",
        keep_days: int = 7,
        connect_timeout_s: int = 5,
    ) -> None:
        if not _IDENT.match(table):
            raise ValueError(f"claims table {table!r} is not a plain lower-case SQL name")
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.lease_s = lease_s
        self.table = table
        self._params: dict[str, Any] = {
            "host": catalog.host,
            "port": catalog.port,
            "dbname": catalog.database,
            "user": catalog.user,
            "password": catalog.password.get_secret_value(),
            "connect_timeout": connect_timeout_s,
            "autocommit": True,
            "application_name": "ticklake-history-claims",
        }
        self._lock = threading.Lock()
        self._conn: Any = None
        self._keep_days = keep_days
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " request_id TEXT PRIMARY KEY,"
            " worker_id TEXT NOT NULL,"
            " claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " lease_until TIMESTAMPTZ NOT NULL,"
            " done BOOLEAN NOT NULL DEFAULT FALSE)",
        )
        self._execute(
            f"DELETE FROM {table} WHERE lease_until < now() - make_interval(days => %s)",
            (keep_days,),
        )

    # -- the connection ----------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit), reconnecting once if the connection broke."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(**self._params)
                    with self._conn.cursor() as cur:
                        cur.execute(sql, params)
                        return list(cur.fetchall()) if cur.description else []
                except psycopg.OperationalError:
                    self._drop()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                log.debug("closing a broken claims connection failed", exc_info=True)
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- claims ------------------------------------------------------------------------

    def claim(self, request_id: str, worker_id: str) -> Claim:
        """Claim ``request_id`` for ``worker_id``: new, expired and own claims are granted."""
        rows = self._execute(
            f"INSERT INTO {self.table} AS c (request_id, worker_id, lease_until)"
            " VALUES (%s, %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (request_id) DO UPDATE"
            " SET worker_id = EXCLUDED.worker_id, lease_until = EXCLUDED.lease_until,"
            " claimed_at = now()"
            " WHERE NOT c.done AND (c.lease_until <= now() OR c.worker_id = EXCLUDED.worker_id)"
            " RETURNING worker_id",
            (request_id, worker_id, self.lease_s),
        )
        if rows:
            return Claim("mine", worker_id)
        held = self._execute(
            "SELECT worker_id, done,"
            " GREATEST(EXTRACT(EPOCH FROM lease_until - now()), 0)::float8"
            f" FROM {self.table} WHERE request_id = %s",
            (request_id,),
        )
        if not held:  # deleted in between (clean-up of a week-old row): ask again
            return self.claim(request_id, worker_id)
        holder, done, wait_s = held[0]
        return Claim("done" if done else "held", holder, float(wait_s))

    def renew(self, request_id: str, worker_id: str) -> bool:
        """Extend the lease by ``lease_s``; False if the claim is no longer this worker's."""
        rows = self._execute(
            f"UPDATE {self.table} SET lease_until = now() + make_interval(secs => %s)"
            " WHERE request_id = %s AND worker_id = %s AND NOT done RETURNING request_id",
            (self.lease_s, request_id, worker_id),
        )
        return bool(rows)

    def finish(self, request_id: str, worker_id: str, *, done: bool) -> None:
        """``done``: served, nobody serves it again. Otherwise give the lease up at once, so
        that a worker on standby takes the request over."""
        if done:
            sql = f"UPDATE {self.table} SET done = TRUE, lease_until = now()"
        else:
            sql = f"UPDATE {self.table} SET lease_until = now()"
        self._execute(
            f"{sql} WHERE request_id = %s AND worker_id = %s AND NOT done", (request_id, worker_id)
        )
