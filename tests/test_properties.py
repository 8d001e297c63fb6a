"""Property and fuzz tests: text processing, scoring and data loading on arbitrary input.

Strings include emoji sequences, combining marks, right-to-left text, NUL and control
characters, and lone surrogates (what a JSON body with "\\ud800" decodes to).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlu import DataError
from nlu.data import load_data
from nlu.text import clean, normalize, words

# Every code point, surrogates included.
ANY_CHAR = st.characters(codec=None, categories=None)
CHAT_PIECES = st.sampled_from(
    [
        "hola", "HOLAAAA", "jajaja", "😡", "👍🏽", "👨‍👩‍👧", "🇲🇽", "e\u0301", "ñ", "İ", "ß", "ﬁ", "\u200f", "مرحبا", "שלום",
        "\x00", "\x1b[31m", "\ud800", "\udfff", "!!!", "¿¿", "#A-48213", "+52 55 1234 5678", "a@b.co", "www.x.com",
        "$1.500", "  ", "\n", "\t", "xq", "q", "k", "pedido", "no", "ā̈", "\ufeff", "\u2028",
    ]
)
CHATTY = st.lists(st.one_of(CHAT_PIECES, st.text(ANY_CHAR, max_size=8)), max_size=12).map(" ".join)
TEXTS = st.one_of(st.text(ANY_CHAR, max_size=200), CHATTY)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(TEXTS)
def test_properties_clean_is_idempotent_and_printable(text: str) -> None:
    once = clean(text)
    assert clean(once) == once
    assert "\x00" not in once
    assert once == once.strip()
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in once)  # no lone surrogates survive


@FUZZ
@given(TEXTS)
def test_properties_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@FUZZ
@given(TEXTS)
def test_properties_words_never_crash_and_are_non_empty(text: str) -> None:
    tokens = words(normalize(text))
    assert all(token and not token.isspace() for token in tokens)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(TEXTS, min_size=1, max_size=5))
def test_properties_score_gives_valid_probabilities(tiny_model, texts: list[str]) -> None:
    for prediction in tiny_model.score_batch(texts):
        assert prediction.intent in tiny_model.labels("intent")
        probabilities = [p for _, p in prediction.ranking]
        assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in probabilities)
        assert math.isclose(sum(probabilities), 1.0, rel_tol=1e-9)
        for confidence in (prediction.confidence, prediction.sentiment_confidence, prediction.emotion_confidence):
            assert confidence is not None and 0.0 <= confidence <= 1.0
        assert 0.0 <= prediction.frustration <= 1.0


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_properties_score_huge_message(tiny_model, size: int) -> None:
    text = ("¿dónde está mi pedido? 😡 " * (size // 25))[:size]
    prediction = tiny_model.score(text)
    assert prediction.intent is not None and 0.0 <= prediction.frustration <= 1.0


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".yml", ".parquet"]),
    content=st.one_of(
        st.binary(max_size=300),
        st.text(ANY_CHAR, max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(st.text(ANY_CHAR, max_size=20), max_size=6).map(lambda cells: ("text,intent\n" + "\n".join(cells)).encode("utf-8", "surrogatepass")),
    ),
)
def test_properties_loader_refuses_garbage_with_data_error(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    try:
        dataset = load_data([path])
    except DataError as exc:
        assert str(path) in str(exc) or "no label column" in str(exc)
    else:
        # Whatever parsed must honour the contract: a text column of strings.
        assert all(isinstance(t, str) for t in dataset.frame["text"])


LAUGHY = st.lists(
    st.one_of(st.sampled_from(["ja", "JA", "j", "jj", "je", "ji", "jsjs", "ha", "he", "lol", "loool", "xd", "XD", "ı", "ſ", "aj",
                               "aaa", "ooo", "!!!", "ééé", "  ", "x"]), st.text(ANY_CHAR, max_size=4)),
    max_size=10,
).map("".join)


@settings(max_examples=600, deadline=None)
@given(st.one_of(TEXTS, LAUGHY))
def test_properties_scan_hints_are_necessary_conditions(text: str) -> None:
    # analyze() runs the laughter and elongation patterns only where these cheap hints
    # match: a hint missing a real match would change features.
    from nlu.text import _ELONGATION_HINT_RE, _ELONGATION_RE, _FOLD, _LAUGH_HINT_RE, _LAUGH_RE, fold_accents

    folded = fold_accents(text.lower())
    assert folded == text.lower().translate(_FOLD)
    if _LAUGH_RE.search(folded):
        assert _LAUGH_HINT_RE.search(folded)
    if _ELONGATION_RE.search(folded):
        assert _ELONGATION_HINT_RE.search(folded)
