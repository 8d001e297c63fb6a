from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nlu.cli import app
from nlu.errors import ConfigError, QueueError, QueueUnavailable, UnknownTicket
from nlu.queue import Queue, SQLiteQueue, Ticket, open_queue
from nlu.queue_pg import PostgresQueue

PREDICTION = {"intent": "estado_pedido", "confidence": 0.41, "sentiment": "negativo", "frustration": 0.8}


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "nlu.db"


@pytest.fixture
def queue(db_url: str, clock: FakeClock) -> Iterator[Queue]:
    """The queue under test, on each backend (``db_url`` is parametrized in conftest.py)."""
    q = open_queue(db_url, clock=clock)
    yield q
    q.close()


@pytest.fixture
def sqlite_queue(db: Path, clock: FakeClock) -> Iterator[SQLiteQueue]:
    q = SQLiteQueue(db, clock=clock)
    yield q
    q.close()


def stored_bytes(queue: Queue, db: Path) -> bytes:
    """Everything the backend keeps on disk about tickets, to look for PII in it."""
    if isinstance(queue, SQLiteQueue):
        return db.read_bytes() + (db.parent / "nlu.db-wal").read_bytes()
    import psycopg

    assert isinstance(queue, PostgresQueue)
    with psycopg.connect(queue.url) as conn:
        return "\n".join(row[0] for row in conn.execute("SELECT t::text FROM tickets AS t")).encode()


def add(queue: Queue, message_id: str, priority: float = 0.5, conversation_id: str | None = None, text: str = "¿dónde está mi pedido #A-48213?") -> Ticket:
    # A conversation has one open ticket at a time: each message its own conversation by default.
    ticket, created = queue.enqueue(
        conversation_id=conversation_id or f"conv-{message_id}", message_id=message_id, text=text, prediction=PREDICTION,
        reasons=["frustration"], priority=priority,
    )
    assert created
    return ticket


# -- round trip, idempotency, order --------------------------------------------------------


def test_queue_round_trip_enqueue_claim_resolve(queue: Queue, clock: FakeClock) -> None:
    ticket = add(queue, "wamid.1")
    assert (ticket.status, ticket.agent, ticket.lease_until) == ("queued", None, None)
    assert ticket.prediction == PREDICTION and ticket.reasons == ("frustration",)
    assert queue.depth() == 1

    clock.advance(5)
    claimed = queue.claim("ana", lease_seconds=60)
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.agent) == (ticket.id, "claimed", "ana")
    assert claimed.lease_until == clock.now + 60
    assert queue.depth() == 0
    assert queue.claim("luis") is None

    resolved = queue.resolve(ticket.id, "ana", "le di el número de seguimiento")
    assert (resolved.status, resolved.agent, resolved.lease_until) == ("resolved", "ana", None)
    assert resolved.resolution == "le di el número de seguimiento"
    assert queue.get(ticket.id) == resolved
    assert json.loads(json.dumps(resolved.to_dict()))["reasons"] == ["frustration"]


def test_queue_release_puts_ticket_back_in_its_place(queue: Queue, clock: FakeClock) -> None:
    first = add(queue, "m1")
    clock.advance(1)
    add(queue, "m2")
    assert queue.claim("ana").id == first.id  # type: ignore[union-attr]
    released = queue.release(first.id, "ana")
    assert (released.status, released.agent, released.lease_until) == ("queued", None, None)
    assert released.created_at == first.created_at
    assert queue.claim("luis").id == first.id  # type: ignore[union-attr]


@pytest.mark.parametrize("second", [
    {"text": "otra cosa", "priority": 0.9},  # a retried webhook may carry different details
    {"text": "¿dónde está mi pedido #A-48213?", "priority": 0.5},
])
def test_queue_enqueue_is_idempotent_on_message_id(queue: Queue, second: dict[str, Any]) -> None:
    first = add(queue, "wamid.ABC", conversation_id="conv-1")
    again, created = queue.enqueue(
        conversation_id="conv-1", message_id="wamid.ABC", prediction={}, reasons=[], **second
    )
    assert not created
    assert again == first
    assert len(queue.list()) == 1


def test_queue_enqueue_same_message_id_in_another_conversation_is_refused(queue: Queue) -> None:
    add(queue, "wamid.ABC", conversation_id="conv-1")
    with pytest.raises(QueueError, match="already belongs to ticket 1 of conversation 'conv-1'"):
        add(queue, "wamid.ABC", conversation_id="conv-2")


@pytest.mark.parametrize(("tickets", "expected"), [
    ([("a", 0.2), ("b", 0.9), ("c", 0.5)], ["b", "c", "a"]),  # priority first
    ([("a", 0.5), ("b", 0.5), ("c", 0.5)], ["a", "b", "c"]),  # then the oldest
    ([("a", 0.1), ("b", 0.8), ("c", 0.8), ("d", 0.1)], ["b", "c", "a", "d"]),
])
def test_queue_claims_by_priority_then_age(
    queue: Queue, clock: FakeClock, tickets: list[tuple[str, float]], expected: list[str]
) -> None:
    for message_id, priority in tickets:
        add(queue, message_id, priority)
        clock.advance(1)
    assert [t.message_id for t in queue.list("queued")] == expected
    claimed = [queue.claim("ana") for _ in tickets]
    assert [t.message_id for t in claimed if t] == expected
    assert queue.claim("ana") is None


