"""Retention: the [privacy] setting, ConversationStore.purge and `nlu purge`."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nlu.cli import app
from nlu.config import PrivacyConfig, config_from_mapping, load_config
from nlu.conversation import ConversationStore
from nlu.errors import ConfigError, InputError
from nlu.queue import SQLiteQueue
from nlu.routing import Turn

runner = CliRunner()
DAY = 86400.0


def turn(message_id: str, text: str = "hola") -> Turn:
    return Turn(message_id=message_id, text=text, intent="saludo", confidence=0.9, sentiment="neutral", emotion="neutral",
                frustration=0.0, action="answer", reasons=())


def age(db: Path, days: float, where: str = "1 = 1") -> None:
    """Move every row matching ``where`` ``days`` into the past (all timestamp columns)."""
    shift = days * DAY
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE conversation_turns SET created_at = created_at - ? WHERE {where}", (shift,))
        conn.execute(f"UPDATE conversation_messages SET created_at = created_at - ? WHERE {where}", (shift,))
        conn.execute(f"UPDATE conversations SET updated_at = updated_at - ?, created_at = created_at - ? WHERE "
                     f"{where.replace('conversation_id', 'id')}", (shift, shift))


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("tickets", "conversations", "conversation_turns", "conversation_messages") if t in tables}


def fill(db: Path, conversation: str, n: int) -> None:
    with ConversationStore(db) as store:
        for i in range(n):
            store.record(conversation, f"{conversation}-m{i}", {"action": "answer"}, turn=turn(f"{conversation}-m{i}"))


# -- config ---------------------------------------------------------------------------------


def test_retention_default_is_30_days() -> None:
    assert load_config(None).privacy.retention_days == 30


@pytest.mark.parametrize("days", [0, 1, 7, 7.0, -3, float("nan")])
def test_retention_config_refuses_the_whatsapp_retry_window(days: float) -> None:
    with pytest.raises(ConfigError, match="more than 7"):
        PrivacyConfig(days)


@pytest.mark.parametrize(
    ("raw", "message"),
    [({"privacy": {"retention": 30}}, "unknown key"), ({"privacy": {"retention_days": "30"}}, "expected float"), ({"privacy": 30}, "expected a table")],
)
def test_retention_config_section_is_strict(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(raw)


def test_retention_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text("[privacy]\nretention_days = 90\n", encoding="utf-8")
    assert load_config(path).privacy.retention_days == 90.0


# -- ConversationStore.purge -----------------------------------------------------------------


def test_retention_conversation_purge_deletes_only_old_rows(tmp_path: Path) -> None:
    db = tmp_path / "nlu.db"
    fill(db, "vieja", 3)
    fill(db, "nueva", 2)
    age(db, 40, "conversation_id = 'vieja'")
    with ConversationStore(db) as store:
        deleted = store.purge(30)
        assert deleted == 3 + 3 + 1  # turns, processed-message records, the idle conversation
        assert store.view("vieja").turns == () and store.outcome("vieja-m0") is None
        assert len(store.view("nueva").turns) == 2 and store.outcome("nueva-m1") is not None
        assert store.purge(30) == 0  # idempotent
    assert counts(db) == {"conversations": 1, "conversation_turns": 2, "conversation_messages": 2}


def test_retention_conversation_purge_keeps_conversations_a_person_holds(tmp_path: Path) -> None:
    db = tmp_path / "nlu.db"
    with ConversationStore(db) as store:
        store.record("c1", "m1", {"action": "escalate"}, turn=turn("m1"), human_active=True, ticket_id=1)
    age(db, 40)
    with ConversationStore(db) as store:
        assert store.purge(30) == 2  # the old turn and message record go, the held conversation stays
        assert store.view("c1").human_active is True


def test_retention_cli_purge_lets_a_held_conversation_go_once_its_ticket_is_resolved(tmp_path: Path) -> None:
    # The mark is cleared only when the customer writes again: one who never did (their
    # phone number is the conversation id) was kept for ever.
    db = tmp_path / "nlu.db"
    with SQLiteQueue(db, clock=lambda: time.time() - 40 * DAY) as queue:
        done, _ = queue.enqueue(conversation_id="5215512345678", message_id="m1", text="ayuda", prediction={}, reasons=[], priority=0.5)
        waiting, _ = queue.enqueue(conversation_id="5215587654321", message_id="m2", text="ayuda", prediction={}, reasons=[], priority=0.1)
        queue.claim("ana")
        queue.resolve(done.id, "ana", "listo")
    with ConversationStore(db) as store:
        store.record("5215512345678", "m1", {"action": "escalate"}, turn=turn("m1"), human_active=True, ticket_id=done.id)
        store.record("5215587654321", "m2", {"action": "escalate"}, turn=turn("m2"), human_active=True, ticket_id=waiting.id)
    age(db, 40)
    result = runner.invoke(app, ["purge", "--db", str(db), "--older-than", "30"])
    assert result.exit_code == 0, result.output
    with ConversationStore(db) as store:
        assert not store.view("5215512345678").human_active  # gone: a fresh view
        assert store.view("5215587654321").human_active  # a customer still waits for a person
    assert counts(db)["conversations"] == 1


def test_retention_purged_message_id_is_handled_again(tmp_path: Path) -> None:
    # Why retention must outlive the channel's retry window: once a message id's record is
    # purged, a redelivery is new to the store.
    db = tmp_path / "nlu.db"
    fill(db, "c1", 1)
    age(db, 40)
    with ConversationStore(db) as store:
        store.purge(30)
        _, fresh = store.record("c1", "c1-m0", {"action": "answer"})
        assert fresh is True


@pytest.mark.parametrize("days", [-1, float("nan"), float("inf"), "30", None, True])
def test_retention_conversation_purge_refuses_bad_days(tmp_path: Path, days: Any) -> None:
    with ConversationStore(tmp_path / "nlu.db") as store, pytest.raises(InputError):
        store.purge(days)


# -- nlu purge --------------------------------------------------------------------------------


def _ticket(queue: SQLiteQueue, message_id: str, resolve: bool) -> int:
    # Tickets to resolve outrank the one left waiting, so claim() picks them.
    priority = 0.9 if resolve else 0.1
    ticket, _ = queue.enqueue(conversation_id=f"c-{message_id}", message_id=message_id, text="ayuda", prediction={}, reasons=["human_requested"], priority=priority)
    if resolve:
        claimed = queue.claim("ana")
        assert claimed is not None and claimed.id == ticket.id
        queue.resolve(ticket.id, "ana", "listo")
    return ticket.id


def _populated(tmp_path: Path) -> Path:
    db = tmp_path / "nlu.db"
    fill(db, "vieja", 3)
    fill(db, "nueva", 1)
    with SQLiteQueue(db, clock=lambda: time.time() - 40 * DAY) as old_clock:
        _ticket(old_clock, "old-resolved", resolve=True)
        _ticket(old_clock, "old-queued", resolve=False)  # never purged: a customer still waits
    with SQLiteQueue(db) as queue:
        _ticket(queue, "new-resolved", resolve=True)
    age(db, 40, "conversation_id = 'vieja'")
    return db


def test_retention_cli_purge_with_db_and_days(tmp_path: Path) -> None:
    db = _populated(tmp_path)
    result = runner.invoke(app, ["purge", "--db", str(db), "--older-than", "30"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "purged 1 resolved ticket(s) and 7 conversation row(s) older than 30 days"
    with SQLiteQueue(db) as queue:
        assert sorted(t.message_id for t in queue.list()) == ["new-resolved", "old-queued"]
    assert counts(db)["conversation_turns"] == 1
    again = runner.invoke(app, ["purge", "--db", f"sqlite:///{db}", "--older-than", "30"])
    assert again.exit_code == 0 and "purged 0 resolved ticket(s) and 0 conversation row(s)" in again.stdout


def test_retention_cli_purge_reads_config_and_nlu_db(tmp_path: Path) -> None:
    db = _populated(tmp_path)
    config = tmp_path / "nlu.toml"
    config.write_text("[privacy]\nretention_days = 60\n", encoding="utf-8")
    result = runner.invoke(app, ["purge", "--config", str(config)], env={"NLU_DB": str(db)})
    assert result.exit_code == 0, result.output
    assert "purged 0 resolved ticket(s) and 0 conversation row(s) older than 60 days" in result.stdout
    result = runner.invoke(app, ["purge"], env={"NLU_DB": str(db)})  # the default, 30 days
    assert "purged 1 resolved ticket(s) and 7 conversation row(s) older than 30 days" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--older-than", "7"], "more than 7"),
        (["--older-than", "0"], "more than 7"),
        (["--older-than", "inf"], "older_than_days"),
        (["--db", "ftp://host/x"], "unsupported scheme"),
        (["--config", "{tmp}/missing.toml"], "not found"),
    ],
)
def test_retention_cli_purge_refuses(tmp_path: Path, args: list[str], needle: str) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    if "--db" not in args:
        args += ["--db", str(tmp_path / "nlu.db")]
    result = runner.invoke(app, ["purge", *args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and needle in result.stderr and "Traceback" not in result.output
