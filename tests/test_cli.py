from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import write_csv
from typer.main import get_command
from typer.testing import CliRunner

from nlu.cli import app

runner = CliRunner()


def _all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(cmd: Any, prefix: list[str]) -> None:
        paths.append(prefix)
        # Duck-typed: typer may build its groups on a vendored click, not the installed one.
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(get_command(app), [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "nlu")
def test_cli_every_command_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help or command.short_help, f"{' '.join(path)} has no help text"


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "nlu")
def test_cli_help_keeps_bracketed_words(path: list[str]) -> None:
    # Help texts name config sections ("[routing]"); rich markup would silently drop them.
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    bracketed = {word for param in command.params for word in re.findall(r"\[[a-z]+\]", getattr(param, "help", "") or "")}
    output = " ".join(runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output.split())
    for word in bracketed:
        assert word in output, f"{' '.join(path)} --help lost {word}"


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "nlu")
def test_cli_help_names_arguments_as_the_readme(path: list[str]) -> None:
    # The README writes `nlu score MODEL_DIR TEXT...`; the usage line said {model_dir} {texts}.
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    usage = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output.splitlines()[0]
    for param in command.params:
        if param.param_type_name == "argument":
            assert param.metavar and param.metavar == param.metavar.upper(), (path, param.name)
            assert param.metavar in usage, usage


def test_cli_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("nlu ")


def test_cli_train_then_score(tmp_path: Path, tiny_csv: Path) -> None:
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", str(tiny_csv), "--out", str(out), "--cv", "3"])
    assert result.exit_code == 0, result.output
    assert (out / "model.joblib").is_file() and (out / "meta.json").is_file()
    assert "cv accuracy" in result.stderr  # progress goes to stderr

    result = runner.invoke(app, ["score", str(out), "hola buenas", "dónde está mi pedido??"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["hola buenas", "dónde está mi pedido??"]
    assert lines[1]["intent"] == "estado_pedido"
    assert len(lines[0]["ranking"]) == 3

    result = runner.invoke(app, ["score", str(out), "-"], input="hola\nquiero devolver unas zapatillas\n")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2


def test_cli_score_route_adds_the_decision_and_follows_the_config(tmp_path: Path, tiny_model_dir: Path) -> None:
    texts = ["quiero hablar con una persona", "hola buenas"]
    plain = [json.loads(line) for line in runner.invoke(app, ["score", str(tiny_model_dir), *texts]).stdout.splitlines()]
    assert all("routing" not in line for line in plain)  # the contract's shape unless asked

    result = runner.invoke(app, ["score", str(tiny_model_dir), "--route", *texts])
    assert result.exit_code == 0, result.output
    routed = [json.loads(line) for line in result.stdout.splitlines()]
    assert routed[0]["routing"]["action"] == "escalate" and "human_requested" in routed[0]["routing"]["reasons"]
    assert {k: v for k, v in routed[1].items() if k != "routing"} == plain[1]

    strict = tmp_path / "nlu.toml"
    strict.write_text("[routing]\nanswer_threshold = 1.0\nclarify_min_probability = 1.0\n")
    result = runner.invoke(app, ["score", str(tiny_model_dir), "--route", "--config", str(strict), "hola buenas"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["routing"]["action"] == "escalate"  # nothing is sure enough to answer


def test_cli_train_refuses_existing_dir_before_training(tmp_path: Path, tiny_csv: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    result = runner.invoke(app, ["train", str(tiny_csv), "--out", str(out)])
    assert result.exit_code == 1
    assert "already exists; pass --force" in result.stderr


def test_cli_data_check_ok(tiny_csv: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tiny_csv)])
    assert result.exit_code == 0, result.output
    assert "intent: 6 labels" in result.stdout
    assert result.stdout.strip().endswith("ok")


def test_cli_data_check_lists_problems_and_fails(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("hola", "saludo"), ("", "saludo"), ("chao", "despedida")], ("text", "intent"))
    result = runner.invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 1
    assert "line 3, column text: empty text" in result.stdout
    assert "label 'despedida' has 1 example(s)" in result.stdout
    assert result.stderr.strip() == "error: 2 problem(s) found"


def _error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "{missing}", "hola"], "model directory not found"),
        (["train", "{missing}.csv", "--out", "{tmp}/m"], "file not found"),
        (["data", "check", "{tmp}/bad.txt"], "unsupported file type"),
        (["train", "{tiny}", "--out", "{tmp}/m", "--config", "{tmp}/bad.toml"], "unknown key(s) foo"),
        (["train", "{tiny}", "--out", "{tmp}/m", "--cv", "1"], "train.cv must be at least 2"),
        # unwritable outputs: one line, before any training (they were tracebacks)
        (["train", "{tiny}", "--out", "/proc/m"], "/proc/m: cannot write in /proc"),
        (["train", "{tiny}", "--out", "{tmp}/bad.txt/m"], "bad.txt is not a directory"),
        (["train", "{tiny}", "--out", "{tmp}/bad.txt", "--force"], "bad.txt: exists and is not a directory"),
        (["train", "{tiny}", "--out", ".", "--force"], ".: holds the current directory"),
        (["evaluate", "{model}", "{tiny}", "--out", "{tmp}/bad.txt/rep"], "bad.txt is not a directory"),
        (["evaluate", "{tiny}", "--cv", "2", "--out", "{tmp}/bad.txt"], "bad.txt is not a directory"),
        (["thresholds", "{model}", "{tiny}", "--target-accuracy", "0.5", "--write", "/proc/nlu.toml"], "/proc/nlu.toml: cannot write in /proc"),
        (["score-batch", "{model}", "{tiny}", "/proc/out.parquet"], "/proc/out.parquet: cannot write in /proc"),
    ],
)
def test_cli_bad_input_exits_1_with_one_line(
    tmp_path: Path, tiny_csv: Path, tiny_model_dir: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.txt").write_text("hola")
    (tmp_path / "bad.toml").write_text("[train]\nfoo = 1\n")
    monkeypatch.chdir(tmp_path)
    subs = {"{missing}": str(tmp_path / "missing"), "{tmp}": str(tmp_path), "{tiny}": str(tiny_csv), "{model}": str(tiny_model_dir)}
    argv = []
    for arg in args:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    line = _error_line(runner.invoke(app, argv))
    assert line.startswith("error: ")
    assert message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "bad.txt"]  # nothing half-written


