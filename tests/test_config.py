from __future__ import annotations

from pathlib import Path

import pytest

from nlu import ConfigError, TrainConfig, load_config


def test_config_defaults_without_file() -> None:
    assert load_config(None).train == TrainConfig()


def test_config_reads_toml_and_coerces(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text('[train]\nC = 1\ncv = 3\nfrustration_emotions = ["anger"]\n')
    config = load_config(path).train
    assert config.C == 1.0 and isinstance(config.C, float)
    assert config.cv == 3
    assert config.frustration_emotions == ("anger",)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[trian]\ncv = 3\n", r"unknown key\(s\) trian"),
        ("[train]\ncvv = 3\n", r"\[train\]: unknown key\(s\) cvv"),
        ('[train]\ncv = "3"\n', r"\[train\] cv: expected int"),
        ("[train]\nC = -1.0\n", "train.C must be > 0"),
        ('[train]\nclass_weight = "weird"\n', "class_weight must be"),
        ("[train]\nscope_bigram_weight = -0.5\n", "train.scope_bigram_weight must be >= 0"),
        ("[train]\nC = nan\n", r"\[train\] C: expected a finite number, got nan"),
        ("[train]\nchar_weight = inf\n", r"\[train\] char_weight: expected a finite number, got inf"),
        ("[privacy]\nretention_days = inf\n", r"\[privacy\] retention_days: expected a finite number"),
        ("[routing]\nanswer_threshold = -inf\n", r"\[routing\] answer_threshold: expected a finite number"),
        # numpy seeds are 0 .. 2**32 - 1; the fit used to fail after featurising
        ("[train]\nseed = -1\n", r"train.seed must be 0 .. 4294967295, got -1"),
        ("[train]\nseed = 4294967296\n", r"train.seed must be 0 .. 4294967295"),
        ("[train\n", "invalid TOML"),
        ("train = 3\n", "expected a table"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))  # a value rule too names the file


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
