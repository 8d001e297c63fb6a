"""Command line: a thin adapter that parses, calls the library and formats.

Errors from the library (:class:`NLUError`) become one line on stderr and exit code 1;
nothing else is caught, so a real bug still shows its traceback.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from .data import Dataset

from . import __version__
from .errors import InputError, NLUError
from .queue import MAX_LEASE_SECONDS, MAX_LIST_LIMIT, MAX_TICKET_ID, MIN_LEASE_SECONDS

app = typer.Typer(
    name="nlu",
    help="Spanish chat NLU for customer-service bots: train, score, evaluate, route to people.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts name nlu.toml sections such as [routing]; rich markup would eat them.
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect and validate labelled data files.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])

# What must not reach a terminal raw: C0 and C1 control characters and DEL (a newline in a
# customer's text forged a row of `nlu queue list`; ESC starts an escape sequence), line
# separators, bidirectional controls (they reorder what follows) and unpaired surrogates
# (which cannot even be encoded).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    r"""``text`` with what :data:`_UNPRINTABLE` matches escaped: ``\n``, ``\r``, ``\t``,
    else ``\uXXXX``. These are JSON's escapes too, so a JSON line stays JSON with the same
    values. Everything the CLI prints from the database goes through this."""
    return _UNPRINTABLE.sub(lambda m: _SHORT_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def fails_cleanly(func: F) -> F:
    """Turn an NLUError into "error: ..." on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NLUError as exc:
            # One line, and printable: messages quote values read from the database.
            message = printable(" ".join(str(exc).split()))
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


DataFiles = Annotated[list[Path], typer.Argument(metavar="DATA", help="Data files: .csv .tsv .jsonl .parquet or Rasa .yml", show_default=False)]
ModelDir = Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Model directory written by `nlu train`.", show_default=False)]
ColumnMap = Annotated[
    list[str] | None,
    typer.Option(
        "--column", "-c", metavar="FILE_COLUMN=COLUMN", show_default=False,
        help="Use a column of the files as one of ours (text, intent, sentiment, emotion, ...); repeatable: -c tweet=text -c label=sentiment.",
    ),
]


def _load(paths: list[Path], columns: list[str] | None) -> Dataset:
    """The data files as one Dataset, with the command line's --column renames."""
    from .data import load_data, parse_column_map

    return load_data([str(p) for p in paths], parse_column_map(columns or []))



