"""Classification metrics shared by training (cross-validation) and evaluation reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the support-weighted gap between confidence and accuracy over equal-width bins.

    0 means "among messages scored 0.9, 90% are right" holds in every bin.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return 0.0
    # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 joins bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total / len(confidence))


def head_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """n, accuracy, macro_f1, ece and per-label precision/recall/f1/support of one head.

    Gold labels the model does not know count as errors and are listed per label with
    precision 0 (they can never be predicted). ``macro_f1`` is the mean of the per-label F1.
    """
    gold = np.asarray(y_true, dtype=object)
    n = len(gold)
    if n == 0:
        return {"n": 0, "accuracy": 0.0, "macro_f1": 0.0, "ece": 0.0, "per_label": {}}
    classes_arr = np.asarray(classes, dtype=object)
    top = np.argmax(proba, axis=1)
    y_pred = classes_arr[top]
    confidence = proba[np.arange(n), top]
    correct = y_pred == gold
    labels = sorted(set(classes_arr.tolist()) | set(gold.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, y_pred, labels=labels, zero_division=0
    )
    per_label = {
        lab: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for lab, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        if s > 0 or lab in set(y_pred.tolist())
    }
    return {
        "n": int(n),
        "accuracy": float(accuracy_score(gold, y_pred)),
        # sklearn's macro-F1: over the labels in the gold data or the predictions, the rows
        # of per_label. A label the model predicts but the data never has counts with F1 0
        # (its predictions are all wrong); one neither mentions does not count.
        "macro_f1": float(f1_score(gold, y_pred, average="macro", zero_division=0)),
        "ece": expected_calibration_error(confidence, correct),
        "per_label": per_label,
    }
