"""The human-agent queue: a small protocol and its SQLite backend (PostgreSQL: ``queue_pg.py``).

A ticket is one customer message the bot should not handle alone. The queue promises:

* **nothing acknowledged is lost**: ``enqueue`` returns only after its transaction is
  committed (``synchronous=FULL`` in WAL mode, so a power cut loses nothing either);
* **nothing is doubled**: ``enqueue`` is idempotent on ``message_id`` (a retried webhook
  gets the existing ticket back), and ``claim`` hands a ticket to one agent only, even
  across processes (``BEGIN IMMEDIATE`` takes SQLite's single write lock first);
* **no claim is lost**: a claim is a lease; when it expires the ticket is claimable again;
* **no PII at rest**: ``enqueue`` redacts the text and the turns itself, whatever the caller did.

An agent who resolves a ticket may say which intent the customer really meant
(``agent_intent``). :meth:`Queue.labelled` reads those tickets back, so the messages the
bot could not handle become training rows (``nlu queue export``).

Operational errors (database locked for longer than the busy timeout, disk full, not a
database) become :class:`QueueUnavailable` (a :class:`QueueError`), never a silent drop. The database file is shared with
other modules (conversation state), so every object here is named ``tickets*`` and the
schema version lives in our own ``tickets_meta`` table rather than in ``PRAGMA user_version``,
which belongs to the whole file and would be fought over by every module that versions itself.

The operations whose SQL is the same on every backend live once, in ``_SqlQueue``; each
backend adds only its connection handling, its claim statement and its row locking.
"""

from __future__ import annotations

import builtins
import difflib
import json
import math
import numbers
import os
import random
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from .errors import ConfigError, QueueError, QueueUnavailable, UnknownIntent, UnknownTicket
from .privacy import redact, redact_values
from .responses import MAX_TEXT_BODY, Template

__all__ = [
    "DEFAULT_DB", "MAX_AGENT_CHARS", "MAX_AGENT_MESSAGE_CHARS", "MAX_INTENT_CHARS", "MAX_LEASE_SECONDS", "MAX_LIST_LIMIT", "MAX_TICKET_ID", "MIN_LEASE_SECONDS", "STATUSES", "WINDOW_SECONDS", "Queue", "SQLiteQueue", "Ticket", "open_queue", "resolve_db",
]

DEFAULT_DB = "var/nlu.db"
STATUSES = ("queued", "claimed", "resolved")
# Argument bounds, checked here and declared by the CLI options and the HTTP fields alike.
_MAX_SQL_INTEGER = 2**63 - 1  # SQLite's INTEGER and PostgreSQL's BIGINT: more overflowed the driver
MAX_TICKET_ID = _MAX_SQL_INTEGER
# Tickets per list call from the CLI and HTTP. The Python API takes up to _MAX_SQL_INTEGER:
# with no paging, a smaller cap would leave callers no way to read every ticket.
MAX_LIST_LIMIT = 500
MAX_AGENT_CHARS = 128  # a name shown on every ticket, not a note
MAX_INTENT_CHARS = 128  # an intent label an agent gives: a training label, not a note
MAX_AGENT_MESSAGE_CHARS = MAX_TEXT_BODY  # what an agent sends the customer: WhatsApp's limit for a text
MIN_LEASE_SECONDS = 10  # a claim shorter than this expires while the agent reads the ticket
MAX_LEASE_SECONDS = 86_400  # a day: a longer claim hides a forgotten ticket from everyone
# WhatsApp's customer-service window: free-form messages reach the customer only this long
# after their last message; after it, only an approved template message does.
WINDOW_SECONDS = 24 * 3600
SCHEMA_VERSION = 2  # 2: agent_intent
_T = TypeVar("_T")
_PAGE = 500  # tickets per read of Queue.labelled and Queue.created_since

_COLUMNS = (
    "id, conversation_id, message_id, text, prediction, reasons, priority, status, agent, "
    "lease_until, created_at, updated_at, turns, resolution, agent_intent"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after purge
    conversation_id TEXT NOT NULL,
    message_id      TEXT NOT NULL UNIQUE,               -- the idempotency key
    text            TEXT NOT NULL,                      -- PII-redacted
    prediction      TEXT NOT NULL,                      -- JSON object
    reasons         TEXT NOT NULL,                      -- JSON array of reason codes
    priority        REAL NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'claimed', 'resolved')),
    agent           TEXT,
    lease_until     REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    turns           TEXT NOT NULL,                      -- JSON array of redacted turns
    resolution      TEXT,
    agent_intent    TEXT,                               -- what the customer meant, per the resolving agent
    CHECK ((status = 'claimed') = (lease_until IS NOT NULL)),
    CHECK (status = 'queued' OR agent IS NOT NULL)
);
-- claim: the best queued ticket is the first row of this index.
CREATE INDEX IF NOT EXISTS tickets_by_status_order ON tickets (status, priority DESC, created_at, id);
CREATE INDEX IF NOT EXISTS tickets_by_conversation ON tickets (conversation_id, status);
CREATE TABLE IF NOT EXISTS tickets_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The order is priority, then age, and not WhatsApp's window (Ticket.window_closes_at): a
# deadline must not jump ahead of a legal threat, nor send the customers who waited longest
# to the back (docs/http.md, "The 24-hour window").
# Expired claims are few (one per agent at most, usually none), so the second branch is a
# short scan; the first reads one row of the index. Both are ordered the same way.
_CLAIM = f"""
UPDATE tickets
   SET status = 'claimed', agent = :agent, lease_until = :lease_until, updated_at = :now
 WHERE id = (
    SELECT id FROM (
        SELECT * FROM (SELECT id, priority, created_at FROM tickets WHERE status = 'queued'
                       ORDER BY priority DESC, created_at, id LIMIT 1)
        UNION ALL
        SELECT * FROM (SELECT id, priority, created_at FROM tickets
                       WHERE status = 'claimed' AND lease_until <= :now
                       ORDER BY priority DESC, created_at, id LIMIT 1)
    ) ORDER BY priority DESC, created_at, id LIMIT 1)
RETURNING {_COLUMNS}
"""


