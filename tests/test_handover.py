"""Agents writing to the customer of the ticket they hold (nlu/handover.py, the queue's
agent turns, POST /v1/queue/{id}/messages)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from http_kit import AUTH, RecordingSender, TestClient, in_process_client

from nlu.cloud_api import SendError
from nlu.conversation import Conversations, open_conversations
from nlu.errors import OptedOut, QueueError
from nlu.handover import send_agent_message
from nlu.queue import MAX_AGENT_MESSAGE_CHARS, Queue, Ticket, open_queue
from nlu.server import create_app
from nlu.service import Service

WA_ID = "5215512345678"
PREDICTION = {"intent": "queja", "confidence": 0.9}


@pytest.fixture
def queue(db_url: str) -> Iterator[Queue]:
    q = open_queue(db_url)
    yield q
    q.close()


@pytest.fixture
def conversations(db_url: str) -> Iterator[Conversations]:
    """The conversation store of the queue's database (where consent is kept)."""
    with open_conversations(db_url) as store:
        yield store


def held(queue: Queue, agent: str = "ana") -> Ticket:
    ticket, _ = queue.enqueue(
        conversation_id=WA_ID, message_id="wamid.1", text="quiero hablar con una persona", prediction=PREDICTION,
        reasons=["human_requested"], priority=1.0, turns=[{"message_id": "wamid.1", "text": "quiero hablar con una persona"}],
    )
    if agent:
        queue.claim(agent)
    return ticket


class FlakySender(RecordingSender):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error: BaseException | None = error

    def send(self, body: dict[str, Any]) -> None:
        self.sent.append(body)
        if self.error is not None:
            error, self.error = self.error, None  # fails once
            raise error


# -- the queue and send_agent_message -----------------------------------------------------


