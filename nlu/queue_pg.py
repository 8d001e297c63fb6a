"""The human-agent queue on PostgreSQL, for several service instances sharing one queue.

Same protocol and the same promises as :class:`nlu.queue.SQLiteQueue` (the validation,
redaction, refusals and row mapping are the very same helpers), with PostgreSQL doing the
coordination:

* **claim** picks the best claimable row with ``FOR UPDATE SKIP LOCKED``: concurrent
  claimers in any number of processes each lock a different row and never wait on each
  other, so a ticket goes to one agent only;
* **enqueue** is ``INSERT ... ON CONFLICT (message_id) DO NOTHING``: a retried webhook
  landing on another instance waits for the first insert to commit, then gets that ticket;
* **leases**: a claimed ticket whose ``lease_until`` has passed is claimable again;
* **durability**: ``enqueue`` returns after COMMIT (``synchronous_commit`` is the server's
  business: keep it ``on``, the default, or an acknowledged ticket can be lost in a crash).

Ticket ids come from an identity column: never reused, but a conflicting enqueue consumes
one, so ids can have gaps. Times are unix seconds from the injectable ``clock`` (as in
SQLite), not the server's ``now()``, so every backend and test agrees on lease arithmetic.
Database failures (unreachable, timeouts, disk full) become :class:`QueueUnavailable`.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from .errors import QueueError, QueueUnavailable, UnknownTicket
from .pg import check_options, connect, describe, masked, migrate, nul_free, open_pool
from .queue import (
    _COLUMNS,
    _FIELDS,
    Ticket,
    _check_holder,
    _check_same_conversation,
    _days,
    _list_order,
    _new_ticket,
    _nonempty,
    _positive,
    _resolve_args,
    _ticket_from_row,
    _ticket_id,
)

__all__ = ["PostgresQueue"]

# Schema versions: _STEPS[i] takes the tickets schema from version i to i + 1. Append a new
# step for every change; never edit a released one (databases out there already ran it).
_STEPS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE tickets (
            id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
            conversation_id TEXT NOT NULL,
            message_id      TEXT NOT NULL UNIQUE,              -- the idempotency key
            text            TEXT NOT NULL,                     -- PII-redacted
            prediction      TEXT NOT NULL,                     -- JSON object (text, as in SQLite)
            reasons         TEXT NOT NULL,                     -- JSON array of reason codes
            priority        DOUBLE PRECISION NOT NULL,
            status          TEXT NOT NULL CHECK (status IN ('queued', 'claimed', 'resolved')),
            agent           TEXT,
            lease_until     DOUBLE PRECISION,
            created_at      DOUBLE PRECISION NOT NULL,
            updated_at      DOUBLE PRECISION NOT NULL,
            turns           TEXT NOT NULL,                     -- JSON array of redacted turns
            resolution      TEXT,
            CHECK ((status = 'claimed') = (lease_until IS NOT NULL)),
            CHECK (status = 'queued' OR agent IS NOT NULL)
        )
        """,
        # claim: the best queued ticket is the first entry of this partial index ...
        "CREATE INDEX tickets_queued_order ON tickets (priority DESC, created_at, id) WHERE status = 'queued'",
        # ... and expired leases are found through this one.
        "CREATE INDEX tickets_claimed_lease ON tickets (lease_until) WHERE status = 'claimed'",
        "CREATE INDEX tickets_by_conversation ON tickets (conversation_id, status)",
        "CREATE INDEX tickets_by_status_updated ON tickets (status, updated_at)",
    ),
)
SCHEMA_VERSION = len(_STEPS)

# Each branch locks at most one row and skips rows other claimers hold; the better of the
# two is claimed (the other stays locked only until this short transaction commits).
_CLAIM = f"""
WITH queued AS (
    SELECT id, priority, created_at FROM tickets WHERE status = 'queued'
     ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, priority, created_at FROM tickets WHERE status = 'claimed' AND lease_until <= %(now)s
     ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
), best AS (
    SELECT id FROM (SELECT * FROM queued UNION ALL SELECT * FROM expired) AS candidates
     ORDER BY priority DESC, created_at, id LIMIT 1
)
UPDATE tickets
   SET status = 'claimed', agent = %(agent)s, lease_until = %(lease_until)s, updated_at = %(now)s
  FROM best
 WHERE tickets.id = best.id
RETURNING {", ".join(f"tickets.{name}" for name in _FIELDS)}
"""


