"""Bot answers: the catalogue (``data/responses_es.yaml``) and WhatsApp-shaped replies.

A :class:`Reply` is text plus either reply buttons (at most 3, titles at most 20
characters) or a list message (at most 10 rows, titles at most 24, descriptions at most
72), the WhatsApp Cloud API limits. :func:`load_catalogue` checks every entry against
them when it loads (and that every intent can be offered as an option: a distinct,
non-blank title and an ``intent:<name>`` id of at most 200 characters), so a bad
catalogue fails at start-up with an error naming the entry, never in front of a
customer. :func:`to_whatsapp` builds the Cloud API message body.

Placeholders ``{order}`` and ``{city}`` are filled from the customer's message by a
small extractor (order references like ``#A-48213`` or ``pedido 1029384``; a list of
Latin American and Spanish cities); when the message has none, the catalogue's
"missing" wording is used ("tu pedido", "tu ciudad").
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, InputError
from .hours import MAX_OPENS
from .text import UNPAIRED_SURROGATE, clean, fold_accents

DEFAULT_CATALOGUE = Path(__file__).resolve().parent.parent / "data" / "responses_es.yaml"

# WhatsApp Cloud API limits.
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_LIST_BUTTON = 20
MAX_TEXT_BODY = 4096
MAX_INTERACTIVE_BODY = 1024
MAX_ID = 200
# The longest value put into a placeholder: order references (a tracking number is at
# most ~35 characters) and city names (the longest listed is 22). Anything longer that
# looks like an order reference is not one, and would push a reply past the body limits.
MAX_SLOT = 40

PLACEHOLDERS: tuple[str, ...] = ("order", "city")
SYSTEM_MESSAGES: tuple[str, ...] = (
    "disclosure", "consent", "consent_granted", "consent_declined", "opt_out", "clarify", "human_option", "escalate",
)
# Messages a catalogue may leave out, keeping the behaviour from before they existed:
# without "unreadable" (the answer to a voice note, a sticker, a photo without a caption)
# the bot stays quiet; without "acknowledged" (the answer to a bare "ok" / "sí" that
# answers no question) such a message is scored like any other; "escalate_closed" (the
# handover outside the team's hours, nlu.toml [handover]; {opens} says when it opens) is
# needed only when hours are set.
OPTIONAL_SYSTEM_MESSAGES: tuple[str, ...] = ("unreadable", "acknowledged", "escalate_closed")
# Placeholders that only one system message may use, filled by the service, not from the message.
SYSTEM_PLACEHOLDERS: dict[str, tuple[str, ...]] = {"escalate_closed": ("opens",)}
# Button/row ids the service understands.
HUMAN_ID = "human"
CONSENT_YES_ID = "consent:yes"
CONSENT_NO_ID = "consent:no"
INTENT_PREFIX = "intent:"


_PARAGRAPH = "\n\n"


@dataclass(frozen=True)
class Button:
    id: str
    title: str


@dataclass(frozen=True)
class Row:
    id: str
    title: str
    description: str = ""


@dataclass(frozen=True)
class ListMessage:
    button: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Reply:
    """One bot message: text, plus reply buttons or a list (never both)."""

    text: str
    buttons: tuple[Button, ...] = ()
    list: ListMessage | None = None

    @property
    def kind(self) -> Literal["text", "buttons", "list"]:
        return "buttons" if self.buttons else "list" if self.list is not None else "text"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.buttons:
            out["buttons"] = [{"id": b.id, "title": b.title} for b in self.buttons]
        if self.list is not None:
            out["list"] = {
                "button": self.list.button,
                "rows": [{"id": r.id, "title": r.title, "description": r.description} for r in self.list.rows],
            }
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Reply:
        listed = raw.get("list")
        return cls(
            text=raw["text"],
            buttons=tuple(Button(b["id"], b["title"]) for b in raw.get("buttons", ())),
            list=None
            if listed is None
            else ListMessage(listed["button"], tuple(Row(r["id"], r["title"], r.get("description", "")) for r in listed["rows"])),
        )

    def prefixed(self, text: str) -> Reply:
        """The same reply with ``text`` as a first paragraph (e.g. the bot disclosure)."""
        return Reply(f"{text}{_PARAGRAPH}{self.text}", self.buttons, self.list)

    def is_prefixed(self, text: str) -> bool:
        """Whether ``text`` is this reply's first paragraph, as :meth:`prefixed` puts it."""
        return self.text.startswith(text + _PARAGRAPH)


