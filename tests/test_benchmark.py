"""The benchmark script (scripts/benchmark.py) and the fast scoring path it measures."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def _load_benchmark():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module
    spec.loader.exec_module(module)
    return module


benchmark = _load_benchmark()

# A few hundred varied Spanish chat messages: every combination of opener, body and
# ending, with accents, emoji, shouting, laughter, numbers, URLs, mentions and typos.
OPENERS = ["", "hola ", "Buenas tardes, ", "@Iberia ", "USER ", "JAJAJA ", "oye q onda "]
BODIES = [
    "dónde está mi pedido #A-48213",
    "NO ME LLEGA NADA!!!",
    "quiero devolver las zapatillas talla 40",
    "cuánto cuesta el envío a Medellín? $1.500",
    "me cobraron 2 veces 😡😡",
    "holaaaa necesito ayudaaa",
    "visiten https://tienda.com/oferta?id=3 jajaja",
    "no me gusta nada este servicio, nunca más",
    "xq no responden?? llevo 3 días",
    "gracias!! excelente atención 🙏",
    "mi correo es ana.perez@gmail.com y mi cel +57 310 555 1234",
    "pásame con un humano YA",
]
ENDINGS = ["", "!!", " ??", " 😂", " porfa", "\n\tgracias"]
VARIED = [f"{o}{b}{e}" for o, b, e in itertools.product(OPENERS, BODIES, ENDINGS)]


def test_model_fast_path_equals_reference_on_varied_messages(tiny_model) -> None:
    assert len(VARIED) >= 300
    fast = tiny_model.predict_proba(VARIED)
    reference = tiny_model.reference_proba(VARIED)
    for head in fast:
        np.testing.assert_allclose(fast[head], reference[head], rtol=1e-9, atol=1e-12)
    # Scoring one by one (cache warm or cold) gives the batch's predictions.
    batch = tiny_model.score_batch(VARIED)
    assert [tiny_model.score(t) for t in VARIED[:60]] == batch[:60]


def test_benchmark_stratified_split_is_deterministic_and_stratified() -> None:
    texts = [f"mensaje número {i}" for i in range(100)]
    labels = ["P"] * 50 + ["N"] * 30 + ["NEU"] * 20
    train_a, dev_a = benchmark.stratified_split(texts, labels, "x")
    train_b, dev_b = benchmark.stratified_split(texts, labels, "x")
    assert (train_a, dev_a) == (train_b, dev_b)
    assert not set(train_a) & set(dev_a)
    assert sorted(labels[i] for i in dev_a).count("P") == 10
    assert sorted(labels[i] for i in dev_a).count("NEU") == 4


def test_benchmark_clean_training_drops_conflicts_and_rare_labels() -> None:
    texts, labels = benchmark.clean_training(
        ["hola", "Hola ", "chao", "chao", "", "raro", "otro"], ["a", "b", "c", "c", "a", "z", "a"]
    )
    assert texts == ["hola", "chao", "chao", "otro"]
    assert labels == ["a", "c", "c", "a"]


def test_benchmark_skips_cleanly_without_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "B.md"
    assert benchmark.main(["--data-dir", str(tmp_path / "absent"), "--out", str(out)]) == 0
    assert "skipping benchmark" in capsys.readouterr().out
    assert not out.exists()


def test_benchmark_report_keeps_hand_written_history(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n\nhistory\n", encoding="utf-8")
    benchmark.write_report(out, "first")
    benchmark.write_report(out, "second")
    text = out.read_text(encoding="utf-8")
    assert "history" in text and "second" in text and "first" not in text


def test_benchmark_refuses_a_bad_config_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "nlu.toml"
    config.write_text("[train]\nC = -1.0\n", encoding="utf-8")
    out = tmp_path / "B.md"
    # Without the config check this run would skip (no datasets) and return 0.
    absent = ["--data-dir", str(tmp_path / "absent"), "--out", str(out)]
    assert benchmark.main(["--config", str(config), *absent]) == 2
    err = capsys.readouterr().err
    assert "train.C must be > 0" in err
    assert benchmark.main(["--config", str(tmp_path / "missing.toml"), *absent]) == 2
    assert "missing.toml: config file not found" in capsys.readouterr().err
    assert not out.exists()


def test_benchmark_report_names_the_non_default_train_settings(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    assert benchmark.config_note(benchmark.TrainConfig(), None) == "Train config: defaults."
    assert benchmark.config_note(benchmark.TrainConfig(), path) == f"Train config: `{path}`, all defaults."
    note = benchmark.config_note(benchmark.TrainConfig(C=0.25, char_min_df=3), path)
    assert note == f"Train config: `{path}`, non-default: char_min_df = 3, C = 0.25."


def test_benchmark_trains_with_the_given_config(tmp_path: Path) -> None:
    texts = [f"quiero {w} mi pedido {i}" for w in ("devolver", "rastrear") for i in range(8)]
    labels = ["devolucion"] * 8 + ["rastreo"] * 8
    split = benchmark.Split("toy", "intent", texts, labels, texts[:4], labels[:4], "toy")
    config = benchmark.TrainConfig(C=0.25, cv=2)
    row, model = benchmark.run_ours(split, tmp_path, config, timings=False)
    assert model.meta["config"]["C"] == 0.25 and model.meta["config"]["cv"] == 2
    assert row.n_dev == 4


@pytest.mark.slow
@pytest.mark.skipif(not DATASETS.is_dir(), reason="../shared/datasets not present")
def test_benchmark_runs_end_to_end_on_a_tiny_slice(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    assert benchmark.main(["--datasets", "top", "tass", "--limit", "120", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| top | nlu |" in text and "| tass | nlu |" in text
    assert "TF-IDF + LR" in text
    assert "Out-of-scope" in text
    assert "Machine:" in text
