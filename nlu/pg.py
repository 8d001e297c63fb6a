"""PostgreSQL plumbing shared by the queue and the conversation store (psycopg 3).

* :func:`connect` opens one connection for set-up; :func:`open_pool`: a small thread-safe connection pool per store. The HTTP server runs
  sync routes in a thread pool, so each request borrows a connection for one transaction
  and gives it back; a connection found broken (server restarted, failover) is checked
  on checkout and replaced, so a database restart costs no service restart.
* :func:`migrate`: versioned schema steps applied in order inside one transaction under a
  transaction-level advisory lock, so two processes starting at once never race on
  ``CREATE TABLE`` (PostgreSQL's ``IF NOT EXISTS`` is not safe against a concurrent
  creator) and an upgrade is all or nothing (PostgreSQL DDL is transactional).
* :class:`StorePool`: the above in order for one store (schema, then pool), and its
  transactions, on connections that take the SQL the stores share with SQLite (``?``
  placeholders, see :class:`QmarkConnection`).
* :func:`masked`: a URL without its password, for error messages and logs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from .errors import ConfigError

# One advisory lock key for every nlu schema ("nlu" in ASCII): creation and upgrades of the
# tickets and conversation tables never interleave, whichever process starts first.
SCHEMA_LOCK = 0x6E6C75

_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for messages and logs)."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


def nul_free(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters (SQLite can): store U+FFFD instead, so a
    customer message with a stray NUL is kept rather than failing with a 503 forever."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def check_options(timeout: Any, pool_size: Any) -> None:
    """Refuse a timeout or pool size that cannot work (before anything is opened)."""
    if isinstance(timeout, bool) or not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"database timeout={timeout!r}: must be a number of seconds > 0")
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ConfigError(f"database pool_size={pool_size!r}: must be a positive integer")


def connect(url: str, *, name: str, timeout: float, error: Callable[[str], Exception]) -> psycopg.Connection[Any]:
    """One direct connection (for schema set-up): fails fast with libpq's own reason
    (refused, bad password, no such database), where a pool would only time out."""
    try:
        return psycopg.connect(url, connect_timeout=max(2, math.ceil(timeout)), application_name=name)
    except psycopg.Error as exc:
        raise error(f"{masked(url)}: cannot connect: {_first_line(exc)}") from exc


def open_pool(
    url: str,
    *,
    name: str,
    timeout: float,
    max_size: int,
    error: Callable[[str], Exception],
) -> ConnectionPool:
    """An open pool of 1..``max_size`` connections; waits at most ``timeout`` s for one.

    Every connection gets ``lock_timeout`` = ``timeout`` (and a ``statement_timeout`` of
    twice that) so a stuck lock becomes an error instead of a hung request.
    """
    millis = max(1, int(timeout * 1000))

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.autocommit = True
        conn.execute(f"SET lock_timeout = {millis}")
        # Twice the lock timeout: a lock wait reports itself as such, and a runaway
        # statement is still stopped.
        conn.execute(f"SET statement_timeout = {2 * millis}")
        conn.autocommit = False

    # Checking the connection on checkout costs one round trip and turns "the server
    # restarted since this connection was opened" into a reconnect instead of a 503.
    check = getattr(ConnectionPool, "check_connection", None)
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=timeout,
        name=name,
        configure=configure,
        check=check,
        kwargs={"connect_timeout": max(2, math.ceil(timeout)), "application_name": name},
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except psycopg.Error as exc:
        pool.close()
        raise error(f"{masked(url)}: cannot connect: {_first_line(exc)}") from exc
    return pool


def migrate(
    conn: psycopg.Connection[Any],
    *,
    meta_table: str,
    steps: Sequence[Sequence[str]],
    what: str,
    where: str,
    error: Callable[[str], Exception],
) -> int:
    """Bring ``what``'s schema to version ``len(steps)``; return the version found before.

    ``steps[i]`` holds the statements that take the schema from version i to i + 1. The
    version lives in ``meta_table`` (key ``schema_version``). A database newer than this
    code is refused with ``error`` rather than used half-understood.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {meta_table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute(f"SELECT value FROM {meta_table} WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row is not None else 0
        if found > len(steps):
            raise error(
                f"{where}: {what} schema version {found} is newer than this nlu understands ({len(steps)}); upgrade nlu"
            )
        for version in range(found + 1, len(steps) + 1):
            for statement in steps[version - 1]:
                conn.execute(statement)  # type: ignore[arg-type]  # our own constant SQL
        if found < len(steps):
            conn.execute(
                f"INSERT INTO {meta_table} (key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(len(steps)),),
            )
    return found


class QmarkConnection:
    """A psycopg connection taking the SQL the stores share with SQLite: every ``?``
    placeholder becomes psycopg's ``%s``, in this one place.

    So the shared SQL must hold no literal ``?`` (nor a ``%``, which psycopg would read as
    a placeholder). SQL written for psycopg (``%(name)s``) has no ``?`` and passes as it is.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = (), /) -> psycopg.Cursor[Any]:
        return self._conn.execute(sql.replace("?", "%s"), params)


class StorePool:
    """One store's database: its schema brought up to date, then a pool of connections.

    The schema comes first, on one direct connection: a bad URL fails fast with a clear
    reason. Database failures become ``unavailable``; a schema newer than this code,
    ``refused`` (see :func:`migrate`); using the store once closed, ``closed``
    ("<url>: the <label> is closed").
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        timeout: float,
        pool_size: int,
        meta_table: str,
        steps: Sequence[Sequence[str]],
        what: str,
        label: str,
        unavailable: Callable[[str], Exception],
        refused: Callable[[str], Exception],
        closed: Callable[[str], Exception],
    ) -> None:
        check_options(timeout, pool_size)
        self.where = masked(url)
        self._label, self._unavailable, self._closed = label, unavailable, closed
        try:
            with connect(url, name=name, timeout=timeout, error=unavailable) as conn:
                migrate(conn, meta_table=meta_table, steps=steps, what=what, where=self.where, error=refused)
        except psycopg.Error as exc:
            raise unavailable(f"{self.where}: cannot create the {what} tables: {describe(exc)}") from exc
        self._pool: ConnectionPool | None = open_pool(
            url, name=name, timeout=timeout, max_size=pool_size, error=unavailable
        )

    def transaction(self, what: str) -> AbstractContextManager[QmarkConnection]:
        """One transaction on a pooled connection: committed when the block ends, rolled
        back on any exception (a refusal included); database errors become ``unavailable``."""
        pool = self._pool
        if pool is None:
            raise self._closed(f"{self.where}: the {self._label} is closed")
        return self._transaction(pool, what)

    @contextmanager
    def _transaction(self, pool: ConnectionPool, what: str) -> Iterator[QmarkConnection]:
        try:
            with pool.connection() as conn:
                yield QmarkConnection(conn)
        except psycopg.Error as exc:
            raise self._unavailable(f"{self.where}: cannot {what}: {describe(exc)}") from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return masked(text.splitlines()[0] if text else type(exc).__name__)


def describe(exc: BaseException) -> str:
    """A one-line, password-free description of a database error."""
    return _first_line(exc)
