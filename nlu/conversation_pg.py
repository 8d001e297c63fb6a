"""Per-conversation state on PostgreSQL, shared by every service instance.

Same tables, semantics and checks as the SQLite :class:`nlu.conversation.ConversationStore`;
the operations and their SQL are the very same code (``nlu.conversation._SqlConversations``).
What is PostgreSQL's own: the connection pool and versioned schema (``nlu/pg.py``), row
locks, and NUL characters stored as U+FFFD (PostgreSQL text cannot hold them). What makes
several instances behave as one:

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

from contextlib import AbstractContextManager

from .conversation import _SqlConversations
from .errors import ConfigError, StorageUnavailable
from .pg import QmarkConnection, StorePool, masked, nul_free

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
    (
        # Replies the sender could not hand over yet (nlu.outbox).
        """
        CREATE TABLE conversation_outbox (
            message_id      TEXT PRIMARY KEY,   -- the customer message the reply answers
            conversation_id TEXT NOT NULL,
            phone_number_id TEXT,               -- the business number to send from (NULL: the default)
            body            TEXT NOT NULL,      -- the Cloud API message body, JSON
            attempts        INTEGER NOT NULL DEFAULT 1,
            next_at         DOUBLE PRECISION NOT NULL,
            claimed_at      DOUBLE PRECISION,
            last_error      TEXT NOT NULL DEFAULT '',
            created_at      DOUBLE PRECISION NOT NULL
        )
        """,
        "CREATE INDEX conversation_outbox_by_next ON conversation_outbox (next_at)",
        "CREATE INDEX conversation_outbox_by_conversation ON conversation_outbox (conversation_id)",
    ),
)
SCHEMA_VERSION = len(_STEPS)


class PostgresConversationStore(_SqlConversations):
    """Conversation state in a PostgreSQL database (usually the queue's)."""

    _FOR_UPDATE = " FOR UPDATE"  # end_handover locks the conversation row before reading its turns
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"  # two instances' resenders claim different replies

    def __init__(self, url: str, history_turns: int = 10, timeout: float = 5.0, pool_size: int = 8) -> None:
        self.url = url
        self.path = masked(url)
        self.history_turns = history_turns
        self._db = StorePool(
            url, name="nlu-conversations", timeout=timeout, pool_size=pool_size, meta_table="conversation_meta",
            steps=_STEPS, what="conversation", label="conversation store", unavailable=StorageUnavailable,
            refused=ConfigError, closed=StorageUnavailable,
        )

    def _write(self, what: str) -> AbstractContextManager[QmarkConnection]:
        return self._db.transaction(what)

    # Reads are (short) transactions too: they borrow a pooled connection like a write.
    _reading = _write

    _storable = staticmethod(nul_free)  # PostgreSQL text cannot hold NUL characters

    def close(self) -> None:
        self._db.close()
