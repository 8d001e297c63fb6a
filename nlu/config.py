"""Hyperparameters and settings as frozen dataclasses, optionally read from ``nlu.toml``.

Every value has a default that fits the bundled data; a TOML file overrides some of them.
Unknown sections or keys are errors (a typo must never be silently ignored), and the
config actually used is copied into the artifact's ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .hours import BusinessHours

HEADS: tuple[str, ...] = ("intent", "sentiment", "emotion")


@dataclass(frozen=True)
class TrainConfig:
    """How the classifiers are fitted."""

    seed: int = 13
    # Folds for the out-of-fold predictions that both calibrate the heads and give the
    # cross-validated metrics in meta.json.
    cv: int = 5
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    # Character n-grams seen in a single message are mostly typos and names: dropping them
    # shrinks the model several times at no measured accuracy cost.
    char_min_df: int = 2
    # Relative weight of the character block against the word block in the feature vector.
    char_weight: float = 1.0
    # Spanish sentiment/emotion lexicon cues (nlu.lexicon) as extra word features.
    # Dev macro-F1: EmoEvent +0.008, TASS +0.019, airline 0 (cv +0.015/+0.014/+0.006).
    lexicon: bool = True
    # Tokens after a negator also emitted as neg_<token> (0 = off; no consistent gain measured).
    negation_scope: int = 0
    # Regularisation of the linear SVMs; smaller is stronger.
    C: float = 0.5
    # "balanced" reweights rare labels: macro-F1 and the small intents matter to a bot.
    class_weight: str | None = "balanced"
    # Platt scaling of the top-label confidence on out-of-fold rows, after the temperature
    # (classifier.TopLabelMap; heads without an out-of-scope gate). Dev ECE EmoEvent 0.060 -> 0.029.
    top_label_calibration: bool = True
    # Out-of-scope gate (classifier.ScopeGate, intent head): weight of the message's
    # unknown word bigrams, in units of the 98th percentile of the head's own out-of-fold
    # unknown-bigram counts (so it scales itself to short commands or long chats); 0 =
    # words only. Dev, TOP model with EmoEvent+TASS tweets out of scope, at the answer
    # threshold 0.5: 0 -> 2 raises OOS escalated 0.950 -> 0.970 (answered 0.988 -> 0.986,
    # AUROC 0.997 -> 0.998); bundled chats test answered 0.958 either way, ECE 0.027 -> 0.030.
    scope_bigram_weight: float = 2.0
    # Emotion labels that count as a frustrated customer (Spanish bundled labels and the
    # English ones used by public emotion corpora).
    frustration_emotions: tuple[str, ...] = ("enojo", "frustracion", "anger", "disgust")
    # Sentiment labels that count as negative.
    negative_sentiments: tuple[str, ...] = ("negativo", "negative", "neg", "N")

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:  # numpy's RandomState range
            raise ConfigError(f"train.seed must be 0 .. {2**32 - 1}, got {self.seed}")
        if self.cv < 2:
            raise ConfigError(f"train.cv must be at least 2, got {self.cv}")
        if self.word_ngram_max < 1:
            raise ConfigError(f"train.word_ngram_max must be at least 1, got {self.word_ngram_max}")
        if not 1 <= self.char_ngram_min <= self.char_ngram_max:
            raise ConfigError(
                "train.char_ngram_min must be >= 1 and <= train.char_ngram_max, "
                f"got {self.char_ngram_min} and {self.char_ngram_max}"
            )
        if self.char_min_df < 1:
            raise ConfigError(f"train.char_min_df must be at least 1, got {self.char_min_df}")
        if self.char_weight < 0:
            raise ConfigError(f"train.char_weight must be >= 0, got {self.char_weight}")
        if self.negation_scope < 0:
            raise ConfigError(f"train.negation_scope must be >= 0, got {self.negation_scope}")
        if self.scope_bigram_weight < 0:
            raise ConfigError(f"train.scope_bigram_weight must be >= 0, got {self.scope_bigram_weight}")
        if self.C <= 0:
            raise ConfigError(f"train.C must be > 0, got {self.C}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"train.class_weight must be \"balanced\" or absent, got {self.class_weight!r}")


# Legal threats: regular expressions matched against the lower-cased, accent-folded
# message (see nlu.routing). Consumer-protection agencies of MX, ES, PE, CO, CL, AR, and
# courts and legal remedies (tutela and derecho de petición are Colombian).
_LEGAL_PATTERNS: tuple[str, ...] = (
    r"\babogad[oa]s?\b",
    r"\bdemand(a|as|ar|are|aremos|arlos|arlas|o)\b",
    r"\bdenunci(a|as|ar|are|aremos|arlos|arlas|o)\b",
    r"\bprofeco\b",
    r"\bocu\b",
    r"\bindecopi\b",
    r"\bsic\b",
    r"\bsernac\b",
    r"defensa del consumidor",
    r"\b(libro|hoja)s? de reclamaciones\b",
    r"\b(accion|acciones|via) (legal|legales|judicial)\b",
    r"\bmedidas? (legal|legales|judicial|judiciales)\b",
    r"\btribunal(es)?\b",
    # The court, not the participle ("me sentí juzgado").
    r"\b(el|al|del|un|los|a los) juzgados?\b",
    # A lawsuit, not an opinion ("a mi juicio", "perdieron el juicio").
    r"\b(a|un|en) juicio\b",
    r"\bprocuraduria\b",
    r"\bcondusef\b",
    r"\b(accion de )?tutelas?\b",
    r"\bderechos? de peticion\b",
    r"\b(oficina|oficinas|direccion) (\w+ )?de (defensa del )?consumo\b",
    r"\bomic\b",
    # "los voy a acusar", not "acusar recibo"
    r"\b(los|las|lo|la|les) (voy|vamos) a acusar\b(?! (de )?recibo)|\b(voy|vamos) a acusarl[oae]s?\b",
)

# Who a customer asks for, in the request patterns below.
_AGENT = r"(asesor|asesora|persona|humano|humana|agente|ejecutivo|ejecutiva)"

# An explicit request for a person, matched like the legal patterns. They catch what the
# intent model misses ("pásame con alguien" inside a longer complaint). A person the
# customer talks about is not one they ask for: "la persona que me atendió fue muy
# amable", "gracias por pasarme con el asesor", "quiero regalar esto a una persona".
_HUMAN_PATTERNS: tuple[str, ...] = (
    r"\b(?<!\bya pude )(?<!\bya logre )(hablar|comunicar(me)?|contactar(me)?|chatear|conversar)\b[^.?!]{0,25}\b"
    r"(alguien|asesor|asesora|agente|humano|humana|persona|operador|operadora|ejecutivo|ejecutiva|representante|encargado|encargada|supervisor)\b",
    r"\b(?<!\bpor )(pas|comunic|comuniqu|transfier|deriv|conect)\w*\s+(con|a)\s+((un|una|el|la|algun|alguna|otro|otra|tu|su)\s+)?"
    r"(alguien|persona|asesor|asesora|agente|humano|humana|operador|operadora|ejecutivo|ejecutiva|representante|encargado|encargada|supervisor|jefe)\b",
    r"\b(un|una) (humano|humana|persona real|persona de verdad)\b",
    r"\b(alguien|persona) (real|de verdad|de carne y hueso)\b",
    r"\bno quiero (hablar|chatear) con (un|el|una|la) (bot|robot|maquina)\b",
    r"^\W*(asesor|asesora|agente|humano|operador|operadora|persona)\W*$",
    # "mi pedido no ha llegado, asesor", "factura. asesor por favor"
    r"[,.;:]\s*((un|una|el|la) )?(asesor|asesora|agente|humano|humana)( (por favor|porfa|porfavor|xfa|pls|please|urgente|ya|gracias))?\W*$",
    # "necesito un asesor para cambiar mi pedido", not "una persona que recoja mi pedido"
    rf"\b(necesito|quiero|prefiero|busco) (un|una) {_AGENT}\b(?! (de contacto|que (recib|recoj|retir)\w*|para (recibir|recoger|retirar))\b)",
    # "prefiero que me atienda un asesor", "que me llame una persona"
    rf"\bque me (atienda|llame|ayude|contacte) (alguien|(un|una|el|la|alguna|algun) {_AGENT})\b",
    # "¿me puede atender un asesor?", "¿me atiende una persona?"
    rf"\bme ((puede|podria|pueden|podrian) (atender|ayudar|llamar|contactar)|atiende) (un|una|algun|alguna) {_AGENT}\b",
    rf"\b(puede|podria) (atenderme|ayudarme|llamarme|contactarme) (un|una|algun|alguna) {_AGENT}\b",
    # "necesito atención humana", not "gracias por la atención personalizada"
    # (\b first, the lookbehinds after it: the same match, and it joins the one \b-led regex)
    r"\b(?<!\bla )(?<!\bbuena )(?<!\bexcelente )(?<!\bgran )(?<!\bsu )(?<!\btu )atencion (humana|personalizada)\b",
)

# What the customer can opt out of: the bot's messages, by any name ("no me manden más
# nada" included), never the object of a complaint ("no me manden más productos rotos").
_MESSAGES = (
    r"(mensajes?|mensajitos|publicidad(es)?|promociones|promocion|promos?|ofertas?|notificaciones|notificacion"
    r"|whatsapps?|wasaps?|whats|correos?|e?mails?|sms|spam|boletin(es)?|newsletters?|avisos?|anuncios?"
    r"|informacion|comunicaciones|comunicados?|cadenas|nada)"
)
# What may follow the opt-out verb: one of those nouns, or nothing else in its clause
# (end of message, a punctuation mark, "por favor"), optionally "cosas" or "por este medio".
_OPT_OUT_OBJECT = (
    rf"( ((solo|solamente|tantos|tantas) )?(de )?((sus|tus|su|tu|los|las|el|la|esos|esas|estos|estas|ese|esa|este|esta) )?"
    rf"{_MESSAGES}\b"
    r"|( cosas)?( (a|al|por|en) (este |ese |mi |el )?(numero|medio|chat|celular|telefono|whatsapp|wasap))?"
    r"(?=\s*[.,;:!?]|\W*$|\s+(por favor|porfa|gracias)\b))"
)

# Opt-out wording in the whole message ("BAJA", "STOP", "no me escriban más"), so an
# opt-out is honoured even when the intent model misses it. Only a message about the
# bot's messages counts: "no me envíen más cobros, ya pagué" is not an opt-out.
_OPT_OUT_PATTERNS: tuple[str, ...] = (
    r"^\W*(stop|baja|unsubscribe|darme de baja|dar de baja)\W*$",
    rf"\bno (me )?(escriban|manden|envien|mandes|escribas|envies) mas{_OPT_OUT_OBJECT}",
    rf"\bdejar de recibir{_OPT_OUT_OBJECT}",
    rf"\bno (quiero|deseo) recibir (mas )?((sus|tus|los|las) )?{_MESSAGES}\b",
    # "writing to me" is about messages whatever follows; sending needs the messages named.
    r"\b(dejen|deje|deja|dejar|paren|pare|para) de (escribirme|escribir(me)? a este numero|whatsappearme)\b",
    rf"\b(dejen|deje|deja|dejar|paren|pare|para) de (mandarme|enviarme|mandar|enviar){_OPT_OUT_OBJECT}",
    r"\b(quitenme|quiteme|quitame|saquenme|saqueme|sacame|borrenme|borreme|eliminenme|eliminen mi numero|borren mi numero)"
    r" de (la|su|tu|sus|esta|esa|vuestra) (lista|base|difusion)",
    r"\b(quiero|quisiera|deseo|necesito|favor de|como me puedo|como puedo|me pueden|pueden|podrian) (darme|me den|que me den) de baja\b",
    r"\b(denme|dadme|den me) de baja\b",
    r"\bdesuscrib(ir|irme|anme|eme|o)\b",
)

# A small insult lexicon (folded, lower case, whole words) across the Spanish-speaking
# countries; "ladrones" and "estafadores" are accusations but route the same way. Words
# with a common neutral sense ("la basura", "trampas para ratas", "forros para celular",
# "disfraz de payasos") are not here: _INSULT_PATTERNS has them in insulting phrases.
_INSULTS: tuple[str, ...] = (
    "idiota", "idiotas", "imbecil", "imbeciles", "estupido", "estupida", "estupidos",
    "inutil", "inutiles", "pendejo", "pendejos", "pendeja", "boludo", "boludos", "pelotudo",
    "pelotudos", "huevon", "huevones", "weon", "weones", "gilipollas", "cabron", "cabrones",
    "mierda", "ladrones", "rateros", "estafadores", "hdp", "malparido",
    "malparidos", "hijueputa", "hijoputa", "puto", "putos", "puta", "putas", "mamones", "tarado", "tarados",
    "incompetentes", "incompetente", "sinverguenzas", "chupapijas",
    "culeros", "culero", "pajeros", "carajo", "coño",
    "verga", "vergas", "gonorrea", "gonorreas", "emputado", "emputada", "emputados", "emputadas",
    "ptm", "ctm", "csm",
)

# The lexicon words with a neutral sense, insulting only in the phrases below.
_NEUTRAL_SENSE = r"(basuras?|ratas?|forros?|payasos?)"
# Things a customer calls "basura": "basura de servicio", "app basura".
_ABOUT_US = r"(servicio|empresa|tienda|atencion|bot|robot|app|aplicacion|pagina|producto|productos|compania|gente|sistema|marca|chat|asistente)"

# Insulting phrases, matched like the legal patterns against the folded message with
# leetspeak and "*"-censored lexicon words read as letters (nlu.routing.insult_text).
_INSULT_PATTERNS: tuple[str, ...] = (
    # "son unos payasos", "esta app es una basura", "son unas ratas, devuelvan mi plata";
    # not "¿son unas ratas de peluche?"
    rf"\b(es|son|eres|sois|fueron|parecen|pareces) (un|una|unos|unas|pura|puro|puros|puras|una bola de|una manga de|"
    rf"una banda de|unos malditos|unas malditas) {_NEUTRAL_SENSE}\b(?! (de|del|para|con|en)\b)",
    rf"\b(malditos?|malditas?|pinches?|asquerosos?|asquerosas?|putos?|putas?|menudos?|menudas?|vaya) {_NEUTRAL_SENSE}\b",
    rf"\b(bola|manga|banda|partida|panda|atajo|sarta|punado|par) de {_NEUTRAL_SENSE}\b",
    # "qué basura!", "que payasos."
    rf"\bque {_NEUTRAL_SENSE}\s*([!.,;]|$)",
    rf"\bbasuras? de {_ABOUT_US}\b",
    rf"\b{_ABOUT_US} basuras?\b",
    # The whole message, a vocative opening it, or a cry: "BASURA", "ratas, devuelvan mi dinero", "ratas!!!"
    rf"^\W*{_NEUTRAL_SENSE}\W*$",
    rf"^\W*{_NEUTRAL_SENSE}\s*,",
    rf"\b{_NEUTRAL_SENSE}\s*!!",
    r"\bla concha (de )?(tu|su) (madre|hermana)\b",
    r"\bla concha de la lora\b",
    r"\b(puta|pta) madre\b",
    # Mexico's "pinche pedido", "este pinche servicio"; not Spain's "pinche aquí",
    # "pinché en el enlace" (accents are folded).
    rf"\bpinches? ({_ABOUT_US}|pedidos?|paquetes?|paqueteria|envios?|cobros?|mensajes?|repartidor|maquina|programa)\b",
    r"\b(este|esta|estos|estas|ese|esa|esos|esas|su|sus|tu|tus|unos|unas) pinches?\b",
)


@dataclass(frozen=True)
class RoutingPolicy:
    """When the bot answers, asks back with options, or hands the conversation to a person.

    Read by :func:`nlu.routing.decide`; the order of the checks is documented there.
    Label names are the bundled data's; a model with its own intents sets its own.
    """

    # Top intent probability needed to answer. The names answer_threshold and
    # frustration_threshold are fixed: `nlu thresholds` writes them.
    answer_threshold: float = 0.5
    # P(frustrated) from the emotion head (or negative sentiment) that escalates.
    frustration_threshold: float = 0.4
    # An intent is a plausible option for a clarifying question from this probability.
    clarify_min_probability: float = 0.1
    # 2-3 plausible intents become reply buttons, up to this many a list message
    # (WhatsApp allows 10 rows); more than this escalates.
    clarify_max_options: int = 10
    sensitive_intents: tuple[str, ...] = ("queja", "cancelar_pedido")
    legal_patterns: tuple[str, ...] = _LEGAL_PATTERNS
    human_intents: tuple[str, ...] = ("hablar_con_humano",)
    human_patterns: tuple[str, ...] = _HUMAN_PATTERNS
    opt_out_intents: tuple[str, ...] = ("darse_de_baja",)
    opt_out_patterns: tuple[str, ...] = _OPT_OUT_PATTERNS
    opt_in_intents: tuple[str, ...] = ("suscribirse",)
    # Answered with a polite "not something I can help with", never offered as an option.
    out_of_scope_intent: str | None = "fuera_de_alcance"
    insults: tuple[str, ...] = _INSULTS
    # Insulting phrases (regular expressions), for the words that are not always insults.
    insult_patterns: tuple[str, ...] = _INSULT_PATTERNS
    # Low-confidence turns in a row (this one included) that escalate instead of asking again.
    low_confidence_streak: int = 2
    # Negative-sentiment turns in a row (this one included) that escalate.
    negative_streak: int = 3
    negative_sentiments: tuple[str, ...] = ("negativo", "negative", "neg", "N")
    # A message in all caps with "!!!" is not shouting when its sentiment is one of these.
    positive_sentiments: tuple[str, ...] = ("positivo", "positive", "pos", "P")
    # The same intent right after the bot answered it means the answer did not help;
    # except for these, which people repeat naturally.
    repeat_exempt_intents: tuple[str, ...] = ("saludo", "agradecimiento", "despedida")
    # Shouting: at least this many letters, this share in capitals, and a run of three or
    # more "!" and "?" with a "!" in it.
    shouting_min_letters: int = 8
    shouting_caps_ratio: float = 0.8
    # Ask for consent (WhatsApp opt-in, data processing) before anything is stored.
    require_consent: bool = True
    # Recent turns kept in the conversation view and copied into a ticket.
    history_turns: int = 10

    def __post_init__(self) -> None:
        import re

        for name in ("answer_threshold", "frustration_threshold", "clarify_min_probability", "shouting_caps_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"routing.{name} must be between 0 and 1, got {value}")
        if not 2 <= self.clarify_max_options <= 10:
            raise ConfigError(f"routing.clarify_max_options must be 2..10 (WhatsApp lists hold 10 rows), got {self.clarify_max_options}")
        for name in ("low_confidence_streak", "negative_streak", "history_turns"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"routing.{name} must be at least 1, got {value}")
        if max(self.low_confidence_streak, self.negative_streak) > self.history_turns + 1:
            raise ConfigError("routing.history_turns must cover the streak lengths")
        if self.shouting_min_letters < 1:
            raise ConfigError(f"routing.shouting_min_letters must be at least 1, got {self.shouting_min_letters}")
        for name in ("legal_patterns", "human_patterns", "opt_out_patterns", "insult_patterns"):
            for pattern in getattr(self, name):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"routing.{name}: invalid regular expression {pattern!r}: {exc}") from None
        if self.out_of_scope_intent is not None and self.out_of_scope_intent in self.sensitive_intents:
            raise ConfigError(f"routing.out_of_scope_intent {self.out_of_scope_intent!r} is also a sensitive intent")


# WhatsApp redelivers an unacknowledged webhook for up to 7 days. The processed-message
# records are what make a redelivery a duplicate, so they must outlive that window.
WHATSAPP_RETRY_DAYS = 7


@dataclass(frozen=True)
class PrivacyConfig:
    """What is kept about customers, and for how long (``nlu purge`` applies it)."""

    # Resolved tickets, conversation turns and processed-message records older than this
    # are deleted by `nlu purge`; unresolved tickets are never purged.
    retention_days: float = 30.0

    def __post_init__(self) -> None:
        if not self.retention_days > WHATSAPP_RETRY_DAYS:
            raise ConfigError(
                f"privacy.retention_days must be more than {WHATSAPP_RETRY_DAYS} (WhatsApp retries a webhook for up to "
                f"{WHATSAPP_RETRY_DAYS} days; a redelivery after its record is purged would be answered twice), "
                f"got {self.retention_days}"
            )


@dataclass(frozen=True)
class HandoverConfig:
    """When people work the queue (``nlu.hours``): outside these hours an escalation
    still makes a ticket, and the customer is told when the team opens."""

    timezone: str = "UTC"  # an IANA name: "America/Mexico_City", "Europe/Madrid"
    hours: tuple[str, ...] = ()  # "mon-fri 09:00-18:00", "sat 10:00-14:00"; none = always open
    closed_dates: tuple[str, ...] = ()  # holidays: "2026-12-25"

    def __post_init__(self) -> None:
        self.business_hours()  # refuses what it cannot read, naming the key

    def business_hours(self) -> BusinessHours | None:
        return BusinessHours.parse(self.timezone, self.hours, self.closed_dates)


@dataclass(frozen=True)
class Config:
    """The whole ``nlu.toml``: one attribute per section."""

    train: TrainConfig = field(default_factory=TrainConfig)
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    handover: HandoverConfig = field(default_factory=HandoverConfig)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of any config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def load_config(path: str | Path | None = None) -> Config:
    """Read ``nlu.toml`` (or return the defaults when ``path`` is None)."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_mapping(raw, source=str(path))


def config_from_mapping(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from nested mappings, refusing unknown sections and keys."""
    return _build(Config, raw, source)


def routing_from_mapping(raw: Mapping[str, Any], source: str = "routing") -> RoutingPolicy:
    """A :class:`RoutingPolicy` from a mapping (``meta.json`` "routing"), unknown keys refused."""
    policy: RoutingPolicy = _build(RoutingPolicy, raw, source)
    return policy


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        # Messages read "nlu.toml [train] C: expected float, got 'x'".
        child = f"{where} [{name}]" if cls is Config else f"{where} {name}"
        values[name] = _coerce(hints[name], value, child)
    try:
        return cls(**values)
    except ConfigError as exc:  # a value rule of __post_init__: it names the key, not the file
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # pragma: no cover - guarded by the unknown-key check
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint is float and not math.isfinite(value):  # TOML has nan and inf; no setting means them
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return value
