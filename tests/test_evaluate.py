from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROWS, write_csv
from typer.testing import CliRunner

from nlu import ConfigError, DataError, Model, TrainConfig, policy_for
from nlu.cli import app
from nlu.data import load_data
from nlu.evaluate import (
    SWEEP_THRESHOLDS,
    SweepPoint,
    choose_threshold,
    compare_models,
    compare_reports,
    cross_validate,
    errors_frame,
    evaluate,
    frustration_thresholds,
    gold_frustrated,
    thresholds,
    write_toml_values,
)
from nlu.metrics import expected_calibration_error, head_metrics
from nlu.report import confusion_matrix, write_report

runner = CliRunner()

# New messages, not in the training rows, so confidences spread out. "despedida" is a
# label the tiny model never saw; one text tries to inject HTML into the report.
EVAL_ROWS: list[tuple[str, str, str, str]] = [
    ("buenas tardes, hay alguien?", "saludo", "neutral", "neutral"),
    ("holis", "saludo", "neutral", "neutral"),
    ("dónde anda mi paquete, no llega", "estado_pedido", "negativo", "frustracion"),
    ("ya despacharon mi pedido?", "estado_pedido", "neutral", "neutral"),
    ("cuánto vale la heladera?", "precio_producto", "neutral", "neutral"),
    ("precio del celular", "precio_producto", "neutral", "neutral"),
    ("quiero devolver la campera", "devolucion", "neutral", "neutral"),
    ("<script>alert('x')</script> devolver esto YA, qué asco de servicio", "devolucion", "negativo", "enojo"),
    ("pásame con una persona real", "hablar_con_humano", "neutral", "neutral"),
    ("gracias crack", "agradecimiento", "positivo", "alegria"),
    ("chau, nos vemos", "despedida", "neutral", "neutral"),
    ("adiós y gracias", "despedida", "positivo", "alegria"),
]


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("eval") / "eval.csv", EVAL_ROWS)


@pytest.fixture(scope="module")
def evaluation(tiny_model, eval_csv: Path):  # type: ignore[no-untyped-def]
    return evaluate(tiny_model, load_data([eval_csv]))


