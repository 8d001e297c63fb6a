"""Figures for the bundled dataset: quality per head and speed, on this machine.

Trains on data/chats_train.csv into a temporary directory, then reports cross-validated
and test-file accuracy / macro-F1 / ECE per head, fit time, artifact size, cold start of
load_model (fresh process), single-message score p50/p99 and score_batch messages/second.
Usage: python scripts/bundled_report.py [--train data/chats_train.csv] [--test data/chats_test.csv]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nlu import load_model, save_model, train
from nlu.data import load_data, load_training_data
from nlu.metrics import head_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="data/chats_train.csv")
    parser.add_argument("--test", default="data/chats_test.csv")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = train(load_training_data([args.train]))
        fit_seconds = time.perf_counter() - started
        model_dir = save_model(model, Path(tmp) / "model")
        size_mb = sum(p.stat().st_size for p in model_dir.iterdir()) / 1e6
        cold = subprocess.run(
            [sys.executable, "-c", f"import time; t=time.perf_counter(); import nlu; m=nlu.load_model({str(model_dir)!r}); "
             "m.score('hola'); print(time.perf_counter()-t)"],
            capture_output=True, text=True, check=True,
        )
        model = load_model(model_dir)

    test = load_data([args.test]).frame
    texts = test["text"].tolist()
    proba = model.predict_proba(texts)
    print(f"{'head':<10} {'cv acc':>7} {'cv F1':>7} {'cv ECE':>7} {'test acc':>9} {'test F1':>8} {'test ECE':>9}")
    for head in model.heads:
        cv = model.meta["metrics"]["cv"][head]
        held = head_metrics(test[head].tolist(), proba[head], model.labels(head))
        print(f"{head:<10} {cv['accuracy']:>7.3f} {cv['macro_f1']:>7.3f} {cv['ece']:>7.3f} "
              f"{held['accuracy']:>9.3f} {held['macro_f1']:>8.3f} {held['ece']:>9.3f}")

    for text in texts[:50]:  # warm-up
        model.score(text)
    latencies = []
    for text in (texts * 3)[:1500]:
        t = time.perf_counter()
        model.score(text)
        latencies.append((time.perf_counter() - t) * 1e3)
    batch = texts * 10
    t = time.perf_counter()
    model.score_batch(batch)
    batch_rate = len(batch) / (time.perf_counter() - t)
    print(f"fit {fit_seconds:.1f} s, artifact {size_mb:.1f} MB, cold start (import + load + first score) "
          f"{float(cold.stdout):.2f} s")
    print(f"score p50 {statistics.median(latencies):.3f} ms, p99 {np.percentile(latencies, 99):.3f} ms; "
          f"score_batch {batch_rate:,.0f} messages/s")


if __name__ == "__main__":
    main()