def test_queue_expired_lease_returns_ticket_to_the_queue(queue: Queue, clock: FakeClock) -> None:
    urgent = add(queue, "urgent", priority=0.9)
    clock.advance(1)
    add(queue, "later", priority=0.1)
    assert queue.claim("ana", lease_seconds=30).id == urgent.id  # type: ignore[union-attr]
    clock.advance(29)
    assert queue.depth() == 1
    assert queue.claim("luis").message_id == "later"  # type: ignore[union-attr]

    clock.advance(1)  # ana's lease is over: the urgent ticket is claimable again, first
    assert queue.depth() == 1
    again = queue.claim("luis", lease_seconds=30)
    assert again is not None and (again.id, again.agent) == (urgent.id, "luis")
    with pytest.raises(QueueError, match="claimed by luis, not ana"):
        queue.resolve(urgent.id, "ana")
    assert queue.resolve(urgent.id, "luis").status == "resolved"


def test_queue_lease_bounds_are_inclusive(queue: Queue, clock: FakeClock) -> None:
    add(queue, "m1")
    add(queue, "m2")
    assert queue.claim("ana", lease_seconds=10).lease_until == clock.now + 10  # type: ignore[union-attr]
    assert queue.claim("luis", lease_seconds=86_400).lease_until == clock.now + 86_400  # type: ignore[union-attr]


def test_queue_expired_lease_still_lets_its_agent_finish(queue: Queue, clock: FakeClock) -> None:
    ticket = add(queue, "m1")
    queue.claim("ana", lease_seconds=10)
    clock.advance(60)  # nobody else took it meanwhile
    assert queue.resolve(ticket.id, "ana").status == "resolved"


@pytest.mark.parametrize("action", ["resolve", "release"])
def test_queue_only_the_claiming_agent_may_finish(queue: Queue, action: str) -> None:
    ticket = add(queue, "m1")
    with pytest.raises(QueueError, match="it is queued, claim it first"):
        getattr(queue, action)(ticket.id, "ana")
    queue.claim("ana")
    with pytest.raises(QueueError, match="claimed by ana, not luis"):
        getattr(queue, action)(ticket.id, "luis")
    assert queue.get(ticket.id).agent == "ana"


def test_queue_resolve_is_idempotent_for_its_agent_only(queue: Queue) -> None:
    ticket = add(queue, "m1")
    queue.claim("ana")
    first = queue.resolve(ticket.id, "ana", "hecho")
    assert queue.resolve(ticket.id, "ana", "hecho") == first  # a retried request
    for other in ("reembolso", ""):  # the first note was kept: saying "resolved" would hide it
        with pytest.raises(QueueError, match="already resolved by ana with another note"):
            queue.resolve(ticket.id, "ana", other)
    assert queue.get(ticket.id) == first
    with pytest.raises(QueueError, match="already resolved by ana"):
        queue.resolve(ticket.id, "luis")
    with pytest.raises(QueueError, match="already resolved"):
        queue.release(ticket.id, "ana")


NFC, NFD = "Jos\u00e9", "Jose\u0301"  # both print as "José"


def test_queue_agent_names_are_compared_in_nfc(queue: Queue) -> None:
    first, second = add(queue, "m1"), add(queue, "m2")
    claimed = queue.claim(NFD)
    assert claimed is not None and claimed.agent == NFC  # stored normalised
    assert queue.release(first.id, NFC).status == "queued"
    queue.claim(NFC)
    done = queue.resolve(first.id, NFD, "hecho")
    assert done.agent == NFC
    assert queue.resolve(first.id, NFC, "hecho") == done  # a retry, whatever the form
    queue.claim("ana")
    with pytest.raises(QueueError, match="claimed by ana"):
        queue.resolve(second.id, NFD)


def test_queue_agent_stored_in_another_form_still_holds_its_ticket(sqlite_queue: SQLiteQueue, db: Path) -> None:
    ticket = add(sqlite_queue, "m1")
    sqlite_queue.claim("ana")
    _legacy_agent(db, ticket.id, NFD)  # written before names were normalised
    assert sqlite_queue.resolve(ticket.id, NFC, "hecho").status == "resolved"
    assert sqlite_queue.resolve(ticket.id, NFD, "hecho").status == "resolved"


@pytest.mark.parametrize("call", [
    lambda q: q.get(999),
    lambda q: q.resolve(999, "ana"),
    lambda q: q.release(999, "ana"),
])
def test_queue_unknown_ticket(queue: Queue, call: Any) -> None:
    with pytest.raises(UnknownTicket, match="no ticket 999"):
        call(queue)
    assert issubclass(UnknownTicket, QueueError)