# Template messages: Meta's rules, checked before anything is sent or stored.
MAX_TEMPLATE_NAME = 512  # names: lowercase letters, digits and underscores
MAX_TEMPLATE_BODY = 1024  # an approved body's maximum: its parameters cannot hold more
MAX_TEMPLATE_PARAMETERS = 100  # a sanity bound; Meta checks the count the template expects (132000)
_TEMPLATE_NAME = re.compile(f"[a-z0-9_]{{1,{MAX_TEMPLATE_NAME}}}")
_TEMPLATE_LANGUAGE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?")  # es, es_MX, fil, pt_BR: Meta's codes
# Meta refuses a parameter with a line break or tab (132018), or more than 4 spaces in a row.
_NOT_IN_PARAMETER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(" {5,}")


@dataclass(frozen=True)
class Template:
    """An approved WhatsApp template message: the only kind that reaches a customer more
    than 24 hours after their last message. ``parameters`` fill the body's ``{{1}}``,
    ``{{2}}``... in order (as text). Checked against Meta's rules on creation
    (:class:`nlu.errors.InputError`); whether the template exists, is approved in that
    language and takes that many parameters only Meta knows (codes 132001, 132000)."""

    name: str
    language: str  # Meta's code: "es", "es_MX", "es_AR", "pt_BR"...
    parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.parameters, list):
            object.__setattr__(self, "parameters", tuple(self.parameters))
        problem = template_problem(self.name, self.language, self.parameters)
        if problem is not None:
            raise InputError(problem)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "parameters": list(self.parameters)}

    def summary(self, parameters: Sequence[str] | None = None) -> str:
        """One line for a person reading the ticket: which template, with what (``parameters``
        instead of its own, e.g. redacted)."""
        shown = self.parameters if parameters is None else parameters
        return f"[template {self.name} {self.language}" + (f": {' | '.join(shown)}]" if shown else "]")


def template_problem(name: Any, language: Any, parameters: Any) -> str | None:
    """Why these cannot make a template message, or None. The HTTP model asks this too."""
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        if isinstance(name, str) and len(name) > MAX_TEMPLATE_NAME:
            return f"template name: Meta's names are at most {MAX_TEMPLATE_NAME} characters, got {len(name)}"
        return f"template name {name!r}: Meta's names are lowercase letters, digits and underscores (e.g. seguimiento_caso)"
    if not isinstance(language, str) or not _TEMPLATE_LANGUAGE.fullmatch(language):
        return f"template language {language!r}: use Meta's code of the approved translation (es, es_MX, es_AR, pt_BR...)"
    if isinstance(parameters, str) or not isinstance(parameters, Sequence):
        return "template parameters must be a list of strings"
    if len(parameters) > MAX_TEMPLATE_PARAMETERS:
        return f"a template takes at most {MAX_TEMPLATE_PARAMETERS} parameters, got {len(parameters)}"
    for i, value in enumerate(parameters):
        where = f"template parameters[{i}]"
        if not isinstance(value, str):
            return f"{where} must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"{where} is blank"
        if UNPAIRED_SURROGATE.search(value):
            return f"{where} holds an unpaired surrogate (not Unicode text)"
        if _NOT_IN_PARAMETER.search(value):
            return f"{where} holds a line break, tab or control character, which Meta refuses in a parameter"
        if _SPACES.search(value):
            return f"{where} holds more than 4 spaces in a row, which Meta refuses in a parameter"
    if sum(len(value) for value in parameters) > MAX_TEMPLATE_BODY:
        return f"template parameters hold more than the {MAX_TEMPLATE_BODY} characters of a template's whole body"
    return None


@dataclass(frozen=True)
class Entry:
    """One catalogue entry (an intent's answer or a system message)."""

    text: str
    title: str = ""
    description: str = ""
    buttons: tuple[Button, ...] = ()
    list: ListMessage | None = None


# -- extraction of placeholders ----------------------------------------------------------