@pytest.fixture(scope="module")
def report_dir(evaluation, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("report") / "report"
    write_report(evaluation, out)
    return out


# -- metrics.json contract ---------------------------------------------------------------


def test_evaluate_metrics_json_has_contract_keys_and_ranges(report_dir: Path) -> None:
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    for head in ("intent", "sentiment", "emotion"):
        block = metrics[head]
        assert set(block) >= {"n", "accuracy", "macro_f1", "ece", "per_label"}
        assert block["n"] == len(EVAL_ROWS)
        for key in ("accuracy", "macro_f1", "ece"):
            assert 0.0 <= block[key] <= 1.0
        for label, stats in block["per_label"].items():
            assert set(stats) == {"precision", "recall", "f1", "support"}, label
            assert all(0.0 <= stats[k] <= 1.0 for k in ("precision", "recall", "f1"))
            assert isinstance(stats["support"], int)
    routing = metrics["routing"]
    for key in ("answered", "answered_accuracy", "clarified", "escalated", "frustrated_escalated"):
        assert 0.0 <= routing[key] <= 1.0, key
    assert routing["answered"] + routing["clarified"] + routing["escalated"] == pytest.approx(1.0)
    assert routing["n_frustrated"] == 2  # the frustracion row and the enojo row
    by_action = routing["reasons_by_action"]
    assert set(by_action) <= {"answer", "clarify", "escalate"}
    merged: dict[str, int] = {}
    for counts in by_action.values():
        for code, rows in counts.items():
            merged[code] = merged.get(code, 0) + rows
    assert merged == routing["reasons"]  # the same rows, split by what was done with them
    assert sum(by_action.get("escalate", {}).values()) >= round(routing["escalated"] * routing["n"])


def test_evaluate_reports_unseen_labels_without_crashing(evaluation, report_dir: Path) -> None:  # type: ignore[no-untyped-def]
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["unseen_labels"] == {"intent": {"despedida": 2}}
    assert metrics["intent"]["per_label"]["despedida"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    rows, cols, matrix = confusion_matrix(evaluation.heads["intent"])
    assert rows[-1] == "despedida" and "despedida" not in cols  # never predictable, listed last
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert "unseen in training" in (report_dir / "report.html").read_text(encoding="utf-8")


def test_evaluate_emotion_only_file_reports_only_emotion(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "emo.csv", [(t, e) for t, _, _, e in EVAL_ROWS], ("text", "emotion"))
    result = evaluate(tiny_model, load_data([path]))
    assert set(result.heads) == {"emotion"}
    assert "intent" not in result.metrics and "sentiment" not in result.metrics
    # Routing still runs (the model has an intent head); no gold intent, so no accuracy.
    assert result.metrics["routing"]["n_answered_labelled"] == 0
    assert result.metrics["routing"]["answered_accuracy"] == 0.0
    write_report(result, tmp_path / "report")
    assert (tmp_path / "report" / "confusion_emotion.png").is_file()
    assert not (tmp_path / "report" / "confusion_intent.png").exists()


def test_evaluate_partly_labelled_head_counts_only_labelled_rows(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = [(t, i if k % 2 else "", s, e) for k, (t, i, s, e) in enumerate(EVAL_ROWS)]
    result = evaluate(tiny_model, load_data([write_csv(tmp_path / "part.csv", rows)]))
    assert result.metrics["intent"]["n"] == len(EVAL_ROWS) // 2
    assert result.metrics["emotion"]["n"] == len(EVAL_ROWS)
    assert (result.predictions["intent_correct"] == "").sum() == len(EVAL_ROWS) // 2


def test_evaluate_refuses_data_without_a_head_the_model_has(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "d.csv", [("hola", ""), ("chau", "")], ("text", "intent"))
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate(tiny_model, load_data([path]))


# -- calibration -------------------------------------------------------------------------


def _toy(confidence: float, accuracy: float, n: int = 1000) -> tuple[list[str], np.ndarray]:
    """Two classes, the top class always "a" with ``confidence``; ``accuracy`` of rows gold "a"."""
    proba = np.tile([confidence, 1.0 - confidence], (n, 1))
    gold = ["a"] * round(n * accuracy) + ["b"] * (n - round(n * accuracy))
    return gold, proba


@pytest.mark.parametrize(("confidence", "accuracy", "low", "high"), [
    (0.8, 0.8, 0.0, 0.005),  # perfectly calibrated
    (0.6, 0.6, 0.0, 0.005),
    (0.99, 0.5, 0.45, 0.5),  # overconfident
    (0.55, 1.0, 0.4, 0.5),  # underconfident
])
def test_evaluate_ece_of_toy_cases(confidence: float, accuracy: float, low: float, high: float) -> None:
    gold, proba = _toy(confidence, accuracy)
    ece = head_metrics(gold, proba, ["a", "b"])["ece"]
    assert low <= ece <= high


@pytest.mark.parametrize(
    "gold",
    [
        ["a", "a", "a", "a"],  # one gold label, two others predicted (an eval file of one intent)
        ["a", "b", "a", "z"],  # z is unknown to the model
        ["a", "b", "c", "a"],
    ],
)
def test_evaluate_macro_f1_is_sklearns_and_the_mean_of_the_per_label_table(gold: list[str]) -> None:
    from sklearn.metrics import f1_score

    # Predictions a, b, c, a: macro-F1 used to skip the predicted labels missing from gold
    # (0.857 instead of 0.286 in the first case, above the accuracy of 0.5).
    proba = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1]])
    m = head_metrics(gold, proba, ["a", "b", "c"])
    predicted = ["a", "b", "c", "a"]
    assert m["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(np.mean([row["f1"] for row in m["per_label"].values()]))


def test_evaluate_ece_matches_metrics_module_on_mixed_bins() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 5000)
    correct = rng.uniform(size=5000) < confidence  # calibrated by construction
    assert expected_calibration_error(confidence, correct) < 0.03


# -- routing, sweep and thresholds -------------------------------------------------------


def test_evaluate_risk_coverage_is_monotone_in_threshold(evaluation) -> None:  # type: ignore[no-untyped-def]
    sweep = evaluation.sweep
    assert [p.threshold for p in sweep] == sorted(p.threshold for p in sweep)
    answered = [p.answered for p in sweep]
    assert all(a >= b for a, b in zip(answered, answered[1:], strict=False))
    assert len(set(answered)) > 1  # the eval data is hard enough for the curve to move
    for p in sweep:
        assert p.answered + p.clarified + p.escalated == pytest.approx(1.0)


