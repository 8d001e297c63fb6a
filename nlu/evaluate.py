"""Evaluation for analysts: per-head metrics, routing outcomes, threshold sweeps,
cross-validation and report comparison.

Everything here returns data (frozen dataclasses and JSON-ready dicts); the files of a
report folder (plots, HTML, CSV) are written by :mod:`nlu.report`, and only ``cli.py``
prints. The ``metrics.json`` shape is a contract (see docs/DESIGN.md):

    {head: {n, accuracy, macro_f1, ece, per_label: {label: {precision, recall, f1, support}}},
     "routing": {answered, answered_accuracy, clarified, escalated, frustrated_escalated}}

Only heads that the model has *and* the data labels appear. Extra keys (``unseen_labels``,
``model``, ``data``, counts inside ``routing``) are additions the contract allows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import make_dirs, write_atomic
from .config import HEADS, RoutingPolicy, TrainConfig
from .data import TEXT, Dataset
from .errors import ConfigError, DataError
from .metrics import head_metrics
from .model import Model, Prediction
from .routing import Decision, first_message_decisions, policy_for

# Answer thresholds tried by the sweep. Steps of 0.01 are finer than any analyst will set
# and keep the sweep (one routing decision per row and threshold) to a few seconds.
SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))


def sweep_grid(current: float) -> tuple[float, ...]:
    """The sweep grid plus the policy's own threshold, so the "current" row is exactly
    what production does (an answer_threshold of 0.924 is not the 0.92 row)."""
    return tuple(sorted({*SWEEP_THRESHOLDS, float(current)}))


def on_grid(threshold: float, every: int = 1) -> bool:
    """``threshold`` is a multiple of ``every`` hundredths: a row of the printed grid."""
    hundredths = threshold * 100
    return abs(hundredths - round(hundredths)) < 1e-9 and round(hundredths) % every == 0


def format_threshold(threshold: float) -> str:
    """0.50 on the grid; a policy's own 0.924 in full, never rounded onto a grid row."""
    return f"{threshold:.2f}" if on_grid(threshold) else f"{threshold:g}"

# Gold emotions that, together with a negative sentiment label, mark a frustrated
# customer even when the policy's frustration emotions leave anger out.
ANGER_EMOTIONS: frozenset[str] = frozenset({"enojo", "ira", "anger", "enfado", "rabia"})


# -- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadResult:
    """One head on the rows that carry its gold label."""

    head: str
    labels: tuple[str, ...]  # the model's labels, in probability-column order
    texts: tuple[str, ...]
    gold: tuple[str, ...]
    predicted: tuple[str, ...]
    confidence: np.ndarray
    metrics: dict[str, Any]  # head_metrics(): n, accuracy, macro_f1, ece, per_label
    unseen: dict[str, int]  # gold labels the model never saw in training -> rows

    @property
    def correct(self) -> np.ndarray:
        return np.asarray(self.gold, dtype=object) == np.asarray(self.predicted, dtype=object)


@dataclass(frozen=True)
class RoutingSummary:
    """What the routing policy does with every row taken as a conversation's first message."""

    answered: float
    answered_accuracy: float  # intent accuracy over answered rows with a gold intent (0 if none)
    clarified: float
    escalated: float
    frustrated_escalated: float  # share of gold-frustrated rows escalated (0 if none)
    n: int
    n_answered_labelled: int
    n_frustrated: int
    answer_threshold: float
    frustration_threshold: float
    reasons: dict[str, int] = field(default_factory=dict)  # reason code -> rows
    # The same rows split by what was done: opt_out and out_of_scope are answered,
    # ambiguous is clarified, the rest escalate; an analyst must not read them as one pile.
    reasons_by_action: dict[str, dict[str, int]] = field(default_factory=dict)  # action -> reason code -> rows

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SweepPoint:
    """The routing outcome had the answer threshold been ``threshold``."""

    threshold: float
    answered: float
    answered_accuracy: float | None  # None when nothing labelled is answered
    clarified: float
    escalated: float
    n_answered: int


@dataclass(frozen=True)
class ThresholdChoice:
    """The sweep and the answer threshold it recommends (None: the goal is unreachable)."""

    sweep: tuple[SweepPoint, ...]
    criterion: str  # "target_accuracy", "max_escalation" or "none"
    goal: float | None
    threshold: float | None
    chosen: SweepPoint | None
    production: SweepPoint | None  # the sweep row at the model's current threshold
    frustration_threshold: float
    message: str


