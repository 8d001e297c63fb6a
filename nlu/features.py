"""The featuriser shared by every head: word n-grams + chat cues, and character n-grams.

Fitting uses scikit-learn's ``TfidfVectorizer`` (vocabulary, idf). Scoring has two paths
with the same result:

* :meth:`ChatFeaturizer.transform` is the scikit-learn reference path;
* :meth:`ChatFeaturizer.transform_fast` builds the same CSR matrix directly from the
  fitted vocabularies. It normalises each message once for both blocks and skips
  scikit-learn's per-call validation, which dominates the cost of a single message.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from .text import cues, normalize, words


def word_features(text: str, normalized: str, ngram_max: int) -> list[str]:
    """Word 1..n-grams of the normalised message, plus the tone cues of the raw one."""
    tokens = words(normalized)
    grams = list(tokens)
    for n in range(2, ngram_max + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    grams.extend(cues(text))
    return grams


def char_features(normalized: str, n_min: int, n_max: int) -> list[str]:
    """Character n-grams inside word boundaries (scikit-learn's ``char_wb``).

    They carry the signal of misspelt, unaccented and inflected words: "devolucion",
    "devoluciones" and "debolucion" share most of their n-grams.
    """
    grams: list[str] = []
    for word in normalized.split():
        padded = f" {word} "
        length = len(padded)
        for n in range(n_min, n_max + 1):
            if n > length:
                if n == n_min:
                    grams.append(padded)
                break
            grams.extend(padded[i : i + n] for i in range(length - n + 1))
    return grams


def _already_analyzed(doc: list[str]) -> list[str]:
    # The vectorizers receive feature lists, not strings; module-level so it pickles.
    return doc


class ChatFeaturizer(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """TF-IDF over word n-grams (+ cues) and character n-grams, each block L2-normalised."""

    def __init__(
        self,
        word_ngram_max: int = 2,
        char_ngram_min: int = 2,
        char_ngram_max: int = 5,
        char_min_df: int = 2,
        char_weight: float = 1.0,
    ) -> None:
        self.word_ngram_max = word_ngram_max
        self.char_ngram_min = char_ngram_min
        self.char_ngram_max = char_ngram_max
        self.char_min_df = char_min_df
        self.char_weight = char_weight

    # -- fitting ----------------------------------------------------------------------

    def _analyze(self, texts: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
        word_docs, char_docs = [], []
        for text in texts:
            normalized = normalize(text)
            word_docs.append(word_features(text, normalized, self.word_ngram_max))
            char_docs.append(char_features(normalized, self.char_ngram_min, self.char_ngram_max))
        return word_docs, char_docs

    def fit(self, texts: Sequence[str], y: object = None) -> ChatFeaturizer:
        word_docs, char_docs = self._analyze(texts)
        # sublinear_tf: a word said three times is not three times the evidence.
        self.word_vectorizer_ = TfidfVectorizer(analyzer=_already_analyzed, sublinear_tf=True, dtype=np.float64)
        self.word_vectorizer_.fit(word_docs)
        self.char_vectorizer_ = TfidfVectorizer(
            analyzer=_already_analyzed, sublinear_tf=True, min_df=self.char_min_df, dtype=np.float64
        )
        try:
            self.char_vectorizer_.fit(char_docs)
        except ValueError:
            # Tiny data: no character n-gram reaches min_df. Keep every n-gram instead.
            self.char_vectorizer_.set_params(min_df=1).fit(char_docs)
        self._index_vocabularies()
        return self

    def _index_vocabularies(self) -> None:
        self.n_word_features_ = len(self.word_vectorizer_.vocabulary_)
        self.word_index_ = dict(self.word_vectorizer_.vocabulary_)
        self.char_index_ = {g: i + self.n_word_features_ for g, i in self.char_vectorizer_.vocabulary_.items()}
        self.idf_ = np.concatenate([self.word_vectorizer_.idf_, self.char_vectorizer_.idf_])
        self.n_features_out_ = len(self.idf_)

    # -- scoring ----------------------------------------------------------------------

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Reference path: scikit-learn's vectorizers, blocks stacked side by side."""
        word_docs, char_docs = self._analyze(texts)
        word = self.word_vectorizer_.transform(word_docs)
        char = self.char_vectorizer_.transform(char_docs) * self.char_weight
        return sp.hstack([word, char], format="csr")

    def transform_fast(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Same matrix as :meth:`transform`, built directly (see module docstring)."""
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        idf = self.idf_
        for text in texts:
            normalized = normalize(text)
            for grams, index, weight in (
                (word_features(text, normalized, self.word_ngram_max), self.word_index_, 1.0),
                (char_features(normalized, self.char_ngram_min, self.char_ngram_max), self.char_index_, self.char_weight),
            ):
                counts = Counter(index[g] for g in grams if g in index)
                if not counts:
                    continue
                cols = list(counts)
                values = [(1.0 + math.log(counts[c])) * idf[c] for c in cols]
                norm = math.sqrt(sum(v * v for v in values))
                scale = weight / norm
                indices.extend(cols)
                data.extend(v * scale for v in values)
            indptr.append(len(indices))
        return sp.csr_matrix(
            (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int32), np.asarray(indptr, dtype=np.int64)),
            shape=(len(texts), self.n_features_out_),
        )

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.concatenate([
            self.word_vectorizer_.get_feature_names_out(),
            np.array([f"char:{g}" for g in self.char_vectorizer_.get_feature_names_out()], dtype=object),
        ])