@dataclass(frozen=True)
class Ticket:
    """One message waiting for, or handled by, a person. ``text`` and ``turns`` are redacted."""

    id: int
    conversation_id: str
    message_id: str
    text: str
    prediction: dict[str, Any]
    reasons: tuple[str, ...]
    priority: float
    status: str  # "queued" | "claimed" | "resolved"
    agent: str | None
    lease_until: float | None  # unix seconds; set while claimed
    created_at: float
    updated_at: float
    turns: tuple[dict[str, Any], ...]
    resolution: str | None
    agent_intent: str | None = None  # what the customer meant, according to the resolving agent

    @property
    def window_closes_at(self) -> float | None:
        """When WhatsApp's customer-service window closes (unix seconds): a day after the
        customer's last turn, after which only a template message reaches them. None when
        that turn carries no time (a turn stored before nlu kept one): an older turn's time
        would close the window too early. What agents write opens nothing."""
        last = next(reversed(self.customer_turns()), None)
        wrote = None if last is None else last.get("created_at")
        if isinstance(wrote, int | float) and not isinstance(wrote, bool) and math.isfinite(wrote) and wrote > 0:
            return float(wrote) + WINDOW_SECONDS
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "text": self.text,
            "prediction": self.prediction,
            "reasons": list(self.reasons),
            "priority": self.priority,
            "status": self.status,
            "agent": self.agent,
            "lease_until": self.lease_until,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "turns": list(self.turns),
            "resolution": self.resolution,
            "agent_intent": self.agent_intent,
            "window_closes_at": self.window_closes_at,  # derived from the turns, not stored
        }

    def customer_turns(self) -> tuple[dict[str, Any], ...]:
        """The customer's turns: every turn but what agents wrote (on this ticket or earlier ones)."""
        return tuple(t for t in self.turns if t.get("action") != "agent")

    def model_intents(self) -> tuple[str, ...]:
        """The intents of the model that scored the ticket: its prediction's ranking lists
        them all. Empty for a ticket with nothing scored (a voice note) or made before
        tickets kept the ranking."""
        ranking = self.prediction.get("ranking")
        if not isinstance(ranking, list):
            return ()
        return tuple(pair[0] for pair in ranking if isinstance(pair, list | tuple) and pair and isinstance(pair[0], str))

    def agent_turns(self) -> tuple[dict[str, Any], ...]:
        """The messages agents wrote on this ticket; not the earlier tickets' ones that it
        shows (:meth:`Queue.agent_messages`), which name their ticket in ``"ticket"``."""
        return tuple(t for t in self.turns if t.get("action") == "agent" and _written_on(t, self.id))


@runtime_checkable
class Queue(Protocol):
    """What the service, the HTTP routes and the CLI need from a queue backend."""

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
        """Store a ticket; return it and whether it was created.

        A conversation has at most one open (queued or claimed) ticket: a message of a
        conversation that has one joins it (its ``turns`` are added, reasons merged,
        priority raised) and False is returned, as for a ``message_id`` already stored.
        ``turns`` is the conversation up to and including this message, oldest first."""
        ...

    def claim(self, agent: str, lease_seconds: float = 300) -> Ticket | None:
        """Give the highest-priority, oldest claimable ticket to ``agent``; None when empty."""
        ...

    def resolve(self, ticket_id: int, agent: str, resolution: str = "", intent: str | None = None, new_intent: bool = False) -> Ticket:
        """Close a ticket; only the agent holding the claim may. ``intent``, when given, is
        the intent the customer meant, kept as a training label (:meth:`labelled`); one
        that the model which scored the ticket does not have (its prediction's ranking lists
        them) is refused (:class:`UnknownIntent`) unless ``new_intent``. Resolving it again
        with the same note and intent (a retry) returns it unchanged; with another note or
        intent it is refused."""
        ...

    def release(self, ticket_id: int, agent: str) -> Ticket:
        """Give a claimed ticket back to the queue, in its original place."""
        ...

    def get(self, ticket_id: int) -> Ticket:
        """The ticket with this id, or :class:`UnknownTicket`."""
        ...

    def list(self, status: str | None = None, limit: int = 50) -> builtins.list[Ticket]:
        """Tickets, optionally of one status: queued and claimed ones in the order agents
        take them (priority, then age), then resolved ones newest first."""
        ...

    def depth(self) -> int:
        """Tickets an agent could claim now: queued, plus claimed ones whose lease expired."""
        ...

    def labelled(self) -> Iterator[Ticket]:
        """Resolved tickets that an agent gave an intent, oldest first, read in pages."""
        ...

    def created_since(self, since: float) -> Iterator[Ticket]:
        """Tickets created at or after ``since`` (unix time), in id order, read in pages."""
        ...

    def add_agent_message(
        self, ticket_id: int, agent: str, message_id: str, text: str | Template
    ) -> tuple[Ticket, dict[str, Any], bool]:
        """Record, as a turn of the ticket marked ``"sent": False``, a message that the agent
        holding it is about to send the customer; return the ticket, the turn and whether
        it is new. A turn with this ``message_id`` and text already there (a retried
        request) is returned as it is, so the caller sends it once; with another text it is
        refused. The text is stored redacted. A :class:`Template` message is kept as
        ``"template": {"name", "language", "parameters"}`` (parameters redacted), with a
        one-line ``text`` saying which it was."""
        ...

    def settle_agent_message(self, ticket_id: int, message_id: str, sent: bool | None) -> Ticket:
        """After the send: mark the turn sent (True), remove it when nothing reached the
        customer (False), or mark it unknown (None: the request went out, no answer came)."""
        ...

    def open_for_conversation(self, conversation_id: str) -> Ticket | None:
        """The newest unresolved ticket of a conversation, if any."""
        ...

    def agent_messages(self, conversation_id: str, since: float = 0.0) -> builtins.list[dict[str, Any]]:
        """What agents wrote to the customer of a conversation, on any of its tickets, from
        ``since`` (unix seconds) on, oldest first: the turns ``add_agent_message`` recorded,
        as the tickets hold them (text redacted, ``agent``, ``sent``), each once, with the
        ``ticket`` it was written on. A ticket shows the recent conversation; the agents'
        part of it lives on the earlier tickets."""
        ...

    def purge(self, older_than_days: float) -> int:
        """Delete resolved tickets last updated more than N days ago; return how many."""
        ...

    def close(self) -> None:
        """Release the backend's resources; later calls raise QueueError."""
        ...


