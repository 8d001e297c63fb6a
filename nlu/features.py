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
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from .lexicon import classes_of
from .text import NEGATORS, analyze, words

# Distinct chunks (space-separated pieces of normalised text) kept in the scoring cache.
# An entry costs ~0.8 KB in the flat tables (tracemalloc over the 12.7k chunks of the
# benchmark dev sets; per-chunk arrays cost ~1.3 KB), so this bounds the cache at ~40 MB
# per process; 200k per-chunk arrays let a long-running server worker grow by ~270 MB.
# Real traffic reuses far fewer chunks than this (EmoEvent's 844 dev tweets: 5.5k), and
# a full cache is replaced, which costs only the time to refill the common chunks.
_CACHE_LIMIT = 50_000
# Token ids are unigram columns (>= 0) or negative runtime ids; shifted into 32 bits to
# pack (row, token) pairs into one int64 when counting distinct tokens.
_TOKEN_OFFSET = 1 << 31
# Batches smaller than this take the per-message loop even where the vectorised path
# applies: its fixed cost is ~40 numpy calls, the loop's a dozen. Default three-head
# model, per message: 1 at a time 55 vs 84 us, 2: 35 vs 46, 4: 26 vs 27, 8: 20 vs 17.
# Both give the same CSR bytes (checked on all 5,046 benchmark dev messages; tested).
_VECTORISE_FROM = 4

# A chunk's entry for the per-message path: (how many of its columns are char n-grams
# (they come first), its tokens). Its columns and token ids live in the runtime's tables.
_Chunk = tuple[int, tuple[str, ...]]
# What the featuriser computes of a new chunk: (its columns, how many are char n-grams,
# its token ids, its tokens); see ChatFeaturizer._describe_chunk.
_Description = tuple[np.ndarray, int, list[int], list[str]]
_SortKind = Literal["quicksort", "stable"]


@functools.cache
def _sort_kind() -> _SortKind:
    """The faster of numpy's two int64 sorts on this CPU, for the featuriser's term keys.

    Integer keys sort to the same array either way; only the time differs, and by CPU:
    where numpy has its AVX-512 sort, quicksort takes 6 ms on a 5,046-message batch
    (1.28M keys) against timsort's 24 ms, while on the slower machine of the same kind
    where the round-6 benchmarks ran, timsort, which merges the keys' long ascending
    runs (rows in message order), was ~2x faster than quicksort. Timed once per
    process, on the first batch, on keys shaped like a batch's (rows ascending,
    columns random within a row; ~7 ms).
    """
    rng = np.random.default_rng(0)
    keys = np.repeat(np.arange(500, dtype=np.int64) * 1_000_000, 200) + rng.integers(0, 1_000_000, 100_000)
    kinds: tuple[_SortKind, _SortKind] = ("quicksort", "stable")
    best = dict.fromkeys(kinds, float("inf"))
    for _ in range(3):
        for kind in kinds:
            start = time.perf_counter()
            np.sort(keys, kind=kind)
            best[kind] = min(best[kind], time.perf_counter() - start)
    return min(kinds, key=best.__getitem__)


