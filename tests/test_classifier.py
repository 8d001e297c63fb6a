"""The calibrated linear classifier and its out-of-scope gate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from nlu.classifier import CalibratedLinearClassifier, ScopeGate, TopLabelMap, fit_scope_gate
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


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.3), (1.0, 0.0), (2.0, -1.0), (0.25, 4.0), (4.0, -4.0)])
def test_classifier_top_label_map_keeps_sum_and_ranking(a: float, b: float) -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(4, 0.7), size=300)
    proba[0] = [0.25, 0.25, 0.25, 0.25]  # ties stay resolved as argmax resolves them
    proba[1] = [1.0, 0.0, 0.0, 0.0]
    proba[2] = [0.5, 0.5, 0.0, 0.0]
    mapped = TopLabelMap(a, b).apply(proba)
    np.testing.assert_allclose(mapped.sum(axis=1), 1.0)
    assert np.all(mapped >= 0)
    np.testing.assert_array_equal(np.argsort(-mapped, axis=1, kind="stable"), np.argsort(-proba, axis=1, kind="stable"))


def test_classifier_top_label_map_fixes_overconfidence() -> None:
    # Toy data: stated confidence 0.9 but right 60% of the time, 0.6 but right 50%.
    from nlu.metrics import expected_calibration_error

    confidence = np.repeat([0.9, 0.6], 1000)
    correct = np.r_[np.arange(1000) < 600, np.arange(1000) < 500]
    fitted = TopLabelMap.fit(confidence, correct)
    proba = np.c_[confidence, 1.0 - confidence]
    mapped = fitted.apply(proba)[:, 0]
    assert expected_calibration_error(confidence, correct) > 0.2
    assert expected_calibration_error(mapped, correct) < 0.02


def test_classifier_top_label_map_fast_path_equals_reference(tiny_model) -> None:
    from nlu.model import Model

    heads = dict(tiny_model.heads)
    clone = CalibratedLinearClassifier()
    clone.__dict__.update(heads["sentiment"].__dict__)
    clone.top_map_ = TopLabelMap(0.6, 0.2)
    heads["sentiment"] = clone
    model = Model(tiny_model.featurizer, heads, tiny_model.meta)
    texts = ["no me llegó el pedido!!", "gracias, todo perfecto 😊", "hola", ""]
    fast, reference = model.predict_proba(texts), model.reference_proba(texts)
    for head in fast:
        np.testing.assert_allclose(fast[head], reference[head], rtol=1e-9, atol=1e-12)
    assert not np.allclose(fast["sentiment"], tiny_model.predict_proba(texts)["sentiment"])


def test_classifier_top_label_map_only_on_ungated_heads_with_enough_rows() -> None:
    rng = np.random.default_rng(1)
    X = sp.csr_matrix(rng.random((120, 6)))
    y = np.where(X[:, 0].toarray().ravel() > 0.5, "si", "no")
    assert CalibratedLinearClassifier().fit(X, y).top_map_ is not None
    assert CalibratedLinearClassifier(top_label_map=False).fit(X, y).top_map_ is None
    assert CalibratedLinearClassifier().fit(X[:40], y[:40]).top_map_ is None


def test_classifier_scope_gate_counts_unknown_bigrams() -> None:
    # Words the head knows, in an order it never saw: only the bigram term notices.
    texts = ["pon una alarma", "pon una alarma mañana", "borra la alarma", "borra la alarma de mañana"] * 5
    f = ChatFeaturizer(char_min_df=1).fit(texts)
    X, types = f.transform_fast_with_types(texts)
    splits = [(np.flatnonzero(np.arange(20) % 5 != i), np.flatnonzero(np.arange(20) % 5 == i)) for i in range(5)]
    words_only, _ = fit_scope_gate(X, types, f.unigram_mask_, splits)
    with_bigrams, _ = fit_scope_gate(X, types, f.unigram_mask_, splits, f.bigram_mask_, bigram_weight=2.0)
    # Out of fold nothing is unknown, so the weight is 2 / max(q98, 1) = 2.
    assert with_bigrams.bigram_weight == pytest.approx(2.0)
    probe = ["mañana alarma una pon", "pon una alarma mañana"]
    Xp, tp = f.transform_fast_with_types(probe)
    assert tp.tolist() == [[4.0, 3.0], [4.0, 3.0]]
    assert words_only.factor(Xp, tp)[0] == pytest.approx(words_only.factor(Xp, tp)[1])
    assert with_bigrams.factor(Xp, tp)[0] < 0.05 < 0.9 < with_bigrams.factor(Xp, tp)[1]


def test_classifier_scope_gate_pickled_before_bigrams_reads_word_column(tiny_model) -> None:
    gate = tiny_model.heads["intent"].scope_gate_
    old = ScopeGate.__new__(ScopeGate)
    old.__dict__.update({k: v for k, v in gate.__dict__.items() if k not in ("known_bigrams", "bigram_weight")})
    X, types = tiny_model.featurizer.transform_fast_with_types(["dónde está mi pedido?", "hola hola buenas"])
    assert types.shape == (2, 2)
    expected = ScopeGate(gate.known, gate.limit, gate.slope, gate.known_credit).factor(X, types[:, 0])
    np.testing.assert_allclose(old.factor(X, types), expected)