@pytest.mark.parametrize(("call", "message"), [
    (lambda q: q.claim(""), "agent must be a non-empty string"),
    (lambda q: q.claim("ana", lease_seconds=0), "lease_seconds must be 10 to 86400 seconds, got 0"),
    (lambda q: q.claim("ana", lease_seconds=float("nan")), "lease_seconds must be 10 to 86400"),
    (lambda q: q.claim("ana", lease_seconds=9.5), "lease_seconds must be 10 to 86400"),
    (lambda q: q.claim("ana", lease_seconds=86_400.5), "lease_seconds must be 10 to 86400"),
    (lambda q: q.claim("ana", lease_seconds=1e300), "lease_seconds must be 10 to 86400"),  # was accepted
    (lambda q: q.claim("ana", lease_seconds=float("inf")), "lease_seconds must be 10 to 86400"),
    (lambda q: q.claim("ana", lease_seconds=True), "lease_seconds must be 10 to 86400"),
    (lambda q: q.get("1"), "ticket id must be an integer"),
    (lambda q: q.list("pending"), "unknown ticket status 'pending'"),
    (lambda q: q.list(limit=0), "limit must be an integer from 1 to 9223372036854775807, got 0"),
    (lambda q: q.list(limit=2**63), "limit must be an integer from 1 to 9223372036854775807"),
    (lambda q: q.list(limit=10**20), "limit must be an integer from 1 to 9223372036854775807"),  # was OverflowError
    (lambda q: q.get(0), "ticket id must be from 1 to 9223372036854775807, got 0"),
    (lambda q: q.get(2**63), "ticket id must be from 1 to 9223372036854775807"),
    (lambda q: q.resolve(10**20, "ana"), "ticket id must be from 1 to"),  # was OverflowError
    (lambda q: q.release(-1, "ana"), "ticket id must be from 1 to"),
    (lambda q: q.purge(-1), "older_than_days must be a number >= 0"),
    (lambda q: q.agent_messages(""), "conversation_id must be a non-empty string"),
    (lambda q: q.agent_messages("c", since="0"), "since must be a number of unix seconds"),
    (lambda q: q.agent_messages("c", since=float("nan")), "since must be a number of unix seconds"),
    (lambda q: q.claim("\udcff"), r"agent holds U\+DCFF \(an unpaired surrogate\) at position 0"),  # was UnicodeEncodeError
    (lambda q: q.claim("ana\x00"), r"agent holds U\+0000 \(a control character\) at position 3"),
    (lambda q: q.claim("ana\x1b[8m"), r"agent holds U\+001B \(a control character\)"),
    (lambda q: q.claim("ana\nluis"), r"agent holds U\+000A \(a control character\)"),
    (lambda q: q.claim("ana\x85"), r"agent holds U\+0085 \(a control character\)"),
    (lambda q: q.claim("a" * 129), r"agent is longer than 128 characters"),  # the HTTP limit, now everywhere
    (lambda q: q.claim("\u202eana"), r"agent holds U\+202E \(a bidirectional control\)"),
    (lambda q: q.release(1, "ana\x7f"), r"agent holds U\+007F"),
    (lambda q: q.resolve(1, "ana\t"), r"agent holds U\+0009"),
    (lambda q: q.resolve(1, "ana", "hecho \ud83d"), r"resolution holds U\+D83D \(an unpaired surrogate\)"),
    (lambda q: q.resolve(1, "ana", "hecho\x00"), r"resolution holds U\+0000 \(a control character\)"),
    (lambda q: q.resolve(1, "ana", "\x1b[2J"), r"resolution holds U\+001B"),
    (lambda q: q.enqueue(conversation_id="c", message_id=" ", text="x", prediction={}, reasons=[], priority=0), "message_id must be"),
    (lambda q: q.enqueue(conversation_id="c", message_id="m", text=None, prediction={}, reasons=[], priority=0), "text must be a string"),
    (lambda q: q.enqueue(conversation_id="c", message_id="m", text="x", prediction={}, reasons="frustration", priority=0), "reasons must be a list"),
    (lambda q: q.enqueue(conversation_id="c", message_id="m", text="x", prediction={}, reasons=[], priority=float("inf")), "priority must be a finite"),
    (lambda q: q.enqueue(conversation_id="c", message_id="m", text="x", prediction={"x": object()}, reasons=[], priority=0), "cannot be stored as JSON"),
])
def test_queue_rejects_bad_arguments(queue: Queue, call: Any, message: str) -> None:
    with pytest.raises(QueueError, match=message):
        call(queue)
    assert queue.list() == []


def test_queue_refuses_a_bad_note_on_a_claimed_ticket_and_keeps_the_claim(queue: Queue) -> None:
    ticket = add(queue, "m1")
    queue.claim("ana")
    for note in ("hecho \ud83d", "hecho\x00", "\x1b]0;titulo\x07"):
        with pytest.raises(QueueError, match="resolution holds"):
            queue.resolve(ticket.id, "ana", note)
    assert queue.get(ticket.id).status == "claimed"
    # A note may span lines and hold tabs; other scripts and emoji are text too.
    done = queue.resolve(ticket.id, "ana", "llamé al cliente\r\n\treembolso 👍 José ✓")
    assert done.resolution == "llamé al cliente\r\n\treembolso 👍 José ✓"


def test_queue_retried_resolve_compares_the_redacted_note(queue: Queue) -> None:
    ticket = add(queue, "m1")
    queue.claim("ana")
    first = queue.resolve(ticket.id, "ana", "lo llamé al 3104567821")
    assert queue.resolve(ticket.id, "ana", "lo llamé al 3104567821") == first  # stored redacted, still a retry
    # Notes are compared as stored: one that redacts to the same text loses nothing.
    assert queue.resolve(ticket.id, "ana", "lo llamé al 3000000000") == first
    with pytest.raises(QueueError, match="another note"):
        queue.resolve(ticket.id, "ana", "lo llamé al [TELEFONO] dos veces")


def test_queue_redacts_text_turns_and_resolution(queue: Queue, db: Path) -> None:
    ticket, _ = queue.enqueue(
        conversation_id="conv-9", message_id="m1",
        text="mi pedido #A-48213 no llega, llámame al 3104567821 o escribe a ana.p@gmail.com",
        prediction={**PREDICTION, "confidence": float("nan")}, reasons=["frustration"], priority=0.8,
        turns=[{"role": "user", "text": "mi cédula es 1020304050", "message_id": "m0"}, {"role": "bot", "text": "¿Me das tu número de pedido?"}],
    )
    assert ticket.text == "mi pedido #A-48213 no llega, llámame al [TELEFONO] o escribe a [EMAIL]"
    assert ticket.turns[0] == {"role": "user", "text": "mi cédula es [DOCUMENTO]", "message_id": "m0"}
    assert ticket.prediction["confidence"] is None  # NaN is stored as null, never as invalid JSON
    queue.claim("ana")
    assert queue.resolve(ticket.id, "ana", "lo llamé al 3104567821").resolution == "lo llamé al [TELEFONO]"
    raw = stored_bytes(queue, db)
    assert b"3104567821" not in raw and b"ana.p@gmail.com" not in raw and b"1020304050" not in raw