class _Cursor(Protocol):
    """What the shared operations use of a cursor (sqlite3's and psycopg's both fit)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> builtins.list[Any]: ...


class _Executor(Protocol):
    """A connection inside one transaction, taking SQL with ``?`` placeholders (a sqlite3
    connection as it is; on PostgreSQL, :class:`nlu.pg.QmarkConnection`)."""

    def execute(self, sql: str, params: Any = (), /) -> _Cursor: ...


class _SqlStore:
    """What a store written once for SQLite and PostgreSQL needs from its backend.

    * ``_write(what)``: one write transaction yielding an :class:`_Executor`, committed when
      the block ends and rolled back on any exception (a refusal included); database errors
      become the store's "unavailable" error, naming ``what`` could not be done;
    * ``_FOR_UPDATE``: the clause that keeps a row read inside a transaction from other
      writers until it ends (empty where the transaction already excludes them);
    * ``_storable``: what text must become before it is stored or looked up;
    * ``close``, and ``path``: where the data is, as error messages show it.
    """

    path: str
    _FOR_UPDATE: str

    def _write(self, what: str) -> AbstractContextManager[_Executor]:
        raise NotImplementedError

    @staticmethod
    def _storable(value: Any) -> Any:
        return value

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class _SqlQueue(_SqlStore):
    """The queue operations whose SQL every backend shares, written once (``?`` placeholders).

    Besides what :class:`_SqlStore` lists, a backend supplies ``_read(what, sql, params)``,
    the rows of one query, and ``_CLAIM`` in its own dialect (named parameters ``agent``,
    ``lease_until``, ``now``). Rows are plain sequences of the ``_COLUMNS``.
    """

    _clock: Callable[[], float]
    _CLAIM: str

    def _read(self, what: str, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        raise NotImplementedError

    def _ticket(self, row: Sequence[Any]) -> Ticket:
        return _ticket_from_row(dict(zip(_FIELDS, row, strict=True)))

    def _fetch(self, conn: _Executor, ticket_id: int) -> Ticket:
        """The ticket, read inside a write transaction and kept from other writers until it ends."""
        row = conn.execute(f"SELECT {_COLUMNS} FROM tickets WHERE id = ?{self._FOR_UPDATE}", (ticket_id,)).fetchone()
        if row is None:
            raise UnknownTicket(f"{self.path}: no ticket {ticket_id}")
        return self._ticket(row)

    def _lock_conversation(self, conn: _Executor, conversation_id: str) -> None:
        """Keep other enqueues of this conversation out until the transaction ends (SQLite:
        nothing to do, BEGIN IMMEDIATE holds the database's one write lock)."""

    def _join(self, conn: _Executor, ticket: Ticket, values: Mapping[str, Any], now: float) -> Any:
        """Add a message to its conversation's open ticket: its turns the ticket lacks
        (by message_id: a retry adds nothing), its reasons, and the higher priority."""
        turns = list(ticket.turns)
        seen = {_turn_key(t) for t in turns}
        turns += [t for t in json.loads(values["turns"]) if _turn_key(t) not in seen]
        reasons = list(dict.fromkeys([*ticket.reasons, *json.loads(values["reasons"])]))
        return conn.execute(
            f"UPDATE tickets SET turns = ?, reasons = ?, priority = ?, updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
            (
                self._storable(_to_json("turns", turns)), self._storable(_to_json("reasons", reasons)),
                max(ticket.priority, values["priority"]), now, ticket.id,
            ),
        ).fetchone()

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
        values = {k: self._storable(v) for k, v in values.items()}
        now = self._clock()
        with self._write("enqueue a ticket") as conn:
            # Two messages of one conversation escalating at once must not both see "no
            # open ticket" and make two: the check and the insert are one serialised step.
            self._lock_conversation(conn, values["conversation_id"])
            row = conn.execute(f"SELECT {_COLUMNS} FROM tickets WHERE message_id = ?", (values["message_id"],)).fetchone()
            created = False
            if row is None:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM tickets WHERE conversation_id = ? AND status IN ('queued', 'claimed')"
                    f" ORDER BY created_at DESC, id DESC LIMIT 1{self._FOR_UPDATE}",
                    (values["conversation_id"],),
                ).fetchone()
                if row is not None:
                    row = self._join(conn, self._ticket(row), values, now)
            if row is None:
                row = conn.execute(
                    "INSERT INTO tickets (conversation_id, message_id, text, prediction, reasons, priority,"
                    " status, created_at, updated_at, turns) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)"
                    f" ON CONFLICT (message_id) DO NOTHING RETURNING {_COLUMNS}",
                    (
                        values["conversation_id"], values["message_id"], values["text"], values["prediction"],
                        values["reasons"], values["priority"], now, now, values["turns"],
                    ),
                ).fetchone()
                created = row is not None
            if row is None:
                # PostgreSQL (READ COMMITTED): the same message_id, committed by another
                # conversation's transaction meanwhile. SQLite's write lock rules this out.
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM tickets WHERE message_id = ?", (values["message_id"],)
                ).fetchone()
                if row is None:  # deleted (purged) between the two statements (PostgreSQL only)
                    raise QueueUnavailable(f"{self.path}: ticket for message {values['message_id']!r} vanished; retry")
            ticket = self._ticket(row)
        _check_same_conversation(ticket, values["conversation_id"])
        return ticket, created

    def claim(self, agent: str, lease_seconds: float = 300) -> Ticket | None:
        agent = self._storable(_agent(agent))
        lease = _lease(lease_seconds)
        now = self._clock()
        with self._write("claim a ticket") as conn:
            row = conn.execute(self._CLAIM, {"agent": agent, "lease_until": now + lease, "now": now}).fetchone()
            return None if row is None else self._ticket(row)

    def resolve(self, ticket_id: int, agent: str, resolution: str = "", intent: str | None = None, new_intent: bool = False) -> Ticket:
        ticket_id, agent, resolution = _resolve_args(ticket_id, agent, resolution)
        intent = None if intent is None else _intent(intent)
        agent, resolution = self._storable(agent), self._storable(resolution)
        with self._write(f"resolve ticket {ticket_id}") as conn:
            ticket = self._fetch(conn, ticket_id)
            if ticket.status == "resolved" and _same_agent(ticket.agent, agent):
                if ticket.resolution == resolution and ticket.agent_intent == intent:
                    return ticket  # a retried resolve (e.g. after a timeout) is not an error
                # Answering success would tell the agent their new note or label was kept.
                raise QueueError(
                    f"cannot resolve ticket {ticket.id}: already resolved by {ticket.agent} with another "
                    + ("note" if ticket.resolution != resolution else "intent")
                )
            _check_holder(ticket, agent, "resolve")
            if intent is not None and not new_intent:
                _check_known_intent(ticket, intent)
            row = conn.execute(
                "UPDATE tickets SET status = 'resolved', lease_until = NULL, resolution = ?, agent_intent = ?,"
                f" updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
                (resolution, intent, self._clock(), ticket_id),
            ).fetchone()
            assert row is not None  # read and kept from other writers by _fetch
            return self._ticket(row)

    def release(self, ticket_id: int, agent: str) -> Ticket:
        ticket_id = _ticket_id(ticket_id)
        agent = self._storable(_agent(agent))
        with self._write(f"release ticket {ticket_id}") as conn:
            _check_holder(self._fetch(conn, ticket_id), agent, "release")
            row = conn.execute(
                "UPDATE tickets SET status = 'queued', agent = NULL, lease_until = NULL, updated_at = ?"
                f" WHERE id = ? RETURNING {_COLUMNS}",
                (self._clock(), ticket_id),
            ).fetchone()
            assert row is not None  # read and kept from other writers by _fetch
            return self._ticket(row)

    def get(self, ticket_id: int) -> Ticket:
        ticket_id = _ticket_id(ticket_id)
        rows = self._read(f"read ticket {ticket_id}", f"SELECT {_COLUMNS} FROM tickets WHERE id = ?", (ticket_id,))
        if not rows:
            raise UnknownTicket(f"{self.path}: no ticket {ticket_id}")
        return self._ticket(rows[0])

    def list(self, status: str | None = None, limit: int = 50) -> builtins.list[Ticket]:
        order = _list_order(status, limit)
        where = "" if status is None else "WHERE status = ?"
        params: tuple[Any, ...] = (limit,) if status is None else (status, limit)
        rows = self._read("list tickets", f"SELECT {_COLUMNS} FROM tickets {where} ORDER BY {order} LIMIT ?", params)
        return [self._ticket(row) for row in rows]

    def depth(self) -> int:
        rows = self._read(
            "count queued tickets",
            "SELECT (SELECT count(*) FROM tickets WHERE status = 'queued')"
            " + (SELECT count(*) FROM tickets WHERE status = 'claimed' AND lease_until <= ?)",
            (self._clock(),),
        )
        return int(rows[0][0])

    def labelled(self) -> Iterator[Ticket]:
        return self._pages("read labelled tickets", "status = 'resolved' AND agent_intent IS NOT NULL", ())

    def created_since(self, since: float) -> Iterator[Ticket]:
        if isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since):
            raise QueueError(f"since must be a unix time, got {since!r}")
        return self._pages("read recent tickets", "created_at >= ?", (float(since),))

    def _pages(self, what: str, where: str, params: tuple[Any, ...]) -> Iterator[Ticket]:
        # Keyset pages in id order: a long read neither holds every ticket in memory nor
        # keeps one read transaction open (which would hold back SQLite's WAL checkpoints).
        after = 0
        while True:
            rows = self._read(what, f"SELECT {_COLUMNS} FROM tickets WHERE {where} AND id > ? ORDER BY id LIMIT ?", (*params, after, _PAGE))
            for row in rows:
                ticket = self._ticket(row)
                after = ticket.id
                yield ticket
            if len(rows) < _PAGE:
                return

    def add_agent_message(
        self, ticket_id: int, agent: str, message_id: str, text: str | Template
    ) -> tuple[Ticket, dict[str, Any], bool]:
        ticket_id = _ticket_id(ticket_id)
        agent = self._storable(_agent(agent))
        message_id = self._storable(_nonempty("message_id", message_id))
        content = _agent_content(text)
        stored = content["text"]
        with self._write(f"record a message on ticket {ticket_id}") as conn:
            ticket = self._fetch(conn, ticket_id)
            for turn in ticket.turns:
                if turn.get("message_id") == message_id and _written_on(turn, ticket.id):  # an earlier ticket's may share the id
                    if turn.get("action") != "agent":
                        raise QueueError(f"message_id {message_id!r} is the customer's message on ticket {ticket.id}, not an agent's")
                    same = turn.get("text") == stored and turn.get("template") == content.get("template")
                    if not same or not _same_agent(turn.get("agent"), agent):
                        # Answering "duplicate" would tell this agent their text reached the customer.
                        raise QueueError(f"message_id {message_id!r} is already another message on ticket {ticket.id}; use a new id")
                    return ticket, turn, False
            _check_holder(ticket, agent, "message the customer of")
            now = self._clock()
            turn = {"message_id": message_id, "action": "agent", "agent": agent, **content, "created_at": now, "sent": False}
            row = self._set_turns(conn, ticket.id, [*ticket.turns, turn], now)
            return self._ticket(row), turn, True

    def settle_agent_message(self, ticket_id: int, message_id: str, sent: bool | None) -> Ticket:
        ticket_id = _ticket_id(ticket_id)
        message_id = self._storable(_nonempty("message_id", message_id))
        with self._write(f"settle a message on ticket {ticket_id}") as conn:
            ticket = self._fetch(conn, ticket_id)
            turns = []
            for turn in ticket.turns:
                if turn.get("message_id") == message_id and turn.get("action") == "agent" and _written_on(turn, ticket.id):
                    if sent is False:
                        continue  # it never reached the customer: the agent's view must not say it did
                    turn = {**turn, "sent": sent}
                turns.append(turn)
            # A send that ends after the agent resolved must not move the resolution time.
            now = ticket.updated_at if ticket.status == "resolved" else self._clock()
            return self._ticket(self._set_turns(conn, ticket.id, turns, now))

    def _set_turns(self, conn: _Executor, ticket_id: int, turns: Sequence[Mapping[str, Any]], now: float) -> Any:
        return conn.execute(
            f"UPDATE tickets SET turns = ?, updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
            (self._storable(_to_json("turns", list(turns))), now, ticket_id),
        ).fetchone()

    def open_for_conversation(self, conversation_id: str) -> Ticket | None:
        conversation_id = self._storable(_nonempty("conversation_id", conversation_id))
        rows = self._read(
            "read the conversation's ticket",
            f"SELECT {_COLUMNS} FROM tickets WHERE conversation_id = ? AND status IN ('queued', 'claimed')"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            (conversation_id,),
        )
        return self._ticket(rows[0]) if rows else None

    def agent_messages(self, conversation_id: str, since: float = 0.0) -> builtins.list[dict[str, Any]]:
        conversation_id = self._storable(_nonempty("conversation_id", conversation_id))
        if isinstance(since, bool) or not isinstance(since, numbers.Real) or math.isnan(since):
            raise QueueError(f"since must be a number of unix seconds, got {since!r}")
        # A ticket's updated_at is at least the time of its last turn, so older tickets hold none.
        rows = self._read(
            "read the conversation's agent messages",
            f"SELECT {_COLUMNS} FROM tickets WHERE conversation_id = ? AND updated_at >= ? ORDER BY id",
            (conversation_id, float(since)),
        )
        # Each message once, from the ticket it was written on (a later ticket shows a copy),
        # naming that ticket: on the next ticket it is not one of that ticket's own.
        said = [
            {**t, "ticket": ticket.id}
            for ticket in map(self._ticket, rows) for t in ticket.agent_turns() if t.get("created_at", 0) >= since
        ]
        return sorted(said, key=lambda t: t["created_at"])

    def purge(self, older_than_days: float) -> int:
        cutoff = self._clock() - _days(older_than_days) * 86400.0
        with self._write("purge resolved tickets") as conn:
            return conn.execute("DELETE FROM tickets WHERE status = 'resolved' AND updated_at < ?", (cutoff,)).rowcount


