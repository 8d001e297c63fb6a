from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nlu import ConfigError, InputError
from nlu.conversation import ConversationStore, open_conversations
from nlu.conversation_pg import PostgresConversationStore
from nlu.errors import StorageUnavailable
from nlu.queue import open_queue
from nlu.routing import Turn


def turn(message_id: str, sentiment: str = "neutral", action: str = "answer") -> Turn:
    return Turn(message_id, f"texto {message_id}", "estado_pedido", 0.9, sentiment, "neutral", 0.1, action, ("x",))


def test_conversation_unknown_is_fresh(db_url: str) -> None:
    with open_conversations(db_url) as store:
        view = store.view("c1")
    assert view.conversation_id == "c1" and view.consent == "unknown"
    assert view.turns == () and not view.human_active and not view.disclosed


def test_conversation_survives_restart(db_url: str) -> None:
    db = db_url
    with open_conversations(db) as store:
        store.record("c1", "m1", {"action": "answer"}, turn=turn("m1"), consent="granted", disclosed=True, pending_options=("factura", "queja"))
        store.record("c1", "m2", {"action": "escalate"}, turn=turn("m2", "negativo", "escalate"), human_active=True, ticket_id=7)
    with open_conversations(db) as store:
        view = store.view("c1")
        assert store.outcome("m2") == {"action": "escalate"}
    assert view.consent == "granted" and view.disclosed and view.human_active and view.ticket_id == 7
    assert [t.message_id for t in view.turns] == ["m1", "m2"]
    assert view.turns[1].sentiment == "negativo" and view.turns[1].reasons == ("x",)
    assert view.pending_options == ("factura", "queja")


def test_conversation_message_id_recorded_once(db_url: str) -> None:
    with open_conversations(db_url) as store:
        first, fresh = store.record("c1", "m1", {"action": "answer", "n": 1}, turn=turn("m1"))
        again, fresh_again = store.record("c1", "m1", {"action": "answer", "n": 2}, turn=turn("m1"), consent="revoked")
        view = store.view("c1")
    assert fresh and not fresh_again
    assert again == first == {"action": "answer", "n": 1}
    assert len(view.turns) == 1 and view.consent == "unknown"  # the retry changed nothing


def test_conversation_last_outcome_is_the_latest_message_of_that_conversation(db_url: str) -> None:
    with open_conversations(db_url) as store:
        assert store.last_outcome("c1") is None
        store.record("c1", "m1", {"action": "clarify"})
        store.record("c2", "m2", {"action": "escalate"})
        store.record("c1", "m3", {"action": "answer"}, turn=turn("m3"))
        store.record("c1", "m3", {"action": "silent"})  # a retry changes nothing
        assert store.last_outcome("c1") == {"action": "answer"}
        assert store.last_outcome("c2") == {"action": "escalate"}


def test_conversation_keeps_recent_turns_only(db_url: str) -> None:
    with open_conversations(db_url, history_turns=3) as store:
        for i in range(6):
            store.record("c1", f"m{i}", {}, turn=turn(f"m{i}"))
        assert [t.message_id for t in store.view("c1").turns] == ["m3", "m4", "m5"]


