"""Conversation scenarios through Service with a real SQLite file.

Most scenarios use a scripted stand-in for the model (fixed predictions per message), so
each one controls exactly what routing sees and stays stable when the featuriser
changes; the last tests run the real tiny model end to end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlu import ConfigError, InputError, MessageConflict, Model
from nlu.config import RoutingPolicy
from nlu.conversation import open_conversations
from nlu.model import Prediction
from nlu.queue import open_queue
from nlu.responses import load_catalogue
from nlu.routing import policy_for
from nlu.service import InboundMessage, Outcome, Service

INTENTS = (
    "estado_pedido", "factura", "reembolso", "devolucion", "queja", "cancelar_pedido", "hablar_con_humano",
    "saludo", "agradecimiento", "suscribirse", "darse_de_baja", "fuera_de_alcance", "precio_producto",
)


def P(intent: str, confidence: float = 0.95, sentiment: str = "neutral", frustration: float = 0.05, rest: tuple[tuple[str, float], ...] = ()) -> Prediction:
    # Like a real model's, the ranking covers every intent: the mass left after the top
    # intent and ``rest`` is spread over the others.
    named = {intent, *(label for label, _ in rest)}
    others = [i for i in INTENTS if i not in named]
    left = max(0.0, 1 - confidence - sum(p for _, p in rest)) / len(others)
    ranking = ((intent, confidence), *rest, *((i, left) for i in others))
    emotion = "frustracion" if frustration > 0.5 else "neutral"
    return Prediction(intent, confidence, tuple(ranking), sentiment, 0.9, emotion, 0.9, frustration)


SCRIPT: dict[str, Prediction] = {
    "hola": P("saludo"),
    "dónde está mi pedido #A-48213?": P("estado_pedido"),
    "la factura salió con otro nombre": P("factura", sentiment="negativo", frustration=0.2),
    "y el reembolso nunca llegó": P("reembolso", sentiment="negativo", frustration=0.3),
    "llámenme al +52 55 1234 5678, esto ya es demasiado": P("devolucion", sentiment="negativo", frustration=0.3),
    "lo del pago": P("factura", 0.45, rest=(("reembolso", 0.35), ("fuera_de_alcance", 0.15), ("estado_pedido", 0.05))),
    "BAJA": P("darse_de_baja"),
    "hola?": P("saludo"),
    "quiero hablar con un asesor": P("hablar_con_humano"),
    "¿ya me atienden?": P("hablar_con_humano", 0.6),
    "gracias": P("agradecimiento", sentiment="positivo"),
    "ya no quiero nada de ustedes": P("darse_de_baja", 0.8),
    "Darme de baja": P("darse_de_baja", 0.6),
    "si no me responden hoy los voy a demandar": P("queja", 0.7, sentiment="negativo", frustration=0.3),
    "quiero suscribirme a las ofertas": P("suscribirse"),
    "Factura": P("factura", 0.6),
    "Cancelar pedido": P("cancelar_pedido", 0.6),
}


class ScriptedModel:
    """Quacks like Model: ``score`` returns the scripted prediction for a text."""

    heads: dict[str, Any] = {"intent": None, "sentiment": None, "emotion": None}
    name = "scripted"

    def __init__(self, script: dict[str, Prediction]) -> None:
        self.script = script
        self.meta: dict[str, Any] = {}

    def labels(self, head: str) -> list[str]:
        return list(INTENTS)

    def score(self, text: str) -> Prediction:
        return self.script.get(text, P("fuera_de_alcance", 0.9))


POLICY = RoutingPolicy(answer_threshold=0.5, frustration_threshold=0.5)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "nlu.db"


def make_service(db: Path, policy: RoutingPolicy = POLICY, model: Any = None, **options: Any) -> Service:
    db.parent.mkdir(parents=True, exist_ok=True)
    return Service(
        model or ScriptedModel(SCRIPT),
        open_queue(str(db)),
        open_conversations(db, history_turns=policy.history_turns),
        load_catalogue(),
        policy,
        **options,
    )


@pytest.fixture
def service(db: Path) -> Iterator[Service]:
    with make_service(db) as svc:
        yield svc


class Chat:
    """One customer's side of a conversation, numbering message ids."""

    def __init__(self, service: Service, conversation_id: str = "5215512345678", prefix: str = "wamid") -> None:
        self.service, self.conversation_id, self.n, self.prefix = service, conversation_id, 0, prefix

    def say(self, text: str, button_id: str | None = None, message_id: str | None = None) -> Outcome:
        self.n += 1
        return self.service.handle(InboundMessage(self.conversation_id, message_id or f"{self.prefix}.{self.n}", text, button_id))

    def consent(self) -> None:
        first = self.say("hola")
        assert first.reasons == ("no_consent",)
        assert self.say("Sí, acepto", button_id="consent:yes").reasons == ("consent_granted",)


def test_service_asks_consent_before_storing_anything(service: Service) -> None:
    chat = Chat(service)
    first = chat.say("dónde está mi pedido #A-48213?")
    assert first.action == "answer" and first.reasons == ("no_consent",)
    assert first.reply is not None and "asistente virtual" in first.reply.text
    assert [b.id for b in first.reply.buttons] == ["consent:yes", "consent:no"]
    assert first.prediction is None
    view = service.conversations.view(chat.conversation_id)
    assert view.turns == () and view.consent == "unknown"
    granted = chat.say("sí")  # typed, not the button
    assert granted.reasons == ("consent_granted",) and "asistente virtual" not in (granted.reply.text if granted.reply else "")
    answer = chat.say("dónde está mi pedido #A-48213?")
    assert answer.action == "answer" and answer.intent == "estado_pedido"
    assert answer.reply is not None and "tu pedido #A-48213" in answer.reply.text
    assert "asistente virtual" not in answer.reply.text
    assert [t.intent for t in service.conversations.view(chat.conversation_id).turns] == ["estado_pedido"]


