"""The reply outbox: the conversation store's table (SQLite and PostgreSQL) and the
resender that sends its replies again (nlu/outbox.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nlu.cloud_api import SendError
from nlu.conversation import Conversations, open_conversations
from nlu.metrics_http import Metrics
from nlu.outbox import FIRST_WAIT, LEASE, MAX_AGE, MAX_WAIT, Resender, keeps

BODY = {"messaging_product": "whatsapp", "to": "5215512345678", "type": "text", "text": {"body": "Tu pedido llega mañana"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class ScriptedSender:
    """Fails with each scripted exception in turn, then sends; keeps every body it got."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.bodies: list[dict[str, Any]] = []

    def send(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)
        if self.failures:
            raise self.failures.pop(0)


def unavailable() -> SendError:
    return SendError("WhatsApp Cloud API refused the reply: HTTP 503", status=503, retry=True)


def deferred(store: Conversations, clock: Clock, sender: ScriptedSender, message_id: str = "wamid.1") -> Resender:
    resender = Resender(store, sender, Metrics(), clock=clock)
    store.record("5215512345678", message_id, {"action": "answer", "reasons": []})
    resender.defer(message_id, "5215512345678", BODY, unavailable())
    return resender


# -- the table ------------------------------------------------------------------------------


def test_outbox_claims_a_due_reply_once_and_keeps_it_until_settled(db_url: str) -> None:
    with open_conversations(db_url) as store:
        assert store.defer_reply("m1", "c1", BODY, "HTTP 503", failed_at=90.0, retry_at=100.0)
        assert not store.defer_reply("m1", "c1", BODY, "HTTP 503", failed_at=90.0, retry_at=100.0)  # one row per message
        assert store.claim_replies(now=99.0, lease=LEASE) == ([], 0)  # not due yet
        [claimed], dropped = store.claim_replies(now=100.0, lease=LEASE)
        assert (claimed.message_id, claimed.conversation_id, claimed.body, claimed.attempts, dropped) == ("m1", "c1", BODY, 1, 0)
        assert store.claim_replies(now=101.0, lease=LEASE) == ([], 0)  # claimed: nobody else takes it
        store.settle_reply("m1", retry_at=200.0, error="HTTP 429")
        assert store.outbox_depth() == 1
        [again], _ = store.claim_replies(now=200.0, lease=LEASE)
        assert again.attempts == 2
        store.settle_reply("m1")
        assert store.outbox_depth() == 0 and store.claim_replies(now=10_000.0, lease=LEASE) == ([], 0)


def test_outbox_a_claim_that_outlives_its_lease_is_dropped_never_resent(db_url: str) -> None:
    # The process died during the send, which may have gone through: sending it again
    # could make the customer read the reply twice.
    with open_conversations(db_url) as store:
        store.defer_reply("m1", "c1", BODY, "HTTP 503", failed_at=90.0, retry_at=100.0)
        store.claim_replies(now=100.0, lease=LEASE)
        assert store.claim_replies(now=100.0 + LEASE / 2, lease=LEASE) == ([], 0)
        assert store.claim_replies(now=100.0 + LEASE + 1, lease=LEASE) == ([], 1)
        assert store.outbox_depth() == 0