@dataclass(frozen=True)
class FrustrationPoint:
    """What the router does at a frustration threshold: ``recall``, the share of the
    customers whose gold labels say frustrated that it escalates (for any reason: what
    ``routing.frustrated_escalated`` reports); ``escalated``, the share of all messages;
    ``precision``, the frustrated share of the escalations."""

    threshold: float
    recall: float
    escalated: float
    precision: float | None  # None when nothing is escalated


@dataclass(frozen=True)
class FrustrationChoice:
    """The frustration sweep and the threshold meeting the recall target (None: unreachable)."""

    sweep: tuple[FrustrationPoint, ...]
    target_recall: float
    threshold: float | None
    chosen: FrustrationPoint | None
    production: FrustrationPoint | None  # the sweep row at the policy's current threshold
    n_frustrated: int
    message: str


@dataclass(frozen=True)
class Evaluation:
    """Everything a report shows; ``metrics`` is the metrics.json document."""

    metrics: dict[str, Any]
    heads: dict[str, HeadResult]
    routing: RoutingSummary | None
    sweep: tuple[SweepPoint, ...]
    predictions: pd.DataFrame
    model_name: str
    model_meta: dict[str, Any]
    data_files: tuple[dict[str, Any], ...]


# -- routing ---------------------------------------------------------------------------


def _acted_intents(decisions: Sequence[Decision], predictions: Sequence[Prediction]) -> np.ndarray:
    """The intent the bot acts on per row: decide() may substitute one (an opt-out reply)."""
    return np.asarray(
        [d.intent if d.intent is not None else p.intent for d, p in zip(decisions, predictions, strict=True)], dtype=object
    )


def gold_frustrated(frame: pd.DataFrame, frustration_emotions: Sequence[str], negative_sentiments: Sequence[str]) -> np.ndarray:
    """Rows whose gold labels mark a frustrated customer: a frustration emotion, or a
    negative sentiment together with anger. Rows without an emotion label are not."""
    n = len(frame)
    emotion = frame["emotion"].to_numpy(dtype=object) if "emotion" in frame.columns else np.full(n, "", dtype=object)
    sentiment = frame["sentiment"].to_numpy(dtype=object) if "sentiment" in frame.columns else np.full(n, "", dtype=object)
    frustrated = np.isin(emotion, list(frustration_emotions))
    angry_negative = np.isin(sentiment, list(negative_sentiments)) & np.isin(emotion, list(ANGER_EMOTIONS))
    return np.asarray(frustrated | angry_negative, dtype=bool)


def routing_summary(
    decisions: Sequence[Decision],
    predictions: Sequence[Prediction],
    gold_intent: Sequence[str],
    frustrated: np.ndarray,
    policy: RoutingPolicy,
) -> RoutingSummary:
    """The ``routing`` block of metrics.json from per-row routing decisions."""
    n = len(decisions)
    kinds = np.asarray([d.action for d in decisions], dtype=object)
    answered = kinds == "answer"
    gold = np.asarray(gold_intent, dtype=object)
    labelled = answered & (gold != "")
    right = _acted_intents(decisions, predictions) == gold
    escalated = kinds == "escalate"
    by_action: dict[str, Counter[str]] = {}
    for d in decisions:
        by_action.setdefault(d.action, Counter()).update(d.reasons)
    reasons: Counter[str] = sum(by_action.values(), Counter())
    return RoutingSummary(
        answered=_share(answered.sum(), n),
        answered_accuracy=_share((right & labelled).sum(), labelled.sum()),
        clarified=_share((kinds == "clarify").sum(), n),
        escalated=_share(escalated.sum(), n),
        frustrated_escalated=_share((escalated & frustrated).sum(), frustrated.sum()),
        n=n,
        n_answered_labelled=int(labelled.sum()),
        n_frustrated=int(frustrated.sum()),
        answer_threshold=policy.answer_threshold,
        frustration_threshold=policy.frustration_threshold,
        reasons=dict(reasons.most_common()),
        reasons_by_action={
            action: dict(by_action[action].most_common())
            for action in ("escalate", "clarify", "answer")
            if by_action.get(action)
        },
    )


def _share(part: Any, whole: Any) -> float:
    return float(part) / float(whole) if whole else 0.0


