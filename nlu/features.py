"""The featuriser shared by every head: word n-grams + chat cues, and character n-grams.

Fitting uses scikit-learn's ``TfidfVectorizer`` (vocabulary, idf). Scoring has two paths
with the same result:

* :meth:`ChatFeaturizer.transform` is the scikit-learn reference path;
* :meth:`ChatFeaturizer.transform_fast` builds the same CSR matrix directly from the
  fitted vocabularies. It normalises each message once for both blocks and skips
  scikit-learn's per-call validation, which dominates the cost of a single message.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from .lexicon import classes_of
from .text import NEGATORS, analyze, words

# Distinct chunks (space-separated pieces of normalised text) kept in the scoring cache.
_CACHE_LIMIT = 200_000


# Tokens that end a negation scope ("no me gusta! pero ..."); commas are already gone.
_SCOPE_END = frozenset({"!", "?", "pero", "aunque", "sino"})


def word_grams(tokens: Sequence[str], cue_words: Sequence[str], ngram_max: int, negation: int = 0, lexicon: bool = False) -> list[str]:
    """Word 1..n-grams of a token list, its tone cues, and optionally:

    * negation scope: up to ``negation`` tokens after a negator ("no", "nunca", "ni",
      "sin", ...) also appear as ``neg_<token>`` ("no me gusta" -> neg_me, neg_gusta),
      until "!", "?" or "pero";
    * lexicon cues (nlu.lexicon): ``lex_<class>`` per matching token, ``lex_neg_<class>``
      inside a negation scope.
    """
    grams = list(tokens)
    if ngram_max >= 2:
        grams.extend([a + " " + b for a, b in zip(tokens, tokens[1:], strict=False)])
    for n in range(3, ngram_max + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    grams.extend(cue_words)
    if lexicon and not negation:
        # The common case, without a scope to track: cached lex_<class> grams per token.
        for token in tokens:
            lex = _lex_grams(token)
            if lex:
                grams.extend(lex)
    elif negation or lexicon:
        left = 0  # tokens still inside the current negation scope
        for token in tokens:
            if token in NEGATORS:
                left = negation
                continue
            if token in _SCOPE_END:
                left = 0
                continue
            if left:
                grams.append("neg_" + token)
            if lexicon:
                prefix = "lex_neg_" if left else "lex_"
                grams.extend(prefix + c for c in classes_of(token))
            if left:
                left -= 1
    return grams


@functools.lru_cache(maxsize=65_536)
def _lex_grams(token: str) -> tuple[str, ...]:
    # Negators and scope ends emit no lexicon cue, as in the scope-tracking loop.
    if token in NEGATORS or token in _SCOPE_END:
        return ()
    return tuple("lex_" + c for c in classes_of(token))


def word_features(normalized: str, cue_words: Sequence[str], ngram_max: int, negation: int = 0, lexicon: bool = False) -> list[str]:
    """Word 1..n-grams of the normalised message, plus its tone cues (see :func:`word_grams`)."""
    return word_grams(words(normalized), cue_words, ngram_max, negation, lexicon)


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
        negation: int = 0,
        lexicon: bool = False,
    ) -> None:
        self.word_ngram_max = word_ngram_max
        self.char_ngram_min = char_ngram_min
        self.char_ngram_max = char_ngram_max
        self.char_min_df = char_min_df
        self.char_weight = char_weight
        self.negation = negation
        self.lexicon = lexicon

    # -- fitting ----------------------------------------------------------------------

    def _analyze(self, texts: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
        word_docs, char_docs = [], []
        for text in texts:
            normalized, cue_words = analyze(text)
            word_docs.append(word_features(normalized, cue_words, self.word_ngram_max, self._negation, self._lexicon))
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

    # Artifacts pickled before these options existed have neither attribute.
    @property
    def _negation(self) -> int:
        return int(self.__dict__.get("negation", 0))

    @property
    def _lexicon(self) -> bool:
        return bool(self.__dict__.get("lexicon", False))

    def _index_vocabularies(self) -> None:
        self.n_word_features_ = len(self.word_vectorizer_.vocabulary_)
        # Unigram columns (single word tokens, not bigrams or tone cues): what the
        # out-of-scope gate counts as "known words" (see classifier.ScopeGate).
        unigram = np.zeros(0, dtype=bool)
        if self.n_word_features_:
            unigram = np.zeros(self.n_word_features_, dtype=bool)
            for gram, i in self.word_vectorizer_.vocabulary_.items():
                unigram[i] = " " not in gram and not gram.startswith(("cue_", "neg_", "lex_"))
        self.unigram_mask_ = np.concatenate([unigram, np.zeros(len(self.char_vectorizer_.vocabulary_), dtype=bool)])
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

    def word_types(self, texts: Sequence[str]) -> np.ndarray:
        """Reference count of distinct word tokens per message (known or not)."""
        return np.asarray([len(set(words(analyze(text)[0]))) for text in texts], dtype=np.float64)

    def transform_fast(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Same matrix as :meth:`transform`, built directly (see module docstring)."""
        return self.transform_fast_with_types(texts)[0]

    def transform_fast_with_types(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`transform_fast` and :meth:`word_types` in one pass.

        Per message, Python work is only: normalise, split on spaces, look each chunk up
        in a cache of (word tokens, character n-gram columns), look up the word n-grams.
        Counting, sublinear tf, idf and the per-block L2 norms run vectorised over the
        whole batch. A chunk's tokens and character n-grams depend on the chunk alone
        (spaCy splits on whitespace first, char_wb n-grams never cross a space), so the
        cache changes nothing but the time.
        """
        n = len(texts)
        word_index = self.word_index_
        ngram_max = self.word_ngram_max
        chunk = self._chunk
        chunk(" ")  # creates the cache
        cache_get = self.__dict__["_cache"].get
        word_get = word_index.get
        negation, lexicon = self._negation, self._lexicon
        # Without negation scopes a token's unigram and lexicon columns depend on the token
        # alone: the chunk cache holds them and only n-grams (n >= 2) and cues are looked up.
        by_chunk = not negation
        word_cols: list[int] = []
        word_rows: list[int] = []
        char_parts: list[np.ndarray] = []
        char_sizes: list[int] = []
        n_types = np.zeros(n)
        for i, text in enumerate(texts):
            tokens: list[str] = []
            normalized, cue_words = analyze(text)
            size = 0
            n_word = len(word_cols)
            for piece in normalized.split():
                hit = cache_get(piece)
                toks, cols, unigram_cols = chunk(piece) if hit is None else hit
                tokens.extend(toks)
                if by_chunk:
                    word_cols.extend(unigram_cols)
                if len(cols):
                    char_parts.append(cols)
                    size += len(cols)
            char_sizes.append(size)
            n_types[i] = len(set(tokens))
            if by_chunk:
                grams = [a + " " + b for a, b in zip(tokens, tokens[1:], strict=False)] if ngram_max >= 2 else []
                for k in range(3, ngram_max + 1):
                    grams.extend(" ".join(tokens[j : j + k]) for j in range(len(tokens) - k + 1))
                grams.extend(cue_words)
            else:
                grams = word_grams(tokens, cue_words, ngram_max, negation, lexicon)
            word_cols.extend([c for c in map(word_get, grams) if c is not None])
            word_rows.extend([i] * (len(word_cols) - n_word))
        cols_all = np.concatenate([np.asarray(word_cols, dtype=np.int64), *char_parts]) if char_parts else np.asarray(word_cols, dtype=np.int64)
        rows_all = np.concatenate([np.asarray(word_rows, dtype=np.int64), np.repeat(np.arange(n, dtype=np.int64), char_sizes)])
        # COO -> CSR sums the duplicates (the term counts) and sorts columns within rows.
        counts = sp.coo_matrix((np.ones(len(cols_all)), (rows_all, cols_all)), shape=(n, self.n_features_out_)).tocsr()
        counts.sum_duplicates()
        indices = counts.indices
        values = (1.0 + np.log(counts.data)) * self.idf_[indices]
        row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(counts.indptr))
        # Each block (word, char) of each row is L2-normalised on its own, then weighted.
        is_char = indices >= self.n_word_features_
        group = 2 * row_of + is_char
        norms = np.sqrt(np.bincount(group, weights=values * values, minlength=2 * n))
        scale = np.where(is_char, self.char_weight, 1.0) / norms[group]
        X = sp.csr_matrix(
            (values * scale, indices.astype(np.int32, copy=False), counts.indptr.astype(np.int64, copy=False)),
            shape=(n, self.n_features_out_),
        )
        return X, n_types

    def _chunk(self, piece: str) -> tuple[tuple[str, ...], np.ndarray, tuple[int, ...]]:
        """Word tokens, character n-gram columns and the columns of the tokens' unigrams and
        lexicon cues (used when there is no negation scope) of one space-free chunk, cached."""
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = self.__dict__["_cache"] = {}
        hit = cache.get(piece)
        if hit is None:
            index = self.char_index_
            grams = char_features(piece, self.char_ngram_min, self.char_ngram_max)
            cols = np.asarray([index[g] for g in grams if g in index], dtype=np.int64)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()  # bounded memory on endless novel text; refills with the common chunks
            toks = tuple(words(piece))
            grams = list(toks)
            if self._lexicon:
                for token in toks:
                    grams.extend(_lex_grams(token))
            word_index = self.word_index_
            hit = cache[piece] = (toks, cols, tuple(word_index[g] for g in grams if g in word_index))
        return hit

    def __getstate__(self) -> dict[str, object]:
        state = dict(super().__getstate__())
        state.pop("_cache", None)  # a runtime cache, not part of the model
        return state

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.concatenate([
            self.word_vectorizer_.get_feature_names_out(),
            np.array([f"char:{g}" for g in self.char_vectorizer_.get_feature_names_out()], dtype=object),
        ])
