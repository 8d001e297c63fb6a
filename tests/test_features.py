"""The featuriser's fast paths against scikit-learn's reference path, on real-sized data."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from nlu.features import ChatFeaturizer

DATA = Path(__file__).resolve().parents[1] / "data"
ODD = [
    "", "   ", "hola hola hola", "no no no me gusta nada", "😡😡😡", "x" * 300, "a\x00b", "holaaaa JAJAJA!!! ??",
    "USER @iberia https://x.com 123 456 789 #A-4821", "por favor por favor xfa", "? ! ?", "pedido pedido pedido pedido",
]


def _texts(name: str) -> list[str]:
    with (DATA / name).open(encoding="utf-8", newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def bundled() -> tuple[list[str], list[str]]:
    return _texts("chats_train.csv")[:1500], _texts("chats_test.csv")


@pytest.fixture(scope="module")
def fitted(bundled: tuple[list[str], list[str]]) -> ChatFeaturizer:
    return ChatFeaturizer().fit(bundled[0])


def _assert_same_bytes(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    """The same sorted CSR, byte for byte, not merely close values."""
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert a.data.tobytes() == b.data.tobytes()


def _assert_same(f: ChatFeaturizer, texts: list[str]) -> None:
    fast, types = f.transform_fast_with_types(texts)
    reference = f.transform(texts)
    assert fast.shape == reference.shape
    assert abs(fast - reference).max() < 1e-12
    assert types.tolist() == f.word_types(texts).tolist()


@pytest.mark.parametrize(
    ("negation", "ngram_max", "lexicon"),
    [(0, 2, True), (0, 2, False), (0, 1, True), (0, 3, True), (2, 2, True)],  # vectorised x3, then per-message x2
)
def test_features_fast_path_equals_reference_path(bundled: tuple[list[str], list[str]], negation: int, ngram_max: int, lexicon: bool) -> None:
    train, test = bundled
    f = ChatFeaturizer(word_ngram_max=ngram_max, negation=negation, lexicon=lexicon).fit(train)
    # Unseen messages (the test file), odd ones, and the same batch again (cache warm).
    batch = test[:400] + ODD
    _assert_same(f, batch)
    _assert_same(f, batch)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])  # below _VECTORISE_FROM: the per-message loop
def test_features_small_batches_equal_their_rows_in_a_large_one(bundled: tuple[list[str], list[str]], fitted: ChatFeaturizer, size: int) -> None:
    import nlu.features as features

    assert features._VECTORISE_FROM in range(2, 6)  # the sizes above straddle the switch
    test, f = bundled[1], fitted
    batch = test[:50] + ODD
    X, types = f.transform_fast_with_types(batch)
    for start in range(0, len(batch), size):
        x, t = f.transform_fast_with_types(batch[start : start + size])
        _assert_same_bytes(x, X[start : start + size])
        assert t.tolist() == types[start : start + size].tolist()


def test_features_sort_kind_changes_nothing_but_time(bundled: tuple[list[str], list[str]], fitted: ChatFeaturizer, monkeypatch: pytest.MonkeyPatch) -> None:
    import nlu.features as features

    assert features._sort_kind() in ("quicksort", "stable")  # measured once on this CPU
    batch = bundled[1][:300] + ODD
    matrices = []
    for kind in ("quicksort", "stable"):
        monkeypatch.setattr(features, "_sort_kind", lambda kind=kind: kind)
        matrices.append(fitted.transform_fast(batch))
    _assert_same_bytes(*matrices)


def test_features_empty_batch() -> None:
    f = ChatFeaturizer(char_min_df=1).fit(["hola", "mi pedido"])
    X, types = f.transform_fast_with_types([])
    assert X.shape == (0, f.n_features_out_) and types.shape == (0, 2)


def test_features_cache_is_cleared_between_batches_and_not_pickled(bundled: tuple[list[str], list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    import nlu.features as features

    train, test = bundled
    f = ChatFeaturizer().fit(train)
    monkeypatch.setattr(features, "_CACHE_LIMIT", 50)
    # The cache grows past the limit inside a batch (token ids must stay consistent) and
    # is emptied before the next one; results never change.
    _assert_same(f, test[:200])
    first = f._runtime()
    assert len(first.chunks) > 50
    _assert_same(f, test[200:300] + ODD)
    # A full cache is replaced, not cleared (a batch in another thread keeps its own).
    assert f._runtime() is not first and len(first.chunks) > 50 and f._runtime().bigrams is first.bigrams
    clone = pickle.loads(pickle.dumps(f))
    assert "_runtime_state" not in clone.__dict__
    _assert_same(clone, test[:100])


def test_features_bigram_outside_the_unigram_vocabulary_falls_back(bundled: tuple[list[str], list[str]]) -> None:
    # The vectorised path finds bigrams through their two unigram columns; a vocabulary
    # with a bigram whose unigram is missing (not made by the default vectorizer) must
    # still give the reference result, through the per-message path.
    train, test = bundled
    f = ChatFeaturizer().fit(train)
    gram = next(g for g in f.word_vectorizer_.vocabulary_ if g.count(" ") == 1)
    a = gram.split(" ")[0]
    col = f.word_vectorizer_.vocabulary_.pop(a)
    f.word_vectorizer_.vocabulary_["zz_" + a] = col  # same size, the unigram renamed
    f._index_vocabularies()
    assert f._bigram_table(f._runtime())[2] is False
    _assert_same(f, [t for t in test if gram in " ".join(t.lower().split())][:5] + test[:50])


def test_features_concurrent_batches_give_the_same_matrices(bundled: tuple[list[str], list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    # The HTTP server scores in a thread pool; a small cache limit makes the threads
    # replace the cache under each other's feet.
    import threading

    import nlu.features as features

    train, test = bundled
    f = ChatFeaturizer().fit(train)
    expected = [f.transform(test[i : i + 40]) for i in range(0, 320, 40)]
    monkeypatch.setattr(features, "_CACHE_LIMIT", 30)
    errors: list[str] = []

    def work(k: int) -> None:
        for rep in range(3):
            for j, i in enumerate(range(0, 320, 40)):
                if (j + k + rep) % 2:
                    continue
                X, types = f.transform_fast_with_types(test[i : i + 40])
                if abs(X - expected[j]).max() > 1e-12 or types.tolist() != f.word_types(test[i : i + 40]).tolist():
                    errors.append(f"thread {k} batch {j}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
