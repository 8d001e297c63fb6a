"""Fit the featuriser and one calibrated head per labelled column."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import CalibratedLinearClassifier
from .config import RoutingPolicy, TrainConfig, config_to_dict
from .data import TEXT, Dataset, load_training_data, require_valid, split_by_head
from .errors import DataError
from .features import ChatFeaturizer
from .metrics import head_metrics
from .model import Model

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def train(
    data: Dataset | Sequence[str | Path],
    config: TrainConfig | None = None,
    progress: Progress | None = None,
    routing: RoutingPolicy | None = None,
) -> Model:
    """Train a model on labelled data (a :class:`Dataset` or data file paths).

    One head is fitted per head column with at least two labels. Cross-validated
    metrics of each head (out-of-fold predictions, the same folds that calibrate it)
    are recorded in ``model.meta["metrics"]["cv"]``. Same data and config, same model.
    """
    config = config or TrainConfig()
    report = progress or _silent
    # A Dataset built in code is checked like a file: conflicts and rare labels fail here.
    dataset = require_valid(data) if isinstance(data, Dataset) else load_training_data(data)
    per_head = split_by_head(dataset)
    if not per_head:
        raise DataError("no head column has two or more labels; nothing to train")

    started = time.perf_counter()
    texts = dataset.frame[TEXT].tolist()
    report(f"featurising {len(texts)} messages")
    featurizer = ChatFeaturizer(
        word_ngram_max=config.word_ngram_max,
        char_ngram_min=config.char_ngram_min,
        char_ngram_max=config.char_ngram_max,
        char_min_df=config.char_min_df,
        char_weight=config.char_weight,
        negation=config.negation_scope,
        lexicon=config.lexicon,
    ).fit(texts)
    X_all, word_types = featurizer.transform_fast_with_types(texts)
    report(f"{featurizer.n_features_out_} features")

    heads: dict[str, CalibratedLinearClassifier] = {}
    cv_metrics: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for head, (_, labels) in per_head.items():
        index = np.flatnonzero(dataset.frame[head].to_numpy() != "")
        head_started = time.perf_counter()
        report(f"{head}: {len(index)} rows, {len(set(labels))} labels, {config.cv}-fold calibration")
        clf = CalibratedLinearClassifier(C=config.C, class_weight=config.class_weight, cv=config.cv, random_state=config.seed,
                                         top_label_map=config.top_label_calibration, scope_bigram_weight=config.scope_bigram_weight)
        if head == "intent":
            # Only intents have an outside ("none of these"): the gated head (classifier.ScopeGate).
            clf.fit(X_all[index], labels, word_types=word_types[index], unigram_mask=featurizer.unigram_mask_,
                    bigram_mask=featurizer.bigram_mask_)
        else:
            clf.fit(X_all[index], labels)
        heads[head] = clf
        rows[head] = len(index)
        metrics = head_metrics(labels, clf.oof_proba_, list(clf.classes_))
        metrics["folds"] = clf.n_splits_
        metrics["temperature"] = clf.temperature_
        if clf.scope_gate_ is not None:
            metrics["scope_limit"] = clf.scope_gate_.limit
        cv_metrics[head] = metrics
        report(
            f"{head}: cv accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
            f"ECE {metrics['ece']:.3f} ({time.perf_counter() - head_started:.1f}s)"
        )

    meta = {
        "data": {
            "files": [{"path": Path(f.path).name, "sha256": f.sha256, "rows": f.rows} for f in dataset.files],
            "rows": rows,
        },
        "config": config_to_dict(config),
        # The routing policy the model ships with; a service without [routing] uses it.
        "routing": config_to_dict(routing or RoutingPolicy()),
        "metrics": {"cv": cv_metrics},
        "n_features": featurizer.n_features_out_,
        "fit_seconds": round(time.perf_counter() - started, 2),
    }
    report(f"trained {', '.join(heads)} in {meta['fit_seconds']}s")
    return Model(
        featurizer,
        heads,
        meta,
        frustration_emotions=config.frustration_emotions,
        negative_sentiments=config.negative_sentiments,
    )
