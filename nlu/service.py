"""The bot service: one inbound message in, one outcome out.

:meth:`Service.handle` is what the HTTP layer and any in-process bot call. In order:

1. **Retries.** A message id already processed returns the stored outcome again
   (``duplicate=True``): no second reply, no second ticket.
2. **Handover.** While a person holds the conversation (it was escalated and its ticket
   is not resolved), the bot stays quiet: action ``"handover"``, no reply; the message is
   recorded and joins the open ticket, so the agent sees it (a legal threat or an insult
   in it raises the ticket's priority). Once the ticket is resolved the bot takes the
   conversation back and earlier turns stop counting towards streaks. An opt-out is
   honoured here too, as in step 3 (confirmed, consent revoked), and joins the ticket with
   the reason ``opt_out``, so the agent sees it; the ticket stays open for the agent to
   close (the case may still need them), but their messages are refused
   (:func:`nlu.handover.send_agent_message`). Until the customer opts in again the opt-out
   rules answer, not the handover; opting in again joins the ticket too, and hands the
   conversation back to the agent.
3. **Consent.** With ``require_consent``, nothing about the customer is stored before
   consent: the first message gets the virtual-assistant disclosure and the consent
   question (buttons "Sí, acepto" / "No"); accepting (button or typed "sí", "acepto")
   grants it; a typed "sí" right after the consent question is its "Sí, acepto" button,
   with the request for a person that button may carry (``_PENDING_ON_CONSENT``), also
   after an opt-out. An opt-out ("BAJA", "no me escriban más", the "Darme de baja"
   button) is honoured at once, confirmed, and from then on the bot is silent (action
   ``"silent"``, no reply, only the message id kept for retries) until the customer opts
   in again ("ACEPTO", the opt-in intent); asking for a person meanwhile gets the
   consent question again. The opt-out intent alone gets a confirmation question first.
   Without ``require_consent`` an opt-out is honoured and confirmed too, but the bot goes
   on answering what the customer writes (they write first; a request for a person gets
   one, who may answer it), and "ACEPTO" or the opt-in intent undo it.
4. **Score and decide** with :func:`nlu.routing.decide`. A button or list reply whose id
   is ``intent:<name>`` (from a clarifying question or an answer) is taken as that
   intent at full confidence, still through ``decide`` (a chosen cancellation escalates);
   the id ``human`` asks for a person (without consent: the consent question, as typing
   the request gets). A typed answer to the clarifying question just asked that names
   an option by place or title ("2", "la segunda", "Reembolso") is that option's button.
5. **Act.** Answer from the catalogue (placeholders from the message), ask back with
   buttons or a list, or escalate: enqueue a ticket with the PII-redacted text, the
   prediction, the reasons, the recent turns (with what agents wrote on earlier tickets)
   and a priority (frustration first), reply
   "Te paso con una persona...", and mark the conversation as held by a person.
6. **Record** the turn (redacted text, prediction summary, action) and the outcome in
   one transaction.

Before scoring, two kinds of message are answered without the model: one the bot cannot
read (a voice note, a sticker, a photo without a caption: ``InboundMessage.media``) gets
the catalogue's ``system.unreadable``, and a bare "ok" / "sí" that answers no question
gets ``system.acknowledged`` (reason codes ``unreadable`` / ``acknowledged``; both
messages are optional, and without them the old behaviour stays).

Outcome actions: ``answer``, ``clarify``, ``escalate`` (from routing), ``handover`` and
``silent`` (no bot reply). Consent questions and opt-out confirmations are ``answer``
with the reason codes ``no_consent`` / ``opt_out``.

Concurrency: state lives in SQLite, so several processes can serve the same database.
Two deliveries of the same message id at the very same moment may both be scored, but
only one ticket and one stored outcome result (both writes are idempotent on the id, and
an escalation looks for a stored outcome once more just before it enqueues). A message id
that another conversation already used is refused (:class:`nlu.errors.MessageConflict`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RoutingPolicy, load_config
from .conversation import Conversations, open_conversations
from .errors import ConfigError, InputError
from .hours import BusinessHours
from .model import Model, Prediction, load_model
from .privacy import redact
from .queue import DEFAULT_DB, Queue, Ticket, open_queue
from .responses import (
    CONSENT_NO_ID,
    CONSENT_YES_ID,
    HUMAN_ID,
    INTENT_PREFIX,
    MAX_TEXT_BODY,
    Button,
    Catalogue,
    Reply,
    load_catalogue,
)
from .routing import BARE_ACK, BARE_YES, ConversationView, Decision, Turn, decide, fold, policy_for

MAX_TEXT = MAX_TEXT_BODY  # WhatsApp's own limit for a text message

# A message before consent that asks for a person (or threatens legal action) cannot be
# kept, but the request can: it travels in the id of the consent question's "Sí, acepto"
# button ("consent:yes:human_requested"), and accepting with it escalates at once, so the
# customer does not have to ask again. Nothing is stored before consent.
_PENDING_ON_CONSENT = ("human_requested", "legal_threat")
_PENDING_NOTE = "(Primer mensaje, antes del consentimiento: {reasons}. Ese mensaje no se guardó.)"


def is_pending_note(text: str) -> bool:
    """Whether ``text`` is the note a ticket holds in place of a first message that was not
    kept (no consent yet): the bot's words, not the customer's."""
    head, _, tail = _PENDING_NOTE.partition("{reasons}")
    return text.startswith(head) and text.endswith(tail)

# A typed yes to the consent question: agreement (routing's BARE_YES: "sí", "dale", "sí,
# por favor") or "acepto" itself.
_EXPLICIT_ACCEPT = re.compile(r"^\W*(?:si[\s,]+)?acepto(?:[\s,]+(?:gracias|por favor|los terminos))?\W*$")
# After an opt-out only an explicit "acepto" (or the button) opts back in: "ok" does not,
# unless it answers a consent question the bot asked again (see _consent_yes_asked).
_REACCEPT = re.compile(r"^\W*(acepto|si,? acepto|quiero volver)\W*$")
_DECLINE = re.compile(r"^\W*(no|no acepto|no gracias|no,? gracias)\W*$")

# A typed answer to a clarifying question that names an option by its place, as shown:
# "2", "la segunda", "opción 3", "el primero porfa" (folded text).
_ORDINALS: dict[str, int] = {
    word: n
    for n, words in enumerate(
        (("primera", "primero", "primer", "uno", "una"), ("segunda", "segundo", "dos"), ("tercera", "tercero", "tercer", "tres"),
         ("cuarta", "cuarto", "cuatro"), ("quinta", "quinto", "cinco"), ("sexta", "sexto", "seis"), ("septima", "septimo", "siete"),
         ("octava", "octavo", "ocho"), ("novena", "noveno", "nueve"), ("decima", "decimo", "diez")),
        start=1,
    )
    for word in words
}
_PLACE = re.compile(
    r"^\W*(?:(?:la|el|opcion|numero|nro)\s*)*(?P<place>\d{1,2}|[a-z]+)(?:\s+(?:opcion|por favor|porfa|porfis))?\W*$"
)

# Priority bonus per reason: frustration first, legal threats above everything. The legal
# bonus is more than all the others and a full frustration score together (3.75), so a calm
# legal threat still goes before the angriest customer who made none.
_PRIORITY_BONUS: dict[str, float] = {
    "legal_threat": 4.0,
    "insult": 0.5,
    "shouting": 0.5,
    "frustration": 0.5,
    "negative_streak": 0.5,
    "sensitive_intent": 0.25,
    "repeated_intent": 0.25,
    "repeated_low_confidence": 0.25,
}


@dataclass(frozen=True)
class InboundMessage:
    """One customer message. ``button_id`` is set when it is a button or list reply;
    ``media`` names what the bot cannot read ("audio", "sticker", "image" without a
    caption...), and then ``text`` may be empty. ``phone_number_id`` is the business
    number it was sent to (WhatsApp), kept on the ticket's turn so that an agent's
    message goes from the number the customer last wrote to."""

    conversation_id: str
    message_id: str
    text: str
    button_id: str | None = None
    media: str | None = None
    phone_number_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("conversation_id", "message_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{name} must be a non-empty string, got {value!r}")
            if len(value) > 512:
                raise InputError(f"{name} is longer than 512 characters")
        if not isinstance(self.text, str):
            raise InputError(f"text must be a string, got {type(self.text).__name__}")
        if len(self.text) > MAX_TEXT:
            raise InputError(f"text is longer than {MAX_TEXT} characters")
        if self.button_id is not None and (not isinstance(self.button_id, str) or len(self.button_id) > 256):
            raise InputError("button_id must be a string of at most 256 characters")
        if self.media is not None and (not isinstance(self.media, str) or not self.media.strip() or len(self.media) > 32):
            raise InputError(f"media must name the kind of message in 1..32 characters, got {self.media!r}")
        if self.phone_number_id is not None and (
            not isinstance(self.phone_number_id, str) or not self.phone_number_id.strip() or len(self.phone_number_id) > 64
        ):
            raise InputError(f"phone_number_id must be the business number's id in 1..64 characters, got {self.phone_number_id!r}")
        if not self.text.strip() and not self.button_id and self.media is None:
            raise InputError("text is empty")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InboundMessage:
        if not isinstance(raw, Mapping):
            raise InputError("expected a JSON object with conversation_id, message_id and text")
        missing = [k for k in ("conversation_id", "message_id", "text") if k not in raw]
        if missing:
            raise InputError(f"missing field(s): {', '.join(missing)}")
        unknown = sorted(set(raw) - {"conversation_id", "message_id", "text", "button_id"})
        if unknown:
            raise InputError(f"unknown field(s): {', '.join(unknown)}")
        return cls(raw["conversation_id"], raw["message_id"], raw["text"], raw.get("button_id"))


@dataclass(frozen=True)
class Outcome:
    """What the service did with a message. ``reply`` is None when the bot stays quiet."""

    action: str
    reply: Reply | None
    prediction: Prediction | None
    reasons: tuple[str, ...]
    ticket: Ticket | None
    duplicate: bool = False
    intent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reply": None if self.reply is None else self.reply.to_dict(),
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "reasons": list(self.reasons),
            "intent": self.intent,
            "ticket": None if self.ticket is None else self.ticket.to_dict(),
            "duplicate": self.duplicate,
        }


def _stored(outcome: Outcome) -> dict[str, Any]:
    # What is kept for retries: the outcome with the ticket as its id (re-read on a retry,
    # so the caller sees its current status).
    out = outcome.to_dict()
    out["ticket"] = None if outcome.ticket is None else outcome.ticket.id
    out.pop("duplicate")
    return out


def _prediction_from_dict(raw: Mapping[str, Any] | None) -> Prediction | None:
    if raw is None:
        return None
    fields = dict(raw)
    fields["ranking"] = tuple((str(label), float(p)) for label, p in fields.get("ranking", ()))
    return Prediction(**fields)


class Service:
    """Scores, routes and answers messages; escalates to the human-agent queue."""

    def __init__(
        self,
        model: Model,
        queue: Queue,
        conversations: Conversations,
        catalogue: Catalogue,
        policy: RoutingPolicy | None = None,
        *,
        hours: BusinessHours | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        """``hours``: when people work the queue (``nlu.toml [handover]``); outside them an
        escalation answers ``system.escalate_closed``, saying when the team opens."""
        self.model = model
        self.queue = queue
        self.conversations = conversations
        self.catalogue = catalogue
        self.policy = policy or policy_for(model)
        self.hours = hours
        self.clock = clock
        if hours is not None and "escalate_closed" not in catalogue.system:
            raise ConfigError(f"{catalogue.source}: system: handover hours are set, so escalate_closed is needed (what a customer handed over after hours reads)")
        if "intent" in model.heads:
            lacking = [i for i in model.labels("intent") if i not in catalogue]
            if lacking:
                raise ConfigError(f"{catalogue.source}: intents: no answer for {', '.join(lacking)}")

    @classmethod
    def from_paths(
        cls,
        model_dir: str | Path,
        db: str | Path | None = None,
        config: str | Path | None = None,
        catalogue: str | Path | None = None,
    ) -> Service:
        """Load the model, open the queue and conversation tables in ``db`` (one database
        for both: an SQLite path or ``sqlite:///path``, or a ``postgresql://`` URL so several
        instances share them; default ``NLU_DB`` or ``var/nlu.db``) and the response
        catalogue (the bundled Spanish one by default)."""
        db = db if db is not None and str(db).strip() else (os.environ.get("NLU_DB", "").strip() or DEFAULT_DB)
        model = load_model(model_dir)
        policy = policy_for(model, config)
        hours = None if config is None else load_config(config).handover.business_hours()
        intents = model.labels("intent") if "intent" in model.heads else None
        answers = load_catalogue(catalogue, intents=intents)
        # Conversations first: the store creates the database's directory.
        conversations = open_conversations(db, history_turns=policy.history_turns)
        try:
            queue = open_queue(str(db))
        except BaseException:
            conversations.close()
            raise
        return cls(model, queue, conversations, answers, policy, hours=hours)

    def close(self) -> None:
        self.conversations.close()
        self.queue.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one entry point ---------------------------------------------------------

    def handle(self, message: InboundMessage) -> Outcome:
        """Process one inbound message (see the module docstring for the steps)."""
        if not isinstance(message, InboundMessage):
            raise InputError(f"expected an InboundMessage, got {type(message).__name__}")
        stored = self.conversations.outcome(message.message_id, message.conversation_id)
        if stored is not None:
            return self._replayed(stored)

        view = self.conversations.view(message.conversation_id)
        if view.human_active:
            ticket = self.queue.open_for_conversation(message.conversation_id)
            if ticket is None:
                self.conversations.end_handover(message.conversation_id)
                view = self.conversations.view(message.conversation_id)
            elif view.consent != "revoked" or not self.policy.require_consent:
                # Without the consent requirement an opt-out does not silence the bot, so
                # what the customer writes after it goes on to the person holding it.
                return self._handover(message, view)
            else:
                return self._opted_out_while_held(message, view)
        return self._route(message, view)

    def _route(self, message: InboundMessage, view: ConversationView) -> Outcome:
        """Steps 3-6 for a conversation the bot holds (or one that opted out while held)."""
        if message.media is not None:
            return self._unreadable(message, view)
        if self.policy.require_consent:
            consent = self._consent_reply(message, view)
            if consent is not None:
                return consent
        elif view.consent == "revoked" and message.button_id is None and _REACCEPT.match(fold(message.text)):
            # The opt-out confirmation says "Si quieres volver, escribe ACEPTO".
            return self._consent_granted(message, view)

        if message.button_id is None and view.pending_options:
            message = self._typed_choice(message)
        if self._acknowledgement(message, view):
            reply = self._with_disclosure(self.catalogue.system_reply("acknowledged"), view)
            return self._save(message, Outcome("answer", reply, None, ("acknowledged",), None), disclosed=True)
        text = message.text
        if not text.strip() and (message.button_id or "").startswith(INTENT_PREFIX):
            # A button reply without its title: score the title it showed instead.
            text = self.catalogue.title(message.button_id[len(INTENT_PREFIX) :])  # type: ignore[index]
        prediction = self.model.score(text)
        routed, chosen = self._chosen(prediction, message)
        if message.button_id == HUMAN_ID:
            decision = self._person_button(prediction, view)
        elif chosen is not None and chosen in self.policy.opt_out_intents:
            decision = Decision("answer", ("opt_out",), intent=chosen)  # the customer pressed "Darme de baja"
        else:
            decision = decide(routed, view, self.policy, message.text)
        return self._act(message, view, prediction, routed, decision, chosen)

    # -- steps -------------------------------------------------------------------------

    def _replayed(self, stored: Mapping[str, Any]) -> Outcome:
        ticket = None
        if stored.get("ticket") is not None:
            ticket = self.queue.get(int(stored["ticket"]))
        return Outcome(
            action=stored["action"],
            reply=None if stored.get("reply") is None else Reply.from_dict(stored["reply"]),
            prediction=_prediction_from_dict(stored.get("prediction")),
            reasons=tuple(stored.get("reasons", ())),
            ticket=ticket,
            duplicate=True,
            intent=stored.get("intent"),
        )

    def _save(self, message: InboundMessage, outcome: Outcome, **changes: Any) -> Outcome:
        _, fresh = self.conversations.record(message.conversation_id, message.message_id, _stored(outcome), **changes)
        if not fresh:
            # Another delivery of the same message id finished first: return its outcome.
            stored = self.conversations.outcome(message.message_id, message.conversation_id)
            if stored is not None:
                return self._replayed(stored)
        return outcome

    def _turn(self, message: InboundMessage, prediction: Prediction | None, action: str, reasons: tuple[str, ...]) -> Turn:
        return Turn(
            message_id=message.message_id,
            text=redact(message.text),
            intent=None if prediction is None else prediction.intent,
            confidence=None if prediction is None else prediction.confidence,
            sentiment=None if prediction is None else prediction.sentiment,
            emotion=None if prediction is None else prediction.emotion,
            frustration=0.0 if prediction is None else prediction.frustration,
            action=action,
            reasons=reasons,
            # When the customer wrote: the ticket's turns carry it, and WhatsApp's 24-hour
            # customer-service window (Ticket.window_closes_at) counts from it.
            created_at=self.clock().timestamp(),
        )

    def _handover(self, message: InboundMessage, view: ConversationView) -> Outcome:
        """A person holds the conversation: the bot stays quiet, and the message joins the
        open ticket so the agent sees it; what would have escalated it (a legal threat, an
        insult) raises the ticket's priority."""
        if message.media is not None:
            # Nothing to score, but the agent should know the customer sent one.
            shown = dataclasses.replace(message, text=f"[{message.media}]")
            turn = self._turn(shown, None, "handover", ("human_active", "unreadable"))
            ticket = self._enqueue(shown, None, (), [turn.to_dict()])
            return self._save(message, Outcome("handover", None, None, ("human_active",), ticket), turn=turn)
        prediction = self.model.score(message.text)
        chosen = self._chosen(prediction, message)[1]
        decision = decide(prediction, view, self.policy, message.text)
        if "opt_out" in decision.reasons or chosen in self.policy.opt_out_intents or message.button_id == CONSENT_NO_ID:
            # Honoured as when the bot holds the conversation (the "No" of an old consent
            # question included: consent was given). The agent must see it: the message
            # joins the ticket, whose reasons say so.
            turn = self._turn(message, prediction, "handover", ("human_active", "opt_out"))
            ticket = self._enqueue(message, prediction, ("opt_out",), [turn.to_dict()])
            return self._opt_out(message, view, ("opt_out", *(("button_choice",) if chosen else ())), chosen or decision.intent, ticket)
        if view.consent == "revoked" and ("opt_in" in decision.reasons or _REACCEPT.match(fold(message.text))):
            # Back in after an opt-out (without the consent requirement: with it, the
            # handover never sees a revoked conversation): as when the bot holds it.
            return self._opted_out_while_held(message, view)
        signals = decision.reasons if decision.action == "escalate" else ()
        turn = self._turn(message, prediction, "handover", ("human_active", *signals))
        ticket = self._enqueue(message, prediction, signals, [turn.to_dict()])
        outcome = Outcome("handover", None, None, ("human_active",), ticket)
        return self._save(message, outcome, turn=turn)

    def _history(self, conversation_id: str) -> list[dict[str, Any]]:
        """What a new ticket shows of the conversation so far, oldest first: its last
        ``history_turns`` turns (those before an earlier handover included) and what agents
        wrote to the customer since the first of them (kept on the earlier tickets, as
        ``"action": "agent"`` turns). Nothing older: a purge or an erasure that took the
        customer's turns leaves the agents' answers to them out too."""
        turns = [t.to_dict() for t in self.conversations.history(conversation_id)]
        if not turns:
            return []
        said = self.queue.agent_messages(conversation_id, since=turns[0]["created_at"])
        return sorted([*turns, *said], key=lambda t: t["created_at"])

    def _opted_out_while_held(self, message: InboundMessage, view: ConversationView) -> Outcome:
        """The customer opted out while a person held the conversation, whose ticket is still
        open: the opt-out rules answer (silence, the consent question to a request for a
        person), not the handover, and nothing joins the ticket. A message that opts in
        again joins it, so the agent sees they may write again; the next ones are the
        handover's."""
        outcome = self._route(message, view)
        back = tuple(r for r in outcome.reasons if r in ("consent_granted", "opt_in"))
        if back and not outcome.duplicate:
            turn = self._turn(message, None, "handover", ("human_active", *back))
            self._enqueue(message, None, (), [turn.to_dict()])
        return outcome

    def _opt_out(
        self, message: InboundMessage, view: ConversationView, reasons: tuple[str, ...], intent: str | None, ticket: Ticket | None = None
    ) -> Outcome:
        """Honour an opt-out at once: confirm it and revoke consent. The message itself is
        not kept in the conversation (a ticket it joined keeps it for the agent)."""
        reply = self._with_disclosure(self.catalogue.system_reply("opt_out"), view)
        outcome = Outcome("answer", reply, None, reasons, ticket, intent=intent)
        return self._save(message, outcome, consent="revoked", disclosed=True, pending_options=())

    def _enqueue(
        self, message: InboundMessage, prediction: Prediction | None, reasons: tuple[str, ...], turns: list[dict[str, Any]]
    ) -> Ticket:
        """A ticket for ``message``, or the conversation's open one it joins (see Queue.enqueue);
        ``prediction`` None for a message with nothing to score (lowest priority)."""
        if message.phone_number_id is not None:
            # The business number travels in the message's own turn (the ticket's turns are
            # JSON: no column needed); an agent's message goes from the last one.
            turns = [{**t, "phone_number_id": message.phone_number_id} if t.get("message_id") == message.message_id else t for t in turns]
        ticket, _ = self.queue.enqueue(
            conversation_id=message.conversation_id,
            message_id=message.message_id,
            text=redact(message.text),
            prediction={} if prediction is None else prediction.to_dict(),
            reasons=reasons,
            priority=0.0 if prediction is None else self._priority(prediction, reasons),
            turns=turns,
        )
        return ticket

    def _acknowledgement(self, message: InboundMessage, view: ConversationView) -> bool:
        """A bare "ok" / "sí" / "dale, gracias" typed when the bot asked nothing: it agrees
        with what was said. Scored, the bundled model read "sí" as a subscription ("¡Listo!
        Te suscribimos", with nothing subscribed) and "ok" as too unsure to answer (a
        person's time). Answered with the catalogue's optional ``system.acknowledged``;
        right after a clarifying question it answers that question instead (see
        _typed_choice). No turn is kept: it asks nothing, so streaks go on around it."""
        return (
            "acknowledged" in self.catalogue.system
            # Before consent, or after an opt-out, the consent rules answer (or stay silent).
            # Without the consent requirement there are none: the bot goes on serving a
            # customer who opted out, and "ok gracias" to the confirmation was scored as a
            # subscription ("Te suscribimos", with the opt-out standing).
            and (view.consent == "granted" or not self.policy.require_consent)
            and message.button_id is None
            and BARE_ACK.match(fold(message.text)) is not None
            # "¿listo?", "¿sí?", "¿bueno?" ask something ("is it done?", "anyone there?").
            and not any(mark in message.text for mark in "?¿")
            and (self.conversations.last_outcome(message.conversation_id) or {}).get("action") != "clarify"
        )

    def _unreadable(self, message: InboundMessage, view: ConversationView) -> Outcome:
        """A voice note, a sticker, a photo without a caption: nothing to score or route on,
        so no turn is kept. The bot asks for text (the catalogue's optional
        ``system.unreadable``; without it, it stays quiet). Consent comes first, as for any
        message, and after an opt-out the bot is silent."""
        if self.policy.require_consent and view.consent != "granted":
            if view.consent == "revoked":
                return self._save(message, Outcome("silent", None, None, ("unreadable",), None))
            return self._ask_consent(message, view, ("no_consent",))
        if "unreadable" not in self.catalogue.system:
            return self._save(message, Outcome("silent", None, None, ("unreadable",), None))
        reply = self._with_disclosure(self.catalogue.system_reply("unreadable"), view)
        return self._save(message, Outcome("answer", reply, None, ("unreadable",), None), disclosed=True)

    def _ask_consent(self, message: InboundMessage, view: ConversationView, reasons: tuple[str, ...]) -> Outcome:
        """The consent question, carrying a request for a person or a legal threat in its button."""
        consent = _carrying(self.catalogue.system_reply("consent"), tuple(r for r in reasons if r in _PENDING_ON_CONSENT))
        return self._save(message, Outcome("answer", self._with_disclosure(consent, view), None, reasons, None), disclosed=True)

    def _with_disclosure(self, reply: Reply, view: ConversationView) -> Reply:
        return reply if view.disclosed else reply.prefixed(self.catalogue.system["disclosure"].text)

    def _consent_reply(self, message: InboundMessage, view: ConversationView) -> Outcome | None:
        """Consent buttons and typed answers to the consent question; None to go on."""
        folded = fold(message.text)
        if message.button_id == CONSENT_NO_ID and view.consent == "granted":
            # An old consent question's "No" after consenting: what was said since is stored,
            # so "we keep nothing" would be untrue. It is an opt-out, and says so.
            return self._opt_out(message, view, ("opt_out",), None)
        if message.button_id == CONSENT_NO_ID or (view.consent == "unknown" and view.disclosed and _DECLINE.match(folded)):
            reply = self._with_disclosure(self.catalogue.system_reply("consent_declined"), view)
            outcome = Outcome("answer", reply, None, ("consent_declined",), None)
            return self._save(message, outcome, consent="revoked", disclosed=True)
        if view.consent == "granted":
            # A "Sí, acepto" tapped again (a second tap, an old consent question) is confirmed
            # again, not scored: the model reads "Sí, acepto" as a subscription request.
            return self._consent_granted(message, view) if _is_consent_yes(message.button_id) else None
        button = message.button_id
        if button is None and _accepts(folded):
            # A typed "sí" answers the consent question the bot just asked as its "Sí, acepto"
            # button does: with the request that button carries, and after an opt-out too.
            button = self._consent_yes_asked(message.conversation_id)
        accepted = _REACCEPT.match(folded) if view.consent == "revoked" else (view.disclosed and _accepts(folded))
        pending = _pending_on_consent(button)
        if pending:
            # The note stands for the first message, which was not kept.
            note = _PENDING_NOTE.format(reasons=", ".join(pending))
            noted = dataclasses.replace(message, text=note, button_id=None)
            prediction = self.model.score(note)
            decision = Decision("escalate", pending, intent=prediction.intent)
            return self._act(noted, view, prediction, prediction, decision, None, grant_consent=True)
        if _is_consent_yes(button) or accepted:
            return self._consent_granted(message, view)
        return None  # decide() handles opt-in, opt-out and asking for consent

    def _consent_granted(self, message: InboundMessage, view: ConversationView) -> Outcome:
        """Consent given: confirm it and record it (no turn: nothing to route)."""
        reply = self._with_disclosure(self.catalogue.system_reply("consent_granted"), view)
        outcome = Outcome("answer", reply, None, ("consent_granted",), None)
        return self._save(message, outcome, consent="granted", disclosed=True)

    def _typed_choice(self, message: InboundMessage) -> InboundMessage:
        """A typed answer to the clarifying question just asked that names one of its
        options, by place ("2", "la segunda") or by title ("Reembolso"), is that button
        tapped, its title as the text as a tap sends it: scored on its own, "2" read as a
        subscription and "la segunda" as a frustrated customer. Anything else is a new
        message, scored as usual."""
        last = self.conversations.last_outcome(message.conversation_id) or {}
        if last.get("action") != "clarify":
            return message
        reply = last.get("reply") or {}
        shown = [(b["id"], b["title"]) for b in reply.get("buttons", ())]
        shown += [(r["id"], r["title"]) for r in (reply.get("list") or {}).get("rows", ())]
        folded = fold(message.text)
        place = _place(folded)
        picked = [(ident, title) for i, (ident, title) in enumerate(shown, start=1) if i == place or fold(title) == folded]
        offered = [(ident, title) for ident, title in shown if ident.startswith(INTENT_PREFIX)]
        if not picked and len(offered) == 1 and _bare_yes(folded):
            # "sí" to a question that offers one intent ("¿Darme de baja?") is its button;
            # scored, the bundled model read it as a subscription for someone who wanted out.
            picked = offered
        if not picked:
            return message
        ident, title = picked[0]
        return dataclasses.replace(message, text=title, button_id=ident)

    def _consent_yes_asked(self, conversation_id: str) -> str | None:
        """The id of the "Sí, acepto" button when the bot's latest message in the
        conversation is the consent question, else None."""
        last = self.conversations.last_outcome(conversation_id) or {}
        buttons = (last.get("reply") or {}).get("buttons", ())
        return next((b["id"] for b in buttons if _is_consent_yes(b["id"])), None)

    def _person_button(self, prediction: Prediction, view: ConversationView) -> Decision:
        """The "Hablar con asesor" button, like typing "quiero hablar con una persona":
        an escalation, or without consent the consent question carrying the request. A
        stale button tapped after an opt-out must not store a ticket and turns."""
        if self.policy.require_consent and view.consent != "granted":
            return Decision("answer", ("no_consent", "human_requested"))
        return Decision("escalate", ("human_requested",), intent=prediction.intent)

    def _chosen(self, prediction: Prediction, message: InboundMessage) -> tuple[Prediction, str | None]:
        """A button reply naming an intent is that intent, at full confidence."""
        button = message.button_id or ""
        if button.startswith(INTENT_PREFIX):
            label = button[len(INTENT_PREFIX) :]
            if label in self.catalogue:
                ranking = ((label, 1.0), *((other, 0.0) for other, _ in prediction.ranking if other != label))
                return dataclasses.replace(prediction, intent=label, confidence=1.0, ranking=ranking), label
        return prediction, None

    def _priority(self, prediction: Prediction, reasons: tuple[str, ...]) -> float:
        return round(min(1.0, max(0.0, prediction.frustration)) + sum(_PRIORITY_BONUS.get(r, 0.0) for r in set(reasons)), 4)

    def _act(
        self,
        message: InboundMessage,
        view: ConversationView,
        prediction: Prediction,
        routed: Prediction,
        decision: Decision,
        chosen: str | None,
        grant_consent: bool = False,
    ) -> Outcome:
        reasons = decision.reasons + (("button_choice",) if chosen else ())
        if "opt_out" in decision.reasons and view.consent == "revoked":
            return self._save(message, Outcome("silent", None, None, reasons, None))
        if "opt_out" in decision.reasons:
            return self._opt_out(message, view, reasons, decision.intent)
        if "no_consent" in decision.reasons:
            asked = bool({"human_requested", "legal_threat"} & set(decision.reasons))
            if view.consent == "revoked" and not asked:
                return self._save(message, Outcome("silent", None, None, reasons, None))
            # An opted-out customer who asks for a person (or threatens legal action) gets
            # the consent question again: a person can take over once they accept.
            return self._ask_consent(message, view, reasons)

        consent_change = {"consent": "granted"} if grant_consent or "opt_in" in decision.reasons else {}
        if decision.action == "answer":
            # Never None here: a model without an intent head has no confidence, so it
            # never reaches "answer" without a reason that names the intent.
            intent = decision.intent or routed.intent or ""
            reply = self._with_disclosure(self.catalogue.answer(intent, message.text), view)
            outcome = Outcome("answer", reply, prediction, reasons, None, intent=intent)
            turn = self._turn(message, routed, "answer", reasons)
            return self._save(message, outcome, turn=turn, disclosed=True, pending_options=(), **consent_change)
        if decision.action == "clarify":
            reply = self._with_disclosure(self.catalogue.clarify(decision.options, decision.kind or "buttons"), view)
            outcome = Outcome("clarify", reply, prediction, reasons, None, intent=decision.intent)
            turn = self._turn(message, routed, "clarify", reasons)
            return self._save(message, outcome, turn=turn, disclosed=True, pending_options=decision.options)

        # A duplicate delivery that raced the first one past the check in `handle` may have
        # read the conversation after the first one saved: its own turn then looks like a
        # repeat, an escalation the first delivery never made. A ticket is the one write
        # that cannot be taken back, so look once more (the view was read before this).
        stored = self.conversations.outcome(message.message_id, message.conversation_id)
        if stored is not None:
            return self._replayed(stored)
        turn = self._turn(message, routed, "escalate", reasons)
        # The agent sees the recent conversation, ending with this message.
        ticket = self._enqueue(message, prediction, reasons, [*self._history(message.conversation_id), turn.to_dict()])
        if ticket.message_id != message.message_id and not view.human_active:
            # Another message of this conversation escalated at the same moment and told the
            # customer; this one joined its ticket, so it is a handover, not a second reply.
            # (A held conversation gets here only after an opt-out: the customer, back in,
            # asked for a person again, and is told the open ticket has it.)
            joined = self._turn(message, routed, "handover", ("human_active", *reasons))
            outcome = Outcome("handover", None, None, ("human_active",), ticket)
            return self._save(message, outcome, turn=joined, human_active=True, ticket_id=ticket.id)
        reply = self._with_disclosure(self._escalation(), view)
        outcome = Outcome("escalate", reply, prediction, reasons, ticket, intent=decision.intent)
        return self._save(
            message, outcome, turn=turn, disclosed=True, pending_options=(), human_active=True, ticket_id=ticket.id, **consent_change
        )

    def reply_now(self, message_id: str) -> Reply | None:
        """The reply to an earlier message as it must read if sent only now (the outbox
        sends replies late), or None when the stored one still holds. Only a handover's
        reply depends on when it is read: with ``hours``, "mañana a las 9:00" names the
        wrong day after midnight, and "ahora no estamos atendiendo" is untrue once the
        team is in; it is written again from now, with the disclosure it had."""
        if self.hours is None:
            return None
        stored = self.conversations.outcome(message_id)
        if stored is None or stored.get("action") != "escalate" or not stored.get("reply"):
            return None
        disclosure = self.catalogue.system["disclosure"].text
        reply = self._escalation()
        return reply.prefixed(disclosure) if Reply.from_dict(stored["reply"]).is_prefixed(disclosure) else reply

    def _escalation(self) -> Reply:
        """What the customer handed over reads: when the team opens, outside its hours."""
        if self.hours is not None:
            now = self.clock()
            opens = None if self.hours.is_open(now) else self.hours.next_opening(now)
            if opens is not None:
                return self.catalogue.system_reply("escalate_closed", opens=self.hours.describe(opens, now))
        return self.catalogue.system_reply("escalate")


