"""Spanish chat normalisation and tokenisation.

Pure module-level functions (no state but compiled patterns and one cached spaCy
tokenizer), so fitted pipelines that reference them pickle and score the same after
loading.

Two views of a message:

* :func:`clean` is for display and storage: Unicode-normalised, control characters and
  broken surrogates removed, whitespace collapsed, accents and case kept.
* :func:`normalize` is for features: placeholders for URLs, e-mails, @mentions, phones, order
  numbers, amounts and numbers (and for the tags that :mod:`nlu.privacy` puts in stored
  text, so a redacted message has the features of the raw one); lower case; laughter and elongations collapsed; accents
  folded (ñ kept: "año" is not "ano"); chat abbreviations expanded. Emoji are kept,
  they carry sentiment.

spaCy's Spanish stop-word list is deliberately not used: it contains no, ni, nunca, nada,
sin, mal, peor, ya, qué, dónde, which carry intent and sentiment.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from . import privacy

# Placeholder words. Plain letters so that every tokenizer keeps them whole.
URL = "xurl"
EMAIL = "xemail"
PHONE = "xphone"
ORDER = "xorder"
MONEY = "xmoney"
NUMBER = "xnum"
LAUGH = "xrisa"
MENTION = "xuser"
PLACEHOLDERS = frozenset({URL, EMAIL, PHONE, ORDER, MONEY, NUMBER, LAUGH, MENTION})

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufeff]")
# Unpaired UTF-16 surrogates: legal in a Python str (a JSON "\ud83d" escape, undecodable
# argv bytes), not Unicode text, so no encoder writes them.
UNPAIRED_SURROGATE = re.compile(r"[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")

_URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[a-z0-9-]+\.(?:com|net|org|es|mx|co|ar|pe|cl|ve|ec|pa|ly|io)(?:/\S*)?\b")
_EMAIL_RE = re.compile(r"(?i)\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# An order reference: after a word that names one ("pedido 1029384", "orden #55-2231",
# "guía nº AB123"), or any "#" followed by letters/digits containing a digit.
_ORDER_AFTER_WORD_RE = re.compile(
    r"(?i)\b(?=[pocgtsfb])(pedido|orden|compra|order|gu[ií]a|tracking|seguimiento|folio|ticket|boleta)"
    r"\s+(?:n[°ºo]\.?|num(?:ero)?\.?|n[úu]mero|#)?\s*#?[a-z]{0,3}-?\d[\w-]{2,}"
)
_ORDER_HASH_RE = re.compile(r"#\s?(?=[\w-]*\d)[\w-]{3,}")
# Eight or more digits, optionally with +, spaces, dots, dashes or parentheses.
_PHONE_RE = re.compile(r"(?<![\w#])\+?\(?\d(?:[\s().-]?\d){7,}(?!\w)")
_MONEY_RE = re.compile(
    r"(?i)(?=[$€£sbue\d])(?:(?:[$€£]|s/\.?|bs\.?|us\$|usd|eur)\s?\d[\d.,]*(?:\s?(?:mil|k))?"
    r"|\b\d[\d.,]*\s?(?:pesos|soles|euros|€|d[oó]lares|usd|bol[ií]vares|lucas|luquitas|palos|mil pesos)\b)"
)
_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
# Redaction tags (nlu.privacy) read as the placeholder their raw text mostly gets (a card or
# an id number is a long run of digits, as a phone is). Stored text is redacted: tickets,
# and the training rows exported from them; without this, "[TELEFONO]" would train the
# word "telefono" where live traffic shows "xphone".
_REDACTION_TAGS = {privacy.EMAIL: EMAIL, privacy.PHONE: PHONE, privacy.CARD: PHONE, privacy.DOCUMENT: PHONE}
_REDACTION_RE = re.compile("|".join(map(re.escape, _REDACTION_TAGS)))
_DIGIT_RE = re.compile(r"\d")
# Chat and social-media handles: "@Iberia", and "USER" (how public tweet corpora anonymise them).
# The lookaheads below only let the engine skip positions where no alternative can start.
_MENTION_RE = re.compile(r"(?=[@U])(?:(?<![\w@.])@\w+|\bUSER\b)")
# An e-mail needs a local-part character right before "@"; a mention does not have one.
_EMAIL_HINT_RE = re.compile(r"[\w.+-]@")
# The lookahead only lets the engine skip positions that cannot start a laugh (2x faster).
_LAUGH_RE = re.compile(r"(?i)\b(?=[jhlxaeiou])(?:(?:j+[aeiou]+){2,}j*|(?:[aeiou]?j+){3,}|(?:j+s+){2,}j*|(?:ha){2,}h?|(?:he){2,}h?|lo+l|xd+)\b")
# Three or more of the same letter: "holaaaa" -> "hola", "nooo" -> "no". Spanish words
# never triple a letter; doubles (ll, rr, cc, ee) are left alone.
_ELONGATION_RE = re.compile(r"([^\W\d_wx])\1\1+")
# Cheap necessary conditions, searched first (3-5x faster than the patterns they guard,
# which start with a word boundary or a backreference the engine cannot skip ahead on):
# every laugh contains one of these (j-laughs two j's with only vowels or s between them),
# every elongation a tripled word character. The laugh hint runs on lower-cased text,
# where the laugh pattern's (?i) can still match "ı" as i and "ſ" as s; (?i) on the hint
# itself would make it 6x slower (no fast literal scan).
_LAUGH_HINT_RE = re.compile(r"j[aeiousıſ]*j|hah|heh|lo+l|xd")
_ELONGATION_HINT_RE = re.compile(r"(\w)\1\1")
_PUNCT_RUN_RE = re.compile(r"([!?¡¿.])\1+")

# Accent folding that keeps ñ (and Ñ): año/ano, diseño/diseno differ in meaning.
_FOLD = str.maketrans(
    "áàâäãéèêëíìîïóòôöõúùûüçÁÀÂÄÃÉÈÊËÍÌÎÏÓÒÔÖÕÚÙÛÜÇ",
    "aaaaaeeeeiiiiooooouuuucAAAAAEEEEIIIIOOOOOUUUUC",
)

# Chat abbreviations and spellings -> the word a feature should see. Applied to folded,
# lower-case tokens, so keys carry no accents.
ABBREVIATIONS: dict[str, str] = {
    "q": "que", "k": "que", "ke": "que", "qe": "que", "qu": "que",
    "xq": "porque", "pq": "porque", "xk": "porque", "pk": "porque", "porq": "porque",
    "xque": "porque", "prq": "porque",
    "tb": "tambien", "tmb": "tambien", "tbn": "tambien", "tmbn": "tambien", "tambn": "tambien",
    "x": "por", "d": "de", "dl": "del", "pa": "para", "pal": "para el",
    "xfa": "por favor", "xfavor": "por favor", "porfa": "por favor", "porfis": "por favor",
    "porfavor": "por favor", "pls": "por favor", "plis": "por favor", "plz": "por favor",
    "bn": "bien", "msj": "mensaje", "msje": "mensaje", "msg": "mensaje",
    "dnd": "donde", "dnde": "donde", "cdo": "cuando", "cnd": "cuando", "cuando": "cuando",
    "kiero": "quiero", "qiero": "quiero", "toy": "estoy", "tamos": "estamos",
    "nd": "nada", "ns": "no se", "nc": "no se", "ntp": "no te preocupes",
    "salu2": "saludos", "slds": "saludos", "grax": "gracias", "grs": "gracias", "grcs": "gracias",
    "grac": "gracias", "gcs": "gracias", "thx": "gracias",
    "wsp": "whatsapp", "wpp": "whatsapp", "wasap": "whatsapp", "whatsap": "whatsapp", "guasap": "whatsapp",
    "hno": "hermano", "hna": "hermana", "mñn": "manana", "mñna": "manana",
    "sta": "esta", "stoy": "estoy", "aki": "aqui", "aka": "aca", "asi": "asi",
    "xa": "para", "pra": "para", "tmp": "tampoco", "tp": "tampoco", "ps": "pues", "pes": "pues",
    "bno": "bueno", "weno": "bueno", "bueno": "bueno", "vdd": "verdad", "npi": "ni idea",
    "info": "informacion", "dev": "devolucion", "ok": "ok", "oki": "ok", "okey": "ok", "okay": "ok",
    "okas": "ok", "oka": "ok", "sip": "si", "sep": "si", "nop": "no", "nel": "no",
}

_DROPPED = frozenset({"¿", "¡", "…"})

NEGATORS = frozenset({"no", "nunca", "jamas", "ni", "tampoco", "sin", "nadie", "nada"})


def clean(text: str) -> str:
    """Display form: NFC, no control characters or lone surrogates, single spaces."""
    if text.isprintable():
        # No control, format or surrogate characters, and no whitespace but " " (all of
        # them are non-printable): the fast path gives the same string.
        return " ".join(unicodedata.normalize("NFC", text).split())
    text = UNPAIRED_SURROGATE.sub("\ufffd", text)
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


_FOLDABLE_RE = re.compile("[" + "".join(chr(c) for c in _FOLD) + "]")
_FOLD_PAIRS = tuple((chr(a), chr(b)) for a, b in _FOLD.items())


def fold_accents(text: str) -> str:
    """Remove Spanish accents and diaeresis but keep ñ: "Información" -> "Informacion"."""
    # Most non-ASCII chat text is emoji only; and one str.replace per accented letter
    # present is 3x faster than translate(), which looks every character up in a dict.
    if text.isascii() or _FOLDABLE_RE.search(text) is None:
        return text
    for accented, plain in _FOLD_PAIRS:
        if accented in text:
            text = text.replace(accented, plain)
    return text


def replace_entities(text: str) -> str:
    """Replace URLs, e-mails, @mentions, order numbers, phones, amounts and numbers by placeholders.

    Order matters: a URL may contain digits, an order number may look like a phone.
    Each pattern runs only when a character it needs is present ("@", ".", a digit):
    a cheap membership test saves most of the scoring time of short chat messages.
    """
    if "[" in text:
        text = _REDACTION_RE.sub(lambda tag: f" {_REDACTION_TAGS[tag[0]]} ", text)
    if "@" in text and _EMAIL_HINT_RE.search(text) is not None:
        text = _EMAIL_RE.sub(f" {EMAIL} ", text)
    if "@" in text or "USER" in text:
        text = _MENTION_RE.sub(f" {MENTION} ", text)
    if "." in text or "://" in text:
        text = _URL_RE.sub(f" {URL} ", text)
    if _DIGIT_RE.search(text) is None:
        return text
    text = _ORDER_AFTER_WORD_RE.sub(rf"\1 {ORDER} ", text)
    if "#" in text:
        text = _ORDER_HASH_RE.sub(f" {ORDER} ", text)
    text = _PHONE_RE.sub(f" {PHONE} ", text)
    text = _MONEY_RE.sub(f" {MONEY} ", text)
    return _NUMBER_RE.sub(f" {NUMBER} ", text)


def normalize(text: str) -> str:
    """Feature form of a chat message (see the module docstring)."""
    return analyze(text)[0]


def analyze(text: str) -> tuple[str, list[str]]:
    """:func:`normalize` and :func:`cues` of a message in one pass (the scoring hot path).

    Cues are read on the way: shouting on the cleaned text (URLs and e-mails already
    replaced), laughter and elongation from the substitutions that remove them.
    """
    text = replace_entities(clean(text))
    found: list[str] = []
    # Shouting: more than 60% of at least 8 letters upper case. Counted only when the
    # message has upper-case letters at all (one lower() rejects most messages).
    lowered = text.lower()
    # Fewer than 5 upper-case characters cannot be > 60% of 8+ letters: skips the count.
    if lowered != text and sum(map(str.isupper, text)) >= 5:
        letters = "".join(filter(str.isalpha, text))
        if len(letters) >= 8 and sum(map(str.isupper, letters)) / len(letters) > 0.6:
            found.append("cue_caps")
    if "!!" in text:
        found.append("cue_exclaim")
    if "??" in text or "?¿" in text:
        found.append("cue_question")
    # Folded before the collapses, so "eeè" collapses like "eee" (normalize stays idempotent).
    text = fold_accents(lowered)
    laughs = elongations = 0
    if _LAUGH_HINT_RE.search(text) is not None:
        text, laughs = _LAUGH_RE.subn(f" {LAUGH} ", text)
    if _ELONGATION_HINT_RE.search(text) is not None:
        text, elongations = _ELONGATION_RE.subn(r"\1", text)
    if elongations:
        found.append("cue_elongation")
    if laughs:
        found.append("cue_laugh")
    if "!!" in text or "??" in text or ".." in text or "¡¡" in text or "¿¿" in text:
        text = _PUNCT_RUN_RE.sub(r"\1\1", text)
    # Only " " is left as whitespace (clean collapsed the rest), so split/join is _SPACES.
    return " ".join(text.split()), found


@functools.lru_cache(maxsize=1)
def _spacy_tokenizer() -> Any:
    # Imported lazily: spaCy takes ~1 s to import and only the tokenizer is needed.
    # A blank pipeline: no trained Spanish pipeline works with current spaCy (see DESIGN).
    import spacy

    return spacy.blank("es").tokenizer


@functools.lru_cache(maxsize=1)
def _special_cases() -> frozenset[str]:
    return frozenset(_spacy_tokenizer().rules)


def tokenize(text: str) -> list[str]:
    """spaCy's Spanish tokenisation of ``text`` (no normalisation), whitespace dropped."""
    # A run of letters is one token unless it is one of spaCy's special cases ("pal" ->
    # "pa" "l", "xD"): its prefix, suffix and infix rules all need punctuation, digits or
    # symbols. Answering those runs here skips a ~24 us tokenizer call for 60% of the new
    # chunks a chat model meets (the same tokens as spaCy on all 31k letter runs of the
    # benchmark sets' texts, raw and normalised; tested on the bundled data and the
    # special cases).
    if text.isalpha() and text not in _special_cases():
        return [text]
    return [tok.text for tok in _spacy_tokenizer()(text) if not tok.is_space]


def words(normalized: str) -> list[str]:
    """Word tokens of a normalised message with chat abbreviations expanded.

    Punctuation is dropped except "!" and "?", which carry tone and questions.
    """
    out: list[str] = []
    for token in tokenize(normalized):
        if token in ABBREVIATIONS:
            out.extend(ABBREVIATIONS[token].split())
        elif token not in _DROPPED and (token[0].isalnum() or token in ("!", "?") or not token.isascii()):
            # Non-ASCII symbols that survive are emoji and the like.
            out.append(token)
    return out


def cues(text: str) -> list[str]:
    """Tone cues of a message: shouting, "!!!", "??", elongation, laughter.

    Returned as pseudo-words ("cue_caps", ...) so they join the word features.
    """
    return analyze(text)[1]
