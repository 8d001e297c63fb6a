"""Routing: answer, ask back with options, or hand the conversation to a person.

:func:`decide` is a pure function of the model's prediction, a snapshot of the
conversation, the policy and the message text. It runs these checks in this order and
stops at the first that fires; the reason codes are stable strings that travel into the
ticket, the logs and the evaluation report:

1. ``opt_out`` -> answer (the opt-out confirmation): opt-out wording ("BAJA", "no me
   escriban más"), honoured before anything else, consent or not, unless the same
   message's wording asks for a person or threatens legal action (checks 2-3 then win:
   "no me escriban más, quiero hablar con una persona" is a request, not a goodbye). The opt-out
   intent alone is not enough: see ``confirm_opt_out``.
   ``opt_in`` -> answer: consent is not granted and the customer asks to subscribe (a
   bare "sí", "dale", "ok" never does, whatever the model reads: see ``BARE_YES``);
   it grants consent. Without the consent requirement it is read at check 8 instead,
   so checks 2-5 escalate first.
   ``no_consent`` -> answer (the consent question): consent is required and not granted;
   with ``human_requested`` or ``legal_threat`` added when the message asks for a person
   or threatens legal action, so a customer who declined consent is not ignored.
2. ``human_requested`` -> escalate: a human-request intent at answer confidence, or
   wording that asks for a person ("pásame con alguien", "un humano por favor"), so it
   works when the intent model misses.
3. ``legal_threat`` / ``sensitive_intent`` -> escalate: legal wording (abogado, demanda,
   PROFECO, ...) in any message; a sensitive intent (complaint, cancellation) at answer
   confidence.
   ``confirm_opt_out`` -> clarify: the model reads an opt-out ("no", "basta", "no me
   resuelven nada" were all read so, confidently) but no wording says it. Unsubscribing
   silences the customer for good, so the bot asks, with a "Darme de baja" button (the
   service honours that button) and the usual "talk to a person" one.
4. ``frustration`` -> escalate: P(frustrated) at or over the threshold.
5. Conversation signals -> escalate, all that apply are listed:
   ``insult`` (lexicon and insulting phrases, accents folded, leetspeak and "*"-censored
   words read as letters), ``shouting`` (all caps with "!!!" or "?!?", unless it is
   small talk read as positive: "MUCHAS GRACIAS!!!"), ``negative_streak`` (this and the previous turns negative),
   ``repeated_intent`` (the bot just answered this intent and the customer asks it again;
   never the out-of-scope intent, nor after a topic picked by button, which asked nothing),
   ``repeated_low_confidence`` (this and the previous turns below the answer threshold).
6. ``out_of_scope`` -> answer: the top intent is the out-of-scope one at answer
   confidence; the bot declines politely rather than offering unrelated options. Below
   that confidence the message goes on to check 7, like any other.
7. Low confidence: ``ambiguous`` -> clarify with reply buttons (2-3 plausible intents) or
   a list message (4 up to ``clarify_max_options``); ``low_confidence`` -> escalate when
   fewer than two or more than that many intents are plausible.
8. Otherwise answer the top intent (no reasons).

Reasons of checks 2-5 accumulate within a check, so a ticket says "insult, shouting".
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import Config, RoutingPolicy, load_config, routing_from_mapping
from .model import Model, Prediction
from .responses import MAX_BUTTONS
from .text import clean, fold_accents

Action = Literal["answer", "clarify", "escalate"]
Kind = Literal["buttons", "list"]
Consent = Literal["unknown", "granted", "revoked"]

# Every reason code decide() can return, in check order.
REASONS: tuple[str, ...] = (
    "opt_out",
    "opt_in",
    "no_consent",
    "human_requested",
    "legal_threat",
    "sensitive_intent",
    "confirm_opt_out",
    "frustration",
    "insult",
    "shouting",
    "negative_streak",
    "repeated_intent",
    "repeated_low_confidence",
    "out_of_scope",
    "ambiguous",
    "low_confidence",
)


@dataclass(frozen=True)
class Turn:
    """What the conversation remembers of one earlier customer message."""

    message_id: str
    text: str  # PII-redacted
    intent: str | None
    confidence: float | None
    sentiment: str | None
    emotion: str | None
    frustration: float
    action: str
    reasons: tuple[str, ...] = ()
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "text": self.text,
            "intent": self.intent,
            "confidence": self.confidence,
            "sentiment": self.sentiment,
            "emotion": self.emotion,
            "frustration": self.frustration,
            "action": self.action,
            "reasons": list(self.reasons),
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ConversationView:
    """A read-only snapshot of one conversation, as routing needs it.

    ``turns`` are the earlier customer messages, oldest first, not including the one
    being decided. ``pending_options`` are the intents offered by the last clarifying
    question (a button reply picks one of them).
    """

    conversation_id: str = ""
    consent: Consent = "granted"
    human_active: bool = False
    ticket_id: int | None = None
    turns: tuple[Turn, ...] = ()
    pending_options: tuple[str, ...] = ()
    disclosed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "consent": self.consent,
            "human_active": self.human_active,
            "ticket_id": self.ticket_id,
            "turns": [t.to_dict() for t in self.turns],
            "pending_options": list(self.pending_options),
            "disclosed": self.disclosed,
        }


@dataclass(frozen=True)
class Decision:
    """What to do with one message and why."""

    action: Action
    reasons: tuple[str, ...] = ()
    intent: str | None = None
    options: tuple[str, ...] = ()
    kind: Kind | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "intent": self.intent,
            "options": list(self.options),
            "kind": self.kind,
        }


# -- text signals ------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case, accents folded (ñ kept), elongations shortened, spaces collapsed."""
    text = fold_accents(clean(text).lower())
    text = re.sub(r"([^\W\d_])\1{2,}", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


_BACKREFERENCE = re.compile(r"\\[1-9]")


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """The patterns as few regexes as possible. Those that start with ``\\b`` (most) become
    one ``\\b(?:a|b|...)``: one scan of the message instead of one per pattern, and the
    branches' first letters let the engine skip positions (measured 2-4x faster per
    group). The others, and any with a backreference (its group would be renumbered),
    stay as they are."""
    factorable = [p.startswith("\\b") and not _BACKREFERENCE.search(p) for p in patterns]
    word_led = [p[2:] for p, f in zip(patterns, factorable, strict=True) if f]
    others = [p for p, f in zip(patterns, factorable, strict=True) if not f]
    joined = [rf"\b(?:{'|'.join(f'(?:{p})' for p in word_led)})"] if word_led else []
    return tuple(re.compile(p) for p in (*joined, *others))


def matches_any(folded: str, patterns: tuple[str, ...]) -> bool:
    return any(p.search(folded) for p in _compiled(patterns))


_WORD = re.compile(r"[^\W\d_]+")
_LEET = str.maketrans("0134@$", "oieaas")
_LEET_CHARS = frozenset("0134@$*")
# A word as the insult rules see it: letters with leetspeak digits and symbols or "*" inside.
_MASKED = re.compile(r"[\w@$*]+")
_STARS = re.compile(r"\*+")


def insult_text(folded: str, insults: Sequence[str] = ()) -> str:
    """The folded message as the insult rules read it: in a word with letters, leetspeak
    reads as letters (0 o, 1 i, 3 e, 4 a, @ a, $ s: "m13rd4" is "mierda") and a word
    censored with "*" inside reads as the lexicon word it fits, a run of n stars standing
    for n or n + 1 letters ("p*ta" is "puta", "m*rda" is "mierda"; "*urgente*" is bold).
    Only for insults: elsewhere "$500" and "4x4" mean what they say."""
    if not _LEET_CHARS.intersection(folded):
        return folded

    def read(match: re.Match[str]) -> str:
        word = match.group()
        if not any(c.isalpha() for c in word):
            return word
        word = word.translate(_LEET)
        core = word.strip("*")
        if "*" not in core:
            return word
        parts = _STARS.split(core)
        stars = _STARS.findall(core)
        masked = re.compile(
            re.escape(parts[0])
            + "".join(rf"[^\W\d_]{{{len(run)},{len(run) + 1}}}" + re.escape(part) for run, part in zip(stars, parts[1:], strict=True))
        )
        return next((w for w in insults if masked.fullmatch(w)), word)

    return _MASKED.sub(read, folded)


def has_insult(folded: str, insults: Sequence[str], patterns: tuple[str, ...] = ()) -> bool:
    """A lexicon word or an insulting phrase in the folded message, read by :func:`insult_text`."""
    text = insult_text(folded, insults)
    lexicon = set(insults)
    return any(word in lexicon for word in _WORD.findall(text)) or matches_any(text, patterns)


# A bare yes answers whatever the bot said last; it is no request to subscribe. The
# bundled model reads "sí", "dale", "sip", "de acuerdo" as the opt-in intent (0.85-0.97),
# which after "BAJA" -> "Listo, te dimos de baja" undid the opt-out.
# A message of agreement words and courtesy only ("sí, por favor", "ok gracias", "sale
# pues"), with at least one agreement word; folded text. "acepto" is not one: it is the
# explicit consent the service reads itself. "ya" ("ya po", "ah ya") is the "ok" of
# Chile, Peru and Mexico, which the bundled model read as frustration (0.98) and
# escalated; "¡ya!!" is "now!", so not with two "!".
_AGREE_WORDS = (
    r"si+|sip|claro(?: que si)?|ok(?:ay|a|i)?|vale|dale|va|sale|de acuerdo|bueno|listo|perfecto|esta bien|por supuesto"
    r"|ya+(?![\s!]*!!)"
)
_AGREE = rf"(?:{_AGREE_WORDS})"
_COURTESY = r"(?:gracias|por favor|porfa|porfis|pues|po|pe|a+h*)"


def _bare(agree: str) -> re.Pattern[str]:
    """A message of ``agree`` words and courtesy only, with at least one ``agree`` word."""
    return re.compile(rf"^\W*(?=.*\b{agree}\b)(?:{agree}|{_COURTESY})(?:[\s,.!]+(?:{agree}|{_COURTESY}))*\W*$")


BARE_YES = _bare(_AGREE)
# "ya veo", "entendido", "ya entendí": "I see", "I understood". After an answer they are an
# acknowledgement like "ok" (BARE_ACK), but no yes to a question: "entiendo" to the
# consent question ("¿Aceptas?") does not accept it, nor confirms an opt-out.
_ACK = rf"(?:{_AGREE_WORDS}|ya veo|entendido|entendi|entiendo)"
BARE_ACK = _bare(_ACK)

_MARKS = re.compile(r"[!?¡¿]{3,}")


def is_shouting(text: str, policy: RoutingPolicy) -> bool:
    """All caps (mostly) with a run of three or more "!" and "?" that holds a "!"
    ("!!!", "?!?!"; "???" is a question)."""
    if not any("!" in run or "¡" in run for run in _MARKS.findall(text)):
        return False
    letters = [c for c in text if c.isalpha()]
    if len(letters) < policy.shouting_min_letters:
        return False
    return sum(c.isupper() for c in letters) / len(letters) >= policy.shouting_caps_ratio


# -- the decision --------------------------------------------------------------------------


def _confident(prediction: Prediction, policy: RoutingPolicy) -> bool:
    return prediction.confidence is not None and prediction.confidence >= policy.answer_threshold


def _is_low(confidence: float | None, policy: RoutingPolicy) -> bool:
    return confidence is None or confidence < policy.answer_threshold


def plausible_options(prediction: Prediction, policy: RoutingPolicy) -> tuple[str, ...]:
    """Intents worth offering, best first: probability at or over the floor and at least
    twice the uniform share 1/K. Left out: the out-of-scope intent, the small-talk ones
    (``repeat_exempt_intents``: a greeting is no topic to pick) and the opt-out and opt-in
    ones (a "Darme de baja" button under "llámenme por favor" invites an unsubscribe
    nobody asked for). May be longer than ``clarify_max_options``.

    The 2/K bar matters for small intent sets: a message the model knows nothing about
    (gibberish, another language) is scored near-uniform by the out-of-scope gate, and
    with 5 intents every one of them would clear a 0.1 floor; offering them all is not
    a clarification, it is a menu. Such a message escalates instead."""
    floor = max(policy.clarify_min_probability, 2.0 / len(prediction.ranking)) if prediction.ranking else 1.0
    never = {policy.out_of_scope_intent, *policy.repeat_exempt_intents, *policy.opt_out_intents, *policy.opt_in_intents}
    return tuple(label for label, p in prediction.ranking if p >= floor and label not in never)


def decide(prediction: Prediction, conversation: ConversationView, policy: RoutingPolicy, text: str = "") -> Decision:
    """Route one message; see the module docstring for the order of the checks."""
    folded = fold(text)
    intent = prediction.intent
    confident = _confident(prediction, policy)

    asks_for_person = matches_any(folded, policy.human_patterns)
    wants_person = asks_for_person or (confident and intent in policy.human_intents)
    legal = matches_any(folded, policy.legal_patterns)

    # 1. Opt-out, opt-in, consent. Wording beats wording; the model's guess does not.
    if matches_any(folded, policy.opt_out_patterns) and not (asks_for_person or legal):
        return Decision("answer", ("opt_out",), intent=policy.opt_out_intents[0] if policy.opt_out_intents else intent)
    opts_in = confident and intent in policy.opt_in_intents and not BARE_ACK.match(folded) and conversation.consent != "granted"
    if policy.require_consent and conversation.consent != "granted":
        if opts_in:
            return Decision("answer", ("opt_in",), intent=intent)
        asked = ("human_requested",) * wants_person + ("legal_threat",) * legal
        return Decision("answer", ("no_consent", *asked))

    # 2. An explicit request for a person.
    if wants_person:
        return Decision("escalate", ("human_requested",), intent=intent)

    # 3. Legal threats and sensitive intents.
    sensitive: list[str] = []
    if legal:
        sensitive.append("legal_threat")
    if confident and intent in policy.sensitive_intents:
        sensitive.append("sensitive_intent")
    if sensitive:
        return Decision("escalate", tuple(sensitive), intent=intent)

    # The opt-out intent without opt-out wording: ask before silencing the customer (an
    # angry "DEJEN DE MANDARME PUBLICIDAD!!!" gets the "Darme de baja" button, not an agent).
    if confident and intent in policy.opt_out_intents:
        return Decision("clarify", ("confirm_opt_out",), intent=intent, options=(intent,), kind="buttons")

    # 4. Frustration.
    if prediction.frustration >= policy.frustration_threshold:
        return Decision("escalate", ("frustration",), intent=intent)

    # 5. Conversation signals.
    signals = _conversation_signals(prediction, conversation, policy, text, folded)
    if signals:
        return Decision("escalate", signals, intent=intent)

    # 6. Out of scope: decline politely, never offer unrelated options. Only when the model
    # is sure: an unsure one ("información" at 0.16) is asked about or escalated below.
    if confident and intent is not None and intent == policy.out_of_scope_intent:
        return Decision("answer", ("out_of_scope",), intent=intent)

    # 7. Low confidence: clarify when the plausible set is small, else escalate.
    if not confident:
        options = plausible_options(prediction, policy)
        if 2 <= len(options) <= MAX_BUTTONS:
            return Decision("clarify", ("ambiguous",), intent=intent, options=options, kind="buttons")
        if MAX_BUTTONS < len(options) <= policy.clarify_max_options:
            return Decision("clarify", ("ambiguous",), intent=intent, options=options, kind="list")
        return Decision("escalate", ("low_confidence",), intent=intent)

    # 8. Answer. Without the consent requirement an opt-in is read here, once nothing above
    # escalates (every new customer's consent is "unknown" then, and a request for a person
    # or a legal threat must not get "Te suscribimos"): that reply says so, so the
    # conversation must record it (and an earlier opt-out is undone).
    if opts_in:
        return Decision("answer", ("opt_in",), intent=intent)
    return Decision("answer", (), intent=intent)


def _conversation_signals(
    prediction: Prediction, conversation: ConversationView, policy: RoutingPolicy, text: str, folded: str
) -> tuple[str, ...]:
    found: list[str] = []
    if has_insult(folded, policy.insults, policy.insult_patterns):
        found.append("insult")
    # "MUCHAS GRACIAS POR TODO!!!" is enthusiasm, not shouting; but only small talk read as
    # positive is let off: "GENIAL!!! OTRA VEZ SIN MI PEDIDO!!!" is sarcasm the model reads
    # as positive, about an order.
    enthusiasm = prediction.sentiment in policy.positive_sentiments and prediction.intent in policy.repeat_exempt_intents
    if is_shouting(text, policy) and not enthusiasm:
        found.append("shouting")
    turns = conversation.turns
    negative = set(policy.negative_sentiments)
    if prediction.sentiment in negative and len(turns) >= policy.negative_streak - 1:
        earlier = turns[len(turns) - (policy.negative_streak - 1) :] if policy.negative_streak > 1 else ()
        if all(t.sentiment in negative for t in earlier):
            found.append("negative_streak")
    # Two off-topic messages in a row are two questions the bot cannot answer, not one
    # answer that did not help.
    repeatable = prediction.intent not in policy.repeat_exempt_intents and prediction.intent != policy.out_of_scope_intent
    if turns and _confident(prediction, policy) and repeatable:
        last = turns[-1]
        # A topic picked by button asked nothing yet: the customer's own words come next.
        if last.action == "answer" and last.intent == prediction.intent and not (
            set(last.reasons) & {"opt_in", "no_consent", "opt_out", "button_choice"}
        ):
            found.append("repeated_intent")
    if _is_low(prediction.confidence, policy) and len(turns) >= policy.low_confidence_streak - 1:
        earlier = turns[len(turns) - (policy.low_confidence_streak - 1) :] if policy.low_confidence_streak > 1 else ()
        # A turn the customer resolved by picking a button counts as confident.
        if all(_is_low(t.confidence, policy) and t.action != "answer" for t in earlier):
            found.append("repeated_low_confidence")
    return tuple(found)


def first_message_decisions(predictions: Sequence[Prediction], texts: Sequence[str], policy: RoutingPolicy) -> list[Decision]:
    """Each message routed as the first of a new conversation whose consent is granted
    (how the evaluation report measures routing)."""
    fresh = ConversationView(consent="granted")
    return [decide(p, fresh, policy, t) for p, t in zip(predictions, texts, strict=True)]


def policy_for(model: Model | None = None, config: Config | str | Path | None = None) -> RoutingPolicy:
    """The routing policy in force, the one rule every door (service, evaluation,
    thresholds, batch scoring) applies: the ``[routing]`` table of the config when it has
    one (a :class:`Config` object always counts), else the model's production policy
    (``meta.json`` "routing"), else the defaults."""
    if isinstance(config, Config):
        return config.routing
    if config is not None:
        loaded = load_config(config)  # validates the whole file, naming bad keys
        if "routing" in tomllib.loads(Path(config).read_text(encoding="utf-8")):
            return loaded.routing
    if model is not None and model.meta.get("routing") is not None:
        # load_model has checked it against its meta.json path; this names a model built in code.
        return routing_from_mapping(model.meta["routing"], source=f"model {model.name!r} meta routing")
    return RoutingPolicy()