def _turn(message_id: str, text: str) -> dict[str, Any]:
    return {"message_id": message_id, "text": text, "action": "escalate"}


def test_queue_a_conversation_has_one_open_ticket_that_later_messages_join(queue: Queue, clock: FakeClock) -> None:
    # Two messages of one conversation escalating made two tickets, and two agents then
    # worked the same customer; a message sent while a person held it reached nobody.
    first, created = queue.enqueue(
        conversation_id="c1", message_id="m1", text="quiero hablar con una persona", prediction={}, reasons=["human_requested"],
        priority=0.2, turns=[_turn("m0", "hola"), _turn("m1", "quiero hablar con una persona")],
    )
    assert created
    queue.claim("ana")
    clock.advance(1)
    joined, created = queue.enqueue(
        conversation_id="c1", message_id="m2", text="los voy a demandar", prediction={}, reasons=["legal_threat"],
        priority=1.2, turns=[_turn("m0", "hola"), _turn("m2", "los voy a demandar")],  # read before m1 was saved
    )
    assert not created and joined.id == first.id
    assert [t["message_id"] for t in joined.turns] == ["m0", "m1", "m2"]
    assert joined.reasons == ("human_requested", "legal_threat") and joined.priority == 1.2
    assert (joined.status, joined.agent, joined.text) == ("claimed", "ana", "quiero hablar con una persona")
    again, created = queue.enqueue(  # a retried delivery adds nothing
        conversation_id="c1", message_id="m2", text="los voy a demandar", prediction={}, reasons=["legal_threat"],
        priority=1.2, turns=[_turn("m2", "los voy a demandar")],
    )
    assert not created and again.turns == joined.turns
    assert len(queue.list()) == 1
    queue.resolve(first.id, "ana")
    later, created = queue.enqueue(conversation_id="c1", message_id="m3", text="otra vez yo", prediction={}, reasons=[], priority=0.1)
    assert created and later.id != first.id  # resolved: the next escalation is a new ticket


def test_queue_concurrent_escalations_of_one_conversation_make_one_ticket(queue: Queue, db_url: str) -> None:
    import threading

    start = threading.Barrier(8)

    def enqueue(i: int) -> None:
        with open_queue(db_url) as own:  # one connection each, as separate workers have
            start.wait()
            own.enqueue(conversation_id="c1", message_id=f"m{i}", text=f"mensaje {i}", prediction={}, reasons=[],
                        priority=i / 10, turns=[_turn(f"m{i}", f"mensaje {i}")])

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tickets = queue.list()
    assert len(tickets) == 1
    assert sorted(t["message_id"] for t in tickets[0].turns) == [f"m{i}" for i in range(8)]
    assert tickets[0].priority == 0.7


def test_queue_open_for_conversation(queue: Queue, clock: FakeClock) -> None:
    assert queue.open_for_conversation("conv-1") is None
    old = add(queue, "m1", conversation_id="conv-1")
    queue.claim("ana")
    queue.resolve(old.id, "ana")
    assert queue.open_for_conversation("conv-1") is None
    clock.advance(1)
    new = add(queue, "m2", conversation_id="conv-1")
    add(queue, "m3", conversation_id="conv-2")
    assert queue.open_for_conversation("conv-1") == new
    queue.claim("ana")  # claimed is still open
    assert queue.open_for_conversation("conv-1").id == new.id  # type: ignore[union-attr]


def test_queue_purge_deletes_only_old_resolved_tickets(queue: Queue, clock: FakeClock) -> None:
    for i in range(3):
        add(queue, f"m{i}")
    for ticket_id in (1, 2):
        queue.claim("ana")
        queue.resolve(ticket_id, "ana")
    clock.advance(10 * 86400)
    queue.claim("ana")
    queue.resolve(3, "ana")  # resolved just now
    add(queue, "m4")  # still queued
    assert queue.purge(30) == 0
    assert queue.purge(7) == 2
    assert [t.id for t in queue.list()] == [4, 3]  # the waiting ticket first
    with pytest.raises(UnknownTicket):
        queue.get(1)
    assert add(queue, "m5").id == 5  # ids are never reused


def test_queue_list_takes_any_limit_the_database_can(queue: Queue) -> None:
    # No paging: the Python API must be able to read every ticket (the CLI and HTTP cap at 500).
    add(queue, "m1")
    assert len(queue.list(limit=2**63 - 1)) == 1


def test_queue_list_filters_and_orders(queue: Queue, clock: FakeClock) -> None:
    for i, priority in enumerate([0.1, 0.9, 0.5]):
        add(queue, f"m{i}", priority)
        clock.advance(1)
    queue.claim("ana")
    assert [t.message_id for t in queue.list("queued")] == ["m2", "m0"]
    assert [t.message_id for t in queue.list("claimed")] == ["m1"]
    assert [t.message_id for t in queue.list(limit=2)] == ["m1", "m2"]


def test_queue_list_shows_waiting_tickets_before_resolved_ones(queue: Queue, clock: FakeClock) -> None:
    # Urgent tickets, handled and resolved, must not push the waiting ones off a short list.
    for i in range(3):
        ticket = add(queue, f"old{i}", priority=2.0)
        queue.claim("ana")
        clock.advance(1)
        queue.resolve(ticket.id, "ana", "ok")
    add(queue, "low", priority=0.2)
    clock.advance(1)
    add(queue, "high", priority=0.9)
    clock.advance(1)
    add(queue, "high-later", priority=0.9)
    queue.claim("luis")  # claimed tickets are open: they stay in claim order among the queued
    assert [t.message_id for t in queue.list(limit=3)] == ["high", "high-later", "low"]
    assert [t.message_id for t in queue.list()] == ["high", "high-later", "low", "old2", "old1", "old0"]
    assert [t.message_id for t in queue.list("resolved")] == ["old2", "old1", "old0"]