class PostgresQueue:
    """The queue in a PostgreSQL database, safe across threads, processes and machines.

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/dbname``). ``timeout``
    bounds waiting for a pooled connection, a lock or a statement; ``pool_size`` is the
    most connections this object opens (the HTTP server runs requests on threads).
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
        pool_size: int = 8,
    ) -> None:
        self.url = url
        check_options(timeout, pool_size)
        self.path = masked(url)  # what messages show; named like SQLiteQueue.path
        self._clock = clock
        # Schema first, on one direct connection: a bad URL fails fast with a clear reason.
        try:
            with connect(url, name="nlu-queue", timeout=timeout, error=QueueUnavailable) as conn:
                migrate(conn, meta_table="tickets_meta", steps=_STEPS, what="tickets", where=self.path, error=QueueError)
        except psycopg.Error as exc:
            raise QueueUnavailable(f"{self.path}: cannot create the tickets tables: {describe(exc)}") from exc
        self._pool: ConnectionPool | None = open_pool(
            url, name="nlu-queue", timeout=timeout, max_size=pool_size, error=QueueUnavailable
        )

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection: committed when the block ends, rolled
        back on any exception (a refusal included); database errors become QueueUnavailable."""
        pool = self._pool
        if pool is None:
            raise QueueError(f"{self.path}: the queue is closed")
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise QueueUnavailable(f"{self.path}: cannot {what}: {describe(exc)}") from exc

    def _ticket(self, row: Sequence[Any]) -> Ticket:
        return _ticket_from_row(dict(zip(_FIELDS, row, strict=True)))

    def _fetch(self, conn: psycopg.Connection[Any], ticket_id: int, *, lock: bool = False) -> Ticket:
        sql = f"SELECT {_COLUMNS} FROM tickets WHERE id = %s" + (" FOR UPDATE" if lock else "")
        row = conn.execute(sql, (ticket_id,)).fetchone()
        if row is None:
            raise UnknownTicket(f"{self.path}: no ticket {ticket_id}")
        return self._ticket(row)

    def _rows(self, what: str, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> builtins.list[Any]:
        with self._transaction(what) as conn:
            return conn.execute(sql, params).fetchall()

    # -- the protocol --------------------------------------------------------------------

    def enqueue(
        self,
        *,
        conversation_id: str,
        message_id: str,
        text: str,
        prediction: Mapping[str, Any],
        reasons: Sequence[str],
        priority: float,
        turns: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[Ticket, bool]:
        values = _new_ticket(
            conversation_id=conversation_id, message_id=message_id, text=text, prediction=prediction,
            reasons=reasons, priority=priority, turns=turns,
        )
        values = {k: nul_free(v) for k, v in values.items()}
        with self._transaction("enqueue a ticket") as conn:
            row = conn.execute(
                "INSERT INTO tickets (conversation_id, message_id, text, prediction, reasons, priority,"
                " status, created_at, updated_at, turns)"
                " VALUES (%(conversation_id)s, %(message_id)s, %(text)s, %(prediction)s, %(reasons)s, %(priority)s,"
                " 'queued', %(now)s, %(now)s, %(turns)s)"
                f" ON CONFLICT (message_id) DO NOTHING RETURNING {_COLUMNS}",
                {**values, "now": self._clock()},
            ).fetchone()
            created = row is not None
            if row is None:
                # READ COMMITTED: this statement sees the row the conflicting insert committed.
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM tickets WHERE message_id = %s", (values["message_id"],)
                ).fetchone()
                if row is None:  # deleted (purged) between the two statements
                    raise QueueUnavailable(f"{self.path}: ticket for message {values['message_id']!r} vanished; retry")
            ticket = self._ticket(row)
        _check_same_conversation(ticket, values["conversation_id"])
        return ticket, created

    def claim(self, agent: str, lease_seconds: float = 300) -> Ticket | None:
        agent = nul_free(_nonempty("agent", agent))
        lease = _positive("lease_seconds", lease_seconds)
        now = self._clock()
        with self._transaction("claim a ticket") as conn:
            row = conn.execute(_CLAIM, {"agent": agent, "lease_until": now + lease, "now": now}).fetchone()
            return None if row is None else self._ticket(row)

    def resolve(self, ticket_id: int, agent: str, resolution: str = "") -> Ticket:
        ticket_id, agent, resolution = _resolve_args(ticket_id, agent, resolution)
        agent, resolution = nul_free(agent), nul_free(resolution)
        with self._transaction(f"resolve ticket {ticket_id}") as conn:
            ticket = self._fetch(conn, ticket_id, lock=True)
            if ticket.status == "resolved" and ticket.agent == agent:
                return ticket  # a retried resolve (e.g. after a timeout) is not an error
            _check_holder(ticket, agent, "resolve")
            row = conn.execute(
                "UPDATE tickets SET status = 'resolved', lease_until = NULL, resolution = %s, updated_at = %s"
                f" WHERE id = %s RETURNING {_COLUMNS}",
                (resolution, self._clock(), ticket_id),
            ).fetchone()
            assert row is not None  # locked above
            return self._ticket(row)

    def release(self, ticket_id: int, agent: str) -> Ticket:
        ticket_id = _ticket_id(ticket_id)
        agent = nul_free(_nonempty("agent", agent))
        with self._transaction(f"release ticket {ticket_id}") as conn:
            _check_holder(self._fetch(conn, ticket_id, lock=True), agent, "release")
            row = conn.execute(
                "UPDATE tickets SET status = 'queued', agent = NULL, lease_until = NULL, updated_at = %s"
                f" WHERE id = %s RETURNING {_COLUMNS}",
                (self._clock(), ticket_id),
            ).fetchone()
            assert row is not None
            return self._ticket(row)

    def get(self, ticket_id: int) -> Ticket:
        ticket_id = _ticket_id(ticket_id)
        rows = self._rows(f"read ticket {ticket_id}", f"SELECT {_COLUMNS} FROM tickets WHERE id = %s", (ticket_id,))
        if not rows:
            raise UnknownTicket(f"{self.path}: no ticket {ticket_id}")
        return self._ticket(rows[0])

    def list(self, status: str | None = None, limit: int = 50) -> builtins.list[Ticket]:
        order = _list_order(status, limit)
        where = "" if status is None else "WHERE status = %s"
        params: tuple[Any, ...] = (limit,) if status is None else (status, limit)
        rows = self._rows("list tickets", f"SELECT {_COLUMNS} FROM tickets {where} ORDER BY {order} LIMIT %s", params)
        return [self._ticket(row) for row in rows]

    def depth(self) -> int:
        rows = self._rows(
            "count queued tickets",
            "SELECT (SELECT count(*) FROM tickets WHERE status = 'queued')"
            " + (SELECT count(*) FROM tickets WHERE status = 'claimed' AND lease_until <= %s)",
            (self._clock(),),
        )
        return int(rows[0][0])

    def open_for_conversation(self, conversation_id: str) -> Ticket | None:
        conversation_id = nul_free(_nonempty("conversation_id", conversation_id))
        rows = self._rows(
            "read the conversation's ticket",
            f"SELECT {_COLUMNS} FROM tickets WHERE conversation_id = %s AND status IN ('queued', 'claimed')"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            (conversation_id,),
        )
        return self._ticket(rows[0]) if rows else None

    def purge(self, older_than_days: float) -> int:
        cutoff = self._clock() - _days(older_than_days) * 86400.0
        with self._transaction("purge resolved tickets") as conn:
            return conn.execute(
                "DELETE FROM tickets WHERE status = 'resolved' AND updated_at < %s", (cutoff,)
            ).rowcount

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> PostgresQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresQueue({self.path!r})"
