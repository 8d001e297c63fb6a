"""Per-conversation state in SQLite, next to the queue (tables prefixed "conversation");
the same on PostgreSQL in ``conversation_pg.py`` (:func:`open_conversations` picks by URL).

What is kept per conversation: consent (unknown / granted / revoked), whether the virtual
assistant disclosure was sent, whether a person has taken over (and the ticket), the
intents offered by the last clarifying question, and the recent turns (PII-redacted text,
prediction summary, action, reasons). Every processed message id is kept with the outcome
that was returned, so a retried message is answered once and the same outcome comes back.
The outbox holds the replies the sender could not hand over yet (``nlu.outbox``), until
they are sent or given up.

Durability: WAL journal, one ``BEGIN IMMEDIATE`` transaction per operation, so a crash
loses nothing that was acknowledged and a restart resumes every conversation. Safe to
share between threads (one connection behind a lock) and between processes (SQLite locks).

The operations, SQL included, are written once in ``_SqlConversations`` and shared with
the PostgreSQL store; each backend adds only its connection handling and row locking.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from .errors import ConfigError, InputError, MessageConflict, StorageUnavailable
from .queue import _Executor, _SqlStore, resolve_db
from .routing import Consent, ConversationView, Turn

CONSENT_STATES: tuple[str, ...] = ("unknown", "granted", "revoked")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    consent TEXT NOT NULL DEFAULT 'unknown',
    disclosed INTEGER NOT NULL DEFAULT 0,
    human_active INTEGER NOT NULL DEFAULT 0,
    ticket_id INTEGER,
    pending_options TEXT NOT NULL DEFAULT '[]',
    -- Turns up to this id belong to before the last handover and no longer count
    -- towards streaks (the person dealt with them).
    reset_turn INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS conversation_turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    text TEXT NOT NULL,
    intent TEXT,
    confidence REAL,
    sentiment TEXT,
    emotion TEXT,
    frustration REAL NOT NULL DEFAULT 0,
    action TEXT NOT NULL,
    reasons TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_turns_by_conversation ON conversation_turns (conversation_id, id);
CREATE TABLE IF NOT EXISTS conversation_messages (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_messages_by_conversation ON conversation_messages (conversation_id, created_at);
CREATE TABLE IF NOT EXISTS conversation_outbox (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    phone_number_id TEXT,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    next_at REAL NOT NULL,
    claimed_at REAL,
    last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_outbox_by_next ON conversation_outbox (next_at);
CREATE INDEX IF NOT EXISTS conversation_outbox_by_conversation ON conversation_outbox (conversation_id);
"""

_UNSET: Any = object()


@dataclass(frozen=True)
class PendingReply:
    """A reply in the outbox, claimed for one more attempt (``attempts`` made so far)."""

    message_id: str  # the customer's message it answers
    conversation_id: str
    phone_number_id: str | None  # the business number the customer wrote to (None: the default)
    body: dict[str, Any]  # the Cloud API message body
    attempts: int
    created_at: float  # when the first attempt failed


class Conversations(Protocol):
    """What the service needs from a conversation store (SQLite or PostgreSQL)."""

    history_turns: int

    def view(self, conversation_id: str) -> ConversationView: ...

    def history(self, conversation_id: str) -> tuple[Turn, ...]: ...

    def outcome(self, message_id: str, conversation_id: str | None = None) -> dict[str, Any] | None: ...

    def last_outcome(self, conversation_id: str) -> dict[str, Any] | None: ...

    def record(
        self,
        conversation_id: str,
        message_id: str,
        outcome: Mapping[str, Any],
        *,
        turn: Turn | None = None,
        consent: str | None = None,
        disclosed: bool | None = None,
        human_active: bool | None = None,
        ticket_id: int | None = _UNSET,
        pending_options: tuple[str, ...] | None = None,
        reset: bool = False,
    ) -> tuple[dict[str, Any], bool]: ...

    def end_handover(self, conversation_id: str) -> None: ...

    def defer_reply(
        self, message_id: str, conversation_id: str, body: Mapping[str, Any], error: str, *,
        failed_at: float, retry_at: float, phone_number_id: str | None = None,
    ) -> bool: ...

    def claim_replies(self, now: float, lease: float, limit: int = 20) -> tuple[list[PendingReply], int]: ...

    def settle_reply(self, message_id: str, *, retry_at: float | None = None, error: str = "") -> None: ...

    def outbox_depth(self) -> int: ...

    def opted_out_after(self, message_id: str, since: float | None = None) -> bool: ...

    def forget(self, conversation_id: str) -> int: ...

    def purge(self, older_than_days: float, still_held: Callable[[str], bool] | None = None) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Conversations: ...

    def __exit__(self, *exc: object) -> None: ...


