"""Per-conversation state in SQLite, next to the queue (tables prefixed "conversation");
the same on PostgreSQL in ``conversation_pg.py`` (:func:`open_conversations` picks by URL).

What is kept per conversation: consent (unknown / granted / revoked), whether the virtual
assistant disclosure was sent, whether a person has taken over (and the ticket), the
intents offered by the last clarifying question, and the recent turns (PII-redacted text,
prediction summary, action, reasons). Every processed message id is kept with the outcome
that was returned, so a retried message is answered once and the same outcome comes back.

Durability: WAL journal, one ``BEGIN IMMEDIATE`` transaction per operation, so a crash
loses nothing that was acknowledged and a restart resumes every conversation. Safe to
share between threads (one connection behind a lock) and between processes (SQLite locks).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, cast

from .errors import ConfigError, InputError, StorageUnavailable
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
"""

_UNSET: Any = object()


class Conversations(Protocol):
    """What the service needs from a conversation store (SQLite or PostgreSQL)."""

    history_turns: int

    def view(self, conversation_id: str) -> ConversationView: ...

    def outcome(self, message_id: str) -> dict[str, Any] | None: ...

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

    def forget(self, conversation_id: str) -> int: ...

    def purge(self, older_than_days: float) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Conversations: ...

    def __exit__(self, *exc: object) -> None: ...


