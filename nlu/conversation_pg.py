"""Per-conversation state on PostgreSQL, shared by every service instance.

Same tables, semantics and checks as the SQLite :class:`nlu.conversation.ConversationStore`.
What makes several instances behave as one:

* :meth:`PostgresConversationStore.record` claims the message id *first*, with
  ``INSERT ... ON CONFLICT (message_id) DO NOTHING``, in the same transaction as the turn
  and the state changes. Two deliveries of one message racing on two instances: the second
  insert waits for the first transaction, finds the id taken, writes nothing and returns
  the stored outcome, so there is exactly one outcome (and the queue's own idempotent
  enqueue gives both the same ticket).
* The conversation row is locked (``UPDATE``) for the rest of that transaction, so two
  messages of one conversation update its state one after the other, never interleaved.

Database failures become :class:`StorageUnavailable` (HTTP 503); nothing is half-written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool

from .conversation import _UNSET, CONSENT_STATES, _check_id, _retention_cutoff
from .errors import ConfigError, InputError, StorageUnavailable
from .pg import check_options, connect, describe, masked, migrate, nul_free, open_pool
from .routing import Consent, ConversationView, Turn

__all__ = ["PostgresConversationStore"]

# _STEPS[i] takes the conversation schema from version i to i + 1; append, never edit.
_STEPS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE conversations (
            id              TEXT PRIMARY KEY,
            consent         TEXT NOT NULL DEFAULT 'unknown',
            disclosed       BOOLEAN NOT NULL DEFAULT FALSE,
            human_active    BOOLEAN NOT NULL DEFAULT FALSE,
            ticket_id       BIGINT,
            pending_options TEXT NOT NULL DEFAULT '[]',
            -- Turns up to this id belong to before the last handover and no longer count
            -- towards streaks (the person dealt with them).
            reset_turn      BIGINT NOT NULL DEFAULT 0,
            created_at      DOUBLE PRECISION NOT NULL,
            updated_at      DOUBLE PRECISION NOT NULL
        )
        """,
        """
        CREATE TABLE conversation_turns (
            id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            message_id      TEXT NOT NULL,
            text            TEXT NOT NULL,
            intent          TEXT,
            confidence      DOUBLE PRECISION,
            sentiment       TEXT,
            emotion         TEXT,
            frustration     DOUBLE PRECISION NOT NULL DEFAULT 0,
            action          TEXT NOT NULL,
            reasons         TEXT NOT NULL DEFAULT '[]',
            created_at      DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX conversation_turns_by_conversation ON conversation_turns (conversation_id, id)",
        "CREATE INDEX conversation_turns_by_created ON conversation_turns (created_at)",
        """
        CREATE TABLE conversation_messages (
            message_id      TEXT PRIMARY KEY,   -- the idempotency key, claimed first in record()
            conversation_id TEXT NOT NULL,
            outcome         TEXT NOT NULL,      -- JSON
            created_at      DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX conversation_messages_by_conversation ON conversation_messages (conversation_id)",
        "CREATE INDEX conversation_messages_by_created ON conversation_messages (created_at)",
        "CREATE INDEX conversations_by_updated ON conversations (updated_at)",
    ),
)
SCHEMA_VERSION = len(_STEPS)


