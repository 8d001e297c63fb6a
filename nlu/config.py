"""Hyperparameters and settings as frozen dataclasses, optionally read from ``nlu.toml``.

Every value has a default that fits the bundled data; a TOML file overrides some of them.
Unknown sections or keys are errors (a typo must never be silently ignored), and the
config actually used is copied into the artifact's ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

HEADS: tuple[str, ...] = ("intent", "sentiment", "emotion")


@dataclass(frozen=True)
class TrainConfig:
    """How the classifiers are fitted."""

    seed: int = 13
    # Folds for the out-of-fold predictions that both calibrate the heads and give the
    # cross-validated metrics in meta.json.
    cv: int = 5
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    # Character n-grams seen in a single message are mostly typos and names: dropping them
    # shrinks the model several times at no measured accuracy cost.
    char_min_df: int = 2
    # Relative weight of the character block against the word block in the feature vector.
    char_weight: float = 1.0
    # Regularisation of the linear SVMs; smaller is stronger.
    C: float = 0.5
    # "balanced" reweights rare labels: macro-F1 and the small intents matter to a bot.
    class_weight: str | None = "balanced"
    # Emotion labels that count as a frustrated customer (Spanish bundled labels and the
    # English ones used by public emotion corpora).
    frustration_emotions: tuple[str, ...] = ("enojo", "frustracion", "anger", "disgust")
    # Sentiment labels that count as negative.
    negative_sentiments: tuple[str, ...] = ("negativo", "negative", "neg", "N")

    def __post_init__(self) -> None:
        if self.cv < 2:
            raise ConfigError(f"train.cv must be at least 2, got {self.cv}")
        if self.word_ngram_max < 1:
            raise ConfigError(f"train.word_ngram_max must be at least 1, got {self.word_ngram_max}")
        if not 1 <= self.char_ngram_min <= self.char_ngram_max:
            raise ConfigError(
                "train.char_ngram_min must be >= 1 and <= train.char_ngram_max, "
                f"got {self.char_ngram_min} and {self.char_ngram_max}"
            )
        if self.char_min_df < 1:
            raise ConfigError(f"train.char_min_df must be at least 1, got {self.char_min_df}")
        if self.char_weight < 0:
            raise ConfigError(f"train.char_weight must be >= 0, got {self.char_weight}")
        if self.C <= 0:
            raise ConfigError(f"train.C must be > 0, got {self.C}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"train.class_weight must be \"balanced\" or absent, got {self.class_weight!r}")


@dataclass(frozen=True)
class Config:
    """The whole ``nlu.toml``: one attribute per section."""

    train: TrainConfig = field(default_factory=TrainConfig)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of any config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def load_config(path: str | Path | None = None) -> Config:
    """Read ``nlu.toml`` (or return the defaults when ``path`` is None)."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_mapping(raw, source=str(path))


def config_from_mapping(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from nested mappings, refusing unknown sections and keys."""
    return _build(Config, raw, source)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in raw.items():
        # Messages read "nlu.toml [train] C: expected float, got 'x'".
        child = f"{where} [{name}]" if cls is Config else f"{where} {name}"
        values[name] = _coerce(hints[name], value, child)
    try:
        return cls(**values)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown-key check
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
