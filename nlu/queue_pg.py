"""The human-agent queue on PostgreSQL, for several service instances sharing one queue.

Same protocol and the same promises as :class:`nlu.queue.SQLiteQueue`: the operations,
their SQL, the validation, redaction, refusals and row mapping are the very same code
(``nlu.queue._SqlQueue``). What is PostgreSQL's own: the connection pool and versioned
schema (``nlu/pg.py``), the claim statement, row locks, and NUL characters stored as
U+FFFD (PostgreSQL text cannot hold them). PostgreSQL does the coordination:

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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from .errors import QueueError, QueueUnavailable
from .pg import QmarkConnection, StorePool, masked, nul_free
from .queue import _FIELDS, _Executor, _SqlQueue

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
    ("ALTER TABLE tickets ADD COLUMN agent_intent TEXT",),  # what the customer meant, per the resolving agent
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


class PostgresQueue(_SqlQueue):
    """The queue in a PostgreSQL database, safe across threads, processes and machines.

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/dbname``). ``timeout``
    bounds waiting for a pooled connection, a lock or a statement; ``pool_size`` is the
    most connections this object opens (the HTTP server runs requests on threads).
    """

    _CLAIM = _CLAIM
    _FOR_UPDATE = " FOR UPDATE"  # resolve and release lock the ticket's row before checking its holder

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
        pool_size: int = 8,
    ) -> None:
        self.url = url
        self.path = masked(url)  # what messages show; named like SQLiteQueue.path
        self._clock = clock
        self._db = StorePool(
            url, name="nlu-queue", timeout=timeout, pool_size=pool_size, meta_table="tickets_meta", steps=_STEPS,
            what="tickets", label="queue", unavailable=QueueUnavailable, refused=QueueError, closed=QueueError,
        )

    # -- plumbing ------------------------------------------------------------------------

    def _write(self, what: str) -> AbstractContextManager[QmarkConnection]:
        return self._db.transaction(what)

    def _read(self, what: str, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        # A read is a (short) transaction too: it borrows a pooled connection like a write.
        with self._write(what) as conn:
            return conn.execute(sql, params).fetchall()

    _storable = staticmethod(nul_free)  # PostgreSQL text cannot hold NUL characters

    def _lock_conversation(self, conn: _Executor, conversation_id: str) -> None:
        # READ COMMITTED: two enqueues would both find no open ticket and both insert. A
        # transaction-scoped advisory lock on the conversation lets one in at a time.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"nlu-ticket:{conversation_id}",))

    def close(self) -> None:
        self._db.close()