class _SqlConversations(_SqlStore):
    """The conversation-store operations whose SQL every backend shares, written once
    (``?`` placeholders).

    Besides what :class:`nlu.queue._SqlStore` lists (database errors become
    :class:`StorageUnavailable`), a backend supplies ``_reading(what)``: like ``_write``,
    for reads.
    """

    history_turns: int
    _SKIP_LOCKED: str  # claims rows no other transaction holds (PostgreSQL); SQLite has one writer

    def _reading(self, what: str) -> AbstractContextManager[_Executor]:
        raise NotImplementedError

    # -- reading ------------------------------------------------------------------------

    def history(self, conversation_id: str) -> tuple[Turn, ...]:
        """The last ``history_turns`` turns, oldest first, those before a handover included:
        what an agent taking the conversation needs to see. (:meth:`view` leaves those out,
        as they no longer count towards the routing streaks.)"""
        _check_id(conversation_id, "conversation_id")
        with self._reading("read the conversation's turns") as db:
            return self._turns(db, self._storable(conversation_id), after=0)

    def _turns(self, db: _Executor, key: str, after: int) -> tuple[Turn, ...]:
        rows = db.execute(
            "SELECT message_id, text, intent, confidence, sentiment, emotion, frustration, action, reasons, created_at "
            "FROM conversation_turns WHERE conversation_id = ? AND id > ? ORDER BY id DESC LIMIT ?",
            (key, after, self.history_turns),
        ).fetchall()
        return tuple(
            Turn(
                message_id=r[0], text=r[1], intent=r[2], confidence=r[3], sentiment=r[4], emotion=r[5],
                frustration=r[6], action=r[7], reasons=tuple(json.loads(r[8])), created_at=r[9],
            )
            for r in reversed(rows)
        )

    def view(self, conversation_id: str) -> ConversationView:
        """A snapshot of the conversation (a fresh one if it was never seen)."""
        _check_id(conversation_id, "conversation_id")
        key = self._storable(conversation_id)
        with self._reading("read the conversation") as db:
            row = db.execute(
                "SELECT consent, disclosed, human_active, ticket_id, pending_options, reset_turn FROM conversations WHERE id = ?",
                (key,),
            ).fetchone()
            if row is None:
                return ConversationView(conversation_id=conversation_id, consent="unknown")
            consent, disclosed, human_active, ticket_id, pending, reset_turn = row
            turns = self._turns(db, key, after=reset_turn)
        return ConversationView(
            conversation_id=conversation_id,
            consent=cast(Consent, consent),
            human_active=bool(human_active),
            ticket_id=ticket_id,
            turns=turns,
            pending_options=tuple(json.loads(pending)),
            disclosed=bool(disclosed),
        )

    def outcome(self, message_id: str, conversation_id: str | None = None) -> dict[str, Any] | None:
        """The outcome stored for an already processed message id, or None.

        With ``conversation_id``, an id that another conversation used raises
        :class:`MessageConflict` rather than handing this caller that conversation's outcome.
        """
        with self._reading("read a stored outcome") as db:
            row = db.execute(
                "SELECT outcome, conversation_id FROM conversation_messages WHERE message_id = ?", (self._storable(message_id),)
            ).fetchone()
        if row is None:
            return None
        if conversation_id is not None:
            _check_same_conversation(message_id, row[1], self._storable(conversation_id))
        return dict(json.loads(row[0]))

    def last_outcome(self, conversation_id: str) -> dict[str, Any] | None:
        """The outcome stored for the conversation's latest message (what the bot last
        said: a question the next message may answer), or None."""
        _check_id(conversation_id, "conversation_id")
        with self._reading("read the last outcome") as db:
            row = db.execute(
                "SELECT outcome FROM conversation_messages WHERE conversation_id = ? ORDER BY created_at DESC LIMIT 1",
                (self._storable(conversation_id),),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # -- writing ------------------------------------------------------------------------

    def record(
        self,
        conversation_id: str,
        message_id: str,
        outcome: Mapping[str, Any],
        *,
        turn: Turn | None = None,
        consent: str | None = None,
        disclosed: bool | None = None,
        human_active: bool | None = None,
        ticket_id: int | None = _UNSET,
        pending_options: tuple[str, ...] | None = None,
        reset: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Store the outcome of one message and the state changes it caused, atomically.

        Returns ``(outcome, True)``, or the outcome stored earlier and ``False`` when the
        message id was already processed (a retry, by this process or another sharing the
        database): nothing changes.
        """
        _check_id(conversation_id, "conversation_id")
        _check_id(message_id, "message_id")
        if consent is not None and consent not in CONSENT_STATES:
            raise InputError(f"consent must be one of {', '.join(CONSENT_STATES)}, got {consent!r}")
        conversation, message = self._storable(conversation_id), self._storable(message_id)
        stored = self._storable(json.dumps(dict(outcome), ensure_ascii=False))
        now = time.time()
        with self._write("write conversation state") as db:
            # The message id first: whoever inserts it owns this message. On PostgreSQL a
            # concurrent delivery blocks here until we commit, then finds it taken; SQLite's
            # write lock serialises the two transactions whole.
            claimed = db.execute(
                "INSERT INTO conversation_messages (message_id, conversation_id, outcome, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                (message, conversation, stored, now),
            ).fetchone()
            if claimed is None:
                row = db.execute(
                    "SELECT outcome, conversation_id FROM conversation_messages WHERE message_id = ?", (message,)
                ).fetchone()
                if row is None:  # purged or forgotten in between (PostgreSQL): nothing to return but a retry
                    raise StorageUnavailable(f"{self.path}: message {message_id!r} was deleted while being recorded; retry")
                _check_same_conversation(message_id, row[1], conversation)
                return dict(json.loads(row[0])), False
            db.execute(
                "INSERT INTO conversations (id, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (conversation, now, now),
            )
            updates: dict[str, Any] = {"updated_at": now}
            if consent is not None:
                updates["consent"] = consent
            if disclosed is not None:
                updates["disclosed"] = bool(disclosed)  # SQLite stores it as 1/0
            if human_active is not None:
                updates["human_active"] = bool(human_active)
            if ticket_id is not _UNSET:
                updates["ticket_id"] = ticket_id
            if pending_options is not None:
                updates["pending_options"] = self._storable(json.dumps(list(pending_options), ensure_ascii=False))
            if reset:
                updates["reset_turn"] = self._last_turn(db, conversation)
            assignments = ", ".join(f"{k} = ?" for k in updates)
            db.execute(f"UPDATE conversations SET {assignments} WHERE id = ?", (*updates.values(), conversation))
            if turn is not None:
                text, intent, sentiment, emotion, action = map(
                    self._storable, (turn.text, turn.intent, turn.sentiment, turn.emotion, turn.action)
                )
                db.execute(
                    "INSERT INTO conversation_turns (conversation_id, message_id, text, intent, confidence, sentiment, "
                    "emotion, frustration, action, reasons, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation, message, text, intent, turn.confidence, sentiment, emotion, turn.frustration,
                        action, self._storable(json.dumps(list(turn.reasons))), now,
                    ),
                )
        return dict(outcome), True

    @staticmethod
    def _last_turn(db: _Executor, conversation: str) -> int:
        row = db.execute(
            "SELECT COALESCE(MAX(id), 0) FROM conversation_turns WHERE conversation_id = ?", (conversation,)
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def end_handover(self, conversation_id: str) -> None:
        """The person's ticket is resolved: the bot takes the conversation back, and the
        turns before the handover no longer count towards streaks."""
        conversation = self._storable(conversation_id)
        now = time.time()
        with self._write("write conversation state") as db:
            if self._FOR_UPDATE:
                # Lock the row first so a message recorded meanwhile is either before the reset or after it.
                db.execute(f"SELECT 1 FROM conversations WHERE id = ?{self._FOR_UPDATE}", (conversation,))
            db.execute(
                "UPDATE conversations SET human_active = FALSE, ticket_id = NULL, pending_options = '[]', reset_turn = ?,"
                " updated_at = ? WHERE id = ?",
                (self._last_turn(db, conversation), now, conversation),
            )

    # -- the outbox -----------------------------------------------------------------------
    # Replies the sender could not hand over (Meta unreachable, rate-limited, the token
    # expired) wait here for ``nlu.outbox.Resender``. A row is claimed before its send and
    # settled after; a claim that outlives its lease (the process died during the send,
    # which may have gone through) is dropped, never sent again.

    def defer_reply(
        self, message_id: str, conversation_id: str, body: Mapping[str, Any], error: str, *,
        failed_at: float, retry_at: float, phone_number_id: str | None = None,
    ) -> bool:
        """Keep a reply whose send failed at ``failed_at`` for another attempt at
        ``retry_at`` (unix times), from business number ``phone_number_id``; False if that
        message's reply is in the outbox already."""
        _check_id(message_id, "message_id")
        _check_id(conversation_id, "conversation_id")
        with self._write("keep a reply for resending") as db:
            row = db.execute(
                "INSERT INTO conversation_outbox (message_id, conversation_id, phone_number_id, body, attempts, next_at, last_error,"
                " created_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                (
                    self._storable(message_id), self._storable(conversation_id), self._storable(phone_number_id),
                    self._storable(json.dumps(dict(body), ensure_ascii=False)), retry_at, self._storable(error[:500]), failed_at,
                ),
            ).fetchone()
        return row is not None

    def claim_replies(self, now: float, lease: float, limit: int = 20) -> tuple[list[PendingReply], int]:
        """Claim up to ``limit`` replies due at ``now``, the longest due first, for one attempt each;
        also drop claims older than ``lease`` seconds. Returns (claimed, dropped)."""
        # A read first: the resender polls every few seconds, and an empty outbox (the
        # usual case) must not take SQLite's write lock each time.
        with self._reading("read the outbox") as db:
            work = db.execute(
                "SELECT 1 FROM conversation_outbox WHERE (claimed_at IS NULL AND next_at <= ?) OR claimed_at < ? LIMIT 1",
                (now, now - lease),
            ).fetchone()
        if work is None:
            return [], 0
        with self._write("claim replies to resend") as db:
            dropped = db.execute("DELETE FROM conversation_outbox WHERE claimed_at < ?", (now - lease,)).rowcount
            rows = db.execute(
                "SELECT message_id, conversation_id, phone_number_id, body, attempts, created_at FROM conversation_outbox"
                f" WHERE claimed_at IS NULL AND next_at <= ? ORDER BY next_at LIMIT ?{self._SKIP_LOCKED}",
                (now, limit),
            ).fetchall()
            for row in rows:
                db.execute("UPDATE conversation_outbox SET claimed_at = ? WHERE message_id = ?", (now, row[0]))
        claimed = [PendingReply(r[0], r[1], r[2], dict(json.loads(r[3])), int(r[4]), float(r[5])) for r in rows]
        return claimed, max(dropped, 0)

    def settle_reply(self, message_id: str, *, retry_at: float | None = None, error: str = "") -> None:
        """After a claimed attempt: remove the reply (sent, or given up), or keep it for
        another attempt at ``retry_at``."""
        message = self._storable(message_id)
        with self._write("settle a resent reply") as db:
            if retry_at is None:
                db.execute("DELETE FROM conversation_outbox WHERE message_id = ?", (message,))
            else:
                db.execute(
                    "UPDATE conversation_outbox SET attempts = attempts + 1, next_at = ?, claimed_at = NULL, last_error = ?"
                    " WHERE message_id = ?",
                    (retry_at, self._storable(error[:500]), message),
                )

    def opted_out_after(self, message_id: str, since: float | None = None) -> bool:
        """Whether the customer opted out after ``message_id`` was handled: a later message
        of the conversation was answered with the reason ``opt_out`` (a repeated "BAJA",
        which changes nothing, is silent). True when that message's outcome is no longer
        kept (purged, forgotten): nothing says it came before. ``since`` (unix seconds),
        when the handling began (a turn's ``created_at``), counts an opt-out recorded
        after it too: one that another worker recorded while this message was handled,
        before its own outcome was."""
        message = self._storable(message_id)
        with self._reading("read the conversation's opt-outs") as db:
            this = db.execute("SELECT conversation_id, created_at FROM conversation_messages WHERE message_id = ?", (message,)).fetchone()
            if this is None:
                return True
            after = this[1] if since is None else min(float(this[1]), since)
            later = db.execute(
                "SELECT outcome, message_id FROM conversation_messages WHERE conversation_id = ? AND created_at > ?", (this[0], after)
            ).fetchall()
        outcomes = [json.loads(outcome) for outcome, other in later if other != message]
        return any(o.get("action") != "silent" and "opt_out" in o.get("reasons", ()) for o in outcomes)

    def outbox_depth(self) -> int:
        """Replies waiting in the outbox (claimed ones included)."""
        with self._reading("read the outbox") as db:
            row = db.execute("SELECT COUNT(*) FROM conversation_outbox").fetchone()
        return int(row[0]) if row is not None else 0

    def forget(self, conversation_id: str) -> int:
        """Delete everything stored about a conversation (erasure request); rows deleted."""
        conversation = self._storable(conversation_id)
        with self._write("forget a conversation") as db:
            n = 0
            for table, column in (
                ("conversation_turns", "conversation_id"), ("conversation_messages", "conversation_id"),
                ("conversation_outbox", "conversation_id"), ("conversations", "id"),
            ):
                n += db.execute(f"DELETE FROM {table} WHERE {column} = ?", (conversation,)).rowcount
        return n

    def purge(self, older_than_days: float, still_held: Callable[[str], bool] | None = None) -> int:
        """Retention: delete turns and processed-message records older than N days, and
        conversations idle that long unless a person holds them; rows deleted.

        A conversation stays marked as held after its ticket is resolved until the customer
        writes again, so one who never does would be kept for ever: ``still_held(id)`` (the
        queue's "has an open ticket") lets such idle ones go too. Without it, every marked
        conversation is kept.

        A message redelivered after its record is purged would be handled again, so keep
        N above the channel's retry window (WhatsApp retries for up to 7 days).
        """
        cutoff = _retention_cutoff(older_than_days)
        released: list[str] = []
        if still_held is not None:
            with self._reading("read held conversations") as db:
                marked = [r[0] for r in db.execute("SELECT id FROM conversations WHERE updated_at < ? AND human_active", (cutoff,)).fetchall()]
            released = [c for c in marked if not still_held(c)]
        with self._write("purge conversation state") as db:
            n = db.execute("DELETE FROM conversation_turns WHERE created_at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversation_messages WHERE created_at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversation_outbox WHERE created_at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversations WHERE updated_at < ? AND NOT human_active", (cutoff,)).rowcount
            for conversation in released:  # still idle: a message meanwhile would have updated it
                n += db.execute("DELETE FROM conversations WHERE id = ? AND updated_at < ?", (conversation, cutoff)).rowcount
        return n


class ConversationStore(_SqlConversations):
    """Conversation state in one SQLite file (usually the queue's)."""

    # No row locks in SQLite (nor FOR UPDATE): BEGIN IMMEDIATE already holds the whole
    # database's write lock for the transaction.
    _FOR_UPDATE = ""
    _SKIP_LOCKED = ""

    def __init__(self, path: str | Path, history_turns: int = 10, timeout: float = 30.0) -> None:
        path = _sqlite_path(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.history_turns = history_turns
        self._lock = threading.RLock()
        try:
            # Autocommit mode (isolation_level=None): transactions are explicit below.
            self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            # executescript() would commit on its own; one statement at a time keeps the
            # schema creation in one transaction.
            with self._write("write conversation state") as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot open the conversation database: {exc}") from None

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; a database failure (locked past the busy timeout, disk
        full, corrupt) rolls it back and becomes :class:`StorageUnavailable`: nothing is
        half-written and no sqlite3 error escapes the library."""
        with self._lock, self._storage(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # inside the try: a failed COMMIT is rolled back too
            except BaseException:
                if self._db.in_transaction:
                    # The original error is the one worth reporting, not a failed rollback.
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        # Reads run in autocommit mode, no transaction; the lock keeps the threads off
        # the shared connection meanwhile.
        with self._lock, self._storage(what):
            yield self._db

    @contextmanager
    def _storage(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: cannot {what}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _retention_cutoff(older_than_days: object) -> float:
    """The unix time before which records are purged (shared by every backend)."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int | float) or not (
        math.isfinite(older_than_days) and older_than_days >= 0
    ):
        raise InputError(f"older_than_days must be a number >= 0, got {older_than_days!r}")
    return time.time() - float(older_than_days) * 86400.0


def _check_same_conversation(message_id: str, stored_conversation: str, conversation: str) -> None:
    if stored_conversation != conversation:
        # The other conversation's id stays out of the message: it is another customer's.
        raise MessageConflict(f"message_id {message_id!r} was already used in another conversation")


def _check_id(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > 512:
        raise InputError(f"{name} is longer than 512 characters")


def _sqlite_path(url_or_path: str | Path) -> str:
    text = str(url_or_path)
    if text.startswith("sqlite:///"):
        return text[len("sqlite:///") :]
    if "://" in text:
        raise ConfigError(f"{text}: conversation state needs an SQLite file path (or sqlite:///path)")
    return text


def open_conversations(url_or_path: str | Path | None = None, history_turns: int = 10) -> Conversations:
    """Open (creating if needed) the conversation tables in the database named by a path or
    URL, resolved exactly as the queue resolves it (``None`` reads ``NLU_DB``): SQLite
    (:class:`ConversationStore`) or PostgreSQL (:class:`nlu.conversation_pg.PostgresConversationStore`)."""
    kind, location = resolve_db(url_or_path)
    if kind == "postgresql":
        from .conversation_pg import PostgresConversationStore

        return PostgresConversationStore(location, history_turns=history_turns)
    return ConversationStore(location, history_turns=history_turns)
