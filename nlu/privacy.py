"""PII redaction for Spanish customer-service chat.

``redact(text)`` replaces personal data with tags before anything is stored or logged:
``[EMAIL]``, ``[TARJETA]`` (Luhn-valid card numbers), ``[DOCUMENTO]`` (Spanish DNI/NIE,
Mexican CURP/RFC, Chilean RUT, and the national ids that are only recognisable when a word
such as *cédula*, *CC*, *DNI*, *RUC*, *CUIT* or *NIT* introduces them) and ``[TELEFONO]``
(Spanish and Latin American phone numbers, with or without a country code).

What it keeps on purpose: order references ("pedido 1029384", "#A-48213", "orden CL-22091"),
because the agent needs them to help; prices, dates, times, sizes and quantities.

The rules are regular expressions with a little arithmetic (Luhn, digit counts) and run in a
fixed order, each on what the previous ones left:

1. e-mail addresses;
2. order references are masked so no later rule can touch them;
3. card numbers;
4. identity documents;
5. phone numbers;
6. the order references are put back.

Tags contain no digits and no ``@``, so ``redact`` is idempotent. It is a precision-minded
heuristic, not a guarantee: a 7-digit phone number with no word around it saying it is a
phone ("llámame al 5551234" is caught, "5551234" alone is not) looks exactly like an order
number and is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CARD", "DOCUMENT", "EMAIL", "PHONE", "redact", "redact_values"]

EMAIL = "[EMAIL]"
CARD = "[TARJETA]"
DOCUMENT = "[DOCUMENTO]"
PHONE = "[TELEFONO]"

# Private-use characters delimit masked order references: they are not \w, not digits and
# never typed by customers, so no later rule can match across or inside a masked span.
_MASK_OPEN, _MASK_CLOSE = "\ue000", "\ue001"
_MASKED = re.compile(f"{_MASK_OPEN}([a-z]+){_MASK_CLOSE}")

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}(?![\w-])",
    re.IGNORECASE,
)

# --- order references (kept) -------------------------------------------------------------

# Words that introduce an order/shipment/invoice reference, optionally followed by filler
# ("pedido N° 4410873", "orden es la 661209", "número de pedido: 4418273").
_ORDER_WORDS = (
    r"pedidos?|[óo]rden(?:es)?|compras?|order|ticket|reclamo|caso|gu[íi]a|seguimiento|tracking"
    r"|boleta|folio|referencia|ref\.?|serie|env[íi]o|paquete|devoluci[óo]n"
)
_ORDER_FILLER = r"(?:\s*(?:[:#]|n[°º]\.?|nro\.?|no\.|n[uú]mero|es|era|el|la|de|del|mi|su)(?![\w])){0,4}\s*[:#]?\s*"
# The reference itself: digits with dashes, optionally with a short letter prefix or suffix
# ("CL-22091", "4471-MX", "33-1098", "PE11209").
_ORDER_ID = r"(?:[A-Z]{1,4}-?)?\d[\d-]*(?:-[A-Z]{1,4})?(?![\w])"
_ORDER_AFTER_WORD = re.compile(
    rf"\b(?:{_ORDER_WORDS}){_ORDER_FILLER}(?P<ref>(?-i:{_ORDER_ID}))",
    re.IGNORECASE,
)
# "#A-48213", "#PE-11209", "N° 4410873" without a preceding keyword: only short references,
# so "nro 3104567821" (a phone) is not shielded.
_ORDER_SHORT = re.compile(
    r"(?:#|\bn[°º]\.?|\bnro\.?)\s*(?P<ref>(?:[A-Z]{1,4}-?)?\d{1,8}(?:-\d{1,8})?(?:-[A-Z]{1,4})?)(?![\w])",
    re.IGNORECASE,
)

# --- cards -------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.,])\d(?:[ -]?\d){12,18}(?![\w]|[.,]\d)")

# --- identity documents ------------------------------------------------------------------

_DOC_PATTERNS = [
    # Mexican CURP: 4 letters, birth date, sex, state, 3 consonants, homoclave, check digit.
    re.compile(r"\b[A-Z]{4}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[HMX][A-Z]{5}[A-Z\d]\d\b", re.IGNORECASE),
    # Mexican RFC: 3 (company) or 4 (person) letters, date, 3-character homoclave.
    re.compile(r"\b[A-ZÑ&]{3,4}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[A-Z\d]{3}\b", re.IGNORECASE),
    # Spanish NIE: X/Y/Z + 7 digits + letter.
    re.compile(r"\b[XYZ][-\s]?\d{7}[-\s]?[A-Z]\b", re.IGNORECASE),
    # Spanish DNI: 8 digits + letter. After a space only an uppercase letter counts, so
    # "12345678 a mi nombre" is not taken for a DNI (the keyword rule may still catch it).
    re.compile(r"(?<![\w.])\d{2}\.?\d{3}\.?\d{3}(?:-?[a-z]|\s(?-i:[A-Z]))(?![\w])", re.IGNORECASE),
    # Chilean RUT (and Colombian NIT, same shape): 12.345.678-9 / 12.345.678-K.
    re.compile(r"(?<![\w.])\d{1,2}\.\d{3}\.\d{3}-[\dkK](?![\w])"),
    # Venezuelan cédula: V-12.345.678 / E-12345678.
    re.compile(r"\b[VE]-\d{1,2}\.?\d{3}\.?\d{3}(?![\w])"),
    # Argentine CUIT/CUIL: 20-33445566-7 (it contains the DNI).
    re.compile(r"(?<![\w-])(?:2[03457]|3[034])-\d{8}-\d(?![\w-])"),
]
# Chilean RUT without dots (12345678-5): only when the check digit is right, because
# "7720145-2" could be anything.
_RUT_PLAIN = re.compile(r"(?<![\w.-])(?P<body>\d{7,8})-(?P<dv>[\dkK])(?![\w-])")

# Ids that are bare digits and only recognisable by the word before them: Colombian and
# Ecuadorian cédula, Argentine/Peruvian DNI, RUC, CUIT/CUIL, NIT, RUT without dots...
_DOC_WORDS = (
    r"c[ée]dula|c\.\s?c\.?|cc|c\.\s?i\.?|ci|dni|d\.n\.i\.?|documento|identificaci[óo]n|pasaporte"
    r"|ruc|rut|run|cuit|cuil|nit|rfc|curp|nie|nif|ine"
)
_DOC_FILLER = (
    r"(?:[\s:#.,]*(?:n[°º]\.?|nro\.?|no\.|n[uú]mero|es|era|la|el|de|del|mi|su|ciudadan[íi]a|identidad|nacional"
    r"|extranjer[íi]a|titular|tributario|fiscal)(?![\w])){0,4}[\s:#.,]*"
)
_DOC_NUMBER = (
    r"(?:[A-Z]-?)?(?:\d{2}-\d{7,8}-\d"  # CUIT/CUIL 20-33445566-7
    r"|\d{1,3}(?:[.\s]?\d{3}){1,3}(?:-?[\dkK]|(?-i:[A-Z]))?"  # 1.020.304.050, 12345678, 12.345.678-9
    r"|\d{6,12})"
    r"(?![\w])"
)
_DOC_AFTER_WORD = re.compile(rf"\b(?:{_DOC_WORDS}){_DOC_FILLER}(?P<id>{_DOC_NUMBER})", re.IGNORECASE)

# --- phones ------------------------------------------------------------------------------

# A candidate: an optional country prefix (+57, 0057) then digit groups separated by single
# spaces, dots or dashes, the first group possibly in parentheses: "+54 9 11 1234-5678",
# "(55) 1234 5678", "310 555 2211", "0414-1234567", "3104567821".
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+.,-])(?:"
    r"(?:\+|00(?=\d))\s?(?:\d{8,15}(?!\d)|\d{1,4}(?!\d)(?:[\s.-]?(?:\(\d{1,4}\)|\d{1,11}(?!\d))){0,6})"  # international
    r"|(?:\(\d{1,4}\)|\d{1,4})(?!\d)(?:[\s.-]?(?:\(\d{1,4}\)|\d{2,8}(?!\d))){1,6}"  # national, in groups
    r"|\d{7,15}(?!\d)"  # national, one run
    r")"
)
# The rest of the candidate must not run into a word or a decimal ("9.90", "5678abc").
_PHONE_END = re.compile(r"(?![\w]|[.,]\d)")
_PHONE_WORDS = re.compile(
    r"\b(?:tel[ée]fonos?|tel|tlf|telf|fono|cel|celular|m[óo]vil|whats\s?app|whatsapp|wsp|wpp|wa|fijo|contacto"
    r"|ll[áa]m(?:a|e|en|ame|eme|enme|ar|arme)|marcar?|marque)\b[^\d\n]{0,25}$",
    re.IGNORECASE,
)
_CURRENCY_BEFORE = re.compile(r"(?:[$€£]|\b(?:usd|eur|cop|mxn|ars|clp|pen|us\$|s/|s/\.|bs|q)\.?)\s*$", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(
    r"^\s*(?:pesos|euros?|soles|d[óo]lares|usd|eur|cop|mxn|ars|clp|pen|bs|lucas|luka|mil|millones|palos|k\b|€|\$)",
    re.IGNORECASE,
)
_THOUSANDS = re.compile(r"\d{1,3}(?:([.\s])\d{3})(?:\1\d{3})*")  # 1.299.000, 120 000 000: amounts
_COUNTRY_CODES = ("1", "34", "51", "52", "53", "54", "55", "56", "57", "58", "502", "503", "504", "505",
                  "506", "507", "591", "593", "595", "598")


def _rut_ok(body: str, dv: str) -> bool:
    total = sum(int(d) * (2 + i % 6) for i, d in enumerate(reversed(body)))
    check = 11 - total % 11
    expected = {10: "K", 11: "0"}.get(check, str(check))
    return dv.upper() == expected


def _card_ok(digits: str) -> bool:
    # Issuer prefixes by length (Visa 13/16/19, Diners 14, Amex 15, the rest 16-19) keep
    # Luhn's one-in-ten chance from turning long phone numbers into "cards".
    n = len(digits)
    if n == 13:
        plausible = digits[0] == "4"
    elif n == 14:
        plausible = digits[:2] in ("30", "36", "38")
    elif n == 15:
        plausible = digits[:2] in ("34", "37") or digits[:4] in ("1800", "2131")
    else:
        plausible = digits[0] in "23456"
    return plausible and _luhn_ok(digits)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _looks_like_phone(candidate: str, digits: str, before: str, after: str) -> bool:
    n = len(digits)
    if _CURRENCY_BEFORE.search(before) or _CURRENCY_AFTER.match(after):
        return False
    if candidate.lstrip().startswith("+") or (candidate.startswith("00") and n >= 10):
        return 8 <= n <= 15
    keyword = bool(_PHONE_WORDS.search(before))
    if keyword:
        return 7 <= n <= 15
    if _THOUSANDS.fullmatch(candidate):
        # Grouped like an amount (1.299.000, 120 000 000) and no currency marker: round
        # amounts stay, long odd ones (987.654.321, 987 654 321) are phones.
        return n >= 9 and not candidate.endswith("000")
    grouped = not candidate.isdigit()
    if n == 8:
        # Only the classic 4-4 shape (Panamá "6123-4567", Buenos Aires "4567-8901"):
        # dates (2024-03-12) and plain 8-digit numbers stay.
        return bool(re.fullmatch(r"\d{4}[\s-]\d{4}", candidate))
    if n == 9:
        # España/Perú/Chile mobiles and Spanish landlines start with 6-9; any 9 digits
        # written in groups ("2 2345 6789") are a phone too.
        return grouped or digits[0] in "6789"
    if n == 10:
        return True  # México, Colombia (3xx / 60x), Ecuador (09x), Argentina (11 / 15)
    if 11 <= n <= 13:
        # Long trunk prefix (0414-1234567) or a country code written without "+"
        # (573104567821, as WhatsApp shows it).
        if digits[0] == "0":
            return True
        return any(digits.startswith(cc) and 8 <= n - len(cc) <= 11 for cc in _COUNTRY_CODES) and not (
            digits.startswith("1") and digits[1] in "01"
        )
    return False


def _mask_orders(text: str, kept: list[str]) -> str:
    """Replace each order reference with a digit-free placeholder remembered in ``kept``."""

    def mask(match: re.Match[str]) -> str:
        kept.append(match.group("ref"))
        whole, offset = match.group(0), match.start()
        start, end = match.start("ref") - offset, match.end("ref") - offset
        return f"{whole[:start]}{_MASK_OPEN}{_index_token(len(kept) - 1)}{_MASK_CLOSE}{whole[end:]}"

    text = _ORDER_AFTER_WORD.sub(mask, text)
    return _ORDER_SHORT.sub(mask, text)


def _index_token(index: int) -> str:
    # Letters only: a masked span must contain no digit a later rule could count.
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return letters


def _token_index(token: str) -> int:
    index = 0
    for ch in token:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def _redact_cards(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if 13 <= len(digits) <= 19 and _card_ok(digits):
            return CARD
        return match.group(0)

    return _CARD.sub(repl, text)


def _redact_documents(text: str) -> str:
    def keyword_repl(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group("id"))
        if len(digits) < 6:
            return match.group(0)  # "CC 2024"... too short to be an id
        start = match.start("id") - match.start()
        return match.group(0)[:start] + DOCUMENT

    # Self-describing shapes first, so a keyword match cannot leave a DNI's letter behind.
    for pattern in _DOC_PATTERNS:
        text = pattern.sub(DOCUMENT, text)
    text = _RUT_PLAIN.sub(lambda m: DOCUMENT if _rut_ok(m["body"], m["dv"]) else m.group(0), text)
    return _DOC_AFTER_WORD.sub(keyword_repl, text)


def _redact_phones(text: str) -> str:
    out: list[str] = []
    pos = 0  # end of what is already copied to out
    search_from = 0
    while (match := _PHONE_CANDIDATE.search(text, search_from)) is not None:
        candidate = match.group(0).rstrip(" .-")
        start, end = match.start(), match.start() + len(match.group(0).rstrip(" .-"))
        digits = re.sub(r"\D", "", candidate)
        if _PHONE_END.match(text, end) and _looks_like_phone(
            candidate, digits, text[max(0, start - 40) : start], text[end : end + 12]
        ):
            out.append(text[pos:start])
            out.append(PHONE)
            pos = search_from = end
        else:
            # Retry from the next group: "pedí 2 310 555 2211" is a quantity then a phone.
            search_from = start + 1
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """Return ``text`` with e-mails, card numbers, identity documents and phones replaced by tags."""
    if not text:
        return text
    # Customers' text may already contain the private-use delimiters (copied from
    # somewhere); drop them so masking cannot be confused.
    text = text.replace(_MASK_OPEN, "").replace(_MASK_CLOSE, "")
    text = _EMAIL.sub(EMAIL, text)
    kept: list[str] = []
    text = _mask_orders(text, kept)
    text = _redact_cards(text)
    text = _redact_documents(text)
    text = _redact_phones(text)
    if kept:
        text = _MASKED.sub(lambda m: kept[_token_index(m.group(1))], text)
    return text


# Keys whose values are identifiers the system needs verbatim (and that are not free text).
_ID_KEYS = frozenset({"id", "message_id", "conversation_id", "ticket_id"})


def redact_values(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, tuples), except identifiers.

    For records such as conversation turns or a bot reply, where free text can hide in any
    field; keys named ``id``, ``message_id``, ``conversation_id`` and ``ticket_id`` are kept.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: (v if k in _ID_KEYS else redact_values(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return value