def test_evaluate_sweep_at_production_threshold_equals_routing_block(evaluation) -> None:  # type: ignore[no-untyped-def]
    routing = evaluation.routing
    point = min(evaluation.sweep, key=lambda p: abs(p.threshold - routing.answer_threshold))
    assert point.answered == pytest.approx(routing.answered)
    assert point.escalated == pytest.approx(routing.escalated)


@pytest.mark.parametrize(("emotion", "sentiment", "expected"), [
    ("frustracion", "neutral", True),
    ("enojo", "negativo", True),
    ("anger", "", True),
    ("tristeza", "negativo", False),
    ("", "negativo", False),
    ("neutral", "neutral", False),
])
def test_evaluate_gold_frustrated(emotion: str, sentiment: str, expected: bool) -> None:
    frame = pd.DataFrame({"emotion": [emotion], "sentiment": [sentiment]})
    got = gold_frustrated(frame, TrainConfig.frustration_emotions, TrainConfig.negative_sentiments)
    assert bool(got[0]) is expected


def test_evaluate_gold_frustrated_needs_anger_when_policy_omits_it() -> None:
    frame = pd.DataFrame({"emotion": ["enojo", "enojo"], "sentiment": ["negativo", "neutral"]})
    assert gold_frustrated(frame, ("frustracion",), ("negativo",)).tolist() == [True, False]


SWEEP = (
    SweepPoint(0.3, 0.90, 0.90, 0.05, 0.05, 90),
    SweepPoint(0.5, 0.80, 0.95, 0.08, 0.12, 80),
    SweepPoint(0.7, 0.70, 0.94, 0.10, 0.20, 70),  # accuracy is not monotone: noise
    SweepPoint(0.9, 0.50, 0.99, 0.15, 0.35, 50),
    SweepPoint(1.0, 0.00, None, 0.20, 0.80, 0),
)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"target_accuracy": 0.95}, 0.5),  # lowest threshold reaching the target
    ({"target_accuracy": 0.97}, 0.9),
    ({"target_accuracy": 0.999}, None),  # unreachable; the empty 1.0 row does not count
    ({"max_escalation": 0.2}, 0.7),  # highest threshold within the budget
    ({"max_escalation": 0.05}, 0.3),
    ({"max_escalation": 0.01}, None),
    ({}, None),
])
def test_evaluate_choose_threshold_on_toy_sweep(kwargs: dict[str, float], expected: float | None) -> None:
    choice = choose_threshold(SWEEP, production_threshold=0.5, **kwargs)
    assert choice.threshold == expected
    assert choice.production == SWEEP[1]


def test_evaluate_choose_threshold_refuses_both_goals_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="not both"):
        choose_threshold(SWEEP, target_accuracy=0.9, max_escalation=0.2)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        choose_threshold(SWEEP, target_accuracy=95)


def test_evaluate_thresholds_on_model_meets_its_target(tiny_model, eval_csv: Path) -> None:  # type: ignore[no-untyped-def]
    choice = thresholds(tiny_model, load_data([eval_csv]), target_accuracy=0.5)
    assert choice.threshold is not None and choice.chosen is not None
    assert choice.chosen.answered_accuracy is not None and choice.chosen.answered_accuracy >= 0.5
    lower = [p for p in choice.sweep if p.threshold < choice.threshold and p.answered_accuracy is not None]
    assert all(p.answered_accuracy < 0.5 for p in lower)


# Off the 0.01 grid on purpose: the "current" rows used to be the nearest grid row.
OFF_GRID = {"answer_threshold": 0.555, "frustration_threshold": 0.437}


