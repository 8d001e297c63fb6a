"""The trained model: scoring, and the artifact directory it lives in.

An artifact is ``MODEL_DIR/model.joblib`` (the fitted featuriser and heads) plus
``MODEL_DIR/meta.json`` (versions, data fingerprints, labels, config, metrics, routing
thresholds and the sha256 of ``model.joblib``). It is written atomically and verified
before ``joblib.load`` ever runs.

Trust rule: joblib (pickle) executes code while loading. Load only artifacts you built;
the sha256 check catches damage and accidental swaps, not a forger who rewrites both files.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import numpy as np
import scipy.sparse as sp

from . import __version__
from .atomic import check_can_create
from .classifier import CalibratedLinearClassifier, softmax
from .config import HEADS, TrainConfig, routing_from_mapping
from .data import sha256_file
from .errors import ArtifactError, ConfigError, InputError, OutputError
from .features import ChatFeaturizer

FORMAT_VERSION = 1
MODEL_FILE = "model.joblib"
META_FILE = "meta.json"


class Ranking(Sequence[tuple[str, float]]):
    """The intent ranking of one prediction: ``(label, probability)`` pairs, best first.

    Behaves as the tuple of pairs it stands for (indexing, slicing, iteration, ``len``,
    ``==`` and ``hash`` against tuples and other rankings) but is built lazily: it holds
    the batch's probability matrix, its row and the head's label array, and sorts the row
    on first use. ``score_batch`` made 13+ tuples per message for rankings that routing
    reads for a few messages only; they were most of the batch's allocations and the
    garbage collector's work (see docs/BENCHMARKS.md, round 5). Read-only: the matrix is
    the batch's own (nothing else refers to it), flagged non-writeable. Pickles as a plain tuple. A kept
    Prediction keeps its batch's intent matrix alive (8 bytes per message and intent:
    1 MB for 10,000 messages over 13 intents).
    """

    __slots__ = ("_proba", "_row", "_labels", "_items")

    def __init__(self, proba: np.ndarray, row: int, labels: np.ndarray) -> None:
        self._proba = proba
        self._row = row
        self._labels = labels
        self._items: tuple[tuple[str, float], ...] | None = None

    def _pairs(self) -> tuple[tuple[str, float], ...]:
        items = self._items
        if items is None:
            p = self._proba[self._row]
            # Stable, so the first of tied maxima comes first, like argmax (the intent).
            order = np.argsort(-p, kind="stable")
            items = self._items = tuple(zip(self._labels[order].tolist(), p[order].tolist(), strict=True))
        return items

    def __len__(self) -> int:
        return len(self._labels)

    @overload
    def __getitem__(self, index: int) -> tuple[str, float]: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[tuple[str, float], ...]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, float] | tuple[tuple[str, float], ...]:
        return self._pairs()[index]

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self._pairs())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ranking):
            return self._pairs() == other._pairs()
        if isinstance(other, tuple):
            return self._pairs() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._pairs())

    def __repr__(self) -> str:
        return repr(self._pairs())

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (self._pairs(),))


@dataclass(frozen=True)
class Prediction:
    """What the model says about one message. Heads the model lacks give ``None``.

    ``ranking`` is a sequence of ``(label, probability)`` pairs, best first: a tuple when
    built by hand, a lazily sorted :class:`Ranking` (equal to that tuple) from a model.
    """

    intent: str | None
    confidence: float | None
    ranking: Sequence[tuple[str, float]]
    sentiment: str | None
    sentiment_confidence: float | None
    emotion: str | None
    emotion_confidence: float | None
    frustration: float

    def to_dict(self) -> dict[str, Any]:
        # Field by field (asdict would deep-copy a Ranking's probability matrix).
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["ranking"] = [[label, p] for label, p in self.ranking]
        return out


class Model:
    """A featuriser and one calibrated linear head per label column.

    Every head reads the same feature vector, so a message is featurised once and all
    heads are scored with one sparse-dense product against their stacked weights.
    """

    def __init__(
        self,
        featurizer: ChatFeaturizer,
        heads: Mapping[str, CalibratedLinearClassifier],
        meta: Mapping[str, Any] | None = None,
        frustration_emotions: Sequence[str] = TrainConfig.frustration_emotions,
        negative_sentiments: Sequence[str] = TrainConfig.negative_sentiments,
    ) -> None:
        unknown = set(heads) - set(HEADS)
        if unknown:
            raise ArtifactError(f"unknown head(s) {sorted(unknown)}; known heads are {', '.join(HEADS)}")
        self.featurizer = featurizer
        self.heads = {h: heads[h] for h in HEADS if h in heads}
        self.meta: dict[str, Any] = dict(meta or {})
        self._stack_heads()
        self._frustration_columns = self._columns_for("emotion", frustration_emotions)
        if not self._frustration_columns:
            self._frustration_columns = self._columns_for("sentiment", negative_sentiments)

    def _stack_heads(self) -> None:
        # Weights of all heads side by side, pre-divided by each head's temperature, so
        # scoring is one product followed by a softmax per head's column slice.
        weights, biases, self._slices = [], [], {}
        start = 0
        for name, head in self.heads.items():
            weights.append(head.coef_.T / head.temperature_)
            biases.append(head.intercept_ / head.temperature_)
            self._slices[name] = slice(start, start + len(head.classes_))
            start += len(head.classes_)
        self._weights = np.ascontiguousarray(np.hstack(weights)) if weights else np.zeros((0, 0))
        self._bias = np.concatenate(biases) if biases else np.zeros(0)
        self._classes = {name: [str(c) for c in head.classes_] for name, head in self.heads.items()}
        self._label_arrays = {name: np.asarray(labels, dtype=object) for name, labels in self._classes.items()}
        # Out-of-scope gates (intent head), applied after the softmax; see classifier.ScopeGate.
        self._gates = {name: gate for name, head in self.heads.items() if (gate := getattr(head, "scope_gate_", None)) is not None}
        # Top-label calibration maps (classifier.TopLabelMap), applied last.
        self._top_maps = {name: m for name, head in self.heads.items() if (m := getattr(head, "top_map_", None)) is not None}

    def _columns_for(self, head: str, labels: Sequence[str]) -> tuple[str, list[int]] | None:
        if head not in self.heads:
            return None
        columns = [i for i, c in enumerate(self._classes[head]) if c in set(labels)]
        return (head, columns) if columns else None

    # -- public API -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "unnamed"))

    def labels(self, head: str) -> list[str]:
        """Labels of ``head`` in column order of its probabilities."""
        return list(self._classes[head])

    def score(self, text: str) -> Prediction:
        """Score one message (a batch of one: same path, same numbers as score_batch)."""
        return self.score_batch([text])[0]

    def score_batch(self, texts: Sequence[str]) -> list[Prediction]:
        """Score many messages; the result for each equals ``score`` on it alone."""
        with _cyclic_gc_paused():
            return self._predictions(self.predict_proba(texts), len(texts))

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head, columns in :meth:`labels` order."""
        _check_texts(texts)
        return self._probabilities(*self.featurizer.transform_fast_with_types(texts))

    def reference_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The same probabilities through scikit-learn's own code, for verification."""
        _check_texts(texts)
        X = self.featurizer.transform(texts)
        types = self.featurizer.word_types(texts)
        return {name: head.predict_proba(X, types) for name, head in self.heads.items()}

    def frustration(self, probabilities: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(frustrated) per row: the summed probability of the frustration emotions, or
        of negative sentiment when the model has no emotion head; 0 with neither."""
        n = len(next(iter(probabilities.values()))) if probabilities else 0
        if self._frustration_columns is None:
            return np.zeros(n)
        head, columns = self._frustration_columns
        return np.clip(probabilities[head][:, columns].sum(axis=1), 0.0, 1.0)

    # -- internals --------------------------------------------------------------------

    def _probabilities(self, X: sp.csr_matrix, word_types: np.ndarray) -> dict[str, np.ndarray]:
        scores = np.asarray(X @ self._weights) + self._bias
        out = {name: softmax(scores[:, sl]) for name, sl in self._slices.items()}
        for name, gate in self._gates.items():
            out[name] = gate.apply(out[name], X, word_types)
        for name, top_map in self._top_maps.items():
            out[name] = top_map.apply(out[name])
        return out

    def _predictions(self, probabilities: Mapping[str, np.ndarray], n: int) -> list[Prediction]:
        # Vectorised over the batch: top label and confidence per head, frustration for all
        # rows; then one small dataclass per row, its intent ranking sorted only when read.
        none: list[Any] = [None] * n
        top: dict[str, list[Any]] = {}
        conf: dict[str, list[Any]] = {}
        rankings: list[Sequence[tuple[str, float]]] = [()] * n
        for head in HEADS:
            if head not in probabilities:
                top[head], conf[head] = none, none
                continue
            p = probabilities[head]
            # argmax takes the first of tied maxima, as the ranking's stable sort does.
            best = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
            top[head] = self._label_arrays[head][best].tolist()
            conf[head] = p[np.arange(n), best].tolist()
            if head == "intent":
                # One lazily sorted Ranking per row over this batch's matrix, made read-only
                # (it is fresh from _probabilities and referenced by nothing else).
                p.flags.writeable = False
                labels = self._label_arrays[head]
                rankings = [Ranking(p, i, labels) for i in range(n)]
        frustration = self.frustration(probabilities).tolist() if probabilities else [0.0] * n
        return [
            Prediction(
                intent=top["intent"][i],
                confidence=conf["intent"][i],
                ranking=rankings[i],
                sentiment=top["sentiment"][i],
                sentiment_confidence=conf["sentiment"][i],
                emotion=top["emotion"][i],
                emotion_confidence=conf["emotion"][i],
                frustration=frustration[i],
            )
            for i in range(n)
        ]


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one batch.

    A batch allocates ~7 objects per message (predictions, ranking tuples) that stay alive
    until it returns, so the allocation counter triggers full collections that walk all of
    them: 100-140 ms pauses, 10k-message batches at 12-17k msg/s instead of ~18k (measured
    in one process). None of these objects form cycles, so reference counting still frees
    everything; the collector resumes (if it was on) when the batch ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InputError("score_batch takes a list of texts, not one string; use score(text)")
    if isinstance(texts, bytes | Mapping) or not (hasattr(texts, "__len__") and hasattr(texts, "__getitem__")):
        # An iterator would be consumed by the checks below; None or a dict is a mistake.
        raise InputError(f"score_batch takes a list of texts, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i}: expected a string, got {type(text).__name__}")


# -- artifact -------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    import joblib
    import scipy
    import sklearn

    versions = {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "joblib": joblib.__version__,
    }
    try:
        import spacy

        versions["spacy"] = spacy.__version__
    except ImportError:  # pragma: no cover - spaCy is a hard dependency
        pass
    return versions


def check_destination(out_dir: str | Path, force: bool = False) -> None:
    """Refuse, before any training, an ``out_dir`` that :func:`save_model` could not write
    or must not replace: ``--force`` replaces a model directory, never a folder of other files."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ArtifactError(f"{out_dir}: exists and is not a directory; choose another output")
        if not force:
            raise ArtifactError(f"{out_dir}: already exists; pass --force to replace it")
        if Path.cwd().resolve().is_relative_to(out_dir.resolve()):
            raise ArtifactError(f"{out_dir}: holds the current directory; choose another output")
        if not (out_dir / META_FILE).is_file() and any(out_dir.iterdir()):
            raise ArtifactError(
                f"{out_dir}: not a model directory (no {META_FILE}); --force replaces only a model, choose another output"
            )
    check_can_create(out_dir)


def save_model(model: Model, out_dir: str | Path, force: bool = False) -> Path:
    """Write ``model`` to ``out_dir`` atomically: a temporary sibling directory is filled,
    then renamed into place, so a crash never leaves a half-written artifact."""
    import joblib

    out_dir = Path(out_dir)
    check_destination(out_dir, force)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write: {exc.strerror or exc}") from None
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is shared like any other
        joblib.dump({"featurizer": model.featurizer, "heads": model.heads}, tmp / MODEL_FILE, compress=3)
        meta = dict(model.meta)
        meta.update(
            format_version=FORMAT_VERSION,
            nlu_version=__version__,
            name=out_dir.name,
            created_at=meta.get("created_at") or datetime.now(UTC).isoformat(timespec="seconds"),
            libraries=library_versions(),
            heads={h: model.labels(h) for h in model.heads},
            model_sha256=sha256_file(tmp / MODEL_FILE),
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _fsync_dir(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            try:
                tmp.rename(out_dir)
            except BaseException:
                old.rename(out_dir)  # the previous model stays in place
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except OSError as exc:  # disk full, permissions: the caller's machine, not a bug
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{out_dir}: cannot write the model: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model.meta = meta
    return out_dir


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with child.open("rb") as fh:
            os.fsync(fh.fileno())


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """Read and check ``meta.json`` (without touching ``model.joblib``)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model directory not found")
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path}: missing; not a model directory (train one with `nlu train`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{meta_path}: unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{meta_path}: format_version {version!r} is not supported (this nlu reads {FORMAT_VERSION}); retrain the model"
        )
    for key in ("model_sha256", "heads", "libraries"):
        if key not in meta:
            raise ArtifactError(f"{meta_path}: missing field {key!r}")
    # A hand-edited meta.json must fail here, naming the field, not as a crash later.
    for key, kind in (("model_sha256", str), ("heads", dict), ("libraries", dict), ("config", dict), ("routing", dict)):
        if key in meta and not isinstance(meta[key], kind):
            expected = "an object" if kind is dict else "a string"
            raise ArtifactError(f"{meta_path}: field {key!r} must be {expected}, got {type(meta[key]).__name__}")
    if "routing" in meta:
        try:  # the production policy every door will apply: refuse a bad one at load time
            routing_from_mapping(meta["routing"], source=f"{meta_path} routing")
        except ConfigError as exc:
            raise ArtifactError(str(exc)) from None
    return meta


def load_model(model_dir: str | Path) -> Model:
    """Load a model directory, verifying it before anything is unpickled.

    Checks, in order: the directory and ``meta.json`` exist and parse; the format version
    is this one; it was built with the same scikit-learn minor version (pickled estimators
    do not survive others); ``model.joblib`` exists and its sha256 matches. Never falls
    back to a default model.
    """
    import joblib
    import sklearn

    if not isinstance(model_dir, str | os.PathLike):
        raise ArtifactError(f"model directory must be a path, got {type(model_dir).__name__}")
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    built = str(meta["libraries"].get("scikit-learn", "?"))
    if _minor(built) != _minor(sklearn.__version__):
        raise ArtifactError(
            f"{model_dir}: built with scikit-learn {built}, this environment has {sklearn.__version__}; "
            "retrain the model with this environment"
        )
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"{model_path}: missing")
    if sha256_file(model_path) != meta["model_sha256"]:
        raise ArtifactError(f"{model_path}: sha256 does not match meta.json; the file is damaged or was replaced")
    try:
        payload = joblib.load(model_path)
        model = Model(
            payload["featurizer"],
            payload["heads"],
            meta,
            frustration_emotions=meta.get("config", {}).get("frustration_emotions", TrainConfig.frustration_emotions),
            negative_sentiments=meta.get("config", {}).get("negative_sentiments", TrainConfig.negative_sentiments),
        )
    except ArtifactError:
        raise
    except Exception as exc:  # unpickling can fail in many ways; all mean "bad artifact"
        raise ArtifactError(f"{model_path}: cannot load: {type(exc).__name__}: {exc}") from None
    if {h: model.labels(h) for h in model.heads} != meta["heads"]:
        raise ArtifactError(f"{model_dir}: heads in model.joblib do not match meta.json")
    return model


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