class ConversationStore:
    """Conversation state in one SQLite file (usually the queue's)."""

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
            with self._transaction() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot open the conversation database: {exc}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a database failure (locked past the busy timeout, disk
        full, corrupt) rolls it back and becomes :class:`StorageUnavailable`: nothing is
        half-written and no sqlite3 error escapes the library."""
        with self._lock, self._storage("write conversation state"):
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
    def _storage(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: cannot {what}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------

    def view(self, conversation_id: str) -> ConversationView:
        """A snapshot of the conversation (a fresh one if it was never seen)."""
        _check_id(conversation_id, "conversation_id")
        with self._lock, self._storage("read the conversation"):
            row = self._db.execute(
                "SELECT consent, disclosed, human_active, ticket_id, pending_options, reset_turn FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                return ConversationView(conversation_id=conversation_id, consent="unknown")
            consent, disclosed, human_active, ticket_id, pending, reset_turn = row
            rows = self._db.execute(
                "SELECT message_id, text, intent, confidence, sentiment, emotion, frustration, action, reasons, created_at "
                "FROM conversation_turns WHERE conversation_id = ? AND id > ? ORDER BY id DESC LIMIT ?",
                (conversation_id, reset_turn, self.history_turns),
            ).fetchall()
        turns = tuple(
            Turn(
                message_id=r[0], text=r[1], intent=r[2], confidence=r[3], sentiment=r[4], emotion=r[5],
                frustration=r[6], action=r[7], reasons=tuple(json.loads(r[8])), created_at=r[9],
            )
            for r in reversed(rows)
        )
        return ConversationView(
            conversation_id=conversation_id,
            consent=cast(Consent, consent),
            human_active=bool(human_active),
            ticket_id=ticket_id,
            turns=turns,
            pending_options=tuple(json.loads(pending)),
            disclosed=bool(disclosed),
        )

    def outcome(self, message_id: str) -> dict[str, Any] | None:
        """The outcome stored for an already processed message id, or None."""
        with self._lock, self._storage("read a stored outcome"):
            row = self._db.execute("SELECT outcome FROM conversation_messages WHERE message_id = ?", (message_id,)).fetchone()
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
        message id was already processed (a retry that raced this one): nothing changes.
        """
        _check_id(conversation_id, "conversation_id")
        _check_id(message_id, "message_id")
        if consent is not None and consent not in CONSENT_STATES:
            raise InputError(f"consent must be one of {', '.join(CONSENT_STATES)}, got {consent!r}")
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT outcome FROM conversation_messages WHERE message_id = ?", (message_id,)).fetchone()
            if row is not None:
                return dict(json.loads(row[0])), False
            db.execute(
                "INSERT OR IGNORE INTO conversations (id, created_at, updated_at) VALUES (?, ?, ?)",
                (conversation_id, now, now),
            )
            updates: dict[str, Any] = {"updated_at": now}
            if consent is not None:
                updates["consent"] = consent
            if disclosed is not None:
                updates["disclosed"] = int(disclosed)
            if human_active is not None:
                updates["human_active"] = int(human_active)
            if ticket_id is not _UNSET:
                updates["ticket_id"] = ticket_id
            if pending_options is not None:
                updates["pending_options"] = json.dumps(list(pending_options), ensure_ascii=False)
            if reset:
                last = db.execute("SELECT COALESCE(MAX(id), 0) FROM conversation_turns WHERE conversation_id = ?", (conversation_id,)).fetchone()[0]
                updates["reset_turn"] = last
            assignments = ", ".join(f"{k} = ?" for k in updates)
            db.execute(f"UPDATE conversations SET {assignments} WHERE id = ?", (*updates.values(), conversation_id))
            if turn is not None:
                db.execute(
                    "INSERT INTO conversation_turns (conversation_id, message_id, text, intent, confidence, sentiment, "
                    "emotion, frustration, action, reasons, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        conversation_id, message_id, turn.text, turn.intent, turn.confidence, turn.sentiment,
                        turn.emotion, turn.frustration, turn.action, json.dumps(list(turn.reasons)), now,
                    ),
                )
            db.execute(
                "INSERT INTO conversation_messages (message_id, conversation_id, outcome, created_at) VALUES (?, ?, ?, ?)",
                (message_id, conversation_id, json.dumps(dict(outcome), ensure_ascii=False), now),
            )
        return dict(outcome), True

    def end_handover(self, conversation_id: str) -> None:
        """The person's ticket is resolved: the bot takes the conversation back, and the
        turns before the handover no longer count towards streaks."""
        now = time.time()
        with self._transaction() as db:
            last = db.execute("SELECT COALESCE(MAX(id), 0) FROM conversation_turns WHERE conversation_id = ?", (conversation_id,)).fetchone()[0]
            db.execute(
                "UPDATE conversations SET human_active = 0, ticket_id = NULL, pending_options = '[]', reset_turn = ?, updated_at = ? "
                "WHERE id = ?",
                (last, now, conversation_id),
            )

    def forget(self, conversation_id: str) -> int:
        """Delete everything stored about a conversation (erasure request); rows deleted."""
        with self._transaction() as db:
            n = 0
            for table, column in (("conversation_turns", "conversation_id"), ("conversation_messages", "conversation_id"), ("conversations", "id")):
                n += db.execute(f"DELETE FROM {table} WHERE {column} = ?", (conversation_id,)).rowcount
        return n

    def purge(self, older_than_days: float) -> int:
        """Retention: delete turns and processed-message records older than N days, and
        conversations idle that long (unless a person holds them); rows deleted.

        A message redelivered after its record is purged would be handled again, so keep
        N above the channel's retry window (WhatsApp retries for up to 7 days).
        """
        cutoff = _retention_cutoff(older_than_days)
        with self._transaction() as db:
            n = db.execute("DELETE FROM conversation_turns WHERE created_at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversation_messages WHERE created_at < ?", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversations WHERE updated_at < ? AND human_active = 0", (cutoff,)).rowcount
        return n


def _retention_cutoff(older_than_days: object) -> float:
    """The unix time before which records are purged (shared by every backend)."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int | float) or not (
        math.isfinite(older_than_days) and older_than_days >= 0
    ):
        raise InputError(f"older_than_days must be a number >= 0, got {older_than_days!r}")
    return time.time() - float(older_than_days) * 86400.0


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
    from .queue import resolve_db

    kind, location = resolve_db(url_or_path)
    if kind == "postgresql":
        from .conversation_pg import PostgresConversationStore

        return PostgresConversationStore(location, history_turns=history_turns)
    return ConversationStore(location, history_turns=history_turns)