@app.command()
@fails_cleanly
def train(
    data: DataFiles,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.", show_default=False)],
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml with [train] settings.")] = None,
    cv: Annotated[int | None, typer.Option("--cv", help="Folds for calibration and cross-validated metrics.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model directory.")] = False,
    drop_conflicts: Annotated[
        bool,
        typer.Option("--drop-conflicts", help="Drop the label of a text labelled two ways (instead of refusing the data)."),
    ] = False,
    column: ColumnMap = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Train intent, sentiment and emotion heads on labelled data and save the model."""
    import dataclasses

    from .config import load_config
    from .data import drop_conflicts as without_conflicts
    from .model import check_destination, save_model
    from .train import train as train_model

    check_destination(out, force)  # a minute of training must not end in "cannot write"
    loaded = load_config(config)
    settings = loaded.train
    if cv is not None:
        settings = dataclasses.replace(settings, cv=cv)
    progress = None if quiet else (lambda msg: typer.echo(msg, err=True))
    dataset = _load(data, column)
    if drop_conflicts:
        dataset, dropped = without_conflicts(dataset)
        for head, n in dropped.items():
            typer.echo(f"{head}: dropped the label of {n} text(s) labelled two ways", err=True)
    model = train_model(dataset, settings, progress=progress, routing=loaded.routing)
    save_model(model, out, force=force)
    typer.echo(f"saved {out}")


@app.command()
@fails_cleanly
def score(
    model_dir: ModelDir,
    texts: Annotated[list[str], typer.Argument(metavar="TEXT", help='Messages to score; "-" reads one message per line from stdin.', show_default=False)],
    top: Annotated[int, typer.Option("--top", min=1, help="Intents to list in the ranking.")] = 3,
    route: Annotated[
        bool, typer.Option("--route", help="Add the routing decision (answer, clarify or escalate, with reasons) for each message as the first of a conversation.")
    ] = False,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml whose [routing] replaces the model's policy (with --route).")] = None,
) -> None:
    """Score messages: one JSON object per line."""
    from .model import load_model
    from .routing import first_message_decisions, policy_for

    model = load_model(model_dir)
    policy = policy_for(model, config) if route else None
    texts = _stdin_lines() if texts == ["-"] else texts
    for i, text in enumerate(texts, 1):
        # Undecodable argv bytes arrive as lone surrogates, which no output encoding accepts.
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            raise InputError(f"TEXT {i}: not valid UTF-8")
    predictions = model.score_batch(texts)
    decisions = first_message_decisions(predictions, texts, policy) if policy is not None and "intent" in model.heads else None
    for i, (text, prediction) in enumerate(zip(texts, predictions, strict=True)):
        out = {"text": text, **prediction.to_dict()}
        out["ranking"] = out["ranking"][:top]
        if decisions is not None:
            out["routing"] = decisions[i].to_dict()
        typer.echo(json.dumps(out, ensure_ascii=False))


def _stdin_lines() -> list[str]:
    """Lines of stdin as UTF-8 whatever the locale; a bad byte is an error naming its line."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return [line.rstrip("\n") for line in sys.stdin]
    lines = []
    for n, raw in enumerate(buffer, 1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"stdin line {n}: not valid UTF-8 (byte {exc.start + 1})") from None
        lines.append(line.removesuffix("\n").removesuffix("\r"))
    return lines


# -- batch scoring (nlu/batch.py) -------------------------------------------------------


@app.command("score-batch")
@fails_cleanly
def score_batch(
    model_dir: ModelDir,
    input: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV/TSV file, Parquet file, or a folder of Parquet parts.", show_default=False)],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Parquet to write: a file (local) or a folder of parts (dask).", show_default=False)],
    engine: Annotated[str, typer.Option("--engine", help="local (streams in chunks) or dask (a cluster).")] = "local",
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Address of a running Dask scheduler (default: start a local cluster).", show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes of the local Dask cluster.")] = 2,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Rows per chunk (local) or per partition (dask).")] = 50_000,
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the messages.")] = "text",
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml whose routing table replaces the model's policy.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing OUTPUT.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score every message of a file with all heads and the routing decision; write Parquet."""
    from .batch import BatchProgress, score_file
    from .model import load_model
    from .routing import policy_for

    model = load_model(model_dir)
    steps = 1000
    with typer.progressbar(length=steps, label="scoring", file=sys.stderr, hidden=quiet or not sys.stderr.isatty(), item_show_func=lambda rows: rows) as bar:
        shown = 0

        def progress(p: BatchProgress) -> None:
            nonlocal shown
            target = shown if p.fraction is None else max(shown, round(p.fraction * steps))
            bar.current_item = f"{p.rows:,} messages"  # this typer's update() takes no item
            if target > shown:
                bar.update(target - shown)
            else:
                bar.render_progress()
            shown = target

        result = score_file(
            model, input, output, engine=engine, text_column=text_column, chunk_size=chunk_size,
            policy=policy_for(model, config), force=force, progress=progress, scheduler=scheduler, n_workers=workers,
        )
    typer.echo(f"scored {result.rows:,} messages in {result.seconds:.1f} s ({result.rate:,.0f}/s) -> {result.output}")


# -- evaluation reports (nlu/evaluate.py, nlu/report.py) -------------------------------


