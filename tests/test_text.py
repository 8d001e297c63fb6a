from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nlu.privacy import redact
from nlu.text import ABBREVIATIONS, _spacy_tokenizer, clean, cues, fold_accents, normalize, tokenize, words

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hola\t\tqué   tal \n", "Hola qué tal"),
        ("a\x00b\x07c", "a b c"),
        ("e\u0301", "é"),  # combining accent composed (NFC)
        ("hola\ud800", "hola\ufffd"),  # lone surrogate from JSON does not survive
        ("", ""),
        ("hola\u00a0mundo\u3000ya", "hola mundo ya"),  # non-ASCII spaces (non-printable: slow path)
        ("a\u200bb \u2028c", "a b c"),
        ("ya  llegó 😡", "ya llegó 😡"),  # printable: the fast path
    ],
)
def test_text_clean_keeps_display_form(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Información del envío", "Informacion del envio"),
        ("año, niño, ÑANDÚ", "año, niño, ÑANDU"),
        ("pingüino", "pinguino"),
    ],
)
def test_text_fold_accents_keeps_enye(raw: str, expected: str) -> None:
    assert fold_accents(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Holaaaaa", "hola"),
        ("noooo me llegó", "no me llego"),
        ("jajajaja qué bueno", "xrisa que bueno"),
        ("JSJSJS", "xrisa"),
        ("llevo 3 días esperando", "llevo xnum dias esperando"),
        ("mi pedido #A-48213 no llega", "mi pedido xorder no llega"),
        ("pedido 1029384", "pedido xorder"),
        ("escríbanme a ana.perez@gmail.com", "escribanme a xemail"),
        ("mi cel es +57 310 555 1234", "mi cel es xphone"),
        ("mira https://tienda.com/oferta?id=3", "mira xurl"),
        ("cuesta $1.500?", "cuesta xmoney ?"),
        ("pagué 200 soles", "pague xmoney"),
        ("NO ME LLEGA!!!!!", "no me llega!!"),
        ("me encanta 😍😍", "me encanta 😍😍"),
    ],
)
def test_text_normalize_chat_spanish(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_text_normalize_is_idempotent_on_examples() -> None:
    for raw in ["Holaaa q tal 😂 jajaja", "pedido #55-2231 NO LLEGA!!!", "¿Dónde están?"]:
        once = normalize(raw)
        assert normalize(once) == once


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("xq no me responden", ["porque", "no", "me", "responden"]),
        ("q onda tb kiero info", ["que", "onda", "tambien", "quiero", "informacion"]),
        ("porfa ayúdenme", ["por", "favor", "ayudenme"]),
        ("¿dónde está?", ["donde", "esta", "?"]),
        ("no, nunca, nada, sin", ["no", "nunca", "nada", "sin"]),  # no stop-word removal
        ("genial 👍", ["genial", "👍"]),
    ],
)
def test_text_words_expand_abbreviations_and_keep_negations(raw: str, expected: str) -> None:
    assert words(normalize(raw)) == expected


def test_text_abbreviation_targets_are_folded_lowercase() -> None:
    for target in ABBREVIATIONS.values():
        assert target == fold_accents(target).lower()


def test_text_tokenize_uses_spacy_spanish_rules() -> None:
    assert tokenize("¿Dónde está mi pedido?") == ["¿", "Dónde", "está", "mi", "pedido", "?"]


def test_text_tokenize_letter_runs_match_spacy() -> None:
    # tokenize answers runs of letters without calling spaCy: they must split exactly as
    # spaCy splits them, special cases included.
    def spacy_tokens(text: str) -> list[str]:
        return [t.text for t in _spacy_tokenizer()(text) if not t.is_space]

    pieces = {"pal", "xD", "XDD", "Pal", "PAL", "año", "Ñandú", "ǅemal", "ﬁn", "ⅷ", "μέρα", "привет", "東京", "x", "q"}
    pieces.update(_spacy_tokenizer().rules)
    for name in ("chats_train.csv", "chats_test.csv"):
        with (DATA / name).open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                pieces.update(row["text"].split())
                pieces.update(normalize(row["text"]).split())
    letter_runs = [p for p in pieces if p.isalpha()]
    assert len(letter_runs) > 1000
    for piece in sorted(pieces):
        assert tokenize(piece) == spacy_tokens(piece), piece


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DONDE ESTA MI PEDIDO", ["cue_caps"]),
        ("en serio!!", ["cue_exclaim"]),
        ("y??", ["cue_question"]),
        ("holaaaa", ["cue_elongation"]),
        ("jajaja", ["cue_laugh"]),
        ("visiten www.tienda.com", []),
        ("hola", []),
    ],
)
def test_text_cues(raw: str, expected: list[str]) -> None:
    assert cues(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("escríbeme a ana@x.com @Iberia", "escribeme a xemail xuser"),
        ("USER USERS", "xuser users"),
        ("$ 300 mil, S/. 20, US$40 y 10 euros", "xmoney , xmoney xmoney y xmoney"),
        ("pedido 12345!!!!", "pedido xorder !!"),
        ("que mal...... 😡", "que mal.. 😡"),
    ],
)
def test_text_normalize_entity_shortcuts_keep_results(raw: str, expected: str) -> None:
    # The cheap pre-checks (lookaheads, "@" hints, punctuation-run tests) change no result.
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", [
    "mi cel es 3104567821, llámenme",
    "escríbanme a ana.perez@gmail.com por favor",
    "la tarjeta 4111 1111 1111 1111 no pasa",
    "mi pedido 1029384 no llega y mi número es +52 55 1234 5678",
])
def test_text_redacted_text_normalises_like_the_raw_text(raw: str) -> None:
    # Tickets store redacted text, and exported tickets become training rows.
    assert redact(raw) != raw
    assert normalize(redact(raw)) == normalize(raw)