def threshold_sweep(
    policy: RoutingPolicy,
    predictions: Sequence[Prediction],
    texts: Sequence[str],
    gold_intent: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> tuple[SweepPoint, ...]:
    """Routing outcomes over a grid of answer thresholds (default: :func:`sweep_grid` of
    the policy's), all else equal.

    This is the table behind the risk-coverage curve. Raising the threshold can only move
    rows out of "answer", so ``answered`` never increases along the sweep.
    """
    gold = np.asarray(gold_intent, dtype=object)
    has_gold = gold != ""
    n = len(predictions)
    points = []
    for t in sweep_grid(policy.answer_threshold) if thresholds is None else thresholds:
        decisions = first_message_decisions(predictions, texts, dataclasses.replace(policy, answer_threshold=float(t)))
        kinds = np.asarray([d.action for d in decisions], dtype=object)
        right = _acted_intents(decisions, predictions) == gold
        answered = kinds == "answer"
        labelled = answered & has_gold
        points.append(SweepPoint(
            threshold=float(t),
            answered=_share(answered.sum(), n),
            answered_accuracy=_share((right & labelled).sum(), labelled.sum()) if labelled.any() else None,
            clarified=_share((kinds == "clarify").sum(), n),
            escalated=_share((kinds == "escalate").sum(), n),
            n_answered=int(answered.sum()),
        ))
    return tuple(points)


# -- evaluation -------------------------------------------------------------------------


def evaluate(model: Model, dataset: Dataset, sweep: bool = True, policy: RoutingPolicy | None = None) -> Evaluation:
    """Score every row of ``dataset`` and measure each head the data labels.

    Heads the model lacks or the data does not label are left out; gold labels the model
    never saw are counted as errors and listed under ``unseen_labels``. Routing (and the
    threshold sweep) needs an intent head; without one both are empty. ``policy`` (a
    :class:`nlu.config.RoutingPolicy`) overrides the model's own (see :func:`nlu.routing.policy_for`).
    """
    frame = dataset.frame
    if len(frame) == 0:
        raise DataError("no rows to evaluate")
    texts = frame[TEXT].tolist()
    probabilities = model.predict_proba(texts)
    predictions = model.score_batch(texts)

    heads: dict[str, HeadResult] = {}
    for head in HEADS:
        if head not in model.heads or head not in dataset.heads:
            continue
        gold_all = frame[head].to_numpy(dtype=object)
        mask = gold_all != ""
        if not mask.any():
            continue
        heads[head] = _head_result(head, model.labels(head), np.asarray(texts, dtype=object)[mask], gold_all[mask], probabilities[head][mask])
    if not heads:
        have = ", ".join(model.heads) or "none"
        labelled = ", ".join(h for h in dataset.heads if dataset.labelled(h).shape[0]) or "none"
        raise DataError(f"nothing to evaluate: the model has heads {have}, the data labels {labelled}")

    routing: RoutingSummary | None = None
    points: tuple[SweepPoint, ...] = ()
    decisions: list[Decision] | None = None
    if "intent" in model.heads:
        policy = policy or policy_for(model)
        decisions = first_message_decisions(predictions, texts, policy)
        config = model.meta.get("config", {})
        frustrated = gold_frustrated(
            frame,
            config.get("frustration_emotions", TrainConfig.frustration_emotions),
            config.get("negative_sentiments", TrainConfig.negative_sentiments),
        )
        gold_intent = frame["intent"].tolist() if "intent" in frame.columns else [""] * len(frame)
        routing = routing_summary(decisions, predictions, gold_intent, frustrated, policy)
        if sweep:
            points = threshold_sweep(policy, predictions, texts, gold_intent)

    metrics: dict[str, Any] = {head: result.metrics for head, result in heads.items()}
    if routing is not None:
        metrics["routing"] = routing.to_dict()
    metrics["unseen_labels"] = {head: result.unseen for head, result in heads.items() if result.unseen}
    files = tuple({"path": f.path, "sha256": f.sha256, "rows": f.rows} for f in dataset.files)
    metrics["model"] = {
        "name": model.name,
        "created_at": model.meta.get("created_at"),
        "model_sha256": model.meta.get("model_sha256"),
        "heads": {h: model.labels(h) for h in model.heads},
    }
    metrics["data"] = {"files": list(files), "rows": len(frame)}
    return Evaluation(
        metrics=metrics,
        heads=heads,
        routing=routing,
        sweep=points,
        predictions=_predictions_frame(frame, model, probabilities, predictions, decisions),
        model_name=model.name,
        model_meta=dict(model.meta),
        data_files=files,
    )


def _head_result(head: str, labels: Sequence[str], texts: np.ndarray, gold: np.ndarray, proba: np.ndarray) -> HeadResult:
    top = np.argmax(proba, axis=1)
    predicted = np.asarray(labels, dtype=object)[top]
    known = set(labels)
    unseen = Counter(str(g) for g in gold if g not in known)
    return HeadResult(
        head=head,
        labels=tuple(labels),
        texts=tuple(str(t) for t in texts),
        gold=tuple(str(g) for g in gold),
        predicted=tuple(str(p) for p in predicted),
        confidence=proba[np.arange(len(top)), top],
        metrics=head_metrics(list(gold), proba, list(labels)),
        unseen=dict(unseen.most_common()),
    )


def _predictions_frame(
    frame: pd.DataFrame,
    model: Model,
    probabilities: Mapping[str, np.ndarray],
    predictions: Sequence[Prediction],
    decisions: Sequence[Decision] | None,
) -> pd.DataFrame:
    """One row per input row: text, and per head gold / predicted / confidence / correct."""
    out: dict[str, Any] = {"text": frame[TEXT].tolist()}
    for head in model.heads:
        proba = probabilities[head]
        top = np.argmax(proba, axis=1)
        predicted = np.asarray(model.labels(head), dtype=object)[top]
        gold = frame[head].to_numpy(dtype=object) if head in frame.columns else np.full(len(frame), "", dtype=object)
        out[f"{head}_gold"] = gold
        out[f"{head}_predicted"] = predicted
        out[f"{head}_confidence"] = np.round(proba[np.arange(len(top)), top], 4)
        # Empty when the row has no gold label for this head (not "wrong").
        out[f"{head}_correct"] = np.where(gold == "", "", np.where(gold == predicted, "1", "0"))
    out["frustration"] = [round(p.frustration, 4) for p in predictions]
    if decisions is not None:
        out["action"] = [d.action for d in decisions]
        out["reasons"] = [" ".join(d.reasons) for d in decisions]
    return pd.DataFrame(out)


def errors_frame(evaluation: Evaluation) -> pd.DataFrame:
    """Every wrong prediction of every head, most confident first."""
    rows = []
    for head, result in evaluation.heads.items():
        for text, gold, predicted, confidence in zip(result.texts, result.gold, result.predicted, result.confidence, strict=True):
            if gold != predicted:
                rows.append({"text": text, "gold": gold, "predicted": predicted, "confidence": round(float(confidence), 4), "head": head})
    columns = ["text", "gold", "predicted", "confidence", "head"]
    errors = pd.DataFrame(rows, columns=columns)
    return errors.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


# -- thresholds --------------------------------------------------------------------------


def choose_threshold(
    sweep: Sequence[SweepPoint],
    target_accuracy: float | None = None,
    max_escalation: float | None = None,
    production_threshold: float | None = None,
    frustration_threshold: float = 0.0,
) -> ThresholdChoice:
    """Pick an answer threshold from a sweep.

    With ``target_accuracy``: the lowest threshold whose answered accuracy reaches the
    target (the most answered traffic at that accuracy). With ``max_escalation``: the
    highest threshold whose escalated share stays within the limit (the most accurate
    bot the agents can keep up with). With neither, just the sweep.
    """
    if target_accuracy is not None and max_escalation is not None:
        raise ConfigError("give either a target accuracy or a maximum escalation share, not both")
    for name, value in (("target accuracy", target_accuracy), ("maximum escalation", max_escalation)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {value}")
    production = _point_at(sweep, production_threshold)
    chosen: SweepPoint | None = None
    if target_accuracy is not None:
        criterion, goal = "target_accuracy", target_accuracy
        # A tiny epsilon keeps 0.95 from failing on 0.9499999 float noise.
        ok = [p for p in sweep if p.answered_accuracy is not None and p.n_answered > 0 and p.answered_accuracy >= target_accuracy - 1e-9]
        chosen = min(ok, key=lambda p: p.threshold) if ok else None
        message = (
            f"lowest threshold with answered accuracy >= {target_accuracy:.3f}"
            if chosen else f"no threshold reaches answered accuracy {target_accuracy:.3f} on this data"
        )
    elif max_escalation is not None:
        criterion, goal = "max_escalation", max_escalation
        ok = [p for p in sweep if p.escalated <= max_escalation + 1e-9]
        chosen = max(ok, key=lambda p: p.threshold) if ok else None
        message = (
            f"highest threshold with escalated share <= {max_escalation:.3f}"
            if chosen else f"even the lowest threshold escalates more than {max_escalation:.3f} of messages"
        )
    else:
        criterion, goal, message = "none", None, "no goal given; sweep only"
    return ThresholdChoice(
        sweep=tuple(sweep),
        criterion=criterion,
        goal=goal,
        threshold=chosen.threshold if chosen else None,
        chosen=chosen,
        production=production,
        frustration_threshold=frustration_threshold,
        message=message,
    )


def _point_at(sweep: Sequence[SweepPoint], threshold: float | None) -> SweepPoint | None:
    """The row of exactly ``threshold`` (sweep_grid puts the policy's own in the sweep)."""
    return next((p for p in sweep if p.threshold == threshold), None)


def thresholds(
    model: Model,
    dataset: Dataset,
    target_accuracy: float | None = None,
    max_escalation: float | None = None,
    policy: RoutingPolicy | None = None,
) -> ThresholdChoice:
    """Sweep the answer threshold of the routing policy (``policy``, else the model's)
    over labelled data."""
    if "intent" not in model.heads:
        raise DataError("thresholds need a model with an intent head")
    if "intent" not in dataset.heads or dataset.labelled("intent").empty:
        raise DataError("thresholds need data with intent labels (answered accuracy is intent accuracy)")
    texts = dataset.frame[TEXT].tolist()
    predictions = model.score_batch(texts)
    policy = policy or policy_for(model)
    sweep = threshold_sweep(policy, predictions, texts, dataset.frame["intent"].tolist())
    return choose_threshold(
        sweep,
        target_accuracy=target_accuracy,
        max_escalation=max_escalation,
        production_threshold=policy.answer_threshold,
        frustration_threshold=policy.frustration_threshold,
    )


def frustration_sweep(
    policy: RoutingPolicy,
    predictions: Sequence[Prediction],
    texts: Sequence[str],
    frustrated: np.ndarray,
    thresholds: Sequence[float] | None = None,
) -> tuple[FrustrationPoint, ...]:
    """Per frustration threshold (default: :func:`sweep_grid` of the policy's), what the
    router does with everything else as in ``policy``: the share of the frustrated
    customers (gold) it escalates, for any reason, and the share of all messages it
    escalates. A frustrated customer who opts out is answered whatever the threshold, so
    recall can stay below 1 even at 0. Recall never increases with the threshold."""
    n, n_frustrated = len(predictions), int(frustrated.sum())
    points = []
    for t in sweep_grid(policy.frustration_threshold) if thresholds is None else thresholds:
        decisions = first_message_decisions(predictions, texts, dataclasses.replace(policy, frustration_threshold=float(t)))
        escalated = np.asarray([d.action == "escalate" for d in decisions], dtype=bool)
        points.append(FrustrationPoint(
            threshold=float(t),
            recall=_share((escalated & frustrated).sum(), n_frustrated),
            escalated=_share(escalated.sum(), n),
            precision=_share((escalated & frustrated).sum(), escalated.sum()) if escalated.any() else None,
        ))
    return tuple(points)


def frustration_thresholds(
    model: Model, dataset: Dataset, target_recall: float, policy: RoutingPolicy | None = None
) -> FrustrationChoice:
    """The highest frustration threshold that still escalates at least ``target_recall``
    of the frustrated customers in labelled data (a frustration emotion, or negative
    sentiment with anger): the fewest escalations for that promise."""
    if not 0.0 < target_recall <= 1.0:
        raise ConfigError(f"target frustrated recall must be in (0, 1], got {target_recall}")
    if "emotion" not in dataset.heads and "sentiment" not in dataset.heads:
        raise DataError("choosing a frustration threshold needs data with emotion or sentiment labels")
    config = model.meta.get("config", {})
    frustrated = gold_frustrated(
        dataset.frame,
        config.get("frustration_emotions", TrainConfig.frustration_emotions),
        config.get("negative_sentiments", TrainConfig.negative_sentiments),
    )
    if not frustrated.any():
        raise DataError("no row of the data is labelled frustrated (a frustration emotion, or negative with anger)")
    texts = dataset.frame[TEXT].tolist()
    policy = policy or policy_for(model)
    sweep = frustration_sweep(policy, model.score_batch(texts), texts, frustrated)
    ok = [p for p in sweep if p.recall >= target_recall - 1e-9]
    chosen = max(ok, key=lambda p: p.threshold) if ok else None
    production = next(p for p in sweep if p.threshold == policy.frustration_threshold)
    message = (
        f"highest frustration threshold escalating >= {target_recall:.1%} of {int(frustrated.sum())} frustrated messages"
        if chosen else f"no frustration threshold escalates {target_recall:.1%} of the frustrated messages"
    )
    return FrustrationChoice(
        sweep=sweep, target_recall=target_recall, threshold=chosen.threshold if chosen else None, chosen=chosen,
        production=production, n_frustrated=int(frustrated.sum()), message=message,
    )


_KEY_LINE = re.compile(r"""^\s*(?P<quote>["']?)(?P<key>[A-Za-z0-9_-]+)(?P=quote)\s*=""")
_TABLE_LINE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")


def write_toml_values(path: str | Path, table: str, values: Mapping[str, float]) -> Path:
    """Set ``values`` in the flat ``[table]`` of a TOML file, keeping everything else.

    Edits lines instead of re-serialising, so comments, order and the other sections stay
    exactly as written; the result is re-parsed and checked before it replaces the file
    (temporary file + rename: readers see the old or the new file, never half of one).
    A missing file or table is created.
    """
    path = Path(path)
    try:
        original = path.read_text(encoding="utf-8") if path.exists() else ""
        before = tomllib.loads(original)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if table in before and not isinstance(before[table], dict):
        raise ConfigError(f"{path}: {table} is not a table")
    for key, value in values.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{table}.{key}: expected a finite number, got {value!r}")

    lines = original.splitlines()
    pending = dict(values)
    start = next((i for i, line in enumerate(lines) if (m := _TABLE_LINE.match(line)) and m.group(1) == table), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_number(v)}" for key, v in pending.items())
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        for i in range(start + 1, end):
            match = _KEY_LINE.match(lines[i])
            if match and match.group("key") in pending and _is_whole_key_value(lines[i]):
                comment = _trailing_comment(lines[i])
                key = match.group("key")
                lines[i] = f"{key} = {_toml_number(pending.pop(key))}{comment}"
        # New keys go after the table's last one-line key/value, before any blank lines or
        # comments; never after the first line of a multi-line array.
        insert_at = end
        while insert_at > start + 1 and not _is_whole_key_value(lines[insert_at - 1]):
            insert_at -= 1
        lines[insert_at:insert_at] = [f"{key} = {_toml_number(v)}" for key, v in pending.items()]
    text = "\n".join(lines) + "\n"

    # The line editor knows flat tables of one-line values; anything else (dotted keys,
    # a key inside a multi-line string) is caught here and never written.
    expected = dict(before)
    expected[table] = {**before.get(table, {}), **{k: float(v) for k, v in values.items()}}
    try:
        edited = tomllib.loads(text) == expected
    except tomllib.TOMLDecodeError:
        edited = False
    if not edited:
        settings = ", ".join(f"{k} = {_toml_number(v)}" for k, v in values.items())
        raise ConfigError(f"{path}: cannot edit [{table}] in place; set {settings} there by hand")

    make_dirs(path.parent)
    return write_atomic(path, text.encode("utf-8"))


def _toml_number(value: float) -> str:
    return repr(float(value))


def _is_whole_key_value(line: str) -> bool:
    """``line`` is a key = value that ends on this line (not "x = [" opening an array)."""
    if not _KEY_LINE.match(line):
        return False
    try:
        tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _trailing_comment(line: str) -> str:
    # Values we replace are numbers, so a "#" after the "=" starts a comment.
    _, _, rest = line.partition("=")
    hash_at = rest.find("#")
    return "  " + rest[hash_at:].rstrip() if hash_at >= 0 else ""


# -- cross-validation ------------------------------------------------------------------


@dataclass(frozen=True)
class CrossValidation:
    """Stratified K-fold results: each fold's metrics and mean/std per metric."""

    k: int
    stratified_by: str
    folds: tuple[dict[str, Any], ...]
    summary: dict[str, dict[str, dict[str, float]]]  # section -> metric -> {mean, std, n}

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "stratified_by": self.stratified_by, "summary": self.summary, "folds": list(self.folds)}


CV_METRICS = ("accuracy", "macro_f1", "ece")
CV_ROUTING = ("answered", "answered_accuracy", "clarified", "escalated", "frustrated_escalated")


def cross_validate(
    dataset: Dataset,
    k: int = 5,
    config: TrainConfig | None = None,
    progress: Callable[[str], None] | None = None,
    policy: RoutingPolicy | None = None,
) -> CrossValidation:
    """Train on K-1 folds, evaluate on the held-out one, K times.

    Folds are stratified on the intent labels (or the first labelled head). A label with
    fewer than two examples in a training fold cannot be trained on there: it is blanked
    in that fold's training rows and shows up as an unseen label in its test fold.
    """
    from sklearn.model_selection import StratifiedKFold

    from .train import train

    if k < 2:
        raise ConfigError(f"--cv must be at least 2, got {k}")
    config = config or TrainConfig()
    report = progress or (lambda _: None)
    frame = dataset.frame.reset_index(drop=True)
    heads = [h for h in dataset.heads if dataset.labelled(h)[h].nunique() >= 2]
    if not heads:
        raise DataError("no head column has two or more labels; nothing to cross-validate")
    stratify = "intent" if "intent" in heads else heads[0]
    if len(frame) < k:
        raise DataError(f"{len(frame)} rows cannot be split into {k} folds")
    strata = frame[stratify].to_numpy(dtype=object)
    counts = Counter(strata.tolist())
    # StratifiedKFold refuses nothing but warns on rare strata; merge them so the warning
    # does not hide real problems, and so their rows still spread over the folds.
    strata = np.asarray([s if counts[s] >= k else "__rare__" for s in strata], dtype=object)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=config.seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(np.zeros(len(frame)), strata))

    folds: list[dict[str, Any]] = []
    for number, (train_idx, test_idx) in enumerate(splits, start=1):
        train_frame = frame.iloc[train_idx].copy()
        for head in heads:
            label_counts = train_frame[head].value_counts()
            rare = [lab for lab, c in label_counts.items() if lab and c < 2]
            if rare:
                train_frame.loc[train_frame[head].isin(rare), head] = ""
        report(f"fold {number}/{k}: training on {len(train_idx)} rows, testing on {len(test_idx)}")
        model = train(Dataset(frame=train_frame.reset_index(drop=True), files=dataset.files), config)
        test = Dataset(frame=frame.iloc[test_idx].reset_index(drop=True), files=dataset.files)
        result = evaluate(model, test, sweep=False, policy=policy)
        fold = {key: value for key, value in result.metrics.items() if key not in ("model", "data")}
        fold["rows"] = {"train": len(train_idx), "test": len(test_idx)}
        folds.append(fold)
        report(f"fold {number}/{k}: " + ", ".join(f"{h} accuracy {fold[h]['accuracy']:.3f}" for h in heads if h in fold))

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for section, names in [*((h, CV_METRICS) for h in heads), ("routing", CV_ROUTING)]:
        stats = {}
        for name in names:
            values = [f[section][name] for f in folds if section in f]
            if values:
                arr = np.asarray(values, dtype=float)
                # Sample std (ddof=1): K folds are a sample of the possible splits.
                stats[name] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}
        if stats:
            summary[section] = stats
    return CrossValidation(k=k, stratified_by=stratify, folds=tuple(folds), summary=summary)


