from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROWS

from nlu import ArtifactError, InputError, Model, OutputError, TrainConfig, load_model, save_model, train
from nlu.classifier import fit_temperature, softmax
from nlu.data import load_data
from nlu.model import META_FILE, MODEL_FILE

MESSAGES = [
    "hola!!",
    "dónde está mi pedido? ya van 3 días!!",
    "quiero devolver esto",
    "",
    "   ",
    "😡😡😡",
    "PÁSAME CON UN HUMANO YA",
    "x" * 5000,
    "a\x00b",
]


def test_model_prediction_fields(tiny_model) -> None:
    p = tiny_model.score("dónde está mi pedido?")
    assert p.intent == "estado_pedido"
    assert p.confidence == p.ranking[0][1]
    assert [label for label, _ in p.ranking][0] == p.intent
    assert len(p.ranking) == len(tiny_model.labels("intent"))
    assert abs(sum(prob for _, prob in p.ranking) - 1) < 1e-9
    assert p.sentiment in tiny_model.labels("sentiment")
    assert p.emotion in tiny_model.labels("emotion")
    assert 0 <= p.frustration <= 1
    assert json.loads(json.dumps(p.to_dict()))["intent"] == "estado_pedido"


def test_model_frustration_follows_anger(tiny_model) -> None:
    calm = tiny_model.score("hola buenas tardes")
    angry = tiny_model.score("SON UNOS INUTILES!!! DONDE ESTA MI PEDIDO")
    assert angry.frustration > calm.frustration


def test_model_score_equals_score_batch(tiny_model) -> None:
    batch = tiny_model.score_batch(MESSAGES)
    for text, from_batch in zip(MESSAGES, batch, strict=True):
        assert tiny_model.score(text) == from_batch


def test_model_fast_path_equals_reference_path(tiny_model) -> None:
    fast = tiny_model.predict_proba(MESSAGES)
    reference = tiny_model.reference_proba(MESSAGES)
    assert fast.keys() == reference.keys()
    for head in fast:
        np.testing.assert_allclose(fast[head], reference[head], rtol=1e-9, atol=1e-12)


def test_model_empty_batch(tiny_model) -> None:
    assert tiny_model.score_batch([]) == []


@pytest.mark.parametrize("bad", [None, 3, b"hola", ["hola"]])
def test_model_rejects_non_string_text(tiny_model, bad) -> None:
    with pytest.raises(InputError, match="expected a string"):
        tiny_model.score(bad)


def test_model_score_batch_rejects_a_bare_string(tiny_model) -> None:
    with pytest.raises(InputError, match="not one string"):
        tiny_model.score_batch("hola")


def test_model_training_is_deterministic(tiny_csv: Path, tiny_config: TrainConfig) -> None:
    a = train(load_data([tiny_csv]), tiny_config)
    b = train(load_data([tiny_csv]), tiny_config)
    for head in a.heads:
        np.testing.assert_array_equal(a.heads[head].coef_, b.heads[head].coef_)
        assert a.heads[head].temperature_ == b.heads[head].temperature_


def test_model_single_head_gives_none_fields(tmp_path: Path) -> None:
    rows = [(t, i) for t, i, _, _ in ROWS]
    path = tmp_path / "intent.csv"
    path.write_text("text,intent\n" + "\n".join(f'"{t}",{i}' for t, i in rows), encoding="utf-8")
    model = train(load_data([path]), TrainConfig(cv=3))
    p = model.score("hola")
    assert p.intent == "saludo"
    assert p.sentiment is None and p.sentiment_confidence is None
    assert p.emotion is None and p.emotion_confidence is None
    assert p.frustration == 0.0


def test_model_meta_records_the_contract(tiny_model_dir: Path) -> None:
    meta = json.loads((tiny_model_dir / META_FILE).read_text())
    for key in ("format_version", "nlu_version", "created_at", "libraries", "data", "heads", "config", "metrics", "model_sha256"):
        assert key in meta
    assert set(meta["metrics"]["cv"]) == {"intent", "sentiment", "emotion"}
    assert meta["data"]["files"][0]["rows"] == len(ROWS)
    assert meta["config"]["cv"] == 3
    assert 0 <= meta["metrics"]["cv"]["intent"]["accuracy"] <= 1


def test_model_round_trip_scores_the_same(tiny_model, tiny_model_dir: Path) -> None:
    again = load_model(tiny_model_dir)
    assert again.score_batch(MESSAGES) == tiny_model.score_batch(MESSAGES)


def test_model_save_refuses_to_overwrite(tiny_model, tiny_model_dir: Path) -> None:
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        save_model(tiny_model, tiny_model_dir)