def test_outbox_survives_a_restart(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.defer_reply("m1", "c1", BODY, "HTTP 503", failed_at=90.0, retry_at=100.0)
    with open_conversations(db_url) as store:
        [claimed], _ = store.claim_replies(now=100.0, lease=LEASE)
    assert claimed.body == BODY


def test_outbox_is_forgotten_and_purged_with_the_conversation(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.defer_reply("m1", "c1", BODY, "x", failed_at=90.0, retry_at=100.0)
        store.defer_reply("m2", "c2", BODY, "x", failed_at=90.0, retry_at=100.0)
        assert store.forget("c1") == 1
        assert store.outbox_depth() == 1
        assert store.purge(older_than_days=0) >= 1
        assert store.outbox_depth() == 0


def test_outbox_tells_an_opt_out_after_a_message_from_one_before_it(db_url: str) -> None:
    with open_conversations(db_url) as store:
        store.record("c1", "m-before", {"action": "answer", "reasons": []})
        store.record("c1", "m-baja", {"action": "answer", "reasons": ["opt_out"]}, consent="revoked")
        store.record("c1", "m-baja-again", {"action": "silent", "reasons": ["opt_out"]})
        store.record("c1", "m-after", {"action": "answer", "reasons": ["no_consent", "human_requested"]})
        store.record("c2", "m-other", {"action": "answer", "reasons": []})
        assert store.opted_out_after("m-before")
        assert not store.opted_out_after("m-baja") and not store.opted_out_after("m-after")
        assert not store.opted_out_after("m-other")  # another customer's opt-out is not theirs
        assert store.opted_out_after("m-unknown")  # no longer kept: nothing says it came before


def test_outbox_two_processes_never_claim_the_same_reply(db_url: str) -> None:
    # Several workers (or instances on PostgreSQL) poll the same outbox.
    with open_conversations(db_url) as setup:
        for i in range(40):
            setup.defer_reply(f"m{i}", f"c{i}", BODY, "x", failed_at=90.0, retry_at=100.0)
    stores = [open_conversations(db_url) for _ in range(4)]
    start = threading.Barrier(len(stores))

    def claim(store: Conversations) -> list[str]:
        start.wait()
        got: list[str] = []
        while True:
            claimed, _ = store.claim_replies(now=100.0, lease=LEASE, limit=3)
            if not claimed:
                return got
            got += [c.message_id for c in claimed]

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(claim, stores))
    finally:
        for store in stores:
            store.close()
    every = [m for got in results for m in got]
    assert sorted(every) == sorted(f"m{i}" for i in range(40))  # each exactly once


# -- the resender ---------------------------------------------------------------------------


def test_resender_sends_again_when_due_quoting_the_customers_message(tmp_path: Any) -> None:
    clock, sender = Clock(), ScriptedSender()
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = deferred(store, clock, sender)
        assert resender.run_once() == 0 and sender.bodies == []  # not due yet
        clock.now += FIRST_WAIT
        assert resender.run_once() == 1
        assert sender.bodies == [{**BODY, "context": {"message_id": "wamid.1"}}]
        assert store.outbox_depth() == 0 and resender.run_once() == 0
    assert resender.metrics.value("nlu_whatsapp_resent_total") == 1
    assert resender.metrics.value("nlu_whatsapp_replies_deferred_total") == 1


def test_resender_waits_double_up_to_a_cap_while_meta_is_down(tmp_path: Any) -> None:
    clock = Clock()
    sender = ScriptedSender(*[unavailable() for _ in range(12)])
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = deferred(store, clock, sender)
        waits = []
        start = clock.now
        for _ in range(12):
            clock.now += FIRST_WAIT / 2  # poll until it is due
            while resender.run_once() == 0:
                clock.now += FIRST_WAIT / 2
            waits.append(clock.now - start)
            start = clock.now
        assert len(sender.bodies) == 12 and store.outbox_depth() == 1
    assert waits[:4] == [FIRST_WAIT, 2 * FIRST_WAIT, 4 * FIRST_WAIT, 8 * FIRST_WAIT]
    assert max(waits) == MAX_WAIT


@pytest.mark.parametrize(("failure", "reason"), [
    (SendError("HTTP 400, code 131026: Message undeliverable", status=400, code=131026), "refused"),
    (SendError("no answer; it may have been delivered", maybe_delivered=True, retry=True), "unknown"),
])
def test_resender_gives_up_what_a_new_attempt_cannot_fix(tmp_path: Any, failure: SendError, reason: str) -> None:
    clock, sender = Clock(), ScriptedSender(failure)
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = deferred(store, clock, sender)
        clock.now += FIRST_WAIT
        resender.run_once()
        clock.now += MAX_WAIT
        resender.run_once()
        assert len(sender.bodies) == 1 and store.outbox_depth() == 0
    assert resender.metrics.value("nlu_whatsapp_replies_given_up_total", {"reason": reason}) == 1


def test_resender_gives_up_after_whatsapps_24_hour_window_without_sending(tmp_path: Any) -> None:
    clock, sender = Clock(), ScriptedSender(*[unavailable() for _ in range(1000)])
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = deferred(store, clock, sender)
        end = clock.now + MAX_AGE + 2 * MAX_WAIT
        while clock.now < end:
            clock.now += MAX_WAIT
            resender.run_once()
        attempts = len(sender.bodies)
        assert store.outbox_depth() == 0
    assert resender.metrics.value("nlu_whatsapp_replies_given_up_total", {"reason": "expired"}) == 1
    assert 140 < attempts < 150  # ten minutes apart once the waits reach their cap


def test_resender_drops_a_reply_once_the_customer_opted_out_but_sends_the_opt_out_confirmation(tmp_path: Any) -> None:
    clock, sender = Clock(), ScriptedSender()
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = deferred(store, clock, sender, "wamid.pedido")
        store.record("5215512345678", "wamid.baja", {"action": "answer", "reasons": ["opt_out"]}, consent="revoked")
        resender.defer("wamid.baja", "5215512345678", {**BODY, "text": {"body": "Listo, no te escribiremos más."}}, unavailable())
        clock.now += FIRST_WAIT
        assert resender.run_once() == 2
        assert [b["context"]["message_id"] for b in sender.bodies] == ["wamid.baja"]
        assert store.outbox_depth() == 0
    assert resender.metrics.value("nlu_whatsapp_replies_given_up_total", {"reason": "opted_out"}) == 1


ANSWER: dict[str, Any] = {"action": "answer", "reasons": []}
BAJA: dict[str, Any] = {"action": "answer", "reasons": ["opt_out"]}


@pytest.mark.parametrize(("history", "sent", "given_up"), [
    # After an opt-out, asking for a person gets the consent question (to opt in again).
    # The opt-out came before that reply, not since: dropping it left the customer who
    # asked with no answer at all.
    ([("wamid.baja", BAJA), ("wamid.persona", {"action": "answer", "reasons": ["no_consent", "human_requested"]})], ["wamid.baja", "wamid.persona"], 0),
    # The first send spends seconds on its attempts before the reply is deferred: a "BAJA"
    # handled meanwhile by another worker came after the reply, and must stop it. Saying
    # "BAJA" again while its confirmation waits does not drop the confirmation.
    ([("wamid.pedido", ANSWER), ("wamid.baja", BAJA), ("wamid.baja2", {"action": "silent", "reasons": ["opt_out"]})], ["wamid.baja"], 1),
])
def test_resender_counts_only_an_opt_out_after_the_replys_message(
    tmp_path: Any, history: list[tuple[str, dict[str, Any]]], sent: list[str], given_up: int
) -> None:
    clock, sender = Clock(), ScriptedSender()
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = Resender(store, sender, Metrics(), clock=clock)
        for message_id, outcome in history:
            store.record("5215512345678", message_id, outcome, **({"consent": "revoked"} if outcome is BAJA else {}))
        for message_id, outcome in history:
            if outcome["action"] != "silent":
                resender.defer(message_id, "5215512345678", BODY, unavailable())  # each send failed after the last message
        clock.now += FIRST_WAIT
        resender.run_once()
        assert [b["context"]["message_id"] for b in sender.bodies] == sent and store.outbox_depth() == 0
    assert resender.metrics.value("nlu_whatsapp_replies_given_up_total", {"reason": "opted_out"}) == given_up


def test_resender_keeps_what_a_plugged_in_sender_raises(tmp_path: Any) -> None:
    # By the Sender protocol, any exception other than a SendError means nothing was sent.
    assert keeps(RuntimeError("graph api down")) and keeps(unavailable())
    assert not keeps(SendError("refused", status=400)) and not keeps(SendError("maybe", maybe_delivered=True, retry=True))
    clock, sender = Clock(), ScriptedSender(RuntimeError("graph api down"))
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = deferred(store, clock, sender)
        clock.now += FIRST_WAIT
        resender.run_once()
        assert store.outbox_depth() == 1
        clock.now += 2 * FIRST_WAIT
        resender.run_once()
        assert store.outbox_depth() == 0 and len(sender.bodies) == 2


def test_resender_thread_sends_and_stops(tmp_path: Any) -> None:
    sender = ScriptedSender()
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = Resender(store, sender, poll=0.02)
        resender.defer("wamid.1", "5215512345678", BODY, unavailable())
        resender.clock = lambda: time.time() + FIRST_WAIT
        resender.start()
        try:
            deadline = time.monotonic() + 10
            while not sender.bodies and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            resender.stop()
        assert len(sender.bodies) == 1 and store.outbox_depth() == 0


def test_resender_probes_with_one_reply_while_meta_is_down_then_sends_them_all(tmp_path: Any) -> None:
    # Twenty replies each spending the sender's attempts every pass would hammer an API
    # that is down; and a batch claimed at once could outlive its lease while Meta is slow.
    clock, sender = Clock(), ScriptedSender(unavailable())
    with open_conversations(tmp_path / "nlu.db") as store:
        resender = Resender(store, sender, clock=clock)
        for i in range(3):
            resender.defer(f"wamid.{i}", "5215512345678", BODY, unavailable())
        clock.now += FIRST_WAIT
        assert resender.run_once() == 1 and store.outbox_depth() == 3
        assert resender.run_once() == 2 and store.outbox_depth() == 1  # Meta is back: the two due ones go
        clock.now += 2 * FIRST_WAIT
        assert resender.run_once() == 1 and store.outbox_depth() == 0
    assert sorted(b["context"]["message_id"] for b in sender.bodies[1:]) == ["wamid.0", "wamid.1", "wamid.2"]
