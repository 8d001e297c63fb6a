from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nlu import ConfigError, InputError
from nlu.conversation import open_conversations
from nlu.queue import open_queue
from nlu.routing import Turn


def turn(message_id: str, sentiment: str = "neutral", action: str = "answer") -> Turn:
    return Turn(message_id, f"texto {message_id}", "estado_pedido", 0.9, sentiment, "neutral", 0.1, action, ("x",))


def test_conversation_unknown_is_fresh(tmp_path: Path) -> None:
    with open_conversations(tmp_path / "nlu.db") as store:
        view = store.view("c1")
    assert view.conversation_id == "c1" and view.consent == "unknown"
    assert view.turns == () and not view.human_active and not view.disclosed


def test_conversation_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "nlu.db"
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


def test_conversation_message_id_recorded_once(tmp_path: Path) -> None:
    with open_conversations(tmp_path / "nlu.db") as store:
        first, fresh = store.record("c1", "m1", {"action": "answer", "n": 1}, turn=turn("m1"))
        again, fresh_again = store.record("c1", "m1", {"action": "answer", "n": 2}, turn=turn("m1"), consent="revoked")
        view = store.view("c1")
    assert fresh and not fresh_again
    assert again == first == {"action": "answer", "n": 1}
    assert len(view.turns) == 1 and view.consent == "unknown"  # the retry changed nothing


def test_conversation_keeps_recent_turns_only(tmp_path: Path) -> None:
    with open_conversations(tmp_path / "nlu.db", history_turns=3) as store:
        for i in range(6):
            store.record("c1", f"m{i}", {}, turn=turn(f"m{i}"))
        assert [t.message_id for t in store.view("c1").turns] == ["m3", "m4", "m5"]


def test_conversation_end_handover_restarts_the_streaks(tmp_path: Path) -> None:
    with open_conversations(tmp_path / "nlu.db") as store:
        store.record("c1", "m1", {}, turn=turn("m1", "negativo"), consent="granted")
        store.record("c1", "m2", {}, turn=turn("m2", "negativo", "escalate"), human_active=True, ticket_id=1)
        store.end_handover("c1")
        view = store.view("c1")
        assert not view.human_active and view.ticket_id is None and view.turns == ()
        assert view.consent == "granted"
        store.record("c1", "m3", {}, turn=turn("m3"))
        assert [t.message_id for t in store.view("c1").turns] == ["m3"]


def test_conversation_conversations_are_separate(tmp_path: Path) -> None:
    with open_conversations(tmp_path / "nlu.db") as store:
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


def test_conversation_forget(tmp_path: Path) -> None:
    with open_conversations(tmp_path / "nlu.db") as store:
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
def test_conversation_bad_input(tmp_path: Path, conversation_id: str, message_id: str, consent: str | None, message: str) -> None:
    with open_conversations(tmp_path / "nlu.db") as store, pytest.raises(InputError, match=message):
        store.record(conversation_id, message_id, {}, consent=consent)


def test_conversation_refuses_non_sqlite_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SQLite"):
        open_conversations("postgresql://localhost/nlu")
    with open_conversations(f"sqlite:///{tmp_path / 'x.db'}") as store:
        assert store.view("c").consent == "unknown"