def test_queue_list_resolved_ties_newest_id_first(queue: Queue) -> None:
    for i in range(3):  # the clock does not move: only the id breaks the tie
        ticket = add(queue, f"m{i}")
        queue.claim("ana")
        queue.resolve(ticket.id, "ana")
    assert [t.id for t in queue.list()] == [3, 2, 1] == [t.id for t in queue.list("resolved")]


# -- the database file -------------------------------------------------------------------


def test_queue_shares_the_file_and_creates_folders(db: Path) -> None:
    db.parent.mkdir(parents=True)
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY)")
    other.execute("PRAGMA user_version = 7")  # another module's business
    other.commit()
    other.close()
    with SQLiteQueue(db) as q:
        add(q, "m1")
    with SQLiteQueue(db) as q:  # reopening keeps everything
        assert [t.message_id for t in q.list()] == ["m1"]
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"conversations", "tickets", "tickets_meta"} <= tables
    conn.close()


def test_queue_refuses_a_newer_schema(db: Path) -> None:
    SQLiteQueue(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE tickets_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="schema version 99 is newer"):
        SQLiteQueue(db)


def test_queue_not_a_database_is_a_queue_error(tmp_path: Path) -> None:
    path = tmp_path / "nlu.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(QueueError, match="nlu.db"):
        SQLiteQueue(path)


def test_queue_locked_database_raises_instead_of_dropping(db: Path) -> None:
    q = SQLiteQueue(db, timeout=0.05)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(QueueError, match="database is locked"):
            add(q, "m1")
        with pytest.raises(QueueError, match="locked"):
            q.claim("ana")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    add(q, "m1")  # works again once the lock is gone
    q.close()


def test_queue_full_database_raises_and_keeps_nothing(sqlite_queue: SQLiteQueue) -> None:
    queue = sqlite_queue
    add(queue, "m1")
    conn = queue._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full
    with pytest.raises(QueueError, match="full"):
        add(queue, "m2", text="x" * 20_000)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert [t.message_id for t in queue.list()] == ["m1"]


def test_queue_crash_inside_a_transaction_leaves_no_partial_ticket(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    add(queue, "m0")

    def crash(self: Queue, row: Any) -> Ticket:
        raise RuntimeError("crash between the write and the commit")

    with monkeypatch.context() as m:
        m.setattr(type(queue), "_ticket", crash)
        with pytest.raises(RuntimeError):
            add(queue, "m1")  # INSERT done, COMMIT not reached
        with pytest.raises(RuntimeError):
            queue.claim("ana")  # UPDATE done, COMMIT not reached
    assert [(t.message_id, t.status) for t in queue.list()] == [("m0", "queued")]
    assert add(queue, "m1").message_id == "m1"  # the retry creates it: nothing half-written


def test_queue_threads_share_one_queue(queue: Queue) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(n: int) -> list[int]:
        for i in range(20):
            add(queue, f"t{n}-{i}")
        return [t.id for _ in range(20) if (t := queue.claim(f"agent-{n}")) is not None]

    with ThreadPoolExecutor(4) as pool:
        claimed = [i for ids in pool.map(work, range(4)) for i in ids]
    assert len(claimed) == len(set(claimed)) == 80
    assert queue.depth() == 0


def test_queue_is_closed_after_close(db_url: str) -> None:
    q = open_queue(db_url)
    q.close()
    q.close()  # idempotent
    with pytest.raises(QueueError, match="closed"):
        q.depth()


@pytest.mark.parametrize(("target", "expected"), [
    ("{tmp}/a.db", "{tmp}/a.db"),
    ("sqlite:///{tmp}/b.db", "{tmp}/b.db"),
    ("SQLITE:///{tmp}/c.db", "{tmp}/c.db"),
    (None, "{tmp}/env.db"),  # NLU_DB
])
def test_open_queue_paths_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str | None, expected: str) -> None:
    monkeypatch.setenv("NLU_DB", f"{tmp_path}/env.db")
    q = open_queue(None if target is None else target.format(tmp=tmp_path))
    assert isinstance(q, SQLiteQueue) and isinstance(q, Queue)
    assert q.path == expected.format(tmp=tmp_path)
    q.close()


def test_open_queue_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NLU_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    open_queue().close()
    assert (tmp_path / "var" / "nlu.db").is_file()


@pytest.mark.parametrize(("target", "message"), [
    ("mysql://localhost/nlu", "unsupported scheme 'mysql'"),
    ("sqlite:///", "names no file"),
    ("postgresql://", "names no server"),
])
def test_open_queue_rejects_other_backends(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_queue(target)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg", "POSTGRESQL"])
def test_open_queue_postgres_urls(pg_url: str, scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = scheme + pg_url[len("postgresql"):]
    monkeypatch.setenv("NLU_DB", url)
    for target in (url, None):  # None: $NLU_DB
        with open_queue(target) as q:
            assert isinstance(q, PostgresQueue) and isinstance(q, Queue)
            assert ":***@" in q.path and ":***@" in repr(q)  # the password never shows
            add(q, f"m-{target is None}")


def test_open_queue_postgres_unreachable_is_unavailable_without_the_password() -> None:
    with pytest.raises(QueueUnavailable, match="Connection refused") as info:
        open_queue("postgresql://nlu:s3cret@127.0.0.1:1/nlu")
    assert "s3cret" not in str(info.value) and "nlu:***@127.0.0.1:1/nlu" in str(info.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"timeout": 0}, "timeout=0"),
    ({"timeout": float("nan")}, "timeout=nan"),
    ({"pool_size": 0}, "pool_size=0"),
])
def test_open_queue_postgres_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_queue("postgresql://nlu@127.0.0.1:1/nlu", **options)