_ORDER_HASH = re.compile(r"#\s?([A-Za-z]{0,3}-?\d[\w-]{2,})")
_ORDER_AFTER_WORD = re.compile(
    r"(?i)\b(?:pedido|orden|compra|order|n[°º])\s*(?:n[°ºo]\.?\s*|num(?:ero)?\.?\s*|n[úu]mero\s*|#\s*)?"
    r"((?:[A-Za-z]{1,3}-?)?\d[\d-]{3,}\d)\b"
)

_CITIES: tuple[str, ...] = (
    # México
    "Ciudad de México", "CDMX", "Guadalajara", "Monterrey", "Puebla", "Tijuana", "León", "Querétaro", "Mérida",
    "Cancún", "Toluca", "Chihuahua", "Oaxaca", "Veracruz", "Acapulco", "Morelia", "Aguascalientes", "Saltillo",
    "Hermosillo", "Culiacán",
    # Colombia
    "Bogotá", "Medellín", "Cali", "Barranquilla", "Cartagena", "Bucaramanga", "Pereira", "Manizales", "Cúcuta",
    "Santa Marta", "Ibagué",
    # Argentina
    "Buenos Aires", "Córdoba", "Rosario", "Mendoza", "La Plata", "Mar del Plata", "Tucumán", "Salta", "Neuquén",
    # Chile
    "Santiago", "Valparaíso", "Viña del Mar", "Concepción", "Antofagasta", "Temuco", "La Serena",
    # Perú
    "Lima", "Arequipa", "Trujillo", "Cusco", "Chiclayo", "Piura", "Callao",
    # Venezuela, Ecuador, Bolivia, Uruguay, Paraguay
    "Caracas", "Maracaibo", "Valencia", "Barquisimeto", "Maracay", "Quito", "Guayaquil", "Cuenca", "La Paz",
    "Santa Cruz", "Cochabamba", "Sucre", "Montevideo", "Asunción",
    # Centroamérica y Caribe
    "Ciudad de Panamá", "Panamá", "San José", "Ciudad de Guatemala", "San Salvador", "Tegucigalpa",
    "San Pedro Sula", "Managua", "Santo Domingo", "La Habana", "San Juan",
    # España
    "Madrid", "Barcelona", "Sevilla", "Zaragoza", "Málaga", "Murcia", "Palma", "Bilbao", "Alicante", "Valladolid",
    "Vigo", "Gijón", "Granada", "A Coruña", "Vitoria", "Pamplona", "San Sebastián", "Santander", "Salamanca",
    "Las Palmas", "Santa Cruz de Tenerife", "Oviedo", "Cádiz", "Toledo",
)
# City names that are also everyday words or first names ("la plata" is money, "salta"
# a verb): only taken when written with a capital letter.
_AMBIGUOUS_CITIES = frozenset(
    {"lima", "la paz", "leon", "santiago", "granada", "concepcion", "cuenca", "palma", "salta", "rosario",
     "la plata", "la serena", "valencia", "victoria", "san juan", "santa cruz", "sucre", "cali"}
)
_CITY_BY_FOLDED = {fold_accents(c.lower()): c for c in _CITIES}
_CITY_RE = re.compile(
    r"(?<![\w])(" + "|".join(re.escape(c) for c in sorted(_CITY_BY_FOLDED, key=len, reverse=True)) + r")(?![\w])"
)


def extract_order(text: str) -> str | None:
    """An order reference in the message ("#A-48213", "1029384"), or None."""
    text = clean(text)
    match = _ORDER_HASH.search(text)
    if match:
        return _slot("#" + match.group(1))
    match = _ORDER_AFTER_WORD.search(text)
    return _slot(match.group(1)) if match else None


def _slot(value: str) -> str | None:
    return value if len(value) <= MAX_SLOT else None


def extract_city(text: str) -> str | None:
    """The first known city named in the message, spelled properly, or None."""
    cleaned = clean(text)
    folded = fold_accents(cleaned.lower())
    same_length = len(folded) == len(cleaned)  # lower() can change the length of rare letters
    for match in _CITY_RE.finditer(folded):
        name = match.group(1)
        if name in _AMBIGUOUS_CITIES and not (same_length and cleaned[match.start()].isupper()):
            continue
        return _CITY_BY_FOLDED[name]
    return None


def extract_slots(text: str) -> dict[str, str | None]:
    """Placeholder values found in the message."""
    return {"order": extract_order(text), "city": extract_city(text)}