def test_cli_train_force_replaces_a_model_never_a_folder_of_other_files(tmp_path: Path, tiny_csv: Path) -> None:
    # --force used to delete whatever --out named, a project folder included.
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    line = _error_line(runner.invoke(app, ["train", str(tiny_csv), "--out", str(folder), "--force", "-q"]))
    assert "not a model directory (no meta.json); --force replaces only a model" in line
    assert (folder / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, empty):  # an empty folder, then the model now in it
        result = runner.invoke(app, ["train", str(tiny_csv), "--out", str(out), "--force", "-q", "--cv", "2"])
        assert result.exit_code == 0, result.output


def test_cli_python_m_is_the_same_program() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "nlu", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("nlu ")


def test_cli_train_drop_conflicts_trains_what_plain_train_refuses(tmp_path: Path) -> None:
    from conftest import ROWS

    data = write_csv(tmp_path / "c.csv", [*ROWS, (ROWS[0][0], ROWS[0][1], ROWS[0][2], "surprise")])
    refused = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "a"), "-q"])
    assert refused.exit_code == 1
    assert "labelled 'surprise' here" in refused.output
    assert not (tmp_path / "a").exists()

    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "b"), "--drop-conflicts", "-q"])
    assert result.exit_code == 0, result.output
    assert "emotion: dropped the label of 1 text(s) labelled two ways" in result.output
    assert (tmp_path / "b" / "model.joblib").is_file()


def test_cli_column_map_trains_and_evaluates_third_party_columns(tmp_path: Path) -> None:
    from conftest import ROWS

    data = write_csv(tmp_path / "t.csv", [(text, intent) for text, intent, _, _ in ROWS], ("mensaje", "etiqueta"))
    plain = runner.invoke(app, ["data", "check", str(data)])
    assert plain.exit_code == 1 and "missing column 'text'" in plain.stderr
    mapping = ["-c", "mensaje=text", "--column", "etiqueta=intent"]
    assert runner.invoke(app, ["data", "check", str(data), *mapping]).exit_code == 0
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "-q", "--cv", "3", *mapping])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(data), "--out", str(tmp_path / "r"), *mapping])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["intent"]["n"] == len(ROWS)
    result = runner.invoke(app, ["thresholds", str(tmp_path / "m"), str(data), "--target-accuracy", "0.5", *mapping])
    assert result.exit_code == 0, result.output


def test_cli_column_map_mistake_is_one_line(tmp_path: Path, tiny_csv: Path) -> None:
    line = _error_line(runner.invoke(app, ["data", "check", str(tiny_csv), "-c", "texto"]))
    assert line == "error: --column 'texto': expected FILE_COLUMN=COLUMN, e.g. tweet=text"