def test_queue_postgres_refuses_a_newer_schema_and_upgrades_once(pg_url: str) -> None:
    import psycopg

    PostgresQueue(pg_url).close()
    PostgresQueue(pg_url).close()  # reopening is a no-op
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM tickets_meta WHERE key = 'schema_version'").fetchone() == ("2",)
        conn.execute("UPDATE tickets_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(QueueError, match="tickets schema version 99 is newer"):
        PostgresQueue(pg_url)


def test_queue_postgres_many_instances_create_the_schema_at_once(pg_url: str) -> None:
    # Each PostgresQueue has its own connections, as separate processes would. Without the
    # advisory lock, concurrent CREATE TABLE fails with a duplicate-key error on one of them.
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(4)

    def start(n: int) -> int:
        barrier.wait()
        with PostgresQueue(pg_url) as q:
            return add(q, f"m{n}").id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(start, range(4)))
    assert sorted(ids) == [1, 2, 3, 4]


def test_queue_postgres_database_failure_is_unavailable(pg_url: str) -> None:
    import psycopg

    with PostgresQueue(pg_url, timeout=0.5) as q:
        add(q, "m1")
        with psycopg.connect(pg_url) as blocker:
            blocker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")  # held until the block ends
            with pytest.raises(QueueUnavailable, match="lock timeout"):
                q.claim("ana")
            blocker.rollback()
        assert q.claim("ana") is not None  # works again once the lock is gone
        with psycopg.connect(pg_url, autocommit=True) as admin:  # the server drops our connections
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nlu-queue'")
        assert q.depth() == 0  # the pool noticed and reconnected


# -- processes ---------------------------------------------------------------------------
# Workers are module-level so the "spawn" start method can import them in the child.


def _claim_all(path: str, agent: str, start: Any, out: Any) -> None:
    q = open_queue(path, timeout=30)
    start.wait()
    ids = []
    while (ticket := q.claim(agent)) is not None:
        ids.append(ticket.id)
    q.close()
    out.put(ids)


def _work_until_killed(path: str, conn: Any, crash_mid_transaction: bool) -> None:
    q = open_queue(path)
    if crash_mid_transaction:
        add(q, "before")
        conn.send(("enqueued", "before"))

        def die(self: Queue, row: Any) -> Ticket:
            os.kill(os.getpid(), signal.SIGKILL)  # after the INSERT, before the COMMIT
            raise AssertionError("unreachable")

        type(q)._ticket = die  # type: ignore[attr-defined]
        add(q, "doomed")
    for i in range(100_000):
        add(q, f"m{i}", priority=(i % 7) / 7)
        conn.send(("enqueued", f"m{i}"))  # the acknowledgement a caller would act on
        if i % 3 == 2 and (ticket := q.claim("ana", lease_seconds=60)) is not None:
            conn.send(("claimed", ticket.message_id))


def test_queue_two_processes_never_claim_the_same_ticket(db_url: str) -> None:
    db = db_url
    with open_queue(db) as q:
        for i in range(200):
            add(q, f"m{i}", priority=(i % 5) / 5)
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_claim_all, args=(str(db), f"agent-{n}", start, out)) for n in range(2)]
    for w in workers:
        w.start()
    start.set()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    claimed = [i for ids in results for i in ids]
    assert len(claimed) == len(set(claimed)) == 200
    with open_queue(db) as q:
        assert q.depth() == 0 and len(q.list("claimed", limit=500)) == 200


@pytest.mark.parametrize("crash_mid_transaction", [False, True], ids=["while-working", "mid-transaction"])
def test_queue_sigkill_loses_nothing_acknowledged(db_url: str, crash_mid_transaction: bool) -> None:
    db = db_url
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_work_until_killed, args=(str(db), sender, crash_mid_transaction))
    worker.start()
    sender.close()
    acks: list[tuple[str, str]] = []
    try:
        while len(acks) < 40 and receiver.poll(60):
            acks.append(receiver.recv())
            if crash_mid_transaction and acks == [("enqueued", "before")]:
                break  # the worker now kills itself inside its next transaction
    except EOFError:
        pass
    if worker.is_alive():
        os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]  # at whatever point it is
    worker.join(timeout=30)
    assert worker.exitcode == -signal.SIGKILL
    try:
        while receiver.poll(0.1):
            acks.append(receiver.recv())
    except EOFError:
        pass
    enqueued = {m for kind, m in acks if kind == "enqueued"}
    claimed = {m for kind, m in acks if kind == "claimed"}

    # Reopen an hour later: every lease the dead worker held has expired.
    with open_queue(db, clock=lambda: time.time() + 3600) as q:
        tickets = q.list(limit=100_000)
        stored = [t.message_id for t in tickets]
        assert len(stored) == len(set(stored))  # nothing doubled
        assert enqueued <= set(stored)  # nothing acknowledged lost
        assert claimed <= {t.message_id for t in tickets if t.status == "claimed"}
        assert q.depth() == len(stored)  # every claim came back to the queue with its lease
    if crash_mid_transaction:
        assert stored == ["before"]  # the killed transaction left nothing behind
    else:
        assert len(enqueued) >= 20 and claimed
        assert len(stored) <= len(enqueued) + 1  # at most the one in flight when killed


# -- command line -------------------------------------------------------------------------

runner = CliRunner()