def test_evaluate_sweeps_hold_the_policys_own_thresholds_and_match_the_routing_block(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A frustrated customer who opts out is answered at any frustration threshold: the
    # frustration sweep used to count such a row as caught.
    rows = [*EVAL_ROWS, ("NO ME ESCRIBAN MÁS, qué asco!!!", "", "negativo", "enojo")]
    dataset = load_data([write_csv(tmp_path / "e.csv", rows)])
    policy = dataclasses.replace(policy_for(tiny_model), **OFF_GRID)
    routing = evaluate(tiny_model, dataset, policy=policy).routing
    answer = thresholds(tiny_model, dataset, policy=policy)
    assert answer.production is not None and answer.production.threshold == 0.555
    assert (answer.production.answered, answer.production.escalated) == pytest.approx((routing.answered, routing.escalated))
    frustration = frustration_thresholds(tiny_model, dataset, target_recall=0.5, policy=policy)
    assert frustration.production is not None and frustration.production.threshold == 0.437
    assert frustration.production.recall == pytest.approx(routing.frustrated_escalated)
    assert frustration.production.escalated == pytest.approx(routing.escalated)
    recall = [p.recall for p in frustration.sweep]
    assert all(a >= b for a, b in zip(recall, recall[1:], strict=False))  # never rises with the threshold
    assert recall[0] < 1.0  # the opt-out is never escalated
    assert len(frustration.sweep) == len(SWEEP_THRESHOLDS) + 1


def test_evaluate_cli_prints_and_marks_an_off_grid_threshold_as_it_is(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    config = tmp_path / "nlu.toml"
    config.write_text("[routing]\n" + "".join(f"{k} = {v}\n" for k, v in OFF_GRID.items()))
    result = runner.invoke(app, ["thresholds", str(tiny_model_dir), str(eval_csv), "--config", str(config), "--frustrated-recall", "0.1"])
    assert result.exit_code == 0, result.output
    current = [line for line in result.stdout.splitlines() if "current" in line]
    assert [line.split()[0] for line in current] == ["0.555", "0.437"]
    result = runner.invoke(app, ["evaluate", str(tiny_model_dir), str(eval_csv), "--config", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "routing    threshold 0.555:" in result.stdout
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "answer threshold 0.555, frustration threshold 0.437" in page


def test_evaluate_frustration_thresholds_meet_the_recall_target(tiny_model, eval_csv: Path) -> None:  # type: ignore[no-untyped-def]
    choice = frustration_thresholds(tiny_model, load_data([eval_csv]), target_recall=0.5)
    assert choice.n_frustrated > 0 and choice.chosen is not None and choice.chosen.recall >= 0.5
    assert all(p.recall < 0.5 for p in choice.sweep if p.threshold > choice.chosen.threshold)


@pytest.mark.parametrize(("rows", "header", "recall", "message"), [
    ([("hola", "saludo")], ("text", "intent"), 0.9, "needs data with emotion or sentiment labels"),
    ([("hola", "saludo", "neutral", "neutral")], ("text", "intent", "sentiment", "emotion"), 0.9, "no row of the data is labelled frustrated"),
    ([("hola", "saludo", "neutral", "neutral")], ("text", "intent", "sentiment", "emotion"), 0.0, "must be in (0, 1]"),
])
def test_evaluate_frustration_thresholds_refuse_unusable_data(
    tiny_model, tmp_path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...], recall: float, message: str  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises((DataError, ConfigError), match=re.escape(message)):
        frustration_thresholds(tiny_model, load_data([write_csv(tmp_path / "d.csv", rows, header)]), target_recall=recall)


# -- TOML writer -------------------------------------------------------------------------


def test_evaluate_write_toml_updates_only_routing_keys(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    original = (
        "# team settings\n[train]\nC = 0.5  # tuned\ncv = 5\n\n"
        "[routing]\nanswer_threshold = 0.5  # old\nsensitive_intents = [\"queja\"]\n\n# trailing comment\n"
    )
    path.write_text(original)
    write_toml_values(path, "routing", {"answer_threshold": 0.63, "frustration_threshold": 0.4})
    text = path.read_text()
    data = tomllib.loads(text)
    assert data["routing"] == {"answer_threshold": 0.63, "frustration_threshold": 0.4, "sensitive_intents": ["queja"]}
    assert data["train"] == {"C": 0.5, "cv": 5}
    assert "# team settings" in text and "C = 0.5  # tuned" in text and "# trailing comment" in text
    assert "answer_threshold = 0.63  # old" in text
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


@pytest.mark.parametrize("original", ["", "[train]\ncv = 3\n"])
def test_evaluate_write_toml_creates_missing_table(tmp_path: Path, original: str) -> None:
    path = tmp_path / "nlu.toml"
    if original:
        path.write_text(original)
    write_toml_values(path, "routing", {"answer_threshold": 0.7})
    data = tomllib.loads(path.read_text())
    assert data["routing"] == {"answer_threshold": 0.7}
    if original:
        assert data["train"] == {"cv": 3}


@pytest.mark.parametrize(
    "original",
    [
        '[routing]\nsensitive_intents = [\n  "queja",\n  "cancelar_pedido",\n]\n',  # a new key went inside the array
        '[routing]\n"answer_threshold" = 0.5\n',  # a quoted key was written a second time
        "[routing] # thresholds\nanswer_threshold = 0.04\n",
    ],
)
def test_evaluate_write_toml_edits_valid_toml_of_any_layout(tmp_path: Path, original: str) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text(original)
    before = tomllib.loads(original)["routing"]
    write_toml_values(path, "routing", {"answer_threshold": 0.7, "frustration_threshold": 0.3})
    assert tomllib.loads(path.read_text())["routing"] == {**before, "answer_threshold": 0.7, "frustration_threshold": 0.3}


def test_evaluate_write_toml_refuses_a_layout_it_cannot_edit_and_says_what_to_set(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text("routing.answer_threshold = 0.5\n")  # the table made of dotted keys
    with pytest.raises(ConfigError, match=r"cannot edit \[routing\] in place; set answer_threshold = 0.7 there by hand"):
        write_toml_values(path, "routing", {"answer_threshold": 0.7})
    assert path.read_text() == "routing.answer_threshold = 0.5\n"


def test_evaluate_write_toml_refuses_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text("[routing\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        write_toml_values(path, "routing", {"answer_threshold": 0.7})
    assert path.read_text() == "[routing\n"


# -- report files ------------------------------------------------------------------------


def test_evaluate_html_is_self_contained_with_summary_numbers(evaluation, report_dir: Path) -> None:  # type: ignore[no-untyped-def]
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    pngs = sorted(report_dir.glob("*.png"))
    assert len(pngs) == 3 * 4 + 1  # four plots per head + risk-coverage
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert "src=\"http" not in page and "<link" not in page  # nothing fetched
    for head, result in evaluation.heads.items():
        assert f"{result.metrics['accuracy']:.3f}" in page, head
        assert f"{result.metrics['macro_f1']:.3f}" in page, head
    assert f"{evaluation.routing.answered:.1%}" in page
    assert "<script" not in page.lower()  # message text is escaped
    assert "&lt;script&gt;" in page
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG")


def test_evaluate_csv_files(evaluation, report_dir: Path) -> None:  # type: ignore[no-untyped-def]
    errors = pd.read_csv(report_dir / "errors.csv", keep_default_na=False)
    assert list(errors.columns) == ["text", "gold", "predicted", "confidence", "head"]
    assert (errors["gold"] != errors["predicted"]).all()
    assert errors["confidence"].is_monotonic_decreasing
    assert len(errors) == len(errors_frame(evaluation))
    assert set(errors[errors["gold"] == "despedida"]["head"]) == {"intent"}
    predictions = pd.read_csv(report_dir / "predictions.csv", keep_default_na=False)
    assert len(predictions) == len(EVAL_ROWS)
    assert predictions["text"].tolist() == [r[0] for r in EVAL_ROWS]
    assert {"intent_predicted", "intent_confidence", "emotion_gold", "action", "reasons"} <= set(predictions.columns)


# -- compare -----------------------------------------------------------------------------


def _metrics_with(report_dir: Path, out: Path, accuracy_delta: float, label: str, f1: float) -> Path:
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics["intent"]["accuracy"] = min(1.0, metrics["intent"]["accuracy"] + accuracy_delta)
    metrics["intent"]["per_label"][label]["f1"] = f1
    metrics["intent"]["ece"] += 0.1
    del metrics["sentiment"]
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_evaluate_compare_reports_better_and_worse(report_dir: Path, tmp_path: Path) -> None:
    candidate = _metrics_with(report_dir, tmp_path / "b", -0.1, "saludo", 0.0)
    comparison = compare_reports(report_dir, candidate)
    by_key = {(r.section, r.label, r.metric): r for r in comparison.rows}
    assert by_key[("intent", None, "accuracy")].verdict == "worse"
    assert by_key[("intent", None, "ece")].verdict == "worse"  # higher ECE is worse
    assert by_key[("intent", "saludo", "f1")].verdict in ("worse", "same")
    assert by_key[("sentiment", None, "accuracy")].verdict == "gone"
    assert by_key[("emotion", None, "accuracy")].verdict == "same"
    reverse = compare_reports(candidate / "metrics.json", report_dir)
    assert {(r.section, r.label, r.metric) for r in reverse.better} >= {("intent", None, "accuracy"), ("intent", None, "ece")}


def test_evaluate_compare_models_on_the_same_data(tiny_model: Model, tiny_csv: Path) -> None:
    dataset = load_data([tiny_csv])
    same = compare_models(tiny_model, tiny_model, dataset, names=("a", "b"))
    assert (same.a, same.b) == ("a", "b")
    assert not same.better and not same.worse
    assert {r.section for r in same.rows} == {"intent", "sentiment", "emotion", "routing"}
    # Routing with a stricter policy for B: fewer answers, the same model accuracy.
    strict = dataclasses.replace(policy_for(tiny_model), answer_threshold=1.0)  # nothing is that sure
    changed = compare_models(tiny_model, tiny_model, dataset, policies=(None, strict))
    by_key = {(r.section, r.label, r.metric): r for r in changed.rows}
    assert by_key[("routing", None, "answered")].b < by_key[("routing", None, "answered")].a
    assert by_key[("intent", None, "accuracy")].verdict == "same"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(intent=[1]), "intent: expected an object, got list"),
        (lambda m: m["intent"].update(accuracy="0.9"), "intent.accuracy: expected a number or null, got str"),
        (lambda m: m["intent"].update(per_label=[]), "intent.per_label: expected an object, got list"),
        (lambda m: m["intent"]["per_label"].update(saludo=0.5), "intent.per_label.saludo: expected an object, got float"),
        (lambda m: m["intent"]["per_label"]["saludo"].update(f1=True), "intent.per_label.saludo.f1: expected a number or null, got bool"),
        (lambda m: m.update(routing="x"), "routing: expected an object, got str"),
        (lambda m: m["routing"].update(escalated=[0.1]), "routing.escalated: expected a number or null, got list"),
    ],
)
def test_evaluate_compare_hand_edited_metrics_name_the_key(report_dir: Path, tmp_path: Path, edit, message: str) -> None:
    # These crashed compare (AttributeError), or showed a string accuracy as "gone".
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    edit(metrics)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        compare_reports(report_dir, path)


def test_evaluate_compare_missing_report_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="metrics.json: not found"):
        compare_reports(tmp_path, tmp_path)


# -- cross-validation --------------------------------------------------------------------


def test_evaluate_cross_validate_reports_mean_and_std(tiny_csv: Path) -> None:
    result = cross_validate(load_data([tiny_csv]), k=2, config=TrainConfig(cv=2, char_min_df=1))
    assert result.k == 2 and len(result.folds) == 2 and result.stratified_by == "intent"
    for head in ("intent", "sentiment", "emotion"):
        stats = result.summary[head]["accuracy"]
        assert 0.0 <= stats["mean"] <= 1.0 and stats["std"] >= 0.0 and stats["n"] == 2
    assert "answered" in result.summary["routing"]
    assert sum(f["rows"]["test"] for f in result.folds) == len(ROWS)


def test_evaluate_cross_validate_survives_labels_too_rare_for_a_fold(tmp_path: Path) -> None:
    rows = [(t, i) for t, i, _, _ in ROWS] + [("chau, nos vemos", "despedida"), ("adiós!", "despedida")]
    path = write_csv(tmp_path / "rare.csv", rows, ("text", "intent"))
    result = cross_validate(load_data([path]), k=3, config=TrainConfig(cv=2, char_min_df=1))
    assert len(result.folds) == 3  # "despedida" is unseen in some folds, not a crash


# -- CLI ---------------------------------------------------------------------------------


def test_evaluate_cli_writes_report(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(tiny_model_dir), str(eval_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "intent" in result.stdout and "routing" in result.stdout and "unseen" in result.stdout
    assert {"metrics.json", "report.html", "errors.csv", "predictions.csv", "risk_coverage.png"} <= {p.name for p in out.iterdir()}


def test_evaluate_cli_report_when_the_production_threshold_answers_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    # E.g. an export of escalated tickets: the model was unsure of every one of them.
    # The risk-coverage plot looked for the production threshold among the answering
    # thresholds only and crashed with a StopIteration traceback.
    data = write_csv(tmp_path / "vague.csv", [("mmm", "saludo"), ("oiga una cosita", "queja")], ("text", "intent"))
    config = tmp_path / "nlu.toml"
    config.write_text("[routing]\nanswer_threshold = 0.995\n", encoding="utf-8")
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(tiny_model_dir), str(data), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["routing"]["answered"] == 0
    assert (out / "risk_coverage.png").read_bytes().startswith(b"\x89PNG")
    assert "current" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", "{model}", "{data}"], "--out REPORT_DIR is required"),
    (["evaluate", "{model}", "--out", "{tmp}/r"], "give MODEL_DIR and at least one data file"),
    (["evaluate", "{tmp}/nope", "{data}", "--out", "{tmp}/r"], "model directory not found"),
    (["compare", "{tmp}", "{tmp}"], "not found"),
    (["thresholds", "{model}", "{data}", "--target-accuracy", "0.9", "--max-escalation", "0.2"], "not both"),
    (["thresholds", "{model}", "{data}", "--target-accuracy", "1.0"], "no threshold reaches"),
])
def test_evaluate_cli_errors_are_one_line(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path, args: list[str], message: str) -> None:
    subs = {"{model}": str(tiny_model_dir), "{data}": str(eval_csv), "{tmp}": str(tmp_path)}
    argv = []
    for arg in args:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    result = runner.invoke(app, argv)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_evaluate_cli_thresholds_writes_toml(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    toml = tmp_path / "nlu.toml"
    toml.write_text("[train]\ncv = 3\n")
    result = runner.invoke(app, ["thresholds", str(tiny_model_dir), str(eval_csv), "--max-escalation", "0.5", "--write", str(toml)])
    assert result.exit_code == 0, result.output
    assert "threshold" in result.stdout and "<- chosen" in result.stdout and "current" in result.stdout
    data = tomllib.loads(toml.read_text())
    assert data["train"] == {"cv": 3}
    assert 0.0 <= data["routing"]["answer_threshold"] <= 1.0


def test_evaluate_cli_thresholds_writes_both_thresholds(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    toml = tmp_path / "nlu.toml"
    args = ["thresholds", str(tiny_model_dir), str(eval_csv), "--target-accuracy", "0.5", "--frustrated-recall", "0.5", "--write", str(toml)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "frustrated messages" in result.stdout
    routing = tomllib.loads(toml.read_text())["routing"]
    assert set(routing) == {"answer_threshold", "frustration_threshold"}
    assert 0.0 <= routing["frustration_threshold"] <= 1.0


def test_evaluate_cli_compare_prints_table(report_dir: Path, tmp_path: Path) -> None:
    candidate = _metrics_with(report_dir, tmp_path / "b", 0.0, "saludo", 0.0)
    result = runner.invoke(app, ["compare", str(report_dir), str(candidate)])
    assert result.exit_code == 0, result.output
    assert "saludo" in result.stdout and "gone" in result.stdout
    assert result.stdout.strip().splitlines()[-1].endswith("worse")


def test_evaluate_cli_compare_two_models_on_data(tiny_model_dir: Path, tiny_csv: Path) -> None:
    result = runner.invoke(app, ["compare", str(tiny_model_dir), str(tiny_model_dir), str(tiny_csv)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"A = {tiny_model_dir}")
    assert result.stdout.strip().splitlines()[-1] == "0 better, 0 worse"


def test_evaluate_cli_cv_prints_mean_std_and_writes_json(tiny_csv: Path, tmp_path: Path) -> None:
    config = tmp_path / "nlu.toml"
    config.write_text("[train]\ncv = 2\nchar_min_df = 1\n")
    result = runner.invoke(app, ["evaluate", "--cv", "2", str(tiny_csv), "--config", str(config), "--out", str(tmp_path / "cv"), "-q"])
    assert result.exit_code == 0, result.output
    assert "±" in result.stdout and "intent" in result.stdout
    data = json.loads((tmp_path / "cv" / "metrics_cv.json").read_text())
    assert data["k"] == 2 and set(data["summary"]["intent"]) == {"accuracy", "macro_f1", "ece"}


def test_evaluate_cli_config_routing_overrides_model_policy(tiny_model_dir: Path, eval_csv: Path, tmp_path: Path) -> None:
    toml = tmp_path / "nlu.toml"
    toml.write_text("[train]\ncv = 3\n")
    result = runner.invoke(app, ["thresholds", str(tiny_model_dir), str(eval_csv), "--target-accuracy", "0.8", "--write", str(toml)])
    assert result.exit_code == 0, result.output
    chosen = tomllib.loads(toml.read_text())["routing"]["answer_threshold"]
    result = runner.invoke(app, ["evaluate", str(tiny_model_dir), str(eval_csv), "--out", str(tmp_path / "r"), "--config", str(toml)])
    assert result.exit_code == 0, result.output
    routing = json.loads((tmp_path / "r" / "metrics.json").read_text())["routing"]
    assert routing["answer_threshold"] == chosen
    assert routing["answered_accuracy"] >= 0.8