class _Table:
    """Variable-length int64 rows, one per chunk id, in one flat buffer.

    Rows are only appended (under the runtime's lock). A reader needs no lock: buffers are
    replaced, never shrunk or overwritten, when they grow, and a row's start and length
    are written before its chunk id is published, so every id a reader holds is complete
    in whichever buffers it reads.
    """

    def __init__(self) -> None:
        self._flat = np.zeros(1024, dtype=np.int64)
        self._start = np.zeros(256, dtype=np.int64)
        self._length = np.zeros(256, dtype=np.int64)
        self._used = 0

    def append(self, row_id: int, values: np.ndarray) -> None:
        end = self._used + len(values)
        if end > len(self._flat):
            flat = np.zeros(max(2 * len(self._flat), end), dtype=np.int64)
            flat[: self._used] = self._flat[: self._used]
            self._flat = flat
        if row_id >= len(self._start):
            self._start = np.concatenate([self._start, np.zeros_like(self._start)])
            self._length = np.concatenate([self._length, np.zeros_like(self._length)])
        self._flat[self._used : end] = values
        self._start[row_id] = self._used
        self._length[row_id] = len(values)
        self._used = end

    def row(self, row_id: int) -> np.ndarray:
        start = self._start[row_id]
        return self._flat[start : start + self._length[row_id]]

    def gather(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``row_ids`` concatenated, and their lengths (no Python loop)."""
        flat, start, length = self._flat, self._start[row_ids], self._length[row_ids]
        ends = np.cumsum(length)
        # Position in ``flat`` of each output value: its row's start plus its offset.
        index = np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) + np.repeat(start - (ends - length), length)
        return flat[index], length


class _Chunks(dict[str, int]):
    """piece -> chunk id; a missing piece is featurised and registered on lookup, so the
    hot loop is one C-level ``__getitem__`` per piece."""

    def __init__(self, register: Callable[[str], int]) -> None:
        super().__init__()
        self._register = register

    def __missing__(self, piece: str) -> int:
        return self._register(piece)


class _Runtime:
    """Per-process scoring caches of a fitted featuriser (never pickled).

    Cached chunks refer to this object's token ids, so a full cache is never cleared in
    place: the featuriser starts a new one (keeping the bigram table), and a batch running
    in another thread keeps the one it started with. Ids come from an atomic counter and
    ``setdefault``, so two threads never give two tokens the same id; chunks are
    registered under a lock, so two threads never give one chunk two ids.
    """

    def __init__(self, describe: Callable[[str, _Runtime], _Description],
                 bigrams: tuple[np.ndarray, np.ndarray, bool] | None = None) -> None:
        self.chunks = _Chunks(self._register)
        self.entries: list[_Chunk] = []
        # Per chunk id: its char n-gram + unigram + lexicon columns, and its token ids.
        self.columns = _Table()
        self.token_table = _Table()
        self.token_ids: dict[str, int] = {}  # unknown tokens -> negative ids
        self.bigrams = bigrams
        self._describe = describe
        self._next_id = itertools.count(1)
        self._lock = threading.Lock()

    def token_id(self, token: str, word_index: dict[str, int]) -> int:
        i = word_index.get(token)
        if i is None:
            i = self.token_ids.get(token)
            if i is None:
                i = self.token_ids.setdefault(token, -next(self._next_id))
        return i

    def _register(self, piece: str) -> int:
        cols, n_char, ids, tokens = self._describe(piece, self)  # pure: outside the lock
        with self._lock:
            chunk_id = dict.get(self.chunks, piece)
            if chunk_id is None:
                chunk_id = len(self.entries)
                self.columns.append(chunk_id, cols)
                self.token_table.append(chunk_id, np.asarray(ids, dtype=np.int64))
                self.entries.append((n_char, tuple(tokens)))
                dict.__setitem__(self.chunks, piece, chunk_id)  # published last
        return chunk_id

    def full(self) -> bool:
        return len(self.chunks) >= _CACHE_LIMIT or len(self.token_ids) >= _CACHE_LIMIT


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
        self.__dict__.pop("_runtime_state", None)  # scoring caches of an earlier vocabulary
        self.n_word_features_ = len(self.word_vectorizer_.vocabulary_)
        # Unigram columns (single word tokens, not bigrams or tone cues) and bigram columns:
        # what the out-of-scope gate counts as "known words" and "known bigrams" (see
        # classifier.ScopeGate).
        unigram = np.zeros(self.n_word_features_, dtype=bool)
        bigram = np.zeros(self.n_word_features_, dtype=bool)
        for gram, i in self.word_vectorizer_.vocabulary_.items():
            unigram[i] = " " not in gram and not gram.startswith(("cue_", "neg_", "lex_"))
            bigram[i] = gram.count(" ") == 1
        no_char = np.zeros(len(self.char_vectorizer_.vocabulary_), dtype=bool)
        self.unigram_mask_ = np.concatenate([unigram, no_char])
        self.bigram_mask_ = np.concatenate([bigram, no_char])
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
        """Reference counts per message, shape (n, 2): distinct word tokens and distinct
        word bigrams (pairs of consecutive tokens), known or not."""
        out = np.zeros((len(texts), 2))
        for i, text in enumerate(texts):
            tokens = words(analyze(text)[0])
            out[i] = len(set(tokens)), len(set(zip(tokens, tokens[1:], strict=False)))
        return out

    def transform_fast(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Same matrix as :meth:`transform`, built directly (see module docstring)."""
        return self.transform_fast_with_types(texts)[0]

    def transform_fast_with_types(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`transform_fast` and :meth:`word_types` in one pass.

        Per message, Python work is only: normalise, split on spaces, look each chunk up in
        a cache of (feature columns, token ids). Word bigrams, distinct-token counts,
        counting, sublinear tf, idf and the per-block L2 norms run vectorised over the
        whole batch. A chunk's tokens, character n-grams, unigram and lexicon columns
        depend on the chunk alone (spaCy splits on whitespace first, char_wb n-grams never
        cross a space), so the cache changes nothing but the time. With a negation scope
        or word n-grams beyond bigrams a per-message loop builds the word n-grams instead;
        so it does for batches of a few messages, where it is the cheaper of the two.
        """
        runtime = self._runtime()
        if runtime.full():
            # Bounded memory on endless novel text; refills with the common chunks. Only
            # between batches: inside one, token ids must stay consistent (see _Runtime).
            runtime = self.__dict__["_runtime_state"] = _Runtime(self._describe_chunk, runtime.bigrams)
        analyzed = [analyze(text) for text in texts]
        if len(texts) < _VECTORISE_FROM or self._negation or self.word_ngram_max > 2 or not self._bigram_table(runtime)[2]:
            return self._transform_per_message(analyzed, runtime)
        return self._transform_vectorised(analyzed, runtime)

    def _transform_vectorised(self, analyzed: list[tuple[str, list[str]]], runtime: _Runtime) -> tuple[sp.csr_matrix, np.ndarray]:
        n = len(analyzed)
        pieces_of = [normalized.split() for normalized, _ in analyzed]
        n_pieces = np.fromiter(map(len, pieces_of), dtype=np.int64, count=n)
        # One C-level dict lookup per chunk (a miss featurises and registers it); then its
        # columns and token ids are gathered from the runtime's flat tables in numpy.
        chunk_ids = np.fromiter(map(runtime.chunks.__getitem__, chain.from_iterable(pieces_of)), dtype=np.int64, count=int(n_pieces.sum()))
        piece_row = np.repeat(np.arange(n, dtype=np.int64), n_pieces)
        # Character n-gram, unigram and lexicon columns of every chunk, and its word tokens
        # in order (ids: unigram column if known, a negative runtime id if not).
        cols, n_cols = runtime.columns.gather(chunk_ids)
        rows = np.repeat(piece_row, n_cols)
        toks, n_toks = runtime.token_table.gather(chunk_ids)
        tok_row = np.repeat(piece_row, n_toks)
        # Distinct tokens and distinct bigrams per message, unknown ones included (for the
        # scope gate): one sort of (row, token) keys, one of (row, token pair) keys.
        n_types = np.zeros((n, 2))
        pairs = np.sort((tok_row << 32) | (toks + _TOKEN_OFFSET))
        distinct = np.ones(len(pairs), dtype=bool)
        np.not_equal(pairs[1:], pairs[:-1], out=distinct[1:])
        n_types[:, 0] = np.bincount(pairs[distinct] >> 32, minlength=n)
        a, b = toks[:-1], toks[1:]
        same = tok_row[1:] == tok_row[:-1]
        if same.any():
            shift = np.uint64(32)
            pair_key = ((a[same] + _TOKEN_OFFSET).astype(np.uint64) << shift) | (b[same] + _TOKEN_OFFSET).astype(np.uint64)
            pair_row = tok_row[1:][same]
            order = np.lexsort((pair_key, pair_row))
            pair_key, pair_row = pair_key[order], pair_row[order]
            distinct = np.ones(len(pair_key), dtype=bool)
            distinct[1:] = (pair_key[1:] != pair_key[:-1]) | (pair_row[1:] != pair_row[:-1])
            n_types[:, 1] = np.bincount(pair_row[distinct], minlength=n)
        parts_cols, parts_rows = [cols], [rows]
        if self.word_ngram_max >= 2 and len(toks) > 1:
            # Bigrams of consecutive tokens of one message; a bigram in the vocabulary has
            # two known tokens (the word vocabulary keeps every training unigram).
            keys_known, cols_known, _ = self._bigram_table(runtime)
            ok = same & (a >= 0) & (b >= 0)
            keys = a[ok] * self.n_word_features_ + b[ok]
            pos = np.searchsorted(keys_known, keys)
            pos[pos >= len(keys_known)] = 0
            found = keys_known[pos] == keys if len(keys_known) else np.zeros(len(keys), dtype=bool)
            parts_cols.append(cols_known[pos[found]])
            parts_rows.append(tok_row[1:][ok][found])
        word_get = self.word_index_.get
        cue_cols: list[int] = []
        cue_rows: list[int] = []
        for i, (_, cue_words) in enumerate(analyzed):
            for cue in cue_words:
                c = word_get(cue)
                if c is not None:
                    cue_cols.append(c)
                    cue_rows.append(i)
        if cue_cols:
            parts_cols.append(np.asarray(cue_cols, dtype=np.int64))
            parts_rows.append(np.asarray(cue_rows, dtype=np.int64))
        return self._weighted(np.concatenate(parts_rows), np.concatenate(parts_cols), n), n_types

    def _transform_per_message(self, analyzed: list[tuple[str, list[str]]], runtime: _Runtime) -> tuple[sp.csr_matrix, np.ndarray]:
        n = len(analyzed)
        word_get = self.word_index_.get
        chunks, entries, columns = runtime.chunks, runtime.entries, runtime.columns
        ngram_max, negation, lexicon = self.word_ngram_max, self._negation, self._lexicon
        by_chunk = not negation  # unigram and lexicon columns depend on the token alone
        word_cols: list[int] = []
        word_rows: list[int] = []
        char_parts: list[np.ndarray] = []
        char_sizes: list[int] = []
        n_types = np.zeros((n, 2))
        for i, (normalized, cue_words) in enumerate(analyzed):
            size = 0
            n_word = len(word_cols)
            tokens: list[str] = []
            for piece in normalized.split():
                chunk_id = chunks[piece]
                n_char, chunk_tokens = entries[chunk_id]
                tokens.extend(chunk_tokens)
                cols = columns.row(chunk_id)
                if not by_chunk:
                    cols = cols[:n_char]
                char_parts.append(cols)
                size += len(cols)
            char_sizes.append(size)
            n_types[i] = len(set(tokens)), len(set(zip(tokens, tokens[1:], strict=False)))
            if by_chunk:
                grams: list[str] = []
                for k in range(2, ngram_max + 1):
                    grams.extend(" ".join(tokens[j : j + k]) for j in range(len(tokens) - k + 1))
                grams.extend(cue_words)
            else:
                grams = word_grams(tokens, cue_words, ngram_max, negation, lexicon)
            word_cols.extend([c for c in map(word_get, grams) if c is not None])
            word_rows.extend([i] * (len(word_cols) - n_word))
        cols_all = np.concatenate([np.asarray(word_cols, dtype=np.int64), *char_parts])
        rows_all = np.concatenate([np.asarray(word_rows, dtype=np.int64), np.repeat(np.arange(n, dtype=np.int64), char_sizes)])
        return self._weighted(rows_all, cols_all, n), n_types

    def _weighted(self, rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
        """TF-IDF matrix from one (row, column) pair per occurrence: sublinear tf, idf, each
        block (word, char) of each row L2-normalised on its own, the char block weighted."""
        # Term counts from one sort of row-major keys: the same sorted CSR that scipy's
        # COO -> CSR + sum_duplicates gives, as fast for a batch and 4x faster for one
        # message (scipy's per-call validation dominated single-message featurisation).
        n_features = self.n_features_out_
        keys = np.sort(rows * n_features + cols, kind=_sort_kind())
        first = np.empty(len(keys), dtype=bool)
        first[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        unique = keys[starts]
        counts = np.diff(np.append(starts, len(keys)))
        # Row boundaries by binary search on the sorted keys (cheaper than dividing them).
        indptr = np.searchsorted(unique, np.arange(n + 1, dtype=np.int64) * n_features)
        row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
        indices = unique - row_of * n_features
        values = (1.0 + np.log(counts)) * self.idf_[indices]
        is_char = indices >= self.n_word_features_
        group = 2 * row_of + is_char
        norms = np.sqrt(np.bincount(group, weights=values * values, minlength=2 * n))
        scale = np.where(is_char, self.char_weight, 1.0) / norms[group]
        return sp.csr_matrix((values * scale, indices.astype(np.int32), indptr), shape=(n, n_features))

    def _runtime(self) -> _Runtime:
        runtime = self.__dict__.get("_runtime_state")
        if runtime is None:
            runtime = self.__dict__["_runtime_state"] = _Runtime(self._describe_chunk)
        return runtime

    def _bigram_table(self, runtime: _Runtime) -> tuple[np.ndarray, np.ndarray, bool]:
        """Sorted keys ``a * n_word + b`` (unigram columns of the two tokens) of the
        vocabulary's bigrams, their columns, and whether every bigram has both unigrams in
        the vocabulary (always, with the vectorizer's defaults; the vectorised path needs
        it). Built once per process."""
        if runtime.bigrams is None:
            index = self.word_index_
            keys, cols = [], []
            complete = True
            for gram, col in index.items():
                if gram.count(" ") == 1:
                    a, b = gram.split(" ")
                    ca, cb = index.get(a), index.get(b)
                    if ca is None or cb is None:
                        complete = False
                        continue
                    keys.append(ca * self.n_word_features_ + cb)
                    cols.append(col)
            k = np.asarray(keys, dtype=np.int64)
            order = np.argsort(k)
            runtime.bigrams = (k[order], np.asarray(cols, dtype=np.int64)[order], complete)
        return runtime.bigrams

    def _describe_chunk(self, piece: str, runtime: _Runtime) -> _Description:
        """What the cache keeps of one space-free chunk: its character n-gram + unigram +
        lexicon columns, how many of them are char n-grams (they come first), its token
        ids and its tokens (for the per-message path)."""
        index = self.char_index_
        grams = char_features(piece, self.char_ngram_min, self.char_ngram_max)
        char_cols = [index[g] for g in grams if g in index]
        toks = words(piece)
        grams = list(toks)
        if self._lexicon:
            for token in toks:
                grams.extend(_lex_grams(token))
        word_index = self.word_index_
        cols = np.asarray(char_cols + [word_index[g] for g in grams if g in word_index], dtype=np.int64)
        return cols, len(char_cols), [runtime.token_id(t, word_index) for t in toks], toks

    def __getstate__(self) -> dict[str, object]:
        state = dict(super().__getstate__())
        state.pop("_runtime_state", None)  # runtime caches, not part of the model
        return state

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.concatenate([
            self.word_vectorizer_.get_feature_names_out(),
            np.array([f"char:{g}" for g in self.char_vectorizer_.get_feature_names_out()], dtype=object),
        ])
