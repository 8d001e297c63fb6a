"""The Spanish sentiment/emotion lexicon and the negation scope of the word features."""

from __future__ import annotations

import pytest

from nlu.features import ChatFeaturizer, word_grams
from nlu.lexicon import CLASSES, classes_of


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("genial", {"pos", "joy"}),
        ("odio", {"neg", "anger"}),
        ("pesimo", {"neg"}),
        ("asqueroso", {"anger", "disgust"}),
        ("miedo", {"neg", "fear"}),
        ("sorprendida", {"surprise"}),
        ("lamentable", {"neg", "sadness", "disgust"}),
        ("😡", {"neg", "anger"}),
        ("❤️", {"pos", "joy"}),
    ],
)
def test_lexicon_classes_of_known_words(token: str, expected: set[str]) -> None:
    assert expected <= set(classes_of(token))


@pytest.mark.parametrize("token", ["maleta", "tema", "ganas", "pedido", "xnum", "", "hola"])
def test_lexicon_short_prefixes_do_not_match_unrelated_words(token: str) -> None:
    # "mal" must not fire on "maleta", nor "tem" (temer) on "tema".
    assert classes_of(token) == ()


def test_lexicon_classes_are_ordered_and_known() -> None:
    for token in ("genial", "odio", "😭", "asco"):
        found = classes_of(token)
        assert list(found) == [c for c in CLASSES if c in found]


def test_lexicon_cues_join_the_word_features() -> None:
    grams = word_grams(["que", "genial"], ["cue_exclaim"], 2, lexicon=True)
    assert "lex_pos" in grams and "lex_joy" in grams and "que genial" in grams and "cue_exclaim" in grams


@pytest.mark.parametrize(
    ("tokens", "scope", "inside", "outside"),
    [
        (["no", "me", "gusta"], 2, {"neg_me", "neg_gusta"}, set()),
        (["no", "me", "gusta", "nada"], 1, {"neg_me"}, {"neg_gusta"}),
        (["nunca", "llega", "!", "genial"], 3, {"neg_llega"}, {"neg_genial", "neg_!"}),
        (["no", "llega", "pero", "bien"], 3, {"neg_llega"}, {"neg_bien", "neg_pero"}),
        (["no", "me", "gusta"], 0, set(), {"neg_me", "neg_gusta"}),
    ],
)
def test_lexicon_negation_scope(tokens: list[str], scope: int, inside: set[str], outside: set[str]) -> None:
    grams = set(word_grams(tokens, [], 1, negation=scope))
    assert inside <= grams
    assert not outside & grams


def test_lexicon_negated_cue_is_marked() -> None:
    grams = word_grams(["no", "me", "gusta"], [], 1, negation=3, lexicon=True)
    assert "lex_neg_pos" in grams and "lex_pos" not in grams


@pytest.mark.parametrize(("negation", "lexicon"), [(0, True), (3, False), (3, True)])
def test_lexicon_fast_path_equals_reference_path(negation: int, lexicon: bool) -> None:
    texts = ["no me gusta nada 😡", "qué genial!! gracias", "nunca llega mi pedido, pero bueno", "", "odio esperar tanto"]
    f = ChatFeaturizer(char_min_df=1, negation=negation, lexicon=lexicon).fit(texts)
    fast, types = f.transform_fast_with_types(texts)
    assert abs(fast - f.transform(texts)).max() < 1e-12
    assert types.tolist() == f.word_types(texts).tolist()