# -- the catalogue --------------------------------------------------------------------------


class Catalogue:
    """Validated answers per intent plus the system messages."""

    def __init__(
        self,
        intents: Mapping[str, Entry],
        system: Mapping[str, Entry],
        placeholders: Mapping[str, Mapping[str, str]],
        list_button: str,
        source: str = "catalogue",
    ) -> None:
        self.intents = dict(intents)
        self.system = dict(system)
        self.placeholders = {k: dict(v) for k, v in placeholders.items()}
        self.list_button = list_button
        self.source = source

    def __contains__(self, intent: object) -> bool:
        return intent in self.intents

    def title(self, intent: str) -> str:
        return _option_title(intent, self.intents.get(intent))

    def fill(self, template: str, message: str = "", **given: str) -> str:
        slots = extract_slots(message) if message else {}
        values = dict(given)
        for name in PLACEHOLDERS:
            wording = self.placeholders.get(name, {"found": "{value}", "missing": ""})
            value = slots.get(name)
            values[name] = wording["found"].replace("{value}", value) if value else wording["missing"]
        return template.format(**values)

    def answer(self, intent: str, message: str = "") -> Reply:
        """The answer to ``intent``, placeholders filled from the customer's ``message``."""
        entry = self.intents.get(intent)
        if entry is None:
            raise ConfigError(f"{self.source}: no answer for intent {intent!r}")
        return Reply(self.fill(entry.text, message), entry.buttons, entry.list)

    def system_reply(self, name: str, message: str = "", **given: str) -> Reply:
        """A system message; ``given`` fills its own placeholders ({opens})."""
        entry = self.system[name]
        return Reply(self.fill(entry.text, message, **given), entry.buttons, entry.list)

    def clarify(self, options: Sequence[str], kind: str) -> Reply:
        """A clarifying question: one button or row per intent ("intent:<name>"), plus
        "talk to a person" when there is room."""
        prompt = self.system["clarify"].text
        human = self.system["human_option"]
        if kind == "buttons":
            buttons = [Button(INTENT_PREFIX + o, self.title(o)) for o in options[:MAX_BUTTONS]]
            if len(buttons) < MAX_BUTTONS and human.title not in {b.title for b in buttons}:
                buttons.append(Button(HUMAN_ID, human.title[:MAX_BUTTON_TITLE]))
            return Reply(prompt, tuple(buttons))
        rows = [Row(INTENT_PREFIX + o, self.title(o)[:MAX_ROW_TITLE], self.intents[o].description if o in self.intents else "") for o in options[:MAX_ROWS]]
        if len(rows) < MAX_ROWS and human.title[:MAX_ROW_TITLE] not in {r.title for r in rows}:
            rows.append(Row(HUMAN_ID, human.title[:MAX_ROW_TITLE], human.description))
        return Reply(prompt, (), ListMessage(self.list_button, tuple(rows)))


def load_catalogue(path: str | Path | None = None, intents: Iterable[str] | None = None) -> Catalogue:
    """Read and validate a catalogue; ``intents`` (e.g. the model's labels) must all have
    an answer. Every error is a :class:`ConfigError` naming the file and the entry."""
    path = Path(path) if path is not None else DEFAULT_CATALOGUE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: response catalogue not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    return catalogue_from_mapping(raw, intents=intents, source=str(path))