@app.command()
@fails_cleanly
def evaluate(
    paths: Annotated[list[Path], typer.Argument(metavar="MODEL_DIR DATA", help="MODEL_DIR then DATA files; with --cv, DATA files only.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder to write (metrics.json, report.html, PNG, CSV).")] = None,
    cv: Annotated[int | None, typer.Option("--cv", min=2, help="Cross-validate: train and test on K stratified folds of DATA (no model).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml: its [routing] replaces the model's policy; [train] is used by --cv.")] = None,
    column: ColumnMap = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Evaluate a model on labelled data and write an analyst report, or cross-validate with --cv."""
    from .atomic import check_can_create
    from .config import load_config
    from .errors import DataError
    from .routing import policy_for

    settings = load_config(config)
    if out is not None:
        check_can_create(out / "metrics.json")  # before the work: out must be (or become) a folder
    if cv is not None:
        from .evaluate import cross_validate

        progress = None if quiet else (lambda msg: typer.echo(msg, err=True))
        # No model yet: the folds are routed with the config's policy (defaults without one).
        cross = cross_validate(_load(paths, column), cv, settings.train, progress=progress, policy=settings.routing)
        typer.echo(f"{cross.k}-fold cross-validation, stratified by {cross.stratified_by}")
        typer.echo(f"{'':<10} {'metric':<22} {'mean':>7}   {'std':>6}")
        for section, stats in cross.summary.items():
            for name, s in stats.items():
                typer.echo(f"{section:<10} {name:<22} {s['mean']:>7.3f} ± {s['std']:.3f}")
        if out is not None:
            from .report import write_json

            typer.echo(f"wrote {write_json(out / 'metrics_cv.json', cross.to_dict())}")
        return

    from .evaluate import evaluate as run_evaluation
    from .evaluate import format_threshold
    from .model import load_model
    from .report import write_report

    if len(paths) < 2:
        raise DataError("give MODEL_DIR and at least one data file (or --cv K with data files)")
    if out is None:
        raise DataError("--out REPORT_DIR is required")
    model = load_model(paths[0])
    evaluation = run_evaluation(model, _load(paths[1:], column), policy=policy_for(model, config))
    files = write_report(evaluation, out)
    for head, result in evaluation.heads.items():
        m = result.metrics
        unseen = f", {sum(result.unseen.values())} rows with unseen labels" if result.unseen else ""
        typer.echo(f"{head:<10} n={m['n']:<6} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ECE {m['ece']:.3f}{unseen}")
    if evaluation.routing is not None:
        r = evaluation.routing
        typer.echo(
            f"routing    threshold {format_threshold(r.answer_threshold)}: answered {r.answered:.1%} (accuracy {r.answered_accuracy:.3f}), "
            f"clarified {r.clarified:.1%}, escalated {r.escalated:.1%}, frustrated escalated {r.frustrated_escalated:.1%}"
        )
    typer.echo(f"wrote {files.html}")


@app.command()
@fails_cleanly
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="Current model: its report folder (or metrics.json), or its model directory with DATA.", show_default=False)],
    b: Annotated[Path, typer.Argument(metavar="B", help="Candidate: a report folder (or metrics.json), or a model directory with DATA.", show_default=False)],
    data: Annotated[list[Path] | None, typer.Argument(metavar="DATA", help="Labelled data to evaluate both models on (then A and B are model directories).", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml whose [routing] replaces both models' policies.")] = None,
    column: ColumnMap = None,
) -> None:
    """Compare two reports, or two models on the same data: what got better or worse per head and per label."""
    if data:
        from .evaluate import compare_models
        from .model import load_model
        from .routing import policy_for

        model_a, model_b = load_model(a), load_model(b)
        comparison = compare_models(
            model_a, model_b, _load(data, column),
            policies=(policy_for(model_a, config), policy_for(model_b, config)), names=(str(a), str(b)),
        )
    else:
        from .evaluate import compare_reports

        comparison = compare_reports(a, b)

    def fmt(value: float | None, metric: str) -> str:
        if value is None:
            return "–"
        return f"{value:.0f}" if metric in ("n", "support") else f"{value:.3f}"

    typer.echo(f"A = {comparison.a}\nB = {comparison.b}")
    typer.echo(f"{'head':<10} {'label':<28} {'metric':<22} {'A':>7} {'B':>7} {'B-A':>7}  verdict")
    for row in comparison.rows:
        delta = "–" if row.delta is None else (f"{row.delta:+.0f}" if row.metric == "n" else f"{row.delta:+.3f}")
        typer.echo(
            f"{row.section:<10} {row.label or '(all)':<28} {row.metric:<22} "
            f"{fmt(row.a, row.metric):>7} {fmt(row.b, row.metric):>7} {delta:>7}  {row.verdict}"
        )
    typer.echo(f"{len(comparison.better)} better, {len(comparison.worse)} worse")


@app.command()
@fails_cleanly
def thresholds(
    model_dir: ModelDir,
    data: DataFiles,
    target_accuracy: Annotated[float | None, typer.Option("--target-accuracy", help="Lowest answer threshold keeping answered intent accuracy >= this.")] = None,
    max_escalation: Annotated[float | None, typer.Option("--max-escalation", help="Highest answer threshold keeping the escalated share <= this.")] = None,
    frustrated_recall: Annotated[
        float | None,
        typer.Option("--frustrated-recall", help="Highest frustration threshold still escalating >= this share of frustrated customers (needs emotion/sentiment labels)."),
    ] = None,
    write: Annotated[Path | None, typer.Option("--write", help="nlu.toml whose [routing] thresholds to set to the choices.")] = None,
    step: Annotated[float, typer.Option("--step", min=0.01, max=0.5, help="Threshold step of the printed table.")] = 0.05,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml whose [routing] replaces the model's policy in the sweep.")] = None,
    column: ColumnMap = None,
) -> None:
    """Sweep the answer and frustration thresholds on labelled data; pick them for a target accuracy, an escalation budget or a frustrated-customer recall."""
    import dataclasses

    from .atomic import check_can_create
    from .errors import ConfigError
    from .evaluate import format_threshold, frustration_thresholds, on_grid, write_toml_values
    from .evaluate import thresholds as sweep_thresholds
    from .model import load_model
    from .routing import policy_for

    if write is not None:
        check_can_create(write)
    model = load_model(model_dir)
    dataset = _load(data, column)
    policy = policy_for(model, config)
    choice = sweep_thresholds(model, dataset, target_accuracy, max_escalation, policy=policy)
    every = max(1, round(step * 100))
    typer.echo(f"{'threshold':>9} {'answered':>9} {'accuracy':>9} {'clarified':>9} {'escalated':>9}")
    for point in choice.sweep:
        marks = []
        if point is choice.chosen:
            marks.append("chosen")
        if point is choice.production:
            marks.append("current")
        if not on_grid(point.threshold, every) and not marks:
            continue
        accuracy = "–" if point.answered_accuracy is None else f"{point.answered_accuracy:.3f}"
        typer.echo(
            f"{format_threshold(point.threshold):>9} {point.answered:>9.1%} {accuracy:>9} {point.clarified:>9.1%} {point.escalated:>9.1%}"
            + (f"  <- {', '.join(marks)}" if marks else "")
        )
    typer.echo(choice.message)
    if choice.criterion != "none" and choice.threshold is None:
        raise ConfigError(choice.message)
    if choice.chosen is not None:
        p = choice.chosen
        typer.echo(
            f"answer_threshold = {format_threshold(p.threshold)}: answered {p.answered:.1%}, accuracy {p.answered_accuracy or 0:.3f}, "
            f"escalated {p.escalated:.1%}"
        )
    chosen: dict[str, float] = {} if choice.threshold is None else {"answer_threshold": choice.threshold}
    if frustrated_recall is not None:
        # Swept with the answer threshold being chosen: both land in the config together.
        with_answer = policy if choice.threshold is None else dataclasses.replace(policy, answer_threshold=choice.threshold)
        frustration = frustration_thresholds(model, dataset, frustrated_recall, policy=with_answer)
        typer.echo(f"\n{'frustration':>11} {'recall':>9} {'escalated':>9} {'precision':>9}   ({frustration.n_frustrated} frustrated messages)")
        for fp in frustration.sweep:
            marks = [m for m, hit in (("chosen", fp is frustration.chosen), ("current", fp is frustration.production)) if hit]
            if not on_grid(fp.threshold, every) and not marks:
                continue
            precision = "–" if fp.precision is None else f"{fp.precision:.3f}"
            typer.echo(
                f"{format_threshold(fp.threshold):>11} {fp.recall:>9.1%} {fp.escalated:>9.1%} {precision:>9}" + (f"  <- {', '.join(marks)}" if marks else "")
            )
        typer.echo(frustration.message)
        if frustration.threshold is None:
            raise ConfigError(frustration.message)
        chosen["frustration_threshold"] = frustration.threshold
    if write is not None:
        if not chosen:
            raise ConfigError("--write needs --target-accuracy, --max-escalation or --frustrated-recall to choose a threshold")
        write_toml_values(write, "routing", chosen)
        typer.echo(f"wrote [routing] {', '.join(f'{k} = {format_threshold(v)}' for k, v in chosen.items())} to {write}")


@data_app.command("check")
@fails_cleanly
def data_check(data: DataFiles, column: ColumnMap = None) -> None:
    """Validate data files and summarise labels and duplicates; exit 1 on problems."""
    from .data import check_data
    from .errors import DataError

    report = check_data(_load(data, column))
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


# -- human-agent queue (nlu/queue.py) ---------------------------------------------------

queue_app = typer.Typer(
    help="Work the human-agent queue: list, claim, message the customer, resolve and release tickets; export agents' intent labels; stats.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(queue_app, name="queue")

QueueDb = Annotated[
    str | None,
    typer.Option("--db", help="Queue database: a path, sqlite:///path or postgresql://... [default: $NLU_DB or var/nlu.db].", show_default=False),
]
AgentName = Annotated[str, typer.Option("--agent", help="Your agent name.", show_default=False)]
TicketId = Annotated[int, typer.Argument(metavar="ID", min=1, max=MAX_TICKET_ID, help="Ticket id.", show_default=False)]


def _ticket_json(ticket: Any) -> str:
    return json.dumps(ticket.to_dict(), ensure_ascii=False)


def _show(line: str) -> None:
    """Print one line of queue output; every queue command prints through here."""
    typer.echo(printable(line))


@queue_app.command("list")
@fails_cleanly
def queue_list(
    status: Annotated[str | None, typer.Option("--status", help="Only tickets in this status: queued, claimed or resolved.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_LIST_LIMIT, help="At most this many tickets.")] = 50,
    db: QueueDb = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per ticket and line.")] = False,
) -> None:
    """List tickets: queued and claimed ones first, in the order agents take them, then resolved ones newest first."""
    import time

    from .queue import open_queue

    queue = open_queue(db)
    try:
        tickets = queue.list(status, limit)
    finally:
        queue.close()
    if as_json:
        for ticket in tickets:
            _show(_ticket_json(ticket))
        return
    if not tickets:
        _show("no tickets")
    now = time.time()
    for t in tickets:
        holder = ""
        if t.status == "claimed":
            expired = t.lease_until is not None and t.lease_until <= now
            holder = f" by {t.agent}" + (" (lease expired)" if expired else "")
        elif t.status == "resolved":
            holder = f" by {t.agent}" + (f" as {t.agent_intent}" if t.agent_intent else "")
        text = t.text if len(t.text) <= 70 else t.text[:69] + "…"
        _show(
            f"#{t.id:<5} {t.status}{holder}  priority {t.priority:.2f}  {','.join(t.reasons) or '-'}"
            f"{_window_mark(t, now)}  [{t.conversation_id}] {text}"
        )


def _window_mark(ticket: Any, now: float) -> str:
    """What an agent about to write must know of WhatsApp's 24-hour window: closed (only a
    template gets through), or closing within the hour; nothing otherwise, nor when unknown."""
    closes = ticket.window_closes_at
    if ticket.status == "resolved" or closes is None or closes - now > 3600:
        return ""
    if closes <= now:
        return "  window closed: template only"
    return f"  window closes in {max(1, int((closes - now) // 60))} min"


@queue_app.command("claim")
@fails_cleanly
def queue_claim(
    agent: AgentName,
    lease: Annotated[
        float,
        typer.Option(
            "--lease", min=MIN_LEASE_SECONDS, max=MAX_LEASE_SECONDS, help="Seconds the claim lasts before the ticket returns to the queue."
        ),
    ] = 300,
    db: QueueDb = None,
) -> None:
    """Take the most urgent, oldest ticket; print it as JSON ("queue empty" on stderr when none)."""
    from .queue import open_queue

    queue = open_queue(db)
    try:
        ticket = queue.claim(agent, lease)
    finally:
        queue.close()
    if ticket is None:
        typer.echo("queue empty", err=True)
        return
    _show(_ticket_json(ticket))


@queue_app.command("resolve")
@fails_cleanly
def queue_resolve(
    ticket_id: TicketId,
    agent: AgentName,
    note: Annotated[str, typer.Option("--note", help="How it was resolved (PII is redacted).")] = "",
    intent: Annotated[
        str | None,
        typer.Option("--intent", help="The intent the customer meant, kept as a training label (see 'nlu queue export').", show_default=False),
    ] = None,
    new_intent: Annotated[
        bool, typer.Option("--new-intent", help="--intent is one the model does not have yet, on purpose (else it is refused).")
    ] = False,
    db: QueueDb = None,
) -> None:
    """Close a ticket you have claimed."""
    from .queue import open_queue

    queue = open_queue(db)
    try:
        ticket = queue.resolve(ticket_id, agent, note, intent=intent, new_intent=new_intent)
    finally:
        queue.close()
    new = new_intent and ticket.agent_intent not in ticket.model_intents()
    label = f" as {ticket.agent_intent}" + (" (a new intent)" if new else "") if ticket.agent_intent else ""
    _show(f"resolved ticket {ticket.id}{label}")


@queue_app.command("send")
@fails_cleanly
def queue_send(
    ticket_id: TicketId,
    agent: AgentName,
    text: Annotated[
        str | None, typer.Argument(metavar="[TEXT]", help="The message, as the customer will read it.", show_default=False)
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template", help="Send this approved template instead of a text: once the customer last wrote more than 24 hours ago, only a template reaches them.",
            show_default=False,
        ),
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", help="The template's language code, as approved (es_MX, es, es_AR...).", show_default=False)
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="A body parameter of the template, {{1}} first; repeat for each.", show_default=False)
    ] = None,
    message_id: Annotated[
        str | None, typer.Option("--message-id", help="Your id for this message: running the command again with it sends nothing twice.")
    ] = None,
    db: QueueDb = None,
) -> None:
    """Send the customer of a ticket you hold a WhatsApp message, or a template (needs the Cloud API settings of 'nlu serve')."""
    import os

    from .cloud_api import ENV_ACCESS_TOKEN, ENV_PHONE_NUMBER_ID, sender_from_env
    from .conversation import open_conversations
    from .errors import ConfigError
    from .handover import send_agent_message
    from .queue import open_queue
    from .responses import Template

    content: str | Template
    if (text is None) == (template is None):
        raise InputError("give either TEXT or --template NAME --language CODE [--param VALUE]...")
    if template is None:
        if param or language is not None:
            raise InputError("--param and --language go with --template")
        content = str(text)
    elif language is None:
        raise InputError("--template needs --language: the code of the template's approved translation (es_MX, es...)")
    else:
        content = Template(template, language, tuple(param or ()))  # checked before anything opens
    sender = sender_from_env(os.environ)
    if sender is None:
        raise ConfigError(f"{ENV_ACCESS_TOKEN} and {ENV_PHONE_NUMBER_ID} not set: they say where WhatsApp messages go")
    try:
        queue = open_queue(db)
        try:
            # The conversation store, in the same database, says whether the customer opted out.
            with open_conversations(db) as conversations:
                sent = send_agent_message(queue, sender, ticket_id, agent, content, message_id, conversations=conversations)
        finally:
            queue.close()
    finally:
        sender.close()
    if not sent.duplicate:
        state = "sent"
    else:  # a repeated --message-id: what became of the first attempt
        state = {True: "was sent before", None: "went out before with no answer from WhatsApp", False: "is being sent"}[sent.turn.get("sent")]
        state += "; not sent again"
    what = f"template {content.name}, message" if isinstance(content, Template) else "message"
    _show(f"ticket {sent.ticket.id}: {what} {sent.turn['message_id']} {state}")


@queue_app.command("export")
@fails_cleanly
def queue_export(
    out: Annotated[Path, typer.Argument(metavar="FILE", help="CSV file to write (text, intent and where each row came from).", show_default=False)],
    db: QueueDb = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="The served model: its routing policy says what a request for a person looks like.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml; its [routing] comes before the model's.")] = None,
) -> None:
    """Write the tickets agents resolved with --intent as training rows for 'nlu train'."""
    from .feedback import export_labelled
    from .model import load_model
    from .queue import open_queue
    from .routing import policy_for

    # The policy the service applies (policy_for); a bad model or config fails before the database opens.
    policy = policy_for(None if model is None else load_model(model), config)
    queue = open_queue(db)
    try:
        summary = export_labelled(queue, out, policy)
    finally:
        queue.close()
    counts = ", ".join(f"{intent} {n}" for intent, n in summary.per_intent.items())
    _show(
        f"wrote {summary.rows} labelled message(s) to {summary.path}"
        + (f" ({summary.corrected} where the bot's intent was another): {counts}" if summary.rows else "")
        + (f"; left out {summary.skipped} without the customer's words on the topic (a tapped button, a consent note, a request for a person)" if summary.skipped else "")
    )


@queue_app.command("stats")
@fails_cleanly
def queue_stats_command(
    days: Annotated[float, typer.Option("--days", min=0.01, max=3660, help="Tickets created in this many days up to now.")] = 7,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml; with [handover] hours, counts the tickets that arrived outside them.")] = None,
    db: QueueDb = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (durations in seconds).")] = False,
) -> None:
    """How many tickets, how fast agents answered and resolved them, why the bot escalated."""
    from .config import load_config
    from .queue import open_queue
    from .queue_stats import queue_stats, render_stats

    hours = load_config(config).handover.business_hours()  # a bad config fails before the database opens
    queue = open_queue(db)
    try:
        stats = queue_stats(queue, days, hours=hours)
    finally:
        queue.close()
    if as_json:
        _show(json.dumps(stats.to_dict(), ensure_ascii=False))
        return
    for line in render_stats(stats, days):
        _show(line)


@queue_app.command("release")
@fails_cleanly
def queue_release(ticket_id: TicketId, agent: AgentName, db: QueueDb = None) -> None:
    """Give a ticket you have claimed back to the queue, in its original place."""
    from .queue import open_queue

    queue = open_queue(db)
    try:
        ticket = queue.release(ticket_id, agent)
    finally:
        queue.close()
    _show(f"released ticket {ticket.id}")


# -- retention (nlu.toml [privacy]) ---------------------------------------------------


@app.command()
@fails_cleanly
def purge(
    db: QueueDb = None,
    older_than: Annotated[
        float | None,
        typer.Option("--older-than", help="Days to keep (more than 7) [default: [privacy] retention_days, 30].", show_default=False),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml with a [privacy] section.")] = None,
) -> None:
    """Delete resolved tickets and conversation turns older than the retention period; print the counts."""
    import os

    from .config import PrivacyConfig, load_config
    from .conversation import open_conversations
    from .queue import DEFAULT_DB, open_queue

    # The same rule as the config's: a shorter period would forget message ids that
    # WhatsApp may still redeliver (answered twice).
    days = PrivacyConfig(older_than).retention_days if older_than is not None else load_config(config).privacy.retention_days
    target = db if db is not None and db.strip() else (os.environ.get("NLU_DB", "").strip() or DEFAULT_DB)
    queue = open_queue(target)
    try:
        tickets = queue.purge(days)
        with open_conversations(target) as conversations:
            # A conversation whose ticket is resolved is no longer held, even if the customer never wrote back.
            rows = conversations.purge(days, still_held=lambda c: queue.open_for_conversation(c) is not None)
    finally:
        queue.close()
    typer.echo(f"purged {tickets} resolved ticket(s) and {rows} conversation row(s) older than {days:g} days")


# -- HTTP service (nlu/server.py) -------------------------------------------------------


@app.command()
@fails_cleanly
def serve(
    model_dir: ModelDir,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the model).")] = 1,
    config: Annotated[Path | None, typer.Option("--config", help="nlu.toml with [routing] and [handover] settings.")] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Queue and conversation database [default: $NLU_DB or var/nlu.db].", show_default=False),
    ] = None,
    webhook: Annotated[bool, typer.Option("--webhook/--no-webhook", help="Serve the WhatsApp webhook (needs NLU_WHATSAPP_VERIFY_TOKEN and NLU_WHATSAPP_APP_SECRET).")] = True,
    agents: Annotated[bool, typer.Option("--agents/--no-agents", help="Serve the agent queue routes (needs NLU_AGENT_TOKEN).")] = True,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log one line per request (query strings dropped).")] = True,
    log_level: Annotated[str, typer.Option("--log-level", help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve the model over HTTP: scoring, conversations, the agent queue and the WhatsApp webhook."""
    from .server import ServerSettings
    from .server import serve as run_server

    settings = ServerSettings.from_env(
        model_dir=str(model_dir), host=host, port=port, workers=workers, config=None if config is None else str(config),
        db=db, webhook=webhook, agents=agents, access_log=access_log, log_level=log_level,
    )
    run_server(settings)


def main() -> None:
    app(prog_name="nlu")