def test_service_three_negative_turns_escalate(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    first = chat.say("la factura salió con otro nombre")
    second = chat.say("y el reembolso nunca llegó")
    third = chat.say("llámenme al +52 55 1234 5678, esto ya es demasiado")
    assert (first.action, second.action) == ("answer", "answer")
    assert third.action == "escalate" and third.reasons == ("negative_streak",)
    assert third.reply is not None and third.reply.text.startswith("Te paso con una persona")
    ticket = third.ticket
    assert ticket is not None and ticket.status == "queued" and ticket.reasons == ("negative_streak",)
    assert "1234" not in ticket.text  # the phone number is redacted in the ticket
    assert [t["intent"] for t in ticket.turns] == ["factura", "reembolso", "devolucion"]  # the history, this message last
    assert ticket.turns[-1]["action"] == "escalate" and "1234" not in ticket.turns[-1]["text"]
    assert ticket.priority >= 0.5  # frustration signals go first
    assert service.conversations.view(chat.conversation_id).human_active


def test_service_clarification_answered_by_a_button(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    asked = chat.say("lo del pago")
    assert asked.action == "clarify" and asked.reply is not None and asked.reply.kind == "buttons"
    assert [b.id for b in asked.reply.buttons] == ["intent:factura", "intent:reembolso", "human"]
    chosen = chat.say("Factura", button_id="intent:factura")
    assert chosen.action == "answer" and chosen.intent == "factura" and "button_choice" in chosen.reasons
    assert chosen.reply is not None and chosen.reply.text == load_catalogue().answer("factura").text
    # A chosen intent still goes through routing: a cancellation reaches a person.
    cancel = chat.say("Cancelar pedido", button_id="intent:cancelar_pedido")
    assert cancel.action == "escalate" and "sensitive_intent" in cancel.reasons


@pytest.mark.parametrize(
    ("typed", "intent"),
    [("la segunda", "reembolso"), ("2", "reembolso"), ("opción 1", "factura"), ("el primero porfa", "factura"), ("Reembolso", "reembolso")],
)
def test_service_clarification_answered_by_typing_the_option(db: Path, typed: str, intent: str) -> None:
    # A typed "la segunda" or "2" was scored on its own, as if no question had been asked:
    # the bundled model read "2" as a subscription ("¡Listo! Te suscribimos...") and "la
    # segunda" as a frustrated customer (an escalation).
    readings = {"2": P("suscribirse", 0.63), "la segunda": P("fuera_de_alcance", 0.65, sentiment="negativo", frustration=0.6)}
    with make_service(db, model=ScriptedModel({**SCRIPT, **readings})) as service:
        chat = Chat(service)
        chat.consent()
        chat.say("lo del pago")
        chosen = chat.say(typed)
    assert chosen.action == "answer" and chosen.intent == intent and chosen.reasons == ("button_choice",)
    assert chosen.reply is not None and chosen.reply.text == load_catalogue().answer(intent).text


def test_service_a_typed_place_picks_only_from_the_clarifying_question_just_asked(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    chat.say("lo del pago")
    assert chat.say("3").reasons == ("human_requested",)  # the third button: "Hablar con asesor"
    # Another question answered meanwhile: "2" is a new message again, not the old option.
    other = Chat(service, "5215500000009", prefix="other")
    other.consent()
    other.say("lo del pago")
    other.say("dónde está mi pedido #A-48213?")
    assert other.say("2").intent == "fuera_de_alcance"


def test_service_human_button_escalates(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    chat.say("lo del pago")
    outcome = chat.say("Hablar con asesor", button_id="human")
    assert outcome.action == "escalate" and outcome.reasons == ("human_requested",)


def test_service_a_stale_person_button_after_an_opt_out_asks_for_consent_first(service: Service) -> None:
    # The old "Hablar con asesor" button of a clarifying question, tapped after "BAJA",
    # escalated: a ticket and a turn stored about a customer who had opted out.
    chat = Chat(service)
    chat.consent()
    chat.say("lo del pago")
    chat.say("BAJA")
    tapped = chat.say("Hablar con asesor", button_id="human")
    assert tapped.action == "answer" and tapped.reasons == ("no_consent", "human_requested") and tapped.ticket is None
    assert tapped.reply is not None and [b.id for b in tapped.reply.buttons] == ["consent:yes:human_requested", "consent:no"]
    assert service.queue.depth() == 0
    assert [t.text for t in service.conversations.view(chat.conversation_id).turns] == ["lo del pago"]
    accepted = chat.say("Sí, acepto", button_id="consent:yes:human_requested")
    assert accepted.action == "escalate" and accepted.reasons == ("human_requested",)


def test_service_opt_out_then_silence(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    chat.say("hola")
    bye = chat.say("BAJA")
    assert bye.action == "answer" and bye.reasons == ("opt_out",)
    assert bye.reply is not None and "no te enviaremos más mensajes" in bye.reply.text
    for text in ("hola?", "ok", "BAJA"):
        quiet = chat.say(text)
        assert quiet.action == "silent" and quiet.reply is None and quiet.ticket is None
    # Asking for a person is not ignored: the consent question again (it was silence).
    person = chat.say("quiero hablar con un asesor")
    assert person.action == "answer" and person.reasons == ("no_consent", "human_requested")
    assert person.reply is not None and [b.id for b in person.reply.buttons] == ["consent:yes:human_requested", "consent:no"]
    view = service.conversations.view(chat.conversation_id)
    assert view.consent == "revoked" and [t.intent for t in view.turns] == ["saludo"]
    assert service.queue.depth() == 0
    # Typed, the acceptance answers that question: the request it carries escalates.
    back = chat.say("ACEPTO")
    assert back.action == "escalate" and back.reasons == ("human_requested",)
    assert service.conversations.view(chat.conversation_id).consent == "granted"


def test_service_a_request_for_a_person_before_consent_is_kept_in_the_button_not_the_database(service: Service) -> None:
    # It was dropped: after "Sí, acepto" the bot asked "¿en qué te puedo ayudar?" and the
    # customer had to ask again.
    chat = Chat(service)
    first = chat.say("quiero hablar con un asesor")
    assert first.action == "answer" and first.reasons == ("no_consent", "human_requested")
    assert first.reply is not None and [b.id for b in first.reply.buttons] == ["consent:yes:human_requested", "consent:no"]
    assert service.conversations.view(chat.conversation_id).turns == ()  # nothing stored
    accepted = chat.say("Sí, acepto", button_id="consent:yes:human_requested")
    assert accepted.action == "escalate" and accepted.reasons == ("human_requested",)
    assert accepted.ticket is not None and "antes del consentimiento" in accepted.ticket.text
    view = service.conversations.view(chat.conversation_id)
    assert view.consent == "granted" and view.human_active


@pytest.mark.parametrize("opted_out", [False, True])
def test_service_a_typed_yes_to_the_consent_question_keeps_the_request_for_a_person(service: Service, opted_out: bool) -> None:
    # Typing "sí" instead of tapping "Sí, acepto" dropped the request the button carried
    # ("¿en qué te puedo ayudar?"), and after an opt-out it got no answer at all.
    chat = Chat(service)
    if opted_out:
        chat.consent()
        chat.say("BAJA")
    asked = chat.say("quiero hablar con un asesor")
    assert asked.reasons == ("no_consent", "human_requested")
    yes = chat.say("sí")
    assert yes.action == "escalate" and yes.reasons == ("human_requested",) and yes.ticket is not None
    assert service.conversations.view(chat.conversation_id).consent == "granted"


@pytest.mark.parametrize("typed", ["sí, por favor", "si dale", "ok gracias", "Claro que sí!", "sí acepto", "Acepto, gracias", "vale", "sale pues"])
def test_service_typed_agreement_to_the_consent_question_grants_it(service: Service, typed: str) -> None:
    # Only a few exact words counted: "sí, por favor" got the consent question once more.
    chat = Chat(service)
    chat.say("hola")
    assert chat.say(typed).reasons == ("consent_granted",)


@pytest.mark.parametrize("typed", ["sí pero primero dime el precio", "gracias", "no sé"])
def test_service_typed_text_that_is_not_agreement_does_not_grant_consent(service: Service, typed: str) -> None:
    chat = Chat(service)
    chat.say("hola")
    chat.say(typed)
    assert service.conversations.view(chat.conversation_id).consent != "granted"


def test_service_after_an_opt_out_a_typed_yes_opts_in_only_as_an_answer_to_the_consent_question(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    chat.say("BAJA")
    assert chat.say("sí").action == "silent"  # the last bot message was the opt-out confirmation
    assert service.conversations.view(chat.conversation_id).consent == "revoked"
    assert chat.say("ACEPTO").reasons == ("consent_granted",)  # as the confirmation says


@pytest.mark.parametrize("button_id", ["consent:yes", "consent:yes:human_requested"])
def test_service_the_consent_button_tapped_again_is_confirmed_again(db: Path, button_id: str) -> None:
    # A second tap (or an old consent question's button) was scored as text: the bundled
    # model reads "Sí, acepto" as the opt-in intent at 1.0, so the customer was told
    # "¡Listo! Te suscribimos a nuestras novedades y ofertas", and a third tap escalated
    # as a repeated intent.
    with make_service(db, model=ScriptedModel({**SCRIPT, "Sí, acepto": P("suscribirse", 1.0)})) as service:
        chat = Chat(service)
        chat.consent()
        again = chat.say("Sí, acepto", button_id=button_id)
        assert again.action == "answer" and again.reasons == ("consent_granted",) and again.ticket is None
        assert service.conversations.view(chat.conversation_id).turns == ()


@pytest.mark.parametrize("button_id", ["consent:yes:evil", "consent:yes:", "consent:yes:human_requested+opt_out"])
def test_service_an_unknown_pending_reason_is_a_plain_acceptance(service: Service, button_id: str) -> None:
    chat = Chat(service)
    chat.say("hola")
    accepted = chat.say("Sí, acepto", button_id=button_id)
    assert accepted.action == "answer" and accepted.reasons == ("consent_granted",) and accepted.ticket is None


def test_service_opt_out_intent_alone_asks_first_and_the_button_honours_it(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    asked = chat.say("ya no quiero nada de ustedes")
    assert asked.action == "clarify" and asked.reasons == ("confirm_opt_out",)
    assert asked.reply is not None and [b.id for b in asked.reply.buttons] == ["intent:darse_de_baja", "human"]
    assert service.conversations.view(chat.conversation_id).consent == "granted"  # nothing done yet
    bye = chat.say("Darme de baja", button_id="intent:darse_de_baja")
    assert bye.action == "answer" and bye.reasons == ("opt_out", "button_choice")
    assert service.conversations.view(chat.conversation_id).consent == "revoked"


@pytest.mark.parametrize("leave", ["BAJA", "decline"])
def test_service_a_bare_yes_after_leaving_does_not_subscribe_again(db: Path, leave: str) -> None:
    # The bundled model reads "sí" as the opt-in intent (0.85): "BAJA" -> "Listo, te dimos
    # de baja", then "sí" -> "¡Listo! Te suscribimos a nuestras novedades", consent granted.
    script = {**SCRIPT, "sí": P("suscribirse", 0.85), "sí, por favor": P("suscribirse", 0.9), "ok gracias": P("suscribirse", 0.8)}
    with make_service(db, model=ScriptedModel(script)) as service:
        chat = Chat(service)
        if leave == "BAJA":
            chat.consent()
            chat.say("BAJA")
        else:
            chat.say("hola")
            chat.say("No", button_id="consent:no")
        for yes_text in ("sí", "sí, por favor", "ok gracias"):
            yes = chat.say(yes_text)
            assert yes.action == "silent" and yes.reply is None
            assert service.conversations.view(chat.conversation_id).consent == "revoked"


def test_service_opt_in_after_opt_out(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    chat.say("BAJA")
    outcome = chat.say("quiero suscribirme a las ofertas")
    assert outcome.action == "answer" and outcome.reasons == ("opt_in",) and outcome.intent == "suscribirse"
    assert service.conversations.view(chat.conversation_id).consent == "granted"


def test_service_retried_message_is_answered_once(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    first = chat.say("quiero hablar con un asesor", message_id="wamid.X")
    again = chat.say("quiero hablar con un asesor", message_id="wamid.X")
    assert first.action == again.action == "escalate" and not first.duplicate and again.duplicate
    assert again.reply == first.reply and again.reasons == first.reasons and again.prediction == first.prediction
    assert first.ticket is not None and again.ticket is not None and again.ticket.id == first.ticket.id
    assert len(service.queue.list()) == 1
    answered = chat.say("gracias", message_id="wamid.Y")  # held by a person: handover
    repeat = chat.say("gracias", message_id="wamid.Y")
    assert repeat.duplicate and repeat.action == answered.action == "handover"
    assert len(service.conversations.view(chat.conversation_id).turns) == 2


def test_service_racing_duplicate_creates_no_ticket(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two deliveries of one message at once: the second checks for a stored outcome just
    # before the first one saves, then reads the conversation just after, so it sees its
    # own message's turn. Scored again, that turn makes it look repeated (an escalation).
    chat = Chat(service)
    chat.consent()
    first = chat.say("dónde está mi pedido #A-48213?", message_id="wamid.R")
    assert first.action == "answer"
    real_outcome = service.conversations.outcome
    calls = []

    def first_call_misses(*args: Any) -> dict[str, Any] | None:
        calls.append(args)
        return None if len(calls) == 1 else real_outcome(*args)

    monkeypatch.setattr(service.conversations, "outcome", first_call_misses)
    again = chat.say("dónde está mi pedido #A-48213?", message_id="wamid.R")
    assert again.duplicate and again.action == "answer" and again.reply == first.reply
    assert service.queue.list() == []
    assert not service.conversations.view(chat.conversation_id).human_active


def test_service_refuses_a_message_id_of_another_conversation(service: Service) -> None:
    ana, beto = Chat(service, "5215500000001"), Chat(service, "5215500000002")
    beto.n = 100  # each chat numbers its own message ids: keep them apart
    ana.consent()
    beto.consent()
    escalated = ana.say("quiero hablar con un asesor", message_id="wamid.M")
    assert escalated.action == "escalate"
    with pytest.raises(MessageConflict, match="'wamid.M' was already used in another conversation") as info:
        beto.say("dónde está mi pedido #A-48213?", message_id="wamid.M")
    assert ana.conversation_id not in str(info.value)  # nothing of the other customer leaks
    assert len(service.queue.list()) == 1
    assert [t.message_id for t in service.conversations.view(beto.conversation_id).turns] == []


def test_service_compares_ids_exactly(service: Service) -> None:
    # Ids are opaque: " wamid.X" is another message than "wamid.X", everywhere.
    chat = Chat(service, " 5215512345678 ")
    chat.consent()
    first = chat.say("quiero hablar con un asesor", message_id="wamid.X")
    assert first.ticket is not None and first.ticket.conversation_id == " 5215512345678 "
    service.queue.claim("ana")
    service.queue.resolve(first.ticket.id, "ana")
    assert chat.say("gracias").action == "answer"
    again = chat.say("quiero hablar con un asesor", message_id=" wamid.X")
    assert not again.duplicate and again.action == "escalate"
    assert again.ticket is not None and again.ticket.id != first.ticket.id and again.ticket.status == "queued"


def test_service_retry_survives_restart(db: Path) -> None:
    with make_service(db) as svc:
        chat = Chat(svc)
        chat.consent()
        first = chat.say("dónde está mi pedido #A-48213?", message_id="wamid.R")
    with make_service(db) as svc:
        again = svc.handle(InboundMessage(chat.conversation_id, "wamid.R", "dónde está mi pedido #A-48213?"))
    assert again.duplicate and again.reply == first.reply and again.action == "answer"


def test_service_quiet_while_a_person_holds_the_conversation(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    escalated = chat.say("quiero hablar con un asesor")
    assert escalated.ticket is not None
    for text in ("¿ya me atienden?", "hola"):
        held = chat.say(text)
        assert held.action == "handover" and held.reply is None
        assert held.ticket is not None and held.ticket.id == escalated.ticket.id
    claimed = service.queue.claim("ana")
    assert claimed is not None and claimed.id == escalated.ticket.id
    assert chat.say("gracias").action == "handover"  # claimed is still held
    service.queue.resolve(claimed.id, "ana", "resuelto por teléfono")
    back = chat.say("hola")
    assert back.action == "answer" and back.intent == "saludo"
    view = service.conversations.view(chat.conversation_id)
    assert not view.human_active and [t.message_id for t in view.turns] == [f"wamid.{chat.n}"]


def test_service_messages_sent_while_held_reach_the_agents_ticket(service: Service) -> None:
    # They were recorded only in the conversation store, which no agent sees, and a new
    # legal threat did not move the ticket up the queue.
    chat = Chat(service)
    chat.consent()
    escalated = chat.say("quiero hablar con un asesor")
    assert escalated.ticket is not None
    before = escalated.ticket.priority
    service.queue.claim("ana")
    held = chat.say("si no me responden hoy los voy a demandar")
    assert held.action == "handover" and held.reply is None
    ticket = service.queue.get(escalated.ticket.id)
    assert [t["text"] for t in ticket.turns][-2:] == ["quiero hablar con un asesor", "si no me responden hoy los voy a demandar"]
    assert ticket.turns[-1]["reasons"][:2] == ["human_active", "legal_threat"]
    assert "legal_threat" in ticket.reasons and ticket.priority > before + 3  # legal threats go first
    assert (ticket.status, ticket.agent) == ("claimed", "ana")
    chat.say("si no me responden hoy los voy a demandar", message_id=f"wamid.{chat.n}")  # a redelivery
    assert len(service.queue.get(ticket.id).turns) == len(ticket.turns)


def test_service_tickets_keep_the_business_number_each_message_was_sent_to(service: Service) -> None:
    # An agent's message must go from the number the customer last wrote to: the ticket's
    # turns are what an agent's send reads, so each customer turn names its number.
    chat = Chat(service)
    chat.consent()
    escalated = service.handle(InboundMessage(chat.conversation_id, "wamid.e", "quiero hablar con un asesor", phone_number_id="209876543210987"))
    assert escalated.action == "escalate" and escalated.ticket is not None
    held = service.handle(InboundMessage(chat.conversation_id, "wamid.h", "¿ya me atienden?", phone_number_id="106540352242922"))
    assert held.action == "handover"
    chat.say("hola")  # /v1/messages names no number
    turns = service.queue.get(escalated.ticket.id).turns
    assert [(t["message_id"], t.get("phone_number_id")) for t in turns][-3:] == [
        ("wamid.e", "209876543210987"), ("wamid.h", "106540352242922"), (f"wamid.{chat.n}", None),
    ]
    with pytest.raises(InputError, match="phone_number_id"):
        InboundMessage(chat.conversation_id, "wamid.x", "hola", phone_number_id=" ")


def test_service_ticket_turns_carry_the_time_of_each_customer_message(db: Path) -> None:
    # The message that escalated and those that joined the ticket were stored with
    # created_at 0.0: nothing said when the customer last wrote, which WhatsApp's 24-hour
    # customer-service window counts from.
    now = [dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)]
    with make_service(db, clock=lambda: now[0]) as service:
        chat = Chat(service)
        chat.consent()
        escalated = chat.say("quiero hablar con un asesor").ticket
        assert escalated is not None
        wrote = now[0].timestamp()
        assert escalated.turns[-1]["created_at"] == wrote and escalated.window_closes_at == wrote + 86_400
        now[0] += dt.timedelta(hours=3)
        assert chat.say("¿ya me atienden?").action == "handover"
        ticket = service.queue.get(escalated.id)
        assert [t["created_at"] for t in ticket.turns][-2:] == [wrote, wrote + 3 * 3600]
        assert ticket.window_closes_at == wrote + 3 * 3600 + 86_400


def test_service_reescalation_shows_the_turns_before_the_last_handover(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    chat.say("dónde está mi pedido #A-48213?")
    first = chat.say("quiero hablar con un asesor")
    assert first.ticket is not None
    chat.say("¿ya me atienden?")  # while held
    service.queue.claim("ana")
    service.queue.resolve(first.ticket.id, "ana")
    chat.say("hola")  # back to the bot
    second = chat.say("quiero hablar con un asesor")
    assert second.ticket is not None and second.ticket.id != first.ticket.id
    texts = [t["text"] for t in second.ticket.turns]
    assert texts[-3:] == ["¿ya me atienden?", "hola", "quiero hablar con un asesor"]
    assert "dónde está mi pedido #A-48213?" in texts
    # ...while routing streaks still start after the handover
    assert [t.text for t in service.conversations.view(chat.conversation_id).turns] == ["hola", "quiero hablar con un asesor"]


def _race(services: tuple[Service, Service], conversation: str, texts: tuple[str, str]) -> dict[str, Outcome]:
    """Both services handle one message of ``conversation`` at the same moment."""
    import threading

    start = threading.Barrier(2)
    outcomes: dict[str, Outcome] = {}

    def say(svc: Service, message_id: str, text: str) -> None:
        start.wait()
        outcomes[message_id] = svc.handle(InboundMessage(conversation, message_id, text))

    threads = [threading.Thread(target=say, args=(svc, f"{conversation}-{i}", text)) for i, (svc, text) in enumerate(zip(services, texts, strict=True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_service_two_workers_escalating_one_conversation_at_once_make_one_ticket(db: Path) -> None:
    a, b = make_service(db), make_service(db)
    try:
        for k in range(10):
            conversation = f"race-{k}"
            Chat(a, conversation, prefix=conversation).consent()
            outcomes = _race((a, b), conversation, ("quiero hablar con un asesor", "si no me responden hoy los voy a demandar"))
            tickets = [t for t in a.queue.list(limit=500) if t.conversation_id == conversation]
            assert len(tickets) == 1, k
            assert {t["message_id"] for t in tickets[0].turns} >= set(outcomes)
            # One of the two told the customer; the other joined quietly.
            assert sorted(o.action for o in outcomes.values()) == ["escalate", "handover"]
    finally:
        a.close()
        b.close()


def test_service_a_calm_legal_threat_goes_before_the_angriest_customer(service: Service) -> None:
    calm = service._priority(P("queja", frustration=0.0), ("legal_threat",))
    angriest = service._priority(
        P("queja", frustration=1.0),
        ("insult", "shouting", "frustration", "negative_streak", "sensitive_intent", "repeated_intent", "repeated_low_confidence"),
    )
    assert calm > angriest


def test_service_discloses_once_without_consent_requirement(db: Path) -> None:
    with make_service(db, dataclasses.replace(POLICY, require_consent=False)) as svc:
        chat = Chat(svc)
        first = chat.say("hola")
        second = chat.say("dónde está mi pedido #A-48213?")
    assert first.action == "answer" and first.reply is not None and "asistente virtual" in first.reply.text
    assert second.reply is not None and "asistente virtual" not in second.reply.text


def test_service_outcome_is_json(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    outcome = chat.say("quiero hablar con un asesor")
    data = json.loads(json.dumps(outcome.to_dict(), ensure_ascii=False))
    assert data["action"] == "escalate" and data["ticket"]["status"] == "queued"
    assert data["prediction"]["intent"] == "hablar_con_humano" and data["reply"]["kind"] == "text"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"conversation_id": "c", "message_id": "m"}, "missing field"),
        ({"conversation_id": "", "message_id": "m", "text": "hola"}, "conversation_id must be a non-empty string"),
        ({"conversation_id": "c", "message_id": "m", "text": 3}, "text must be a string"),
        ({"conversation_id": "c", "message_id": "m", "text": "  "}, "text is empty"),
        ({"conversation_id": "c", "message_id": "m", "text": "x" * 5000}, "longer than 4096"),
        ({"conversation_id": "c", "message_id": "m", "text": "hola", "extra": 1}, "unknown field"),
    ],
)
def test_service_rejects_bad_messages(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        InboundMessage.from_dict(raw)


# -- the real tiny model --------------------------------------------------------------


def test_service_with_the_tiny_model(db: Path, tiny_model: Model) -> None:
    policy = dataclasses.replace(RoutingPolicy(), require_consent=False, sensitive_intents=(), out_of_scope_intent=None)
    catalogue = load_catalogue(intents=tiny_model.labels("intent"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with Service(tiny_model, open_queue(str(db)), open_conversations(db), catalogue, policy) as svc:
        greeting = svc.handle(InboundMessage("c1", "m1", "hola buenas tardes"))
        person = svc.handle(InboundMessage("c1", "m2", "pásame con alguien, porfa"))
    assert greeting.action == "answer" and greeting.intent == "saludo"
    assert person.action == "escalate" and person.reasons == ("human_requested",)
    assert person.prediction is not None and person.prediction.intent in tiny_model.labels("intent")


def test_service_from_paths_policy_sources(tmp_path: Path, tiny_model_dir: Path, tiny_model: Model) -> None:
    # The tiny model records the default policy in meta.json.
    assert tiny_model.meta["routing"]["answer_threshold"] == RoutingPolicy().answer_threshold
    assert policy_for(tiny_model) == RoutingPolicy()
    config = tmp_path / "nlu.toml"
    config.write_text("[routing]\nanswer_threshold = 0.8\nrequire_consent = false\n")
    db = tmp_path / "state" / "nlu.db"
    with Service.from_paths(tiny_model_dir, db=db, config=config) as svc:
        assert svc.policy.answer_threshold == 0.8 and not svc.policy.require_consent
        assert svc.handle(InboundMessage("c1", "m1", "hola buenas tardes")).intent == "saludo"
    no_routing = tmp_path / "train_only.toml"
    no_routing.write_text("[train]\ncv = 3\n")
    with Service.from_paths(tiny_model_dir, db=db, config=no_routing) as svc:
        assert svc.policy == RoutingPolicy()  # from meta.json
    assert db.exists()


def test_service_refuses_a_catalogue_missing_model_intents(db: Path) -> None:
    from nlu import ConfigError

    model = ScriptedModel(SCRIPT)
    model.labels = lambda head: [*INTENTS, "pedir_pizza"]  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="no answer for pedir_pizza"):
        make_service(db, model=model)


def test_service_cli_train_records_the_routing_policy(tmp_path: Path, tiny_csv: Path) -> None:
    from typer.testing import CliRunner

    from nlu.cli import app

    config = tmp_path / "nlu.toml"
    config.write_text("[train]\ncv = 3\nchar_min_df = 1\n[routing]\nanswer_threshold = 0.7\n")
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", str(tiny_csv), "--out", str(out), "--config", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["routing"]["answer_threshold"] == 0.7
    with Service.from_paths(out, db=tmp_path / "nlu.db") as svc:
        assert svc.policy.answer_threshold == 0.7  # no config given: the model's policy


def test_policy_for_refuses_a_bad_routing_of_a_model_built_in_code(tiny_model: Model) -> None:
    # load_model refuses such a meta.json; a Model built in code gets the same check here
    # instead of a silent fall back to the defaults.
    import copy

    model = copy.copy(tiny_model)
    model.meta = {**tiny_model.meta, "routing": [1]}
    with pytest.raises(ConfigError, match=r"model '.*' meta routing: expected a table, got list"):
        policy_for(model)


# -- what the bot cannot read: voice notes, stickers, photos without a caption -----------


def unreadable(chat: Chat, media: str = "audio") -> Outcome:
    chat.n += 1
    return chat.service.handle(InboundMessage(chat.conversation_id, f"{chat.prefix}.{chat.n}", "", media=media))


def test_service_a_voice_note_gets_a_request_for_text(service: Service) -> None:
    # It was acknowledged and ignored: the customer who sent a voice note heard nothing.
    chat = Chat(service)
    chat.consent()
    outcome = unreadable(chat)
    assert outcome.action == "answer" and outcome.reasons == ("unreadable",) and outcome.prediction is None
    assert outcome.reply is not None and "texto" in outcome.reply.text
    assert service.conversations.view(chat.conversation_id).turns == ()  # nothing to route on
    again = service.handle(InboundMessage(chat.conversation_id, f"{chat.prefix}.{chat.n}", "", media="audio"))
    assert again.duplicate and again.reply == outcome.reply  # a redelivery is not answered twice


def test_service_unreadable_first_message_asks_for_consent_and_after_an_opt_out_is_silent(service: Service) -> None:
    chat = Chat(service)
    first = unreadable(chat, "sticker")
    assert first.reasons == ("no_consent",) and first.reply is not None and [b.id for b in first.reply.buttons] == ["consent:yes", "consent:no"]
    assert chat.say("Sí, acepto", button_id="consent:yes").reasons == ("consent_granted",)
    chat.say("BAJA")
    assert unreadable(chat).action == "silent"


def test_service_unreadable_message_during_a_handover_joins_the_ticket(service: Service) -> None:
    chat = Chat(service)
    chat.consent()
    ticket = chat.say("quiero hablar con una persona").ticket
    assert ticket is not None
    outcome = unreadable(chat, "image")
    assert outcome.action == "handover" and outcome.reply is None
    turns = service.queue.get(ticket.id).turns
    assert turns[-1]["text"] == "[image]" and turns[-1]["action"] == "handover"  # the agent knows one came


def test_service_without_the_unreadable_message_the_bot_stays_quiet(db: Path, tmp_path: Path) -> None:
    # A catalogue written before the message existed still loads, and keeps the old behaviour.
    source = Path(__file__).resolve().parent.parent / "data" / "responses_es.yaml"
    text = source.read_text(encoding="utf-8")
    start = text.index("  unreadable:")
    end = text.index("\n  ", start + 3)
    old = tmp_path / "responses.yaml"
    old.write_text(text[:start] + text[end + 1 :], encoding="utf-8")
    service = Service(ScriptedModel(SCRIPT), open_queue(str(db)), open_conversations(db), load_catalogue(old), POLICY)
    with service:
        chat = Chat(service)
        chat.consent()
        outcome = unreadable(chat)
        assert outcome.action == "silent" and outcome.reasons == ("unreadable",)


@pytest.mark.parametrize("media", ["", " ", "x" * 33, 7])
def test_service_inbound_message_media_is_a_short_name(media: Any) -> None:
    with pytest.raises(InputError, match="media"):
        InboundMessage("c", "m", "", media=media)


def test_service_no_after_consent_was_given_is_an_opt_out_not_a_promise_to_keep_nothing(service: Service) -> None:
    # An old consent question's "No" tapped after consenting answered "no guardaremos nada
    # de esta conversación", while the turns since consent stay stored until the purge.
    chat = Chat(service)
    chat.consent()
    chat.say("dónde está mi pedido #A-48213?")
    declined = chat.say("No", button_id="consent:no")
    assert declined.reasons == ("opt_out",) and declined.reply is not None
    assert "no guardaremos nada" not in declined.reply.text and "te dimos de baja" in declined.reply.text
    assert service.conversations.view(chat.conversation_id).consent == "revoked"
    first = Chat(service, conversation_id="5215500000000", prefix="other")
    first.say("hola")
    assert first.say("No", button_id="consent:no").reasons == ("consent_declined",)  # nothing was stored: true


# -- a bare "sí" / "ok" that answers no question the bot asked ---------------------------


def test_service_a_bare_ok_is_acknowledged_not_scored(db: Path) -> None:
    # With the bundled model "sí" after an answer got "¡Listo! Te suscribimos a nuestras
    # novedades" (and nothing was subscribed), and "ok" escalated as low confidence: an
    # agent's time for an acknowledgement.
    script = {**SCRIPT, "sí": P("suscribirse", 0.85), "ok": P("despedida", 0.3), "dale, gracias": P("suscribirse", 0.6)}
    with make_service(db, model=ScriptedModel(script)) as service:
        chat = Chat(service)
        chat.consent()
        for text in ("sí", "ok", "dale, gracias"):
            outcome = chat.say(text)
            assert outcome.action == "answer" and outcome.reasons == ("acknowledged",), text
            assert outcome.reply is not None and outcome.reply.text == load_catalogue().system["acknowledged"].text
        view = service.conversations.view(chat.conversation_id)
        assert view.turns == () and view.consent == "granted" and not view.human_active



@pytest.mark.parametrize(("text", "acknowledged"), [
    *((text, True) for text in ("ya", "ya po", "Yaaa", "ya pe", "ya, gracias", "ah ya", "ya veo", "ya entendí", "listo ya", "ok ya", "entendido")),
    # "¡Ya!!" is "now!", "¿ya?" asks whether it is done, the others say more: scored.
    *((text, False) for text in ("ya!!", "YA!!!", "¿ya?", "ya me llegó", "ya van tres días", "ya basta")),
])
def test_service_a_bare_ya_is_acknowledged_not_read_as_frustration(db: Path, text: str, acknowledged: bool) -> None:
    # "ya" is "ok" in Chile, Peru and Mexico; the bundled model read it as frustration
    # (0.98) and handed the customer to a person.
    script = {**SCRIPT, text: P("estado_pedido", 0.99, sentiment="negativo", frustration=0.98)}
    with make_service(db, model=ScriptedModel(script)) as service:
        chat = Chat(service)
        chat.consent()
        outcome = chat.say(text)
    assert (outcome.action, outcome.reasons) == (("answer", ("acknowledged",)) if acknowledged else ("escalate", ("frustration",)))


def test_service_a_typed_yes_to_the_opt_out_confirmation_is_its_button(db: Path) -> None:
    # "ya no quiero nada de ustedes" -> "¿Darme de baja?" -> "sí" was scored: the bundled
    # model reads "sí" as a subscription, so the answer was "¡Listo! Te suscribimos".
    with make_service(db, model=ScriptedModel({**SCRIPT, "sí": P("suscribirse", 0.85)})) as service:
        chat = Chat(service)
        chat.consent()
        assert chat.say("ya no quiero nada de ustedes").reasons == ("confirm_opt_out",)
        bye = chat.say("sí")
        assert bye.reasons == ("opt_out", "button_choice")
        assert service.conversations.view(chat.conversation_id).consent == "revoked"


@pytest.mark.parametrize(("text", "yes"), [
    *((text, True) for text in ("ya", "ah ya", "ya po", "sí", "ok")),
    # "I see" / "I understand" acknowledge what was said; they do not agree to it.
    *((text, False) for text in ("ya veo", "entiendo", "entendido", "ya entendí")),
])
def test_service_understanding_is_no_yes_to_the_consent_question_or_the_opt_out_one(db: Path, text: str, yes: bool) -> None:
    # "ya veo" answered "Para ayudarte necesito guardar esta conversación... ¿Aceptas?" as
    # its "Sí, acepto", and "¿Darme de baja?" as its button; after an answer it is still an
    # acknowledgement.
    with make_service(db, model=ScriptedModel({**SCRIPT, text: P("fuera_de_alcance", 0.3)})) as service:
        first = Chat(service)
        first.say("hola")
        assert (first.say(text).reasons == ("consent_granted",)) is yes
        assert (service.conversations.view(first.conversation_id).consent == "granted") is yes
        other = Chat(service, conversation_id="5215500000001", prefix="other")
        other.consent()
        assert other.say("ya no quiero nada de ustedes").reasons == ("confirm_opt_out",)
        assert ("opt_out" in other.say(text).reasons) is yes
        assert (service.conversations.view(other.conversation_id).consent == "revoked") is yes
        acked = Chat(service, conversation_id="5215500000002", prefix="acked")
        acked.consent()
        acked.say("dónde está mi pedido #A-48213?")
        assert acked.say(text).reasons == ("acknowledged",)


@pytest.mark.parametrize("text", ["¿ya?", "ya?", "¿sí?", "¿ok?"])
def test_service_a_question_is_no_yes_to_the_consent_question_or_the_opt_out_one(db: Path, text: str) -> None:
    # "¿ya?" asks whether it is done ("¿ya?" is still scored, said ae9b2bf), yet typed after
    # "¿Aceptas?" it recorded consent, and after "¿Darme de baja?" it opted the customer out.
    with make_service(db, model=ScriptedModel({**SCRIPT, text: P("fuera_de_alcance", 0.3)})) as service:
        first = Chat(service)
        first.say("hola")
        assert first.say(text).reasons != ("consent_granted",)
        assert service.conversations.view(first.conversation_id).consent == "unknown"
        other = Chat(service, conversation_id="5215500000001", prefix="other")
        other.consent()
        assert other.say("ya no quiero nada de ustedes").reasons == ("confirm_opt_out",)
        assert "opt_out" not in other.say(text).reasons
        assert service.conversations.view(other.conversation_id).consent == "granted"


def test_service_a_bare_yes_right_after_a_clarifying_question_is_not_acknowledged(db: Path) -> None:
    with make_service(db, model=ScriptedModel({**SCRIPT, "sí": P("factura", 0.3)})) as service:
        chat = Chat(service)
        chat.consent()
        assert chat.say("lo del pago").action == "clarify"
        assert chat.say("sí").reasons != ("acknowledged",)


def test_service_acknowledgement_follows_the_last_bot_message_not_old_options(db: Path) -> None:
    # A clarify, then a sticker (answered), then "sí": the options of the old question
    # were still pending, so "sí" was scored ("Te suscribimos").
    with make_service(db, model=ScriptedModel({**SCRIPT, "sí": P("suscribirse", 0.85)})) as service:
        chat = Chat(service)
        chat.consent()
        assert chat.say("lo del pago").action == "clarify"
        assert unreadable(chat, "sticker").reasons == ("unreadable",)
        assert chat.say("sí").reasons == ("acknowledged",)


@pytest.mark.parametrize("text", ["¿listo?", "¿sí?", "¿Bueno?", "ok?"])
def test_service_a_one_word_question_is_not_acknowledged(db: Path, text: str) -> None:
    # "¿listo?" asks whether it is done, "¿Bueno?" is a Mexican "hello?": "¡Perfecto!" answers neither.
    with make_service(db, model=ScriptedModel({**SCRIPT, text: P("despedida", 0.3)})) as service:
        chat = Chat(service)
        chat.consent()
        assert chat.say(text).reasons != ("acknowledged",)


# -- an opt-out while a person holds the conversation ----------------------------------------


def held_by_ana(service: Service) -> tuple[Chat, int]:
    """A consenting customer whose conversation ana holds (claimed ticket)."""
    chat = Chat(service)
    chat.consent()
    escalated = chat.say("quiero hablar con un asesor")
    assert escalated.ticket is not None
    claimed = service.queue.claim("ana")
    assert claimed is not None and claimed.id == escalated.ticket.id
    return chat, claimed.id


@pytest.mark.parametrize(("text", "button_id", "reasons"), [
    ("BAJA", None, ("opt_out",)),
    ("no me escriban más", None, ("opt_out",)),
    ("Darme de baja", "intent:darse_de_baja", ("opt_out", "button_choice")),
])
def test_service_an_opt_out_during_a_handover_is_honoured_and_the_agent_sees_it(
    service: Service, text: str, button_id: str | None, reasons: tuple[str, ...]
) -> None:
    # It joined the ticket as one more message: consent stayed granted, nothing confirmed
    # the opt-out, and the agent could go on writing to someone who asked not to be.
    chat, ticket_id = held_by_ana(service)
    bye = chat.say(text, button_id=button_id)
    assert bye.action == "answer" and bye.reasons == reasons
    assert bye.reply is not None and "no te enviaremos más mensajes" in bye.reply.text
    assert bye.ticket is not None and bye.ticket.id == ticket_id
    view = service.conversations.view(chat.conversation_id)
    assert view.consent == "revoked"
    assert text not in [t.text for t in service.conversations.history(chat.conversation_id)]  # not kept, as outside a handover
    # The agent sees it: the message is on the ticket, which stays open (with the case) for them to close.
    ticket = service.queue.get(ticket_id)
    assert (ticket.status, ticket.agent) == ("claimed", "ana") and "opt_out" in ticket.reasons
    assert ticket.turns[-1]["text"] == text and ticket.turns[-1]["reasons"] == ["human_active", "opt_out"]
    # From then on the opt-out rules apply, not the handover: silence, nothing stored or added.
    quiet = chat.say("hola?")
    assert quiet.action == "silent" and quiet.reply is None
    assert len(service.queue.get(ticket_id).turns) == len(ticket.turns)


def test_service_opting_in_again_during_a_handover_hands_the_conversation_back_to_the_agent(service: Service) -> None:
    chat, ticket_id = held_by_ana(service)
    chat.say("BAJA")
    back = chat.say("ACEPTO")
    assert back.action == "answer" and back.reasons == ("consent_granted",)
    assert service.conversations.view(chat.conversation_id).consent == "granted"
    ticket = service.queue.get(ticket_id)
    assert ticket.turns[-1]["text"] == "ACEPTO" and ticket.turns[-1]["reasons"] == ["human_active", "consent_granted"]
    held = chat.say("¿ya me atienden?")
    assert held.action == "handover" and held.ticket is not None and held.ticket.id == ticket_id


def test_service_asking_for_a_person_after_an_opt_out_during_a_handover_rejoins_the_open_ticket(service: Service) -> None:
    chat, ticket_id = held_by_ana(service)
    chat.say("BAJA")
    asked = chat.say("quiero hablar con un asesor")
    assert asked.reasons == ("no_consent", "human_requested") and asked.ticket is None
    accepted = chat.say("Sí, acepto", button_id="consent:yes:human_requested")
    # The customer is told a person has it (the open ticket), and no second ticket is made.
    assert accepted.action == "escalate" and accepted.reply is not None and accepted.ticket is not None
    assert accepted.ticket.id == ticket_id and service.queue.depth() == 0
    assert service.conversations.view(chat.conversation_id).consent == "granted"


def test_service_an_opt_out_during_a_handover_refuses_the_agents_messages(service: Service) -> None:
    from http_kit import RecordingSender

    from nlu.errors import OptedOut
    from nlu.handover import send_agent_message

    chat, ticket_id = held_by_ana(service)
    sender = RecordingSender()
    send_agent_message(service.queue, sender, ticket_id, "ana", "Hola, soy Ana", conversations=service.conversations)
    chat.say("BAJA")
    with pytest.raises(OptedOut, match=f"ticket {ticket_id}: the customer opted out"):
        send_agent_message(service.queue, sender, ticket_id, "ana", "¿Sigues ahí?", "m2", conversations=service.conversations)
    assert len(sender.sent) == 1 and "m2" not in [t.get("message_id") for t in service.queue.get(ticket_id).turns]
    chat.say("ACEPTO")  # back in: the agent may write again
    sent = send_agent_message(service.queue, sender, ticket_id, "ana", "¿Sigues ahí?", "m2", conversations=service.conversations)
    assert not sent.duplicate and len(sender.sent) == 2
    assert service.queue.resolve(ticket_id, "ana").status == "resolved"


def test_service_the_agent_can_close_the_ticket_of_a_customer_who_opted_out(service: Service) -> None:
    chat, ticket_id = held_by_ana(service)
    chat.say("BAJA")
    assert service.queue.resolve(ticket_id, "ana", "se dio de baja", intent="darse_de_baja").status == "resolved"
    after = chat.say("hola?")  # the bot has the conversation back, and the customer is still out
    assert after.action == "silent" and not service.conversations.view(chat.conversation_id).human_active


# -- opting out without the consent requirement -----------------------------------------
# With require_consent = false the bot goes on answering what the customer writes after
# "BAJA" (it is the customer writing first); the opt-out stops messages nobody asked for.


@pytest.fixture
def open_service(db: Path) -> Iterator[Service]:
    with make_service(db, dataclasses.replace(POLICY, require_consent=False)) as svc:
        yield svc


@pytest.mark.parametrize(("text", "reasons"), [("ACEPTO", ("consent_granted",)), ("quiero suscribirme a las ofertas", ("opt_in",))])
def test_service_without_consent_mode_an_opt_out_can_be_undone(open_service: Service, text: str, reasons: tuple[str, ...]) -> None:
    # The confirmation says "Si quieres volver, escribe ACEPTO": it was read as just another
    # message, and "quiero suscribirme" answered "Te suscribimos" while the customer stayed out.
    chat = Chat(open_service)
    chat.say("hola")
    assert chat.say("BAJA").reasons == ("opt_out",)
    back = chat.say(text)
    assert back.action == "answer" and back.reasons == reasons
    assert open_service.conversations.view(chat.conversation_id).consent == "granted"


@pytest.mark.parametrize("text", ["ok gracias", "sí", "ya"])
def test_service_without_consent_mode_a_bare_ok_after_an_opt_out_is_acknowledged(db: Path, text: str) -> None:
    # "BAJA" -> "Listo, te dimos de baja" -> "ok gracias" was scored: the bundled model reads
    # it as a subscription, so the customer was told "¡Listo! Te suscribimos" while the
    # opt-out stood (and a second "sí" escalated as a repeated intent).
    script = {**SCRIPT, text: P("suscribirse", 0.85)}
    with make_service(db, dataclasses.replace(POLICY, require_consent=False), model=ScriptedModel(script)) as service:
        chat = Chat(service)
        chat.say("hola")
        assert chat.say("BAJA").reasons == ("opt_out",)
        for _ in range(2):
            outcome = chat.say(text)
            assert (outcome.action, outcome.reasons) == ("answer", ("acknowledged",))
            assert outcome.reply is not None and "suscrib" not in outcome.reply.text
        assert service.conversations.view(chat.conversation_id).consent == "revoked"


def test_service_without_consent_mode_subscribing_is_recorded(open_service: Service) -> None:
    chat = Chat(open_service)
    outcome = chat.say("quiero suscribirme a las ofertas")
    assert outcome.reasons == ("opt_in",) and outcome.reply is not None and "Te suscribimos" in outcome.reply.text
    assert open_service.conversations.view(chat.conversation_id).consent == "granted"


def test_service_without_consent_mode_the_agent_answers_a_customer_who_asked_for_a_person_after_opting_out(open_service: Service) -> None:
    # The bot told them "Te responderá aquí mismo", and the agent was refused with 409 for good.
    from http_kit import RecordingSender

    from nlu.handover import send_agent_message

    chat = Chat(open_service)
    chat.say("hola")
    chat.say("BAJA")
    asked = chat.say("quiero hablar con un asesor")
    assert asked.action == "escalate" and asked.ticket is not None
    ticket = open_service.queue.claim("ana")
    assert ticket is not None
    sender = RecordingSender()
    sent = send_agent_message(open_service.queue, sender, ticket.id, "ana", "Hola, soy Ana", conversations=open_service.conversations)
    assert not sent.duplicate and len(sender.sent) == 1
    # Writing to an agent is no opt-in to anything else: the opt-out stands.
    assert open_service.conversations.view(chat.conversation_id).consent == "revoked"


def test_service_without_consent_mode_an_opt_out_during_a_handover_pauses_the_agent_until_the_customer_writes(open_service: Service) -> None:
    from http_kit import RecordingSender

    from nlu.errors import OptedOut
    from nlu.handover import send_agent_message

    chat = Chat(open_service)
    chat.say("quiero hablar con un asesor")
    claimed = open_service.queue.claim("ana")
    assert claimed is not None
    bye = chat.say("BAJA")
    assert bye.reasons == ("opt_out",) and bye.ticket is not None and bye.ticket.id == claimed.id
    sender = RecordingSender()
    with pytest.raises(OptedOut):
        send_agent_message(open_service.queue, sender, claimed.id, "ana", "¿Sigues ahí?", "m1", conversations=open_service.conversations)
    # The bot answered messages after the opt-out while a person held the conversation,
    # and they never reached the agent.
    again = chat.say("y el reembolso nunca llegó")
    assert again.action == "handover" and again.reply is None and again.ticket is not None and again.ticket.id == claimed.id
    assert open_service.queue.get(claimed.id).turns[-1]["text"] == "y el reembolso nunca llegó"
    sent = send_agent_message(open_service.queue, sender, claimed.id, "ana", "¿Sigues ahí?", "m1", conversations=open_service.conversations)
    assert not sent.duplicate and len(sender.sent) == 1
    assert open_service.conversations.view(chat.conversation_id).consent == "revoked"


def test_service_consent_mode_messages_after_an_opt_out_do_not_unblock_the_agent(service: Service) -> None:
    # The rule above must not open a door in consent mode: those messages are silent.
    from http_kit import RecordingSender

    from nlu.errors import OptedOut
    from nlu.handover import send_agent_message

    chat, ticket_id = held_by_ana(service)
    chat.say("BAJA")
    assert chat.say("y el reembolso nunca llegó").action == "silent"
    with pytest.raises(OptedOut):
        send_agent_message(service.queue, RecordingSender(), ticket_id, "ana", "¿Sigues ahí?", conversations=service.conversations)


def test_service_consent_mode_an_opt_out_racing_the_escalation_still_stops_the_agent(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two workers: "quiero hablar con un asesor" makes its ticket, and before its outcome
    # (human_active) is recorded, "BAJA" reads a conversation the bot holds and opts out,
    # joining no ticket. The ticket's latest customer turn is then the request, recorded
    # after the opt-out: the agent was let through to a customer who opted out.
    from http_kit import RecordingSender

    from nlu.errors import OptedOut
    from nlu.handover import send_agent_message

    with make_service(db) as service, make_service(db) as other:
        chat = Chat(service)
        chat.consent()
        record = service.conversations.record

        def racing(conversation_id: str, message_id: str, outcome: Any, **changes: Any) -> Any:
            if message_id == "wamid.3":
                assert other.handle(InboundMessage(conversation_id, "wamid.baja", "BAJA")).reasons == ("opt_out",)
            return record(conversation_id, message_id, outcome, **changes)

        monkeypatch.setattr(service.conversations, "record", racing)
        asked = chat.say("quiero hablar con un asesor")
        assert asked.action == "escalate" and asked.ticket is not None
        assert service.conversations.view(chat.conversation_id).consent == "revoked"
        claimed = service.queue.claim("ana")
        assert claimed is not None and claimed.id == asked.ticket.id
        sender = RecordingSender()
        with pytest.raises(OptedOut):
            send_agent_message(service.queue, sender, claimed.id, "ana", "Hola, soy Ana", conversations=service.conversations)
        assert sender.sent == []


# -- what the agents said, on the next ticket ------------------------------------------------


def test_service_the_next_ticket_shows_what_the_agent_said_on_the_last_one(service: Service) -> None:
    # Its turns came from the conversation store alone, and the agents' messages are kept
    # on their ticket: the second agent saw the customer answer someone they could not read.
    from http_kit import RecordingSender

    from nlu.handover import send_agent_message

    chat, first = held_by_ana(service)
    send_agent_message(service.queue, RecordingSender(), first, "ana", "Hola, soy Ana. Te llamo al 3104567821", "m-ana", conversations=service.conversations)
    chat.say("gracias")
    service.queue.resolve(first, "ana")
    chat.say("hola")  # back to the bot
    second = chat.say("quiero hablar con un asesor")
    assert second.ticket is not None and second.ticket.id != first
    turns = second.ticket.turns
    assert [(t["action"], t["text"]) for t in turns][-5:] == [
        ("escalate", "quiero hablar con un asesor"),
        ("agent", "Hola, soy Ana. Te llamo al [TELEFONO]"),  # redacted, as on the first ticket
        ("handover", "gracias"),
        ("answer", "hola"),
        ("escalate", "quiero hablar con un asesor"),
    ]
    said = next(t for t in turns if t["action"] == "agent")
    assert said["agent"] == "ana" and said["message_id"] == "m-ana" and said["sent"] is True
    # ...and routing still sees the customer's messages only, from after the handover.
    assert [t.text for t in service.conversations.view(chat.conversation_id).turns] == ["hola", "quiero hablar con un asesor"]


def test_service_the_next_ticket_shows_no_agent_message_older_than_the_turns_it_shows(db: Path) -> None:
    # The history is the last history_turns turns: an agent's message from before them (or
    # from before a purge or an erasure took the turns) stays out, as those turns do.
    from http_kit import RecordingSender

    from nlu.handover import send_agent_message

    with make_service(db, dataclasses.replace(POLICY, history_turns=3)) as service:
        chat, first = held_by_ana(service)
        send_agent_message(service.queue, RecordingSender(), first, "ana", "Hola, soy Ana", conversations=service.conversations)
        service.queue.resolve(first, "ana")
        for text in ("hola", "gracias", "dónde está mi pedido #A-48213?"):
            chat.say(text)
        second = chat.say("quiero hablar con un asesor")
        assert second.ticket is not None
        assert [t["text"] for t in second.ticket.turns] == ["hola", "gracias", "dónde está mi pedido #A-48213?", "quiero hablar con un asesor"]