def test_handover_message_goes_to_the_customer_and_joins_the_ticket(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    sender = RecordingSender()
    sent = send_agent_message(queue, sender, ticket.id, "ana", "Hola, soy Ana. Te llamo al 3104567821 en 5 minutos", "m-ana-1", conversations=conversations)
    [body] = sender.sent
    assert body["to"] == WA_ID and body["type"] == "text" and body["text"]["body"].endswith("3104567821 en 5 minutos")
    assert not sent.duplicate
    assert sent.turn == {**sent.turn, "message_id": "m-ana-1", "action": "agent", "agent": "ana", "sent": True}
    assert "[TELEFONO]" in sent.turn["text"]  # the customer reads it all; the ticket keeps it redacted
    assert [t["message_id"] for t in queue.get(ticket.id).turns] == ["wamid.1", "m-ana-1"]


class NumbersSender(RecordingSender):
    """A sender for two business numbers that records which one each body went from."""

    phone_number_id = "106540352242922"
    phone_number_ids = frozenset({"106540352242922", "209876543210987"})

    def send(self, body: dict[str, Any], *, phone_number_id: str | None = None) -> None:
        self.sent.append({**body, "from": phone_number_id})


def test_handover_message_goes_from_the_number_the_customer_last_wrote_to(queue: Queue, conversations: Conversations) -> None:
    def customer(message_id: str, number: str | None) -> Ticket:
        turn = {"message_id": message_id, "text": "hola", "action": "handover", **({"phone_number_id": number} if number else {})}
        ticket, _ = queue.enqueue(conversation_id=WA_ID, message_id=message_id, text="hola", prediction={}, reasons=[], priority=1.0, turns=[turn])
        return ticket

    ticket = customer("wamid.1", None)  # a ticket from /v1/messages, or from before nlu kept the number
    queue.claim("ana")
    sender = NumbersSender()
    send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    customer("wamid.2", "209876543210987")
    send_agent_message(queue, sender, ticket.id, "ana", "¿Me confirmas el pedido?", "m2", conversations=conversations)
    send_agent_message(queue, sender, ticket.id, "ana", "Sigo aquí", "m3", conversations=conversations)  # the agent's own turns name no number
    customer("wamid.3", "106540352242922")
    send_agent_message(queue, sender, ticket.id, "ana", "Listo", "m4", conversations=conversations)
    assert [b["from"] for b in sender.sent] == [None, "209876543210987", "209876543210987", "106540352242922"]
    plain = RecordingSender()  # a sender for one number gets the body alone, as before
    send_agent_message(queue, plain, ticket.id, "ana", "Chao", "m5", conversations=conversations)
    assert [set(b) - {"from"} for b in plain.sent] == [set(sender.sent[0]) - {"from"}]


def test_handover_retried_message_is_sent_once(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    sender = RecordingSender()
    send_agent_message(queue, sender, ticket.id, "ana", "Ya lo reviso", "m1", conversations=conversations)
    again = send_agent_message(queue, sender, ticket.id, "ana", "Ya lo reviso", "m1", conversations=conversations)
    assert again.duplicate and again.turn["sent"] is True and len(sender.sent) == 1
    assert len(queue.get(ticket.id).turns) == 2


def test_handover_message_id_reused_for_another_text_is_refused(queue: Queue, conversations: Conversations) -> None:
    # Answering "duplicate" told the agent a message was delivered that nobody ever sent
    # (an agent tool whose ids restart, two drafts given one id); resolve refuses another
    # note the same way.
    ticket = held(queue)
    sender = RecordingSender()
    send_agent_message(queue, sender, ticket.id, "ana", "Ya lo reviso, mi cel 3104567821", "m1", conversations=conversations)
    assert send_agent_message(queue, sender, ticket.id, "ana", "Ya lo reviso, mi cel 3104567821", "m1", conversations=conversations).duplicate  # a retry
    with pytest.raises(QueueError, match="message_id 'm1' is already another message on ticket"):
        send_agent_message(queue, sender, ticket.id, "ana", "Listo, ya salió tu pedido", "m1", conversations=conversations)
    assert len(sender.sent) == 1 and len(queue.get(ticket.id).turns) == 2


def test_handover_failed_send_leaves_no_turn_and_can_be_sent_again(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    sender = FlakySender(RuntimeError("graph api down"))
    with pytest.raises(RuntimeError):
        send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    assert [t["message_id"] for t in queue.get(ticket.id).turns] == ["wamid.1"]  # not shown as said
    assert not send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations).duplicate
    assert len(sender.sent) == 2


def test_handover_unanswered_send_is_kept_as_unknown_and_not_repeated(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    sender = FlakySender(SendError("no answer", maybe_delivered=True))
    with pytest.raises(SendError):
        send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    again = send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    assert again.duplicate and again.turn["sent"] is None and len(sender.sent) == 1  # the customer may have it


def test_handover_interrupted_send_is_kept_as_unknown(queue: Queue, conversations: Conversations) -> None:
    # Ctrl-C in `nlu queue send` (or a worker told to exit) can land after the request
    # left: the turn was removed as "nothing sent", so the same --message-id sent it again.
    ticket = held(queue)
    sender = FlakySender(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    again = send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    assert again.duplicate and again.turn["sent"] is None and len(sender.sent) == 1


@pytest.mark.parametrize(("agent", "claimer", "message"), [
    ("ana", "", "it is queued, claim it first"),
    ("luis", "ana", "claimed by ana, not luis"),
])
def test_handover_only_the_holder_may_write(queue: Queue, conversations: Conversations, agent: str, claimer: str, message: str) -> None:
    ticket = held(queue, claimer)
    sender = RecordingSender()
    with pytest.raises(QueueError, match=message):
        send_agent_message(queue, sender, ticket.id, agent, "Hola", conversations=conversations)
    assert sender.sent == [] and len(queue.get(ticket.id).turns) == 1


def test_handover_resolved_ticket_takes_no_message(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    queue.resolve(ticket.id, "ana")
    with pytest.raises(QueueError, match="already resolved"):
        send_agent_message(queue, RecordingSender(), ticket.id, "ana", "Hola", conversations=conversations)


@pytest.mark.parametrize(("text", "message"), [
    ("", "non-empty"),
    ("  \n", "non-empty"),
    ("hola\x1b[2J", "control"),
    ("x" * (MAX_AGENT_MESSAGE_CHARS + 1), "longer than WhatsApp's 4096"),
])
def test_handover_bad_text_is_refused(queue: Queue, conversations: Conversations, text: str, message: str) -> None:
    ticket = held(queue)
    with pytest.raises(QueueError, match=message):
        send_agent_message(queue, RecordingSender(), ticket.id, "ana", text, conversations=conversations)


def test_handover_message_id_of_a_customer_turn_is_refused(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    with pytest.raises(QueueError, match="is the customer's message"):
        send_agent_message(queue, RecordingSender(), ticket.id, "ana", "Hola", "wamid.1", conversations=conversations)


def test_handover_no_message_reaches_a_customer_who_opted_out(queue: Queue, conversations: Conversations) -> None:
    # On both databases: the consent the conversation store keeps is read before each send.
    ticket = held(queue)
    sender = RecordingSender()
    send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    conversations.record(WA_ID, "wamid.baja", {"action": "answer", "reasons": ["opt_out"]}, consent="revoked")
    with pytest.raises(OptedOut, match=f"ticket {ticket.id}: the customer opted out"):
        send_agent_message(queue, sender, ticket.id, "ana", "¿Sigues ahí?", "m2", conversations=conversations)
    assert len(sender.sent) == 1 and [t["message_id"] for t in queue.get(ticket.id).turns] == ["wamid.1", "m1"]
    # A retry of what went out before the opt-out sends nothing, and says so.
    again = send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    assert again.duplicate and len(sender.sent) == 1
    conversations.record(WA_ID, "wamid.acepto", {"action": "answer", "reasons": ["consent_granted"]}, consent="granted")
    assert not send_agent_message(queue, sender, ticket.id, "ana", "¿Sigues ahí?", "m2", conversations=conversations).duplicate


def test_handover_agent_messages_of_a_conversation_across_its_tickets(queue: Queue, conversations: Conversations) -> None:
    # What the next ticket of the conversation shows of the earlier ones (Service._history).
    first = held(queue)
    send_agent_message(queue, RecordingSender(), first.id, "ana", "Hola, soy Ana, mi cel 3104567821", "m-ana", conversations=conversations)
    queue.resolve(first.id, "ana")
    other, _ = queue.enqueue(conversation_id="5491155556666", message_id="wamid.o", text="otra", prediction={}, reasons=[], priority=0.0)
    queue.claim("luis")
    send_agent_message(queue, RecordingSender(), other.id, "luis", "Hola, soy Luis", "m-luis", conversations=conversations)
    second, _ = queue.enqueue(conversation_id=WA_ID, message_id="wamid.2", text="hola", prediction={}, reasons=[], priority=0.0)
    queue.claim("eva")
    send_agent_message(queue, RecordingSender(), second.id, "eva", "Soy Eva", "m-eva", conversations=conversations)

    said = queue.agent_messages(WA_ID)
    assert [(t["message_id"], t["agent"], t["text"], t["sent"]) for t in said] == [
        ("m-ana", "ana", "Hola, soy Ana, mi cel [TELEFONO]", True), ("m-eva", "eva", "Soy Eva", True),
    ]
    assert [t["message_id"] for t in queue.agent_messages(WA_ID, since=said[1]["created_at"])] == ["m-eva"]
    assert queue.agent_messages("5700000000000") == []


def next_ticket(queue: Queue, message_id: str, agent: str) -> Ticket:
    """The conversation's next ticket, showing what agents said on the earlier ones (as
    Service._history builds it), claimed by ``agent``."""
    said = queue.agent_messages(WA_ID)
    turn = {"message_id": message_id, "action": "escalate", "text": "quiero hablar con una persona"}
    ticket, _ = queue.enqueue(
        conversation_id=WA_ID, message_id=message_id, text="quiero hablar con una persona", prediction=PREDICTION,
        reasons=["human_requested"], priority=1.0, turns=[*said, turn],
    )
    claimed = queue.claim(agent)
    assert claimed is not None and claimed.id == ticket.id
    return claimed


def test_handover_agent_messages_shown_on_the_next_ticket_are_not_that_tickets_own(queue: Queue, conversations: Conversations) -> None:
    # The next ticket holds copies of the earlier tickets' agent turns: read back as that
    # ticket's messages, they were repeated on the ticket after it, and an id the agent tool
    # numbers per ticket ("1") matched the copy: "duplicate", and nothing was sent.
    first = held(queue)
    send_agent_message(queue, RecordingSender(), first.id, "ana", "Hola, soy Ana", "1", conversations=conversations)
    queue.resolve(first.id, "ana")
    second = next_ticket(queue, "wamid.2", "ana")
    assert [(t["message_id"], t.get("ticket")) for t in second.turns] == [("1", first.id), ("wamid.2", None)]
    sender = RecordingSender()
    with pytest.raises(QueueError, match="claimed by ana, not luis"):  # not "duplicate: true" to someone not holding it
        send_agent_message(queue, sender, second.id, "luis", "Hola, soy Ana", "1", conversations=conversations)
    sent = send_agent_message(queue, sender, second.id, "ana", "Hola, soy Ana", "1", conversations=conversations)
    assert not sent.duplicate and len(sender.sent) == 1
    assert sent.turn["created_at"] > second.created_at and "ticket" not in sent.turn  # its own turn, not the copy
    queue.resolve(second.id, "ana")
    said = queue.agent_messages(WA_ID)
    assert [(t["message_id"], t["ticket"]) for t in said] == [("1", first.id), ("1", second.id)]  # each once
    third = next_ticket(queue, "wamid.3", "eva")
    assert [(t["message_id"], t.get("ticket")) for t in third.turns] == [("1", first.id), ("1", second.id), ("wamid.3", None)]


# -- HTTP ---------------------------------------------------------------------------------


def test_handover_http_message(client: TestClient, service: Service, sender: RecordingSender) -> None:
    ticket = held(service.queue, agent="")
    assert client.post("/v1/queue/claim", headers=AUTH, json={"agent": "ana"}).status_code == 200
    path = f"/v1/queue/{ticket.id}/messages"

    r = client.post(path, headers=AUTH, json={"agent": "ana", "text": "Hola, soy Ana", "message_id": "m1"})
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is False and r.json()["message"]["sent"] is True
    assert [b["text"]["body"] for b in sender.sent] == ["Hola, soy Ana"]
    again = client.post(path, headers=AUTH, json={"agent": "ana", "text": "Hola, soy Ana", "message_id": "m1"})
    assert again.status_code == 200 and again.json()["duplicate"] is True and len(sender.sent) == 1

    assert client.post(path, headers=AUTH, json={"agent": "luis", "text": "Hola"}).json()["error"]["code"] == "ticket_conflict"
    assert client.post("/v1/queue/999/messages", headers=AUTH, json={"agent": "ana", "text": "Hola"}).status_code == 404
    for body, code in (({"agent": "ana", "text": " "}, "empty_text"), ({"agent": "ana"}, "missing_field"), ({"agent": "ana", "text": "a\x00b"}, "invalid_text")):
        r = client.post(path, headers=AUTH, json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert client.post(path, json={"agent": "ana", "text": "Hola"}).status_code == 401
    assert len(sender.sent) == 1


def test_handover_http_failed_send_is_a_502_and_leaves_no_turn(service: Service) -> None:
    client = in_process_client(service, FlakySender(RuntimeError("boom")))
    ticket = held(service.queue)
    r = client.post(f"/v1/queue/{ticket.id}/messages", headers=AUTH, json={"agent": "ana", "text": "Hola"})
    assert r.status_code == 502 and r.json()["error"] == {"code": "send_failed", "message": "the sender failed; see the server log"}
    assert len(service.queue.get(ticket.id).turns) == 1
    assert "nlu_whatsapp_send_failures_total 1" in client.get("/metrics").text


def test_handover_http_refuses_when_replies_only_go_to_the_log(service: Service) -> None:
    from http_kit import SETTINGS

    client = TestClient(create_app(service, SETTINGS), raise_server_exceptions=False)
    ticket = held(service.queue)
    r = client.post(f"/v1/queue/{ticket.id}/messages", headers=AUTH, json={"agent": "ana", "text": "Hola"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "sender_not_configured"
    assert len(service.queue.get(ticket.id).turns) == 1


def test_handover_http_unanswered_send_is_502_send_unknown(service: Service) -> None:
    # A 502 "send_failed" told the agent tool to send again (the docs said nothing was
    # left), though the customer may have the message.
    client = in_process_client(service, FlakySender(SendError("no answer", maybe_delivered=True)))
    ticket = held(service.queue)
    r = client.post(f"/v1/queue/{ticket.id}/messages", headers=AUTH, json={"agent": "ana", "text": "Hola", "message_id": "m1"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "send_unknown"
    again = client.post(f"/v1/queue/{ticket.id}/messages", headers=AUTH, json={"agent": "ana", "text": "Hola", "message_id": "m1"})
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["message"]["sent"] is None


def test_handover_sent_but_not_marked_is_reported_sent(queue: Queue, conversations: Conversations, monkeypatch: pytest.MonkeyPatch) -> None:
    # The customer had the message, and a failure to mark it was reported as a 503
    # "nothing was written": an invitation to send it again.
    from nlu.errors import QueueUnavailable

    ticket = held(queue)
    sender = RecordingSender()

    def locked(*args: Any, **kwargs: Any) -> Ticket:
        raise QueueUnavailable("database is locked")

    monkeypatch.setattr(queue, "settle_agent_message", locked)
    sent = send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    assert sent.turn["sent"] is True and len(sender.sent) == 1
    monkeypatch.undo()
    again = send_agent_message(queue, sender, ticket.id, "ana", "Hola", "m1", conversations=conversations)
    assert again.duplicate and len(sender.sent) == 1


def test_handover_another_agents_message_id_is_not_their_duplicate(queue: Queue, conversations: Conversations) -> None:
    ticket = held(queue)
    send_agent_message(queue, RecordingSender(), ticket.id, "ana", "Hola", "m1", conversations=conversations)
    queue.release(ticket.id, "ana")
    queue.claim("luis")
    with pytest.raises(QueueError, match="already another message"):
        send_agent_message(queue, RecordingSender(), ticket.id, "luis", "Hola", "m1", conversations=conversations)


def test_handover_a_send_that_ends_after_the_resolve_keeps_the_resolution_time(queue: Queue) -> None:
    ticket = held(queue)
    ticket, _, _ = queue.add_agent_message(ticket.id, "ana", "m1", "Hola")
    resolved = queue.resolve(ticket.id, "ana", intent="queja")
    settled = queue.settle_agent_message(ticket.id, "m1", sent=True)
    assert settled.updated_at == resolved.updated_at and settled.turns[-1]["sent"] is True


def test_handover_http_message_to_a_customer_who_opted_out_is_a_409(client: TestClient, service: Service, sender: RecordingSender) -> None:
    from nlu.service import InboundMessage

    for n, (text, button) in enumerate((("hola", None), ("Sí, acepto", "consent:yes"), ("quiero hablar con una persona", None))):
        service.handle(InboundMessage(WA_ID, f"wamid.c{n}", text, button))
    ticket = client.post("/v1/queue/claim", headers=AUTH, json={"agent": "ana"}).json()["ticket"]
    path = f"/v1/queue/{ticket['id']}/messages"
    assert client.post(path, headers=AUTH, json={"agent": "ana", "text": "Hola, soy Ana"}).status_code == 200
    assert service.handle(InboundMessage(WA_ID, "wamid.baja", "BAJA")).reasons == ("opt_out",)

    r = client.post(path, headers=AUTH, json={"agent": "ana", "text": "¿Sigues ahí?", "message_id": "m2"})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "opted_out" and "opted out" in r.json()["error"]["message"]
    assert [b["text"]["body"] for b in sender.sent] == ["Hola, soy Ana"]
    turns = service.queue.get(ticket["id"]).turns
    assert "m2" not in [t.get("message_id") for t in turns] and turns[-1]["text"] == "BAJA"
    resolved = client.post(f"/v1/queue/{ticket['id']}/resolve", headers=AUTH, json={"agent": "ana", "resolution": "se dio de baja"})
    assert resolved.status_code == 200


# -- template messages (the customer last wrote more than 24 hours ago) ---------------------


def test_handover_template_message_reaches_the_customer_and_the_ticket_says_which(queue: Queue, conversations: Conversations) -> None:
    from nlu.responses import Template

    ticket = held(queue)
    sender = RecordingSender()
    template = Template("seguimiento_caso", "es_MX", ("Ana", "3104567821"))
    sent = send_agent_message(queue, sender, ticket.id, "ana", template, "t1", conversations=conversations)
    assert sender.sent == [{
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID, "type": "template",
        "template": {
            "name": "seguimiento_caso", "language": {"code": "es_MX"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "3104567821"}]}],
        },
    }]
    # The next agent sees what went out; the ticket keeps it redacted, like a text.
    assert sent.turn["template"] == {"name": "seguimiento_caso", "language": "es_MX", "parameters": ["Ana", "[TELEFONO]"]}
    assert (sent.turn["action"], sent.turn["agent"], sent.turn["sent"]) == ("agent", "ana", True)
    assert "seguimiento_caso" in sent.turn["text"] and "Ana" in sent.turn["text"]
    assert "3104567821" not in str(queue.get(ticket.id).to_dict())
    again = send_agent_message(queue, sender, ticket.id, "ana", template, "t1", conversations=conversations)
    assert again.duplicate and len(sender.sent) == 1
    for other in ("Hola", Template("seguimiento_caso", "es_MX", ("Luis", "3104567821")), Template("seguimiento_caso", "es_AR", ("Ana", "3104567821"))):
        with pytest.raises(QueueError, match="already another message"):
            send_agent_message(queue, sender, ticket.id, "ana", other, "t1", conversations=conversations)
    assert len(sender.sent) == 1 and len(queue.get(ticket.id).turns) == 2


def test_handover_template_without_parameters_sends_no_components(queue: Queue, conversations: Conversations) -> None:
    from nlu.responses import Template

    ticket = held(queue)
    sender = RecordingSender()
    send_agent_message(queue, sender, ticket.id, "ana", Template("hello_world", "en_US"), conversations=conversations)
    assert sender.sent[0]["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


def test_handover_no_template_reaches_a_customer_who_opted_out(queue: Queue, conversations: Conversations) -> None:
    from nlu.responses import Template

    ticket = held(queue)
    conversations.record(WA_ID, "wamid.baja", {"action": "answer", "reasons": ["opt_out"]}, consent="revoked")
    sender = RecordingSender()
    with pytest.raises(OptedOut):
        send_agent_message(queue, sender, ticket.id, "ana", Template("seguimiento_caso", "es_MX", ("Ana",)), conversations=conversations)
    assert sender.sent == [] and len(queue.get(ticket.id).turns) == 1


@pytest.mark.parametrize(("name", "language", "parameters", "message"), [
    ("Seguimiento_Caso", "es_MX", (), "name .* lowercase letters, digits and underscores"),
    ("seguimiento caso", "es_MX", (), "name"),
    ("", "es_MX", (), "name"),
    ("a" * 513, "es_MX", (), "at most 512"),
    ("seguimiento", "es-MX", (), "language"),
    ("seguimiento", "spanish", (), "language"),
    ("seguimiento", "ES_mx", (), "language"),
    ("seguimiento", "", (), "language"),
    ("seguimiento", "es_MX", ("",), r"parameters\[0\] is blank"),
    ("seguimiento", "es_MX", ("Ana", "  "), r"parameters\[1\] is blank"),
    ("seguimiento", "es_MX", ("línea\notra",), "line break, tab or control character"),
    ("seguimiento", "es_MX", ("a\tb",), "line break, tab or control character"),
    ("seguimiento", "es_MX", ("a     b",), "more than 4 spaces in a row"),
    ("seguimiento", "es_MX", ("x" * 1025,), "1024"),
    ("seguimiento", "es_MX", ("x" * 600, "y" * 600), "1024"),
    ("seguimiento", "es_MX", ("x",) * 101, "at most 100"),
    ("seguimiento", "es_MX", ("\ud83d",), "surrogate"),
    ("seguimiento", "es_MX", (3,), "string"),
])
def test_handover_template_follows_metas_rules(name: str, language: str, parameters: tuple[Any, ...], message: str) -> None:
    from nlu.errors import InputError
    from nlu.responses import Template

    with pytest.raises(InputError, match=message):
        Template(name, language, parameters)


def test_handover_template_takes_the_languages_meta_names() -> None:
    from nlu.responses import Template

    for language in ("es", "es_MX", "es_AR", "es_ES", "pt_BR", "fil", "en_US"):
        assert Template("seguimiento_caso", language).language == language
    assert Template("seguimiento_caso", "es_MX", ["Ana"]).parameters == ("Ana",)  # a list is kept as a tuple


# -- WhatsApp's 24-hour window, checked before the send --------------------------------------


def test_handover_text_after_the_window_closed_is_refused_before_the_send(queue: Queue, conversations: Conversations) -> None:
    # Meta refuses it (code 131047) after a round trip, and the agent read a 502: a fault
    # of ours. The ticket knows when the window closed, so nlu says so itself.
    import time

    from nlu.errors import WindowClosed
    from nlu.responses import Template

    wrote = time.time() - 25 * 3600
    ticket, _ = queue.enqueue(
        conversation_id=WA_ID, message_id="wamid.1", text="hola", prediction=PREDICTION, reasons=["human_requested"], priority=1.0,
        turns=[{"message_id": "wamid.1", "text": "hola", "created_at": wrote}],
    )
    queue.claim("ana")
    sender = RecordingSender()
    with pytest.raises(WindowClosed, match=f"ticket {ticket.id}: .*more than 24 hours ago.*template"):
        send_agent_message(queue, sender, ticket.id, "ana", "Hola, ¿sigues ahí?", "m1", conversations=conversations)
    assert sender.sent == [] and [t["message_id"] for t in queue.get(ticket.id).turns] == ["wamid.1"]
    # A template goes through, and the refused message id is free for it.
    sent = send_agent_message(queue, sender, ticket.id, "ana", Template("seguimiento_caso", "es_MX", ("Ana",)), "m1", conversations=conversations)
    assert not sent.duplicate and sender.sent[0]["type"] == "template"


def test_handover_text_inside_the_window_or_without_its_time_is_sent(queue: Queue, conversations: Conversations) -> None:
    import time

    ticket, _ = queue.enqueue(
        conversation_id=WA_ID, message_id="wamid.1", text="hola", prediction=PREDICTION, reasons=[], priority=1.0,
        turns=[{"message_id": "wamid.1", "text": "hola", "created_at": time.time() - 23 * 3600}],
    )
    queue.claim("ana")
    sender = RecordingSender()
    send_agent_message(queue, sender, ticket.id, "ana", "Hola", conversations=conversations)
    queue.resolve(ticket.id, "ana")
    untimed, _ = queue.enqueue(  # its turn carries no time: Meta decides
        conversation_id=WA_ID, message_id="wamid.2", text="hola", prediction=PREDICTION, reasons=[], priority=1.0,
        turns=[{"message_id": "wamid.2", "text": "hola"}],
    )
    queue.claim("ana")
    send_agent_message(queue, sender, untimed.id, "ana", "Hola", conversations=conversations)
    assert len(sender.sent) == 2


def test_handover_http_text_after_the_window_is_a_409(client: TestClient, service: Service, sender: RecordingSender) -> None:
    import time

    ticket, _ = service.queue.enqueue(
        conversation_id=WA_ID, message_id="wamid.1", text="hola", prediction=PREDICTION, reasons=[], priority=1.0,
        turns=[{"message_id": "wamid.1", "text": "hola", "created_at": time.time() - 30 * 3600}],
    )
    service.queue.claim("ana")
    r = client.post(f"/v1/queue/{ticket.id}/messages", headers=AUTH, json={"agent": "ana", "text": "Hola"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "window_closed"
    assert "template" in r.json()["error"]["message"] and sender.sent == []