def catalogue_from_mapping(raw: Any, intents: Iterable[str] | None = None, source: str = "catalogue") -> Catalogue:
    """Validate a parsed catalogue (see :func:`load_catalogue`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping with 'intents' and 'system'")
    unknown = sorted(set(raw) - {"intents", "system", "placeholders"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(map(str, unknown))}")
    placeholders = _placeholders(raw.get("placeholders") or {}, source)
    raw_intents = raw.get("intents")
    if not isinstance(raw_intents, Mapping) or not raw_intents:
        raise ConfigError(f"{source}: 'intents' must map each intent to its answer")
    raw_system = raw.get("system")
    if not isinstance(raw_system, Mapping):
        raise ConfigError(f"{source}: 'system' must hold the system messages ({', '.join(SYSTEM_MESSAGES)})")
    known = {str(k) for k in raw_intents}
    entries = {str(name): _entry(value, f"{source}: intents.{name}", known, needs_text=True) for name, value in raw_intents.items()}
    for name, entry in entries.items():
        if len(entry.title) > MAX_BUTTON_TITLE:
            # Titles become clarification buttons.
            raise ConfigError(f"{source}: intents.{name}.title: {entry.title!r} is longer than {MAX_BUTTON_TITLE} characters")
    _check_options(entries, source)
    missing_system = [m for m in SYSTEM_MESSAGES if m not in raw_system]
    if missing_system:
        raise ConfigError(f"{source}: system: missing message(s) {', '.join(missing_system)}")
    extra = sorted(set(map(str, raw_system)) - set(SYSTEM_MESSAGES) - set(OPTIONAL_SYSTEM_MESSAGES))
    if extra:
        raise ConfigError(f"{source}: system: unknown message(s) {', '.join(extra)}")
    system: dict[str, Entry] = {}
    list_button = "Ver opciones"
    for name in (*SYSTEM_MESSAGES, *(m for m in OPTIONAL_SYSTEM_MESSAGES if m in raw_system)):
        value = raw_system[name]
        where = f"{source}: system.{name}"
        if name == "clarify" and isinstance(value, Mapping):
            list_button = str(value.get("list_button", list_button))
            if not list_button or len(list_button) > MAX_LIST_BUTTON:
                raise ConfigError(f"{where}.list_button: must be 1..{MAX_LIST_BUTTON} characters, got {list_button!r}")
            value = {k: v for k, v in value.items() if k != "list_button"}
        if name == "human_option":
            system[name] = _entry(value, where, known, needs_text=False)
            if not system[name].title or len(system[name].title) > MAX_BUTTON_TITLE:
                raise ConfigError(f"{where}.title: must be 1..{MAX_BUTTON_TITLE} characters")
        else:
            system[name] = _entry(value, where, known, needs_text=True, own=SYSTEM_PLACEHOLDERS.get(name, ()))
    # The disclosure is prepended to the first reply: the longest combination must fit.
    disclosure = len(system["disclosure"].text) + 2
    for name, entry in [*(("intents." + k, v) for k, v in entries.items()), *(("system." + k, v) for k, v in system.items())]:
        # The clarifying question has no buttons of its own but always goes out with the
        # options as buttons or a list, so it is an interactive body too.
        interactive = entry.buttons or entry.list or name == "system.clarify"
        limit = MAX_INTERACTIVE_BODY if interactive else MAX_TEXT_BODY
        if _longest_fill(entry.text, placeholders) + disclosure > limit:
            raise ConfigError(f"{source}: {name}.text: with the disclosure it exceeds WhatsApp's {limit} characters")
    if intents is not None:
        lacking = [i for i in intents if i not in entries]
        if lacking:
            raise ConfigError(f"{source}: intents: no answer for {', '.join(lacking)}")
    return Catalogue(entries, system, placeholders, list_button, source)


def _longest_fill(template: str, placeholders: Mapping[str, Mapping[str, str]]) -> int:
    """The length of ``template`` once filled, with every placeholder at its longest:
    the "found" wording around a value of MAX_SLOT characters, or the "missing" one;
    {opens} at the longest date nlu.hours writes."""
    widest = {name: max(w["found"].replace("{value}", "x" * MAX_SLOT), w["missing"], key=len) for name, w in placeholders.items()}
    return len(template.format(**widest, opens="x" * MAX_OPENS))


def _option_title(intent: str, entry: Entry | None) -> str:
    """The button or row title that offers ``intent`` in a clarifying question."""
    return entry.title if entry is not None and entry.title else intent.replace("_", " ")[:MAX_BUTTON_TITLE]


def _check_options(entries: Mapping[str, Entry], source: str) -> None:
    """Every intent can be offered in a clarifying question: ``intent:<name>`` fits a row
    id, and its title is a button title WhatsApp accepts next to any other intent's (not
    blank, not repeated). Intent names come from the training data, so a long or
    look-alike set (``consulta_estado_pedido_nacional`` / ``..._internacional``) is caught
    here, not by the Cloud API refusing the question in front of a customer."""
    offered_by: dict[str, str] = {}
    for name, entry in entries.items():
        if len(INTENT_PREFIX + name) > MAX_ID:
            raise ConfigError(
                f"{source}: intents.{name[:40]}...: intent names of more than {MAX_ID - len(INTENT_PREFIX)} characters "
                "do not fit a WhatsApp button or row id; shorten the label"
            )
        title = _option_title(name, entry)
        if not title.strip():
            raise ConfigError(f"{source}: intents.{name}.title: needed, the intent name gives a blank option title")
        if title in offered_by:
            raise ConfigError(
                f"{source}: intents.{name}.title: {title!r} is also the option title of intents.{offered_by[title]}; "
                "WhatsApp refuses buttons with the same title, so give one of them its own title"
            )
        offered_by[title] = name


def _placeholders(raw: Any, source: str) -> dict[str, dict[str, str]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: placeholders: expected a mapping")
    out = {name: {"found": "{value}", "missing": ""} for name in PLACEHOLDERS}
    for name, wording in raw.items():
        if name not in PLACEHOLDERS:
            raise ConfigError(f"{source}: placeholders.{name}: unknown placeholder; known: {', '.join(PLACEHOLDERS)}")
        if not isinstance(wording, Mapping) or set(wording) - {"found", "missing"}:
            raise ConfigError(f"{source}: placeholders.{name}: expected 'found' and 'missing' wording")
        for key in ("found", "missing"):
            if key in wording:
                if not isinstance(wording[key], str):
                    raise ConfigError(f"{source}: placeholders.{name}.{key}: expected text")
                out[name][key] = wording[key]
    return out


_ENTRY_KEYS = {"text", "title", "description", "buttons", "list"}


def _entry(raw: Any, where: str, intents: set[str], needs_text: bool, own: tuple[str, ...] = ()) -> Entry:
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'text'")
    unknown = sorted(set(map(str, raw)) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    text = raw.get("text", "")
    if not isinstance(text, str) or (needs_text and not text.strip()):
        raise ConfigError(f"{where}.text: missing or empty")
    _check_placeholders(text, f"{where}.text", (*PLACEHOLDERS, *own))
    title = _string(raw.get("title", ""), f"{where}.title")
    description = _string(raw.get("description", ""), f"{where}.description")
    if len(description) > MAX_ROW_DESCRIPTION:
        raise ConfigError(f"{where}.description: longer than {MAX_ROW_DESCRIPTION} characters")
    if "buttons" in raw and "list" in raw:
        raise ConfigError(f"{where}: a WhatsApp message has buttons or a list, not both")
    buttons: tuple[Button, ...] = ()
    if "buttons" in raw:
        items = raw["buttons"]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}.buttons: expected a non-empty list")
        if len(items) > MAX_BUTTONS:
            raise ConfigError(f"{where}.buttons: {len(items)} buttons, WhatsApp allows at most {MAX_BUTTONS}")
        buttons = tuple(
            Button(*_choice(item, f"{where}.buttons[{i}]", intents, MAX_BUTTON_TITLE, description=False)[:2])
            for i, item in enumerate(items)
        )
        _unique([b.id for b in buttons], f"{where}.buttons", "id")
        _unique([b.title for b in buttons], f"{where}.buttons", "title")
    listed: ListMessage | None = None
    if "list" in raw:
        spec = raw["list"]
        if not isinstance(spec, Mapping) or set(spec) - {"button", "rows"}:
            raise ConfigError(f"{where}.list: expected 'button' and 'rows'")
        label = _string(spec.get("button", "Ver opciones"), f"{where}.list.button")
        if not label or len(label) > MAX_LIST_BUTTON:
            raise ConfigError(f"{where}.list.button: must be 1..{MAX_LIST_BUTTON} characters, got {label!r}")
        rows_raw = spec.get("rows")
        if not isinstance(rows_raw, list) or not rows_raw:
            raise ConfigError(f"{where}.list.rows: expected a non-empty list")
        if len(rows_raw) > MAX_ROWS:
            raise ConfigError(f"{where}.list.rows: {len(rows_raw)} rows, WhatsApp allows at most {MAX_ROWS}")
        rows = tuple(Row(*_choice(item, f"{where}.list.rows[{i}]", intents, MAX_ROW_TITLE, description=True)) for i, item in enumerate(rows_raw))
        _unique([r.id for r in rows], f"{where}.list.rows", "id")
        listed = ListMessage(label, rows)
    return Entry(text=text, title=title, description=description, buttons=buttons, list=listed)


def _choice(raw: Any, where: str, intents: set[str], max_title: int, description: bool) -> tuple[str, str, str]:
    if not isinstance(raw, Mapping) or "id" not in raw or "title" not in raw:
        raise ConfigError(f"{where}: expected 'id' and 'title'")
    allowed = {"id", "title", "description"} if description else {"id", "title"}
    unknown = sorted(set(map(str, raw)) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    ident = _string(raw["id"], f"{where}.id")
    title = _string(raw["title"], f"{where}.title")
    text = _string(raw.get("description", ""), f"{where}.description")
    if not title:
        raise ConfigError(f"{where}.title: empty")
    if len(title) > max_title:
        raise ConfigError(f"{where}.title: {title!r} is {len(title)} characters, WhatsApp allows at most {max_title}")
    if len(text) > MAX_ROW_DESCRIPTION:
        raise ConfigError(f"{where}.description: longer than {MAX_ROW_DESCRIPTION} characters")
    if not ident or len(ident) > MAX_ID:
        raise ConfigError(f"{where}.id: must be 1..{MAX_ID} characters")
    if ident.startswith(INTENT_PREFIX):
        if ident[len(INTENT_PREFIX) :] not in intents:
            raise ConfigError(f"{where}.id: {ident!r} names an intent with no answer in the catalogue")
    elif ident not in (HUMAN_ID, CONSENT_YES_ID, CONSENT_NO_ID):
        raise ConfigError(f"{where}.id: {ident!r} is not 'intent:<name>', '{HUMAN_ID}', '{CONSENT_YES_ID}' or '{CONSENT_NO_ID}'")
    return ident, title, text


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected text, got {value!r}")
    return value


def _unique(values: Sequence[str], where: str, what: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: duplicate {what} {value!r}")
        seen.add(value)


def _check_placeholders(text: str, where: str, known: tuple[str, ...] = PLACEHOLDERS) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: bad braces ({exc}); write {{{{ and }}}} for literal braces") from None
    for name in fields:
        if name not in known:
            raise ConfigError(f"{where}: unknown placeholder {{{name}}}; known: {', '.join('{' + p + '}' for p in known)}")


# -- WhatsApp Cloud API -------------------------------------------------------------------------


# A business-scoped user id: a two-letter country code, a period, up to 128 letters and
# digits ("US.13491208655302741918"; a parent BSUID has "ENT." after the country code).
_BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}")


def to_whatsapp(reply: Reply, to: str) -> dict[str, Any]:
    """The Cloud API ``POST /{phone-number-id}/messages`` body for ``reply`` to ``to``.

    ``to`` is a phone-number WhatsApp id or, for a customer whose number Meta withholds, a
    BSUID; the Cloud API takes a BSUID in ``recipient``, not ``to`` (which it reads as a
    phone number)."""
    base = _addressed(to)
    if reply.buttons:
        return {
            **base,
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": reply.text},
                "action": {"buttons": [{"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in reply.buttons]},
            },
        }
    if reply.list is not None:
        rows = []
        for r in reply.list.rows:
            row = {"id": r.id, "title": r.title}
            if r.description:
                row["description"] = r.description
            rows.append(row)
        return {
            **base,
            "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": reply.text},
                "action": {"button": reply.list.button, "sections": [{"title": reply.list.button[:24], "rows": rows}]},
            },
        }
    return {**base, "type": "text", "text": {"preview_url": False, "body": reply.text}}


def template_body(template: Template, to: str) -> dict[str, Any]:
    """The Cloud API body of a template message to ``to`` (addressed as :func:`to_whatsapp`
    addresses a reply); the parameters fill the body component, none means no component."""
    message: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if template.parameters:
        message["components"] = [{"type": "body", "parameters": [{"type": "text", "text": p} for p in template.parameters]}]
    return {**_addressed(to), "type": "template", "template": message}


def _addressed(to: str) -> dict[str, Any]:
    """A body's envelope for ``to``: a phone-number WhatsApp id in ``to``, a BSUID in
    ``recipient`` (the Cloud API reads ``to`` as a phone number)."""
    address = "recipient" if _BSUID.fullmatch(to) else "to"
    return {"messaging_product": "whatsapp", "recipient_type": "individual", address: to}