# -- comparison ------------------------------------------------------------------------


# Whether a higher value of a metric is better (None: a trade-off, no verdict).
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "accuracy": True, "macro_f1": True, "ece": False, "precision": True, "recall": True, "f1": True,
    "answered": True, "answered_accuracy": True, "clarified": None, "escalated": None,
    "frustrated_escalated": True, "n": None, "support": None,
}


@dataclass(frozen=True)
class ComparisonRow:
    section: str  # a head or "routing"
    label: str | None  # None for head-level metrics
    metric: str
    a: float | None  # None: absent in report A
    b: float | None
    delta: float | None
    verdict: str  # "better", "worse", "same", "new", "gone" or "" (no verdict)


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    rows: tuple[ComparisonRow, ...]

    @property
    def better(self) -> tuple[ComparisonRow, ...]:
        return tuple(r for r in self.rows if r.verdict == "better")

    @property
    def worse(self) -> tuple[ComparisonRow, ...]:
        return tuple(r for r in self.rows if r.verdict == "worse")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """metrics.json of a report folder (or the file itself)."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{file}: not found; expected a report folder written by `nlu evaluate`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{file}: expected a JSON object")
    _check_compared_fields(file, data)
    return data


def _check_compared_fields(file: Path, data: Mapping[str, Any]) -> None:
    """The fields compare reads have their metrics.json types: a hand-edited file fails
    here naming the key, not as a crash or a metric silently shown as "gone"."""

    def table(value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise DataError(f"{file}: {key}: expected an object, got {type(value).__name__}")
        return value

    def number(value: Any, key: str) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DataError(f"{file}: {key}: expected a number or null, got {type(value).__name__}")

    for head in HEADS:
        if head not in data:
            continue
        metrics = table(data[head], head)
        for metric in ("n", *CV_METRICS):
            number(metrics.get(metric), f"{head}.{metric}")
        for label, scores in table(metrics.get("per_label", {}), f"{head}.per_label").items():
            number(table(scores, f"{head}.per_label.{label}").get("f1"), f"{head}.per_label.{label}.f1")
    if "routing" in data:
        routing = table(data["routing"], "routing")
        for metric in CV_ROUTING:
            number(routing.get(metric), f"routing.{metric}")


def compare_reports(a: str | Path, b: str | Path, tolerance: float = 1e-9) -> Comparison:
    """Per head and per label, what changed from report A to report B."""
    return compare_metrics(read_metrics(a), read_metrics(b), str(a), str(b), tolerance)


def compare_models(
    a: Model,
    b: Model,
    dataset: Dataset,
    policies: tuple[RoutingPolicy | None, RoutingPolicy | None] = (None, None),
    names: tuple[str, str] | None = None,
) -> Comparison:
    """Evaluate two models on the same data and compare them, with no report folders.

    Each model is routed with its own policy unless ``policies`` gives one (as
    ``nlu evaluate`` does), so the routing rows compare what each would do in production.
    """
    ma = evaluate(a, dataset, sweep=False, policy=policies[0]).metrics
    mb = evaluate(b, dataset, sweep=False, policy=policies[1]).metrics
    name_a, name_b = names or (a.name, b.name)
    return compare_metrics(ma, mb, name_a, name_b)


def compare_metrics(ma: Mapping[str, Any], mb: Mapping[str, Any], name_a: str, name_b: str, tolerance: float = 1e-9) -> Comparison:
    """Per head and per label, what changed from metrics.json document A to B."""
    rows: list[ComparisonRow] = []
    sections = [h for h in HEADS if h in ma or h in mb]
    for head in sections:
        ha, hb = ma.get(head) or {}, mb.get(head) or {}
        for metric in ("n", *CV_METRICS):
            rows.append(_compare_row(head, None, metric, ha.get(metric), hb.get(metric), tolerance))
        la, lb = ha.get("per_label") or {}, hb.get("per_label") or {}
        label_rows = [
            _compare_row(head, label, "f1", (la.get(label) or {}).get("f1"), (lb.get(label) or {}).get("f1"), tolerance)
            for label in sorted(set(la) | set(lb))
        ]
        # Worst change first: that is what blocks a promotion.
        label_rows.sort(key=lambda r: (r.delta if r.delta is not None else 0.0, r.label or ""))
        rows.extend(label_rows)
    if "routing" in ma or "routing" in mb:
        ra, rb = ma.get("routing") or {}, mb.get("routing") or {}
        for metric in CV_ROUTING:
            rows.append(_compare_row("routing", None, metric, ra.get(metric), rb.get(metric), tolerance))
    return Comparison(a=name_a, b=name_b, rows=tuple(rows))


def _compare_row(section: str, label: str | None, metric: str, a: Any, b: Any, tolerance: float) -> ComparisonRow:
    fa = float(a) if isinstance(a, int | float) else None
    fb = float(b) if isinstance(b, int | float) else None
    if fa is None and fb is None:
        return ComparisonRow(section, label, metric, None, None, None, "")
    if fa is None:
        return ComparisonRow(section, label, metric, None, fb, None, "new")
    if fb is None:
        return ComparisonRow(section, label, metric, fa, None, None, "gone")
    delta = fb - fa
    direction = HIGHER_IS_BETTER.get(metric)
    if abs(delta) <= tolerance:
        verdict = "same"
    elif direction is None:
        verdict = ""
    else:
        verdict = "better" if (delta > 0) == direction else "worse"
    return ComparisonRow(section, label, metric, fa, fb, delta, verdict)