def test_model_save_force_replaces_atomically(tiny_model, tmp_path: Path) -> None:
    target = tmp_path / "m"
    save_model(tiny_model, target)
    (target / "stale.txt").write_text("old")
    save_model(tiny_model, target, force=True)
    assert sorted(p.name for p in target.iterdir()) == sorted([MODEL_FILE, META_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or backup left behind
    load_model(target)


def test_model_save_that_fails_keeps_the_previous_model(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_model(tiny_model, tmp_path / "m")
    before = (target / META_FILE).read_bytes()
    real_rename = Path.rename

    def rename(self: Path, dst: Path) -> Path:
        if self.name.endswith(".tmp"):  # the new model moving into place: "disk full"
            raise OSError(28, "No space left on device")
        return real_rename(self, dst)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OutputError, match=r"m: cannot write the model: No space left on device"):
        save_model(tiny_model, target, force=True)
    monkeypatch.undo()
    assert (target / META_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    load_model(target)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(d: Path) -> None:
    data = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(data[: len(data) // 2])


def _tamper(d: Path) -> None:
    data = bytearray((d / MODEL_FILE).read_bytes())
    data[100] ^= 0xFF
    (d / MODEL_FILE).write_bytes(bytes(data))


def _edit_meta(**changes):  # type: ignore[no-untyped-def]
    def edit(d: Path) -> None:
        meta = json.loads((d / META_FILE).read_text())
        for key, value in changes.items():
            if key == "sklearn":
                meta["libraries"]["scikit-learn"] = value
            else:
                meta[key] = value
        (d / META_FILE).write_text(json.dumps(meta))
    return edit


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / META_FILE).unlink(), "meta.json: missing"),
        (lambda d: (d / MODEL_FILE).unlink(), "model.joblib: missing"),
        (lambda d: (d / META_FILE).write_text("{not json"), "meta.json: unreadable"),
        (_truncate, "sha256 does not match"),
        (_tamper, "sha256 does not match"),
        (_edit_meta(format_version=99), "format_version 99 is not supported"),
        (_edit_meta(sklearn="0.24.2"), "built with scikit-learn 0.24.2"),
        # hand-edited meta.json: a wrong type is an ArtifactError naming the field, never a crash
        (_edit_meta(libraries="sklearn"), "meta.json: field 'libraries' must be an object, got str"),
        (_edit_meta(heads=["intent"]), "meta.json: field 'heads' must be an object, got list"),
        (_edit_meta(config=[1]), "meta.json: field 'config' must be an object, got list"),
        (_edit_meta(routing=[1]), "meta.json: field 'routing' must be an object, got list"),
        (_edit_meta(routing={"answer_threshold": 2}), r"m/meta.json routing: routing.answer_threshold must be between 0 and 1"),
    ],
)
def test_model_load_refuses_bad_artifacts(tiny_model_dir: Path, tmp_path: Path, damage, message: str) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    damage(d)
    with pytest.raises(ArtifactError, match=message):
        load_model(d)


def test_model_load_refuses_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="model directory not found"):
        load_model(tmp_path / "nope")


def test_model_load_refuses_unpicklable_payload_with_matching_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    import hashlib

    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / MODEL_FILE).write_bytes(b"not a pickle at all")
    meta = json.loads((d / META_FILE).read_text())
    meta["model_sha256"] = hashlib.sha256(b"not a pickle at all").hexdigest()
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="cannot load"):
        load_model(d)


def test_classifier_temperature_recovers_a_known_scale() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 4)) * 3
    true_t = 2.5
    p = softmax(logits / true_t)
    y = np.array([rng.choice(4, p=row) for row in p])
    assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.1)


@pytest.mark.parametrize("enabled", [True, False])
def test_model_score_batch_leaves_the_garbage_collector_as_it_found_it(tiny_model: Model, enabled: bool) -> None:
    import gc

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        tiny_model.score_batch(["hola", "dónde está mi pedido"])
        assert gc.isenabled() is enabled
        with pytest.raises(InputError):
            tiny_model.score_batch(["hola", 3])  # type: ignore[list-item]
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_model_ranking_behaves_as_the_tuple_of_pairs(tiny_model) -> None:
    import pickle

    p = tiny_model.score("dónde está mi pedido? ya van 3 días!!")
    pairs = tuple(p.ranking)
    assert all(isinstance(label, str) and isinstance(prob, float) for label, prob in pairs)
    assert [prob for _, prob in pairs] == sorted((prob for _, prob in pairs), reverse=True)
    assert p.ranking == pairs and pairs == p.ranking and p.ranking != pairs[:-1]
    assert p.ranking[0] == (p.intent, p.confidence) and p.ranking[-1] == pairs[-1]
    assert p.ranking[:2] == pairs[:2] and len(p.ranking) == len(pairs) and list(p.ranking) == list(pairs)
    assert pairs[1] in p.ranking and p.ranking.index(pairs[1]) == 1
    # A Prediction built by hand with a tuple ranking is the same prediction.
    by_hand = dataclasses.replace(p, ranking=pairs)
    assert by_hand == p and hash(by_hand) == hash(p) and by_hand.to_dict() == p.to_dict()
    assert pickle.loads(pickle.dumps(p)) == p
    assert repr(p.ranking) == repr(pairs)


def test_model_to_dict_shape_is_unchanged(tiny_model) -> None:
    p = tiny_model.score("hola buenas tardes")
    out = p.to_dict()
    assert list(out) == ["intent", "confidence", "ranking", "sentiment", "sentiment_confidence", "emotion",
                         "emotion_confidence", "frustration"]
    assert out["ranking"] == [[label, prob] for label, prob in p.ranking]
    assert json.loads(json.dumps(out)) == out


def test_model_prediction_is_immutable(tiny_model) -> None:
    p = tiny_model.score("hola buenas tardes")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.intent = "otro"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        p.ranking[0] = ("otro", 1.0)  # type: ignore[index]
    with pytest.raises(ValueError, match="read-only"):
        p.ranking._proba[0, 0] = 1.0  # type: ignore[attr-defined]


def test_model_rankings_of_a_batch_are_independent(tiny_model) -> None:
    batch = tiny_model.score_batch(["hola", "quiero devolver esto", "muchas gracias"])
    assert [p.ranking[0][0] for p in batch] == [p.intent for p in batch]
    assert [tiny_model.score(t).ranking for t in ["hola", "quiero devolver esto", "muchas gracias"]] == [p.ranking for p in batch]
