"""The calibrated linear classifier and its out-of-scope gate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from nlu.classifier import CalibratedLinearClassifier, ScopeGate, fit_scope_gate
from nlu.features import ChatFeaturizer

OUT_OF_SCOPE = ["", "   ", "kwxyv plmnb trrzq", "the weather in london tomorrow", "🦄🦄"]


def test_classifier_unknown_words_get_uniform_intent(tiny_model) -> None:
    # A message sharing no vocabulary with the training data: the gate is 0, uniform probabilities.
    k = len(tiny_model.labels("intent"))
    proba = tiny_model.predict_proba(OUT_OF_SCOPE)["intent"]
    np.testing.assert_allclose(proba, 1.0 / k, atol=1e-12)
    assert all(p.confidence == pytest.approx(1.0 / k) for p in tiny_model.score_batch(OUT_OF_SCOPE))


def test_classifier_gate_only_on_the_intent_head(tiny_model) -> None:
    assert tiny_model.heads["intent"].scope_gate_ is not None
    assert tiny_model.heads["sentiment"].scope_gate_ is None
    assert tiny_model.heads["emotion"].scope_gate_ is None


def test_classifier_in_scope_message_keeps_its_confidence(tiny_model) -> None:
    head = tiny_model.heads["intent"]
    texts = ["dónde está mi pedido?", "quiero hablar con una persona", "muchas gracias"]
    X, types = tiny_model.featurizer.transform_fast_with_types(texts)
    assert np.all(head.scope_gate_.factor(X, types) > 0.9)
    p = tiny_model.score(texts[0])
    assert p.intent == "estado_pedido" and p.confidence > 0.3


@pytest.mark.parametrize("texts", [OUT_OF_SCOPE, ["mi pedido xyzzy kwxyv plmnb trrzq qqwf", "hola"]])
def test_classifier_gate_keeps_sum_and_ranking(tiny_model, texts: list[str]) -> None:
    head = tiny_model.heads["intent"]
    X = tiny_model.featurizer.transform(texts)
    types = tiny_model.featurizer.word_types(texts)
    raw = head.predict_proba(X)
    gated = head.predict_proba(X, types)
    np.testing.assert_allclose(gated.sum(axis=1), 1.0)
    assert (gated.max(axis=1) <= raw.max(axis=1) + 1e-12).all()
    # Where the gate is open at all, the order of the intents is unchanged.
    open_rows = head.scope_gate_.factor(X, types) > 0
    assert (np.argsort(-raw[open_rows], axis=1) == np.argsort(-gated[open_rows], axis=1)).all()


@pytest.mark.parametrize(("unknown", "expected"), [(0, 1.0), (2, 0.5), (6, 0.0)])
def test_classifier_scope_gate_factor(unknown: int, expected: float) -> None:
    # One known word (column 0) plus `unknown` new ones; limit 2: halfway at two new words.
    gate = ScopeGate(np.array([True, False]), limit=2.0, slope=3.0, known_credit=0.0)
    X = sp.csr_matrix(np.array([[1.0, 0.0]]))
    assert gate.factor(X, np.array([1.0 + unknown]))[0] == pytest.approx(expected, abs=0.01)


def test_classifier_scope_gate_known_words_excuse_unknown_ones() -> None:
    # Long messages: every known word offsets known_credit unknown ones.
    gate = ScopeGate(np.ones(10, dtype=bool), limit=1.0, slope=4.0, known_credit=0.125)
    short = sp.csr_matrix(np.r_[np.ones(2), np.zeros(8)][None, :])
    long = sp.csr_matrix(np.ones(10)[None, :])
    assert gate.factor(long, np.array([13.0]))[0] > gate.factor(short, np.array([5.0]))[0]


def test_classifier_scope_gate_no_known_word_is_zero() -> None:
    gate = ScopeGate(np.array([True, False]), limit=5.0)
    X = sp.csr_matrix(np.array([[0.0, 1.0], [0.0, 0.0]]))
    assert gate.factor(X, np.array([1.0, 0.0])).tolist() == [0.0, 0.0]


def test_classifier_scope_limit_follows_out_of_fold_unknown_counts() -> None:
    # Rows repeat the same vocabulary: out of fold, nothing is unknown (two known words
    # each: score -0.25), so the limit is 0.25 and the out-of-fold factors stay high.
    texts = ["hola buenas", "buenas hola", "mi pedido", "pedido mi"] * 5
    f = ChatFeaturizer(char_min_df=1).fit(texts)
    X, types = f.transform_fast_with_types(texts)
    splits = [(np.arange(20) % 5 != i, np.arange(20) % 5 == i) for i in range(5)]
    splits = [(np.flatnonzero(a), np.flatnonzero(b)) for a, b in splits]
    gate, oof = fit_scope_gate(X, types, f.unigram_mask_, splits)
    assert gate.limit == pytest.approx(0.25)
    assert (oof > 0.8).all()


def test_classifier_without_gate_attribute_still_scores(tiny_model) -> None:
    # Artifacts pickled before the gate existed have no scope_gate_ attribute.
    head = tiny_model.heads["intent"]
    clone = CalibratedLinearClassifier()
    clone.__dict__.update({k: v for k, v in head.__dict__.items() if k != "scope_gate_"})
    X = tiny_model.featurizer.transform(["hola"])
    np.testing.assert_allclose(clone.predict_proba(X, np.array([1.0])), head.predict_proba(X))


def test_classifier_oof_probabilities_are_distributions(tiny_model) -> None:
    for head in tiny_model.heads.values():
        np.testing.assert_allclose(head.oof_proba_.sum(axis=1), 1.0)