def _place(folded: str) -> int:
    """The place of the option a typed answer names ("2", "la segunda": 2), or 0."""
    match = _PLACE.match(folded)
    if match is None:
        return 0
    word = match["place"]
    return int(word) if word.isdigit() else _ORDINALS.get(word, 0)


def _accepts(folded: str) -> bool:
    return _bare_yes(folded) or _EXPLICIT_ACCEPT.match(folded) is not None


def _bare_yes(folded: str) -> bool:
    """A typed yes to the question just asked: "¿ya?", "¿sí?" ask one back ("is it done?",
    "anyone there?"), they do not answer it."""
    return BARE_YES.match(folded) is not None and not any(mark in folded for mark in "?¿")


def _carrying(consent: Reply, pending: tuple[str, ...]) -> Reply:
    """The consent question whose "Sí, acepto" button carries ``pending`` reasons."""
    if not pending:
        return consent
    yes = f"{CONSENT_YES_ID}:{'+'.join(pending)}"
    return dataclasses.replace(consent, buttons=tuple(Button(yes, b.title) if b.id == CONSENT_YES_ID else b for b in consent.buttons))


def _is_consent_yes(button_id: str | None) -> bool:
    """The "Sí, acepto" button, with or without pending reasons in its id."""
    return button_id is not None and (button_id == CONSENT_YES_ID or button_id.startswith(CONSENT_YES_ID + ":"))


def _pending_on_consent(button_id: str | None) -> tuple[str, ...]:
    """The reasons a "Sí, acepto" button id carries; only known ones (ids come from the
    customer's client, so anything else is an ordinary acceptance)."""
    prefix = CONSENT_YES_ID + ":"
    if not button_id or not button_id.startswith(prefix):
        return ()
    reasons = tuple(button_id[len(prefix) :].split("+"))
    return reasons if reasons and all(r in _PENDING_ON_CONSENT for r in reasons) else ()