def test_conversation_end_handover_restarts_the_streaks(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.record("c1", "m1", {}, turn=turn("m1", "negativo"), consent="granted")
        store.record("c1", "m2", {}, turn=turn("m2", "negativo", "escalate"), human_active=True, ticket_id=1)
        store.end_handover("c1")
        view = store.view("c1")
        assert not view.human_active and view.ticket_id is None and view.turns == ()
        assert view.consent == "granted"
        store.record("c1", "m3", {}, turn=turn("m3"))
        assert [t.message_id for t in store.view("c1").turns] == ["m3"]


def test_conversation_conversations_are_separate(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.record("c1", "m1", {}, turn=turn("m1"), consent="granted")
        store.record("c2", "m2", {}, turn=turn("m2"), consent="revoked")
        assert store.view("c1").consent == "granted" and store.view("c2").consent == "revoked"
        assert [t.message_id for t in store.view("c2").turns] == ["m2"]


def test_conversation_shares_the_queue_file(tmp_path: Path) -> None:
    db = tmp_path / "nlu.db"
    queue = open_queue(str(db))
    try:
        with open_conversations(db) as store, open_conversations(db) as other:
            store.record("c1", "m1", {"ok": True}, consent="granted")
            assert other.view("c1").consent == "granted"  # a second connection sees it
            assert other.outcome("m1") == {"ok": True}
        ticket, _ = queue.enqueue(conversation_id="c1", message_id="m1", text="hola", prediction={}, reasons=["x"], priority=0.5)
        assert queue.open_for_conversation("c1") == ticket
    finally:
        queue.close()
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()
    assert {"conversations", "conversation_turns", "conversation_messages"} <= tables
    assert all(t.startswith(("conversation", "tickets", "sqlite_")) for t in tables)
    assert mode == "wal"


def test_conversation_forget(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.record("c1", "m1", {}, turn=turn("m1"), consent="granted")
        assert store.forget("c1") == 3
        assert store.view("c1").consent == "unknown" and store.outcome("m1") is None


@pytest.mark.parametrize(
    ("conversation_id", "message_id", "consent", "message"),
    [
        ("", "m1", None, "conversation_id must be a non-empty string"),
        ("c1", "  ", None, "message_id must be a non-empty string"),
        ("c1", "m1", "maybe", "consent must be one of"),
        ("c" * 600, "m1", None, "longer than 512"),
    ],
)
def test_conversation_bad_input(db_url: str, conversation_id: str, message_id: str, consent: str | None, message: str) -> None:
    with open_conversations(db_url) as store, pytest.raises(InputError, match=message):
        store.record(conversation_id, message_id, {}, consent=consent)


def test_conversation_refuses_other_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SQLite"):
        ConversationStore("postgresql://localhost/nlu")  # the SQLite class itself
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'"):
        open_conversations("mysql://localhost/nlu")
    with open_conversations(f"sqlite:///{tmp_path / 'x.db'}") as store:
        assert isinstance(store, ConversationStore) and store.view("c").consent == "unknown"


def test_conversation_same_message_from_many_instances_is_recorded_once(db_url: str) -> None:
    # Retried deliveries of one message landing on different service instances at once:
    # each instance has its own store (own connections); exactly one records the outcome.
    stores = [open_conversations(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def deliver(n: int) -> tuple[dict[str, object], bool]:
        barrier.wait()
        return stores[n].record("c1", "wamid.X", {"action": "escalate", "by": n}, turn=turn("wamid.X"), human_active=True, ticket_id=n)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(deliver, range(len(stores))))
        assert [fresh for _, fresh in results].count(True) == 1
        assert len({json_key(outcome) for outcome, _ in results}) == 1  # everyone got the winner's outcome
        winner = next(outcome for outcome, fresh in results if fresh)
        view = stores[0].view("c1")
        assert len(view.turns) == 1 and view.ticket_id == winner["by"]
    finally:
        for store in stores:
            store.close()


def json_key(outcome: dict[str, object]) -> str:
    return repr(sorted(outcome.items()))


def test_conversation_postgres_shares_the_queue_database(pg_url: str) -> None:
    import psycopg

    with open_conversations(pg_url) as store, open_conversations(pg_url) as other, open_queue(pg_url) as queue:
        assert isinstance(store, PostgresConversationStore) and ":***@" in repr(store)
        store.record("c1", "m1", {"ok": True}, consent="granted")
        assert other.view("c1").consent == "granted" and other.outcome("m1") == {"ok": True}
        ticket, _ = queue.enqueue(conversation_id="c1", message_id="m1", text="hola", prediction={}, reasons=["x"], priority=0.5)
        assert queue.open_for_conversation("c1") == ticket
        assert store.purge(0) >= 1  # retention works; the person-held rule is tested on both backends below
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        versions = conn.execute("SELECT value FROM conversation_meta WHERE key = 'schema_version'").fetchall()
    assert tables == {
        "conversations", "conversation_turns", "conversation_messages", "conversation_outbox", "conversation_meta", "tickets", "tickets_meta",
    }
    assert versions == [("2",)]


def test_conversation_postgres_upgrades_a_version_1_database_in_place(pg_url: str) -> None:
    import psycopg

    from nlu.conversation_pg import _STEPS
    from nlu.pg import migrate

    with psycopg.connect(pg_url) as conn:  # what nlu made before the outbox
        migrate(conn, meta_table="conversation_meta", steps=_STEPS[:1], what="conversation", where="test", error=RuntimeError)
        conn.execute("INSERT INTO conversation_messages VALUES ('m1', 'c1', '{\"action\": \"answer\"}', 1.0)")
    with open_conversations(pg_url) as store:
        assert store.outcome("m1") == {"action": "answer"}
        assert store.defer_reply("m1", "c1", {"to": "c1"}, "HTTP 503", failed_at=1.0, retry_at=2.0)
        assert store.outbox_depth() == 1
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM conversation_meta WHERE key = 'schema_version'").fetchone() == ("2",)


def test_conversation_sqlite_file_from_before_the_outbox_gains_it(tmp_path: Path) -> None:
    db = tmp_path / "nlu.db"
    with sqlite3.connect(db) as conn:  # the conversation tables as an older nlu made them
        conn.execute("CREATE TABLE conversation_messages (message_id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, outcome TEXT NOT NULL, created_at REAL NOT NULL)")
        conn.execute("INSERT INTO conversation_messages VALUES ('m1', 'c1', '{}', 1.0)")
    with open_conversations(db) as store:
        assert store.outcome("m1") == {}
        assert store.defer_reply("m1", "c1", {"to": "c1"}, "HTTP 503", failed_at=1.0, retry_at=2.0)
        assert store.outbox_depth() == 1


def test_conversation_purge_keeps_conversations_a_person_holds(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.record("c1", "m1", {}, turn=turn("m1"), human_active=True, ticket_id=1)
        store.record("c2", "m2", {}, turn=turn("m2"))
        assert store.purge(0) == 5  # 2 turns + 2 message records + the idle conversation c2
        assert store.view("c1").human_active and store.view("c2").consent == "unknown"
        with pytest.raises(InputError, match="older_than_days"):
            store.purge(-1)


def test_conversation_postgres_unreachable_is_storage_unavailable() -> None:
    with pytest.raises(StorageUnavailable, match="Connection refused") as info:
        open_conversations("postgresql://nlu:s3cret@127.0.0.1:1/nlu")
    assert "s3cret" not in str(info.value)


def test_conversation_postgres_stores_text_with_nul(pg_url: str) -> None:
    with open_conversations(pg_url) as store:
        store.record("c1", "m1", {"reply": "a\x00b"}, turn=Turn("m1", "hola\x00", None, None, None, None, 0.0, "answer", ()))
        assert store.view("c1").turns[0].text == "hola\ufffd"