def test_queue_cli_list_claim_resolve_release(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteQueue(db) as q:
        add(q, "m1", priority=0.2, text="¿dónde está mi pedido 1029384?")
        add(q, "m2", priority=0.9, text="QUIERO HABLAR CON UNA PERSONA, mi cel 3104567821")
    base = ["--db", str(db)]

    result = runner.invoke(app, ["queue", "list", *base])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("#2") and "[TELEFONO]" in lines[0] and "pedido 1029384" in lines[1]

    result = runner.invoke(app, ["queue", "claim", "--agent", "ana", "--lease", "60", *base])
    assert result.exit_code == 0, result.output
    ticket = json.loads(result.stdout)
    assert (ticket["id"], ticket["status"], ticket["agent"]) == (2, "claimed", "ana")

    result = runner.invoke(app, ["queue", "release", "2", "--agent", "ana", *base])
    assert result.exit_code == 0 and "released ticket 2" in result.stdout

    monkeypatch.setenv("NLU_DB", str(db))  # --db defaults to $NLU_DB
    result = runner.invoke(app, ["queue", "claim", "--agent", "luis"])
    assert json.loads(result.stdout)["id"] == 2
    result = runner.invoke(app, ["queue", "resolve", "2", "--agent", "luis", "--note", "lo llamé al 3104567821"])
    assert result.exit_code == 0 and "resolved ticket 2" in result.stdout

    result = runner.invoke(app, ["queue", "list", "--status", "resolved", "--json"])
    [line] = result.stdout.splitlines()
    assert json.loads(line)["resolution"] == "lo llamé al [TELEFONO]"


def test_queue_cli_list_shows_waiting_tickets_first(db: Path) -> None:
    with SQLiteQueue(db) as q:
        for i in range(5):
            ticket = add(q, f"old{i}", priority=2.0)
            q.claim("ana")
            q.resolve(ticket.id, "ana", "ok")
        for i in range(3):
            add(q, f"new{i}", priority=0.9)
    result = runner.invoke(app, ["queue", "list", "--limit", "3", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [["#6", "queued"], ["#7", "queued"], ["#8", "queued"]]


FORGED = "una persona ya\n#1  resolved by ana \x1b[8m\u202e\x9b2J\u2028fin"
RAW = ("\x1b", "\u202e", "\x9b", "\u2028")


def _legacy_agent(db: Path, ticket_id: int, agent: str) -> None:
    """Store an agent name the queue now refuses, as a row written before the check."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tickets SET agent = ? WHERE id = ?", (agent, ticket_id))


def test_queue_cli_list_escapes_what_it_prints_from_the_database(db: Path) -> None:
    with SQLiteQueue(db) as q:
        add(q, "m1", text=FORGED, conversation_id="c\x1b]0;x\x07")
        add(q, "m2", priority=0.1)
        q.claim("ana")
    _legacy_agent(db, 1, "ana\x1b[31m")
    result = runner.invoke(app, ["queue", "list", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("#2")  # the text's newline forged no row
    assert not any(ch in result.stdout for ch in RAW)
    assert "by ana\\u001b[31m" in lines[0] and "[c\\u001b]0;x\\u0007]" in lines[0]
    assert "una persona ya\\n#1  resolved by ana \\u001b[8m\\u202e\\u009b2J\\u2028fin" in lines[0]

    result = runner.invoke(app, ["queue", "list", "--json", "--db", str(db)])
    assert not any(ch in result.stdout for ch in RAW)
    first = json.loads(result.stdout.splitlines()[0])  # still JSON, with the same values
    assert (first["text"], first["agent"]) == (FORGED, "ana\x1b[31m")


def test_queue_cli_claim_and_errors_escape_what_they_print(db: Path) -> None:
    with SQLiteQueue(db) as q:
        add(q, "m1", text=FORGED)
    result = runner.invoke(app, ["queue", "claim", "--agent", "ana", "--db", str(db)])
    assert result.exit_code == 0 and not any(ch in result.stdout for ch in RAW)
    assert json.loads(result.stdout)["text"] == FORGED
    _legacy_agent(db, 1, "ana\x1b[2J\u202e")
    result = runner.invoke(app, ["queue", "release", "1", "--agent", "luis", "--db", str(db)])
    assert result.exit_code == 1 and not any(ch in result.stderr for ch in RAW)
    assert result.stderr == "error: cannot release ticket 1: it is claimed by ana\\u001b[2J\\u202e, not luis\n"


def test_queue_cli_agent_names_are_compared_in_nfc(db: Path) -> None:
    with SQLiteQueue(db) as q:
        add(q, "m1")
    result = runner.invoke(app, ["queue", "claim", "--agent", NFD, "--db", str(db)])
    assert json.loads(result.stdout)["agent"] == NFC
    result = runner.invoke(app, ["queue", "resolve", "1", "--agent", NFC, "--db", str(db)])
    assert result.exit_code == 0, result.output


def test_queue_cli_claim_on_empty_queue(db: Path) -> None:
    result = runner.invoke(app, ["queue", "claim", "--agent", "ana", "--db", str(db)])
    assert result.exit_code == 0
    assert result.stdout == "" and "queue empty" in result.stderr
    result = runner.invoke(app, ["queue", "list", "--db", str(db)])
    assert result.stdout.strip() == "no tickets"


@pytest.mark.parametrize(("args", "message"), [
    (["queue", "resolve", "7", "--agent", "ana"], "no ticket 7"),
    (["queue", "release", "1", "--agent", "luis"], "claimed by ana, not luis"),
    (["queue", "resolve", "1", "--agent", "luis"], "claimed by ana, not luis"),
    (["queue", "list", "--status", "pending"], "unknown ticket status 'pending'"),
    (["queue", "claim", "--agent", "  "], "agent must be a non-empty string"),
    (["queue", "claim", "--agent", "\udcff"], "agent holds U+DCFF (an unpaired surrogate)"),  # argv byte 0xff
    (["queue", "claim", "--agent", "ana\x1b[8m"], "agent holds U+001B (a control character)"),
    (["queue", "release", "1", "--agent", "ana\x00"], "agent holds U+0000"),
    (["queue", "resolve", "1", "--agent", "ana", "--note", "ok\x1b[2J"], "resolution holds U+001B"),
])
def test_queue_cli_errors_are_one_line(db: Path, args: list[str], message: str) -> None:
    with SQLiteQueue(db) as q:
        add(q, "m1")
        q.claim("ana")
    result = runner.invoke(app, [*args, "--db", str(db)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [
    ["queue", "resolve", "99999999999999999999", "--agent", "ana"],
    ["queue", "release", "99999999999999999999", "--agent", "ana"],
    ["queue", "resolve", "0", "--agent", "ana"],
    ["queue", "list", "--limit", "99999999999999999999"],
    ["queue", "list", "--limit", "501"],
    ["queue", "claim", "--agent", "ana", "--lease", "1e300"],  # was accepted
    ["queue", "claim", "--agent", "ana", "--lease", "9"],
    ["queue", "claim", "--agent", "ana", "--lease", "86401"],
])
def test_queue_cli_numbers_out_of_range_are_usage_errors(db: Path, args: list[str]) -> None:
    # They were OverflowError tracebacks from the database driver.
    result = runner.invoke(app, [*args, "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Invalid value for" in result.stderr and "Traceback" not in result.output


def test_queue_cli_postgres_unreachable_is_a_clean_error() -> None:
    result = runner.invoke(app, ["queue", "list", "--db", "postgresql://nlu:s3cret@127.0.0.1:1/nlu"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "Connection refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "s3cret" not in result.stderr


def test_queue_cli_works_on_postgres(pg_url: str) -> None:
    with open_queue(pg_url) as q:
        add(q, "m1", text="mi cel 3104567821")
    result = runner.invoke(app, ["queue", "claim", "--agent", "ana", "--db", pg_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == "mi cel [TELEFONO]"


# -- WhatsApp's customer-service window ------------------------------------------------------


def test_queue_ticket_window_closes_a_day_after_the_customers_last_turn(queue: Queue, clock: FakeClock) -> None:
    # Free-form messages reach the customer only within 24 hours of their last message; the
    # ticket says when that is, so an agent knows before writing whether a template is needed.
    t0 = clock.now
    ticket, _ = queue.enqueue(
        conversation_id="c1", message_id="w1", text="hola", prediction=PREDICTION, reasons=[], priority=0.5,
        turns=[{"message_id": "w0", "text": "antes", "action": "answer", "created_at": t0 - 600},
               {"message_id": "w1", "text": "hola", "action": "escalate", "created_at": t0}],
    )
    assert ticket.window_closes_at == t0 + 86_400 and ticket.to_dict()["window_closes_at"] == t0 + 86_400
    queue.claim("ana")
    clock.advance(3600)
    ticket, _, _ = queue.add_agent_message(ticket.id, "ana", "m1", "Hola, soy Ana")
    assert ticket.window_closes_at == t0 + 86_400  # what the business writes opens nothing
    joined, _ = queue.enqueue(
        conversation_id="c1", message_id="w2", text="sigo aquí", prediction=PREDICTION, reasons=[], priority=0.5,
        turns=[{"message_id": "w2", "text": "sigo aquí", "action": "handover", "created_at": clock.now}],
    )
    assert joined.window_closes_at == clock.now + 86_400  # the customer wrote again: a new day


@pytest.mark.parametrize("turns", [
    [],  # a ticket from enqueue without turns
    [{"message_id": "w1", "text": "hola"}],  # no time recorded
    [{"message_id": "w0", "text": "antes", "created_at": 1_699_000_000.0}, {"message_id": "w1", "text": "hola", "created_at": 0.0}],
])
def test_queue_ticket_window_is_unknown_without_the_time_of_the_last_customer_turn(queue: Queue, turns: list[dict[str, Any]]) -> None:
    # A turn written before nlu kept the time (created_at 0.0) says nothing of when the
    # customer last wrote; an older turn's time would close the window too early.
    ticket, _ = queue.enqueue(conversation_id="c1", message_id="w1", text="hola", prediction=PREDICTION, reasons=[], priority=0.5, turns=turns)
    assert ticket.window_closes_at is None and ticket.to_dict()["window_closes_at"] is None


def test_queue_cli_list_marks_tickets_whose_window_closed_or_is_closing(db: Path) -> None:
    now = time.time()
    with SQLiteQueue(db) as q:
        for message_id, wrote in (("w-old", now - 25 * 3600), ("w-soon", now - 23.5 * 3600), ("w-new", now - 60)):
            q.enqueue(
                conversation_id=f"c-{message_id}", message_id=message_id, text="hola", prediction=PREDICTION, reasons=[], priority=0.5,
                turns=[{"message_id": message_id, "text": "hola", "action": "escalate", "created_at": wrote}],
            )
        add(q, "w-unknown")
    result = runner.invoke(app, ["queue", "list", "--db", str(db)])
    assert result.exit_code == 0, result.output
    old, soon, new, unknown = result.stdout.splitlines()
    assert "window closed" in old and "template" in old
    assert "window closes in 30 min" in soon or "window closes in 29 min" in soon
    assert "window" not in new and "window" not in unknown
    result = runner.invoke(app, ["queue", "list", "--json", "--db", str(db)])
    assert [json.loads(line)["window_closes_at"] is None for line in result.stdout.splitlines()] == [False, False, False, True]