class SQLiteQueue(_SqlQueue):
    """The queue in one SQLite file (WAL mode), safe across threads and processes.

    One connection guarded by a lock serves the threads of a process; processes coordinate
    through SQLite's own locks. Every operation is one short transaction, and every write
    transaction starts with ``BEGIN IMMEDIATE`` so it takes the write lock up front (a
    deferred transaction that upgrades from read to write can fail with SQLITE_BUSY without
    waiting for the busy timeout). ``clock`` is injectable so tests can expire leases.

    Waiting for a busy database (``timeout`` seconds) is done here, not by SQLite's busy
    handler: that handler sleeps 1, 2, 5 ... 100 ms between attempts, so a process in a
    tight loop keeps re-taking the lock and another process starves (measured: one of two
    claimers got 1 ticket of 2,000 and waited 0.5-5.7 s for it, past a 5 s timeout). Short
    jittered polls give both a fair chance at the same throughput.
    """

    _CLAIM = _CLAIM
    # No row locks in SQLite (nor FOR UPDATE): BEGIN IMMEDIATE already holds the whole
    # database's write lock for the transaction.
    _FOR_UPDATE = ""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous.upper() not in ("FULL", "EXTRA", "NORMAL"):
            raise ConfigError(f"queue synchronous={synchronous!r}: use FULL, EXTRA or NORMAL")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout >= 0):
            raise ConfigError(f"queue timeout={timeout!r}: must be a number of seconds >= 0")
        self.path = str(path)
        self._clock = clock
        self._timeout = float(timeout)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise QueueUnavailable(f"{self.path}: cannot create the database folder: {exc}") from exc
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise QueueUnavailable(f"{self.path}: cannot open the queue database: {exc}") from exc
        self._conn = conn
        try:
            self._setup(conn, synchronous.upper())
        except BaseException:
            self.close()
            raise

    # -- setup ---------------------------------------------------------------------------

    def _setup(self, conn: sqlite3.Connection, synchronous: str) -> None:
        try:
            conn.execute("PRAGMA busy_timeout = 0")  # we wait ourselves, see the class docstring
            mode = self._patiently(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() not in ("wal", "memory"):
                raise QueueError(f"{self.path}: cannot switch the database to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        except sqlite3.Error as exc:
            raise self._error("open the queue database", exc) from exc
        with self._write("create the tickets tables") as c:
            # Not executescript: it COMMITs first, which would end our transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            row = c.execute("SELECT value FROM tickets_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                c.execute("INSERT INTO tickets_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
            found = int(row[0])
            if found > SCHEMA_VERSION:
                raise QueueError(
                    f"{self.path}: tickets schema version {row[0]} is newer than this nlu understands "
                    f"({SCHEMA_VERSION}); upgrade nlu"
                )
            # Upgrades of a file an older nlu made, in the same write transaction as the
            # version bump, so another process never sees one without the other.
            if found < 2:
                c.execute("ALTER TABLE tickets ADD COLUMN agent_intent TEXT")
            if found < SCHEMA_VERSION:
                c.execute("UPDATE tickets_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- plumbing ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueError(f"{self.path}: the queue is closed")
        return self._conn

    def _error(self, what: str, exc: sqlite3.Error) -> QueueUnavailable:
        message = str(exc)
        if _is_busy(exc):
            message += f" (another process held it longer than the {self._timeout:g}s busy timeout)"
        return QueueUnavailable(f"{self.path}: cannot {what}: {message}")

    def _patiently(self, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` until the database is not busy or the timeout is spent."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0.0002, 0.002))

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            conn = self._connection()
            try:
                self._patiently(lambda: conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # the original error is the one worth reporting
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(what, exc) from exc
                raise

    def _read(self, what: str, sql: str, params: Sequence[Any] = ()) -> builtins.list[Any]:
        # Outside any transaction (autocommit), retried while the database is busy.
        with self._lock:
            conn = self._connection()
            try:
                return self._patiently(lambda: conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()


def resolve_db(url_or_path: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", url)`` for a database URL or path.

    ``None`` or blank reads ``NLU_DB`` (default ``var/nlu.db``). ``sqlite:///relative/path``,
    ``sqlite:////absolute/path`` (SQLAlchemy's spelling) and plain paths are SQLite;
    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` URLs are PostgreSQL
    (returned as ``postgresql://...`` for libpq). The queue and the conversation store both
    resolve their URL here, so one ``NLU_DB`` always names one database for both.
    """
    target = os.fspath(url_or_path) if url_or_path is not None else ""
    if not target.strip():
        target = os.environ.get("NLU_DB", "").strip() or DEFAULT_DB
    scheme, sep, rest = target.partition("://")
    if not sep:
        return "sqlite", target
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        if not rest.strip():
            raise ConfigError(f"database URL {target!r} names no server; use postgresql://user:password@host:5432/dbname")
        return "postgresql", "postgresql://" + rest
    if scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise ConfigError(f"queue database URL {target!r} names no file; use sqlite:///path/to/nlu.db")
        return "sqlite", path
    raise ConfigError(
        f"queue database URL {target!r}: unsupported scheme {scheme!r}; use a path, sqlite:///path or postgresql://..."
    )


def open_queue(url_or_path: str | os.PathLike[str] | None = None, **options: Any) -> Queue:
    """Open the queue named by a URL or path (see :func:`resolve_db`); ``None`` reads ``NLU_DB``.

    SQLite targets open :class:`SQLiteQueue`, ``postgresql://`` URLs open
    :class:`nlu.queue_pg.PostgresQueue`; ``options`` go to the backend's constructor.
    """
    kind, location = resolve_db(url_or_path)
    if kind == "postgresql":
        from .queue_pg import PostgresQueue  # psycopg is imported only when PostgreSQL is used

        return PostgresQueue(location, **options)
    return SQLiteQueue(location, **options)


# -- helpers shared by every backend (queue_pg.py imports them) ----------------------------

_FIELDS = tuple(name.strip() for name in _COLUMNS.split(","))


def _new_ticket(
    *,
    conversation_id: Any,
    message_id: Any,
    text: Any,
    prediction: Any,
    reasons: Any,
    priority: Any,
    turns: Any,
) -> dict[str, Any]:
    """The checked, redacted column values of a new ticket (JSON columns as text)."""
    conversation_id = _nonempty("conversation_id", conversation_id)
    message_id = _nonempty("message_id", message_id)
    if not isinstance(text, str):
        raise QueueError(f"ticket text must be a string, got {type(text).__name__}")
    if isinstance(reasons, str) or not all(isinstance(r, str) for r in reasons):
        raise QueueError(f"ticket reasons must be a list of reason codes, got {reasons!r}")
    if isinstance(priority, bool) or not isinstance(priority, numbers.Real) or not math.isfinite(priority):
        raise QueueError(f"ticket priority must be a finite number, got {priority!r}")
    if hasattr(prediction, "to_dict") and not isinstance(prediction, Mapping):
        prediction = prediction.to_dict()  # a Prediction object: accept it as its JSON form
    if not isinstance(prediction, Mapping):
        raise QueueError(f"ticket prediction must be a mapping, got {type(prediction).__name__}")
    if isinstance(turns, str | Mapping) or not all(isinstance(t, Mapping) for t in turns):
        raise QueueError("ticket turns must be a list of mappings")
    # Redact here as well as upstream: the queue is where text comes to rest.
    return {
        "conversation_id": conversation_id,
        "message_id": message_id,
        "text": redact(text),
        "prediction": _to_json("prediction", redact_values(prediction)),
        "reasons": _to_json("reasons", list(reasons)),
        "priority": float(priority),
        "turns": _to_json("turns", redact_values(list(turns))),
    }


def _ticket_from_row(row: Mapping[str, Any]) -> Ticket:
    """A :class:`Ticket` from a row holding the ``_COLUMNS`` (JSON columns as text)."""
    return Ticket(
        id=int(row["id"]),
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        text=row["text"],
        prediction=json.loads(row["prediction"]),
        reasons=tuple(json.loads(row["reasons"])),
        priority=row["priority"],
        status=row["status"],
        agent=row["agent"],
        lease_until=row["lease_until"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        turns=tuple(json.loads(row["turns"])),
        resolution=row["resolution"],
        agent_intent=row["agent_intent"],
    )


def _written_on(turn: Mapping[str, Any], ticket_id: int) -> bool:
    """Whether a turn is the ticket's own, not an earlier ticket's agent message it shows."""
    return turn.get("ticket", ticket_id) == ticket_id


def _turn_key(turn: Mapping[str, Any]) -> str:
    """What makes two turns the same one: the message id, else the whole turn."""
    message_id = turn.get("message_id")
    return f"m:{message_id}" if isinstance(message_id, str) else "t:" + json.dumps(turn, sort_keys=True, default=str)


def _check_same_conversation(ticket: Ticket, conversation_id: str) -> None:
    if ticket.conversation_id != conversation_id:
        # Message ids are unique per channel; the same id in another conversation means
        # the caller mixed something up, and attaching it silently would mislead an agent.
        raise QueueError(
            f"message_id {ticket.message_id!r} already belongs to ticket {ticket.id} of conversation "
            f"{ticket.conversation_id!r}, not {conversation_id!r}"
        )


def _check_holder(ticket: Ticket, agent: str, action: str) -> None:
    # An expired lease still belongs to its agent until someone else claims the ticket:
    # finishing late is better than making the customer start again.
    if ticket.status == "resolved":
        raise QueueError(f"cannot {action} ticket {ticket.id}: already resolved by {ticket.agent}")
    if ticket.status != "claimed":
        raise QueueError(f"cannot {action} ticket {ticket.id}: it is {ticket.status}, claim it first")
    if not _same_agent(ticket.agent, agent):
        raise QueueError(f"cannot {action} ticket {ticket.id}: it is claimed by {ticket.agent}, not {agent}")


def _resolve_args(ticket_id: Any, agent: Any, resolution: Any) -> tuple[int, str, str]:
    """Checked arguments of ``resolve``, the resolution note redacted."""
    ticket_id = _ticket_id(ticket_id)
    agent = _agent(agent)
    if not isinstance(resolution, str):
        raise QueueError(f"resolution must be a string, got {type(resolution).__name__}")
    problem = note_problem(resolution)
    if problem is not None:
        raise QueueError(f"resolution {problem}")
    return ticket_id, agent, redact(resolution)


def _agent_text(value: Any) -> str:
    """A checked message from an agent to the customer (line breaks and tabs allowed)."""
    if not isinstance(value, str) or not value.strip():
        raise QueueError(f"the message must be a non-empty string, got {value!r}")
    problem = note_problem(value)
    if problem is not None:
        raise QueueError(f"the message {problem}")
    if len(value) > MAX_AGENT_MESSAGE_CHARS:
        raise QueueError(f"the message is longer than WhatsApp's {MAX_AGENT_MESSAGE_CHARS} characters")
    return value


def _agent_content(message: Any) -> dict[str, Any]:
    """What an agent's turn stores of a text or a template message, redacted: ``text``, and
    for a template also ``template`` (its name, language and parameters)."""
    if not isinstance(message, Template):
        return {"text": redact(_agent_text(message))}
    parameters = [redact(p) for p in message.parameters]
    return {"text": redact(message.summary(parameters)), "template": {**message.to_dict(), "parameters": parameters}}


def _intent(value: Any) -> str:
    """A checked intent label from an agent: the form training data gives labels
    (stripped; data files strip their label cells), in NFC, on one line."""
    if not isinstance(value, str) or not value.strip():
        raise QueueError(f"intent must be a non-empty string, got {value!r}")
    intent = value.strip()
    problem = agent_problem(intent)  # no control, line-separator or bidi characters
    if problem is not None:
        raise QueueError(f"intent {problem}")
    if len(intent) > MAX_INTENT_CHARS:
        raise QueueError(f"intent is longer than {MAX_INTENT_CHARS} characters")
    return unicodedata.normalize("NFC", intent)


def _check_known_intent(ticket: Ticket, intent: str) -> None:
    """Refuse a label the model that scored ``ticket`` does not have; a ticket that cannot
    tell (:meth:`Ticket.model_intents` empty) takes any label."""
    known = ticket.model_intents()
    if not known or intent in known:
        return
    nearest = difflib.get_close_matches(intent, known, n=1)
    hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
    raise UnknownIntent(
        f"ticket {ticket.id}: {intent!r} is not an intent of the model that scored it{hint}; to label it with a new "
        "intent, say so (new_intent=True; nlu queue resolve --new-intent; HTTP \"new_intent\": true)"
    )


def _list_order(status: Any, limit: Any) -> str:
    """Check ``list``'s arguments; the ORDER BY clause for that status."""
    if status is not None and status not in STATUSES:
        raise QueueError(f"unknown ticket status {status!r}; use one of {', '.join(STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_SQL_INTEGER:
        raise QueueError(f"limit must be an integer from 1 to {_MAX_SQL_INTEGER}, got {limit!r}")
    # Queued and claimed tickets in the order agents take them; resolved ones newest first.
    if status == "resolved":
        return _RESOLVED_ORDER
    if status is not None:
        return _OPEN_ORDER
    # Every status: the open tickets first, in claim order, then the resolved ones newest
    # first (ordering all of them by priority put old urgent resolved tickets ahead of
    # waiting ones, and a short --limit showed no waiting ticket at all). The first key
    # splits the two groups, so the CASEs' NULLs (sorted first by SQLite, last by
    # PostgreSQL) only ever tie with each other.
    return (
        "CASE WHEN status = 'resolved' THEN 1 ELSE 0 END,"
        " CASE WHEN status <> 'resolved' THEN priority END DESC,"
        " CASE WHEN status <> 'resolved' THEN created_at END,"
        " CASE WHEN status = 'resolved' THEN updated_at END DESC,"
        " CASE WHEN status = 'resolved' THEN -id ELSE id END"
    )


_OPEN_ORDER = "priority DESC, created_at, id"  # claim order: the same as _CLAIM's
_RESOLVED_ORDER = "updated_at DESC, id DESC"


def _days(older_than_days: Any) -> float:
    real = isinstance(older_than_days, numbers.Real) and not isinstance(older_than_days, bool)
    days = float(older_than_days) if real else math.nan
    if not (math.isfinite(days) and days >= 0):
        raise QueueError(f"older_than_days must be a number >= 0, got {older_than_days!r}")
    return days



def _is_busy(exc: sqlite3.Error) -> bool:
    # SQLITE_BUSY ("database is locked") and SQLITE_LOCKED ("database table is locked").
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _nonempty(name: str, value: Any) -> str:
    """A non-blank string, kept as given: ids are opaque and compared exactly, as the
    conversation store compares them (stripping here made " m1" and "m1" one ticket)."""
    if not isinstance(value, str) or not value.strip():
        raise QueueError(f"{name} must be a non-empty string, got {value!r}")
    return value


# What an agent name or a resolution note may not hold: unpaired surrogates (not Unicode
# text; the database driver cannot encode them) and control characters (NUL, ESC and the
# other C0 and C1 codes; a note may still hold tabs and line breaks). Agent names also
# refuse line separators and bidirectional controls, which make one name look like another.
_SURROGATES = "\ud800-\udfff"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_NOT_IN_NOTE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_SURROGATES}]")
_NOT_IN_AGENT = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_SURROGATES}{_BIDI}]")


def _char_problem(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    if match is None:
        return None
    char = match.group()
    kind = (
        "an unpaired surrogate" if "\ud800" <= char <= "\udfff"
        else "a control character" if char <= "\x9f"
        else "a line separator" if char in "\u2028\u2029"
        else "a bidirectional control"
    )
    return f"holds U+{ord(char):04X} ({kind}) at position {match.start()}"


def agent_problem(agent: str) -> str | None:
    """Why ``agent`` cannot be an agent name (apart from being blank), or None. The HTTP
    models ask this too, so both refuse the same names."""
    return _char_problem(_NOT_IN_AGENT, agent)


def note_problem(note: str) -> str | None:
    """Why ``note`` cannot be a resolution note, or None."""
    return _char_problem(_NOT_IN_NOTE, note)


def _agent(value: Any) -> str:
    """A checked agent name, in NFC: "José" typed with a combining accent (NFD, as some
    keyboards and macOS file names give it) is the same agent as the precomposed "José".
    Unlike ids, which are opaque and compared exactly, a name is what a person typed."""
    agent = _nonempty("agent", value)
    problem = agent_problem(agent)
    if problem is not None:
        raise QueueError(f"agent {problem}; use a plain name")
    if len(agent) > MAX_AGENT_CHARS:
        raise QueueError(f"agent is longer than {MAX_AGENT_CHARS} characters")
    return unicodedata.normalize("NFC", agent)


def _same_agent(stored: str | None, agent: str) -> bool:
    """Whether the agent on a ticket is ``agent`` (already NFC); rows written before names
    were normalised may hold another form."""
    return stored is not None and unicodedata.normalize("NFC", stored) == agent


def _lease(value: Any) -> float:
    seconds = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:  # NaN fails too
        raise QueueError(f"lease_seconds must be {MIN_LEASE_SECONDS} to {MAX_LEASE_SECONDS} seconds, got {value!r}")
    return seconds


def _ticket_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueueError(f"ticket id must be an integer, got {value!r}")
    if not 1 <= value <= MAX_TICKET_ID:  # past int64 the database driver raised OverflowError
        raise QueueError(f"ticket id must be from 1 to {MAX_TICKET_ID}, got {value}")
    return value


def _to_json(field: str, value: Any) -> str:
    """JSON for a column; numpy numbers become plain ones and NaN/inf become null."""

    def clean(v: Any) -> Any:
        if v is None or isinstance(v, str | bool):
            return v
        if isinstance(v, numbers.Integral):
            return int(v)
        if isinstance(v, numbers.Real):
            f = float(v)
            return f if math.isfinite(f) else None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        raise QueueError(f"ticket {field} holds a {type(v).__name__}, which cannot be stored as JSON")

    return json.dumps(clean(value), ensure_ascii=False, allow_nan=False)