class PostgresConversationStore:
    """Conversation state in a PostgreSQL database (usually the queue's)."""

    def __init__(self, url: str, history_turns: int = 10, timeout: float = 5.0, pool_size: int = 8) -> None:
        self.url = url
        check_options(timeout, pool_size)
        self.path = masked(url)
        self.history_turns = history_turns
        # Schema first, on one direct connection: a bad URL fails fast with a clear reason.
        try:
            with connect(url, name="nlu-conversations", timeout=timeout, error=StorageUnavailable) as conn:
                migrate(conn, meta_table="conversation_meta", steps=_STEPS, what="conversation", where=self.path, error=ConfigError)
        except psycopg.Error as exc:
            raise StorageUnavailable(f"{self.path}: cannot create the conversation tables: {describe(exc)}") from exc
        self._pool: ConnectionPool | None = open_pool(
            url, name="nlu-conversations", timeout=timeout, max_size=pool_size, error=StorageUnavailable
        )

    @contextmanager
    def _transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection (commit at the end, rollback on any error);
        database errors become :class:`StorageUnavailable`."""
        pool = self._pool
        if pool is None:
            raise StorageUnavailable(f"{self.path}: the conversation store is closed")
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StorageUnavailable(f"{self.path}: cannot {what}: {describe(exc)}") from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> PostgresConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresConversationStore({self.path!r})"

    # -- reading ------------------------------------------------------------------------

    def view(self, conversation_id: str) -> ConversationView:
        """A snapshot of the conversation (a fresh one if it was never seen)."""
        _check_id(conversation_id, "conversation_id")
        key = nul_free(conversation_id)
        with self._transaction("read the conversation") as db:
            row = db.execute(
                "SELECT consent, disclosed, human_active, ticket_id, pending_options, reset_turn FROM conversations WHERE id = %s",
                (key,),
            ).fetchone()
            if row is None:
                return ConversationView(conversation_id=conversation_id, consent="unknown")
            consent, disclosed, human_active, ticket_id, pending, reset_turn = row
            rows = db.execute(
                "SELECT message_id, text, intent, confidence, sentiment, emotion, frustration, action, reasons, created_at "
                "FROM conversation_turns WHERE conversation_id = %s AND id > %s ORDER BY id DESC LIMIT %s",
                (key, reset_turn, self.history_turns),
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
        with self._transaction("read a stored outcome") as db:
            row = db.execute(
                "SELECT outcome FROM conversation_messages WHERE message_id = %s", (nul_free(message_id),)
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
        message id was already processed (by this instance or another): nothing changes.
        """
        _check_id(conversation_id, "conversation_id")
        _check_id(message_id, "message_id")
        if consent is not None and consent not in CONSENT_STATES:
            raise InputError(f"consent must be one of {', '.join(CONSENT_STATES)}, got {consent!r}")
        conversation, message = nul_free(conversation_id), nul_free(message_id)
        stored = nul_free(json.dumps(dict(outcome), ensure_ascii=False))
        now = time.time()
        with self._transaction("write conversation state") as db:
            # The message id first: whoever inserts it owns this message; a concurrent
            # delivery blocks here until we commit, then finds it taken.
            claimed = db.execute(
                "INSERT INTO conversation_messages (message_id, conversation_id, outcome, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                (message, conversation, stored, now),
            ).fetchone()
            if claimed is None:
                row = db.execute("SELECT outcome FROM conversation_messages WHERE message_id = %s", (message,)).fetchone()
                if row is None:  # purged or forgotten in between: nothing to return but a retry
                    raise StorageUnavailable(f"{self.path}: message {message_id!r} was deleted while being recorded; retry")
                return dict(json.loads(row[0])), False
            db.execute(
                "INSERT INTO conversations (id, created_at, updated_at) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (conversation, now, now),
            )
            updates: dict[str, Any] = {"updated_at": now}
            if consent is not None:
                updates["consent"] = consent
            if disclosed is not None:
                updates["disclosed"] = bool(disclosed)
            if human_active is not None:
                updates["human_active"] = bool(human_active)
            if ticket_id is not _UNSET:
                updates["ticket_id"] = ticket_id
            if pending_options is not None:
                updates["pending_options"] = nul_free(json.dumps(list(pending_options), ensure_ascii=False))
            if reset:
                updates["reset_turn"] = self._last_turn(db, conversation)
            assignments = ", ".join(f"{k} = %s" for k in updates)
            db.execute(f"UPDATE conversations SET {assignments} WHERE id = %s", (*updates.values(), conversation))
            if turn is not None:
                db.execute(
                    "INSERT INTO conversation_turns (conversation_id, message_id, text, intent, confidence, sentiment, "
                    "emotion, frustration, action, reasons, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        conversation, message, nul_free(turn.text), nul_free(turn.intent), turn.confidence,
                        nul_free(turn.sentiment), nul_free(turn.emotion), turn.frustration, nul_free(turn.action),
                        nul_free(json.dumps(list(turn.reasons))), now,
                    ),
                )
        return dict(outcome), True

    @staticmethod
    def _last_turn(db: psycopg.Connection[Any], conversation: str) -> int:
        row = db.execute(
            "SELECT COALESCE(MAX(id), 0) FROM conversation_turns WHERE conversation_id = %s", (conversation,)
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def end_handover(self, conversation_id: str) -> None:
        """The person's ticket is resolved: the bot takes the conversation back, and the
        turns before the handover no longer count towards streaks."""
        conversation = nul_free(conversation_id)
        now = time.time()
        with self._transaction("write conversation state") as db:
            # Lock the row first so a message recorded meanwhile is either before the reset or after it.
            db.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (conversation,))
            db.execute(
                "UPDATE conversations SET human_active = FALSE, ticket_id = NULL, pending_options = '[]', reset_turn = %s,"
                " updated_at = %s WHERE id = %s",
                (self._last_turn(db, conversation), now, conversation),
            )

    def forget(self, conversation_id: str) -> int:
        """Delete everything stored about a conversation (erasure request); rows deleted."""
        conversation = nul_free(conversation_id)
        with self._transaction("forget a conversation") as db:
            n = 0
            for table, column in (("conversation_turns", "conversation_id"), ("conversation_messages", "conversation_id"), ("conversations", "id")):
                n += db.execute(f"DELETE FROM {table} WHERE {column} = %s", (conversation,)).rowcount
        return n

    def purge(self, older_than_days: float) -> int:
        """Retention, as in the SQLite store: turns and processed-message records older than
        N days, and conversations idle that long unless a person holds them; rows deleted.
        Keep N above the channel's retry window (WhatsApp retries for up to 7 days)."""
        cutoff = _retention_cutoff(older_than_days)
        with self._transaction("purge conversation state") as db:
            n = db.execute("DELETE FROM conversation_turns WHERE created_at < %s", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversation_messages WHERE created_at < %s", (cutoff,)).rowcount
            n += db.execute("DELETE FROM conversations WHERE updated_at < %s AND NOT human_active", (cutoff,)).rowcount
        return n
