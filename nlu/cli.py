"""Command line: a thin adapter that parses, calls the library and formats.

Errors from the library (:class:`NLUError`) become one line on stderr and exit code 1;
nothing else is caught, so a real bug still shows its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from . import __version__
from .errors import NLUError

app = typer.Typer(
    name="nlu",
    help="Spanish chat NLU for customer-service bots: train, score, evaluate, route to people.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate labelled data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])


def fails_cleanly(func: F) -> F:
    """Turn an NLUError into "error: ..." on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NLUError as exc:
            message = " ".join(str(exc).split())
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nlu {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Spanish chat NLU for customer-service bots."""


DataFiles = Annotated[list[Path], typer.Argument(help="Data files: .csv .tsv .jsonl .parquet or Rasa .yml", show_default=False)]
ModelDir = Annotated[Path, typer.Argument(help="Model directory written by `nlu train`.", show_default=False)]


@app.command()
@fails_cleanly
def train(
    data: DataFiles,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.", show_default=False)],
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml with [train] settings.")] = None,
    cv: Annotated[int | None, typer.Option("--cv", help="Folds for calibration and cross-validated metrics.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model directory.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Train intent, sentiment and emotion heads on labelled data and save the model."""
    import dataclasses

    from .config import load_config
    from .errors import ArtifactError
    from .model import save_model
    from .train import train as train_model

    if out.exists() and not force:
        raise ArtifactError(f"{out}: already exists; pass --force to replace it")
    settings = load_config(config).train
    if cv is not None:
        settings = dataclasses.replace(settings, cv=cv)
    progress = None if quiet else (lambda msg: typer.echo(msg, err=True))
    model = train_model([str(p) for p in data], settings, progress=progress)
    save_model(model, out, force=force)
    typer.echo(f"saved {out}")


@app.command()
@fails_cleanly
def score(
    model_dir: ModelDir,
    texts: Annotated[list[str], typer.Argument(help='Messages to score; "-" reads one message per line from stdin.', show_default=False)],
    top: Annotated[int, typer.Option("--top", min=1, help="Intents to list in the ranking.")] = 3,
) -> None:
    """Score messages: one JSON object per line."""
    from .model import load_model

    model = load_model(model_dir)
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
    for text, prediction in zip(texts, model.score_batch(texts), strict=True):
        out = {"text": text, **prediction.to_dict()}
        out["ranking"] = out["ranking"][:top]
        typer.echo(json.dumps(out, ensure_ascii=False))


@data_app.command("check")
@fails_cleanly
def data_check(data: DataFiles) -> None:
    """Validate data files and summarise labels and duplicates; exit 1 on problems."""
    from .data import check_data, load_data
    from .errors import DataError

    report = check_data(load_data([str(p) for p in data]))
    for info in report.files:
        typer.echo(f"{info.path}: {info.rows} rows, sha256 {info.sha256[:12]}")
    for head, counts in report.label_counts.items():
        typer.echo(f"{head}: {len(counts)} labels, {sum(counts.values())} labelled rows")
        for label, count in counts.items():
            typer.echo(f"  {label:<28} {count}")
    typer.echo(f"duplicates: {report.duplicates}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}")
    for error in report.errors:
        typer.echo(f"problem: {error}")
    if not report.ok:
        raise DataError(f"{len(report.errors)} problem(s) found")
    typer.echo("ok")


def main() -> None:
    app(prog_name="nlu")
