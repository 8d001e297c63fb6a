"""The report folder of ``nlu evaluate``: metrics.json, PNG plots, report.html and CSVs.

Plots are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global backend switch), so reports render on servers and in threads. The HTML is one
self-contained file: the PNGs are embedded as base64 data URIs and every piece of
message text or label goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import make_dirs, write_atomic
from .evaluate import Evaluation, HeadResult, SweepPoint, errors_frame, format_threshold, on_grid
from .metrics import expected_calibration_error

N_BINS = 15  # reliability bins; the same as metrics.expected_calibration_error
MISTAKES_SHOWN = 20
RIGHT, WRONG, ACCENT, GREY = "#2b8a3e", "#c92a2a", "#1c7ed6", "#868e96"


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    out_dir: Path
    metrics: Path
    html: Path
    errors: Path
    predictions: Path
    plots: tuple[Path, ...]


def write_report(evaluation: Evaluation, out_dir: str | Path) -> ReportFiles:
    """Write the whole report folder (each file atomically; other files are left alone)."""
    out = make_dirs(out_dir)

    plots: dict[str, bytes] = {}
    for head, result in evaluation.heads.items():
        plots[f"confusion_{head}.png"] = confusion_png(result)
        plots[f"confidence_{head}.png"] = confidence_png(result)
        plots[f"reliability_{head}.png"] = reliability_png(result)
        plots[f"f1_{head}.png"] = f1_png(result)
    # The curve needs gold intents: without them there is no accuracy to plot.
    if evaluation.routing is not None and any(p.answered_accuracy is not None for p in evaluation.sweep):
        plots["risk_coverage.png"] = risk_coverage_png(evaluation.sweep, evaluation.routing.answer_threshold)
    plot_paths = tuple(write_atomic(out / name, data) for name, data in plots.items())

    metrics_path = write_json(out / "metrics.json", evaluation.metrics)
    errors = errors_frame(evaluation)
    errors_path = write_atomic(out / "errors.csv", errors.to_csv(index=False).encode())
    predictions_path = write_atomic(out / "predictions.csv", evaluation.predictions.to_csv(index=False).encode())
    html_path = write_atomic(out / "report.html", render_html(evaluation, plots).encode())
    return ReportFiles(out, metrics_path, html_path, errors_path, predictions_path, plot_paths)


def write_json(path: str | Path, data: Any) -> Path:
    """Pretty UTF-8 JSON, written atomically (creates the parent folder)."""
    path = Path(path)
    make_dirs(path.parent)
    # allow_nan=False: NaN is not JSON; a metric that came out NaN must fail, not be written.
    return write_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode())


# -- plots --------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _label_order(result: HeadResult) -> tuple[list[str], list[str]]:
    """Rows: gold labels (most frequent first, unseen last); columns: predicted labels in
    the same order, then model labels never predicted nor gold."""
    gold_counts: dict[str, int] = {}
    for g in result.gold:
        gold_counts[g] = gold_counts.get(g, 0) + 1
    if len(gold_counts) > 12:
        # Many intents: alphabetical, so an analyst finds a name without scanning.
        rows = sorted(gold_counts, key=lambda lab: (lab in result.unseen, lab))
    else:
        rows = sorted(gold_counts, key=lambda lab: (lab in result.unseen, -gold_counts[lab], lab))
    cols = [lab for lab in rows if lab not in result.unseen]
    cols += sorted(lab for lab in set(result.labels) - set(cols))
    return rows, cols


def confusion_matrix(result: HeadResult) -> tuple[list[str], list[str], np.ndarray]:
    """Row-normalised confusion matrix (rows gold, columns predicted) with its labels."""
    rows, cols = _label_order(result)
    r_index = {lab: i for i, lab in enumerate(rows)}
    c_index = {lab: i for i, lab in enumerate(cols)}
    counts = np.zeros((len(rows), len(cols)))
    for g, p in zip(result.gold, result.predicted, strict=True):
        counts[r_index[g], c_index[p]] += 1
    totals = counts.sum(axis=1, keepdims=True)
    return rows, cols, np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_png(result: HeadResult) -> bytes:
    rows, cols, matrix = confusion_matrix(result)
    support = {lab: result.metrics["per_label"].get(lab, {}).get("support", 0) for lab in rows}
    n_r, n_c = len(rows), len(cols)
    # ~0.42 inch per label keeps 30+ rotated Spanish intent names legible at 100 dpi.
    cell = 0.42 if max(n_r, n_c) > 8 else 0.8
    fig = _figure(max(6.0, 3.2 + cell * n_c), max(4.5, 2.6 + cell * n_r))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    font = 9 if max(n_r, n_c) > 12 else 10
    ax.set_xticks(range(n_c), labels=cols, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticks(
        range(n_r),
        labels=[f"{lab} ({support[lab]})" + (" [unseen]" if lab in result.unseen else "") for lab in rows],
        fontsize=font,
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold (rows)")
    for i in range(n_r):
        for j in range(n_c):
            value = matrix[i, j]
            if value >= 0.005:
                ax.text(j, i, f"{value * 100:.0f}", ha="center", va="center", fontsize=font - 1,
                        color="white" if value > 0.55 else "#212529")
    # Thin grid between cells so off-diagonal confusions stand out.
    ax.set_xticks(np.arange(-0.5, n_c, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n_r, 1), minor=True)
    ax.grid(which="minor", color="#dee2e6", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the gold row")
    ax.set_title(
        f"{result.head}: confusion matrix, % of each gold label\n"
        f"accuracy {result.metrics['accuracy']:.3f}, macro-F1 {result.metrics['macro_f1']:.3f}, n={result.metrics['n']}",
        fontsize=11,
    )
    return _png(fig)


def confidence_png(result: HeadResult) -> bytes:
    from matplotlib.ticker import MaxNLocator

    correct = result.correct
    bins = np.linspace(0.0, 1.0, 21)
    fig = _figure(7.5, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, mask, color, name in ((top, correct, RIGHT, "right"), (bottom, ~correct, WRONG, "wrong")):
        ax.hist(result.confidence[mask], bins=bins, color=color, alpha=0.85, edgecolor="white")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("messages")
        ax.set_title(f"{name}: {int(mask.sum())} messages", fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
    bottom.set_xlabel("confidence of the top label")
    bottom.set_xlim(0, 1)
    fig.suptitle(f"{result.head}: confidence of right vs wrong predictions")
    return _png(fig)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[tuple[float, float, float, int]]:
    """(bin centre, mean confidence, accuracy, count) per non-empty bin, binned like the ECE."""
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            out.append(((b + 0.5) / n_bins, float(confidence[mask].mean()), float(correct[mask].mean()), int(mask.sum())))
    return out


def reliability_png(result: HeadResult) -> bytes:
    correct = result.correct.astype(float)
    ece = expected_calibration_error(result.confidence, correct, n_bins=N_BINS)
    points = reliability_bins(result.confidence, correct)
    width = 1.0 / N_BINS
    fig = _figure(6.5, 6.5)
    ax, counts_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle="--", color=GREY, label="perfect calibration")
    if points:
        centre, conf, acc, count = (np.asarray(v) for v in zip(*points, strict=True))
        ax.bar(centre, acc, width=width * 0.9, color=ACCENT, alpha=0.85, label="accuracy in bin")
        # The gap from accuracy up (or down) to the bin's mean confidence: over- or
        # under-confidence at a glance, as in Guo et al. (2017).
        ax.bar(centre, conf - acc, bottom=acc, width=width * 0.9, color=WRONG, alpha=0.25, hatch="//",
               edgecolor=WRONG, linewidth=0.5, label="gap to mean confidence")
        counts_ax.bar(centre, count, width=width * 0.9, color=GREY)
        for x, c in zip(centre, count, strict=True):
            counts_ax.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=7)
        counts_ax.set_ylim(0, max(count) * 1.25)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(f"{result.head}: reliability diagram, ECE {ece:.3f}")
    counts_ax.set_ylabel("messages")
    counts_ax.set_xlabel("confidence")
    return _png(fig)


def risk_coverage_png(sweep: Sequence[SweepPoint], production: float) -> bytes:
    # Thresholds that answer nothing labelled have no accuracy: no point on the curve.
    points = [p for p in sweep if p.answered_accuracy is not None]
    current = next(p for p in sweep if p.threshold == production)  # the sweep always holds it
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot()
    if points:
        coverage = [p.answered for p in points]
        accuracy = [float(p.answered_accuracy or 0.0) for p in points]
        ax.plot(coverage, accuracy, color=ACCENT, linewidth=2, label="answer threshold 0 → 1")
        low = min(accuracy)
        y_low, y_high = max(0.0, low - max(0.02, 0.25 * (1.0 - low))), 1.0 + max(0.005, 0.05 * (1.0 - low))
        marked: list[SweepPoint] = []
        for p in points:
            if not on_grid(p.threshold, 10) or not 0 < p.threshold < 1 or abs(p.threshold - production) <= 0.04:
                continue
            # Skip a label that would sit on the previous one (thresholds nobody's traffic separates).
            if marked and abs(p.answered - marked[-1].answered) < 0.03 and abs(
                (p.answered_accuracy or 0.0) - (marked[-1].answered_accuracy or 0.0)
            ) < 0.04 * (y_high - y_low):
                continue
            marked.append(p)
        ax.scatter([p.answered for p in marked], [p.answered_accuracy or 0.0 for p in marked], color=ACCENT, s=18, zorder=3)
        for p in marked:
            ax.annotate(f"{p.threshold:.1f}", (p.answered, p.answered_accuracy or 0.0), textcoords="offset points",
                        xytext=(6, 3), fontsize=8, color="#495057")
        ax.set_ylim(y_low, y_high)
    if current.answered_accuracy is not None:
        current_accuracy = float(current.answered_accuracy)
        ax.scatter([current.answered], [current_accuracy], color=WRONG, s=80, zorder=4,
                   label=f"production threshold {format_threshold(production)}")
        ax.annotate(
            f"threshold {format_threshold(production)}\n{current.answered:.0%} answered, {current_accuracy:.1%} right",
            (current.answered, current_accuracy), textcoords="offset points", xytext=(-150, -40),
            fontsize=9, arrowprops={"arrowstyle": "->", "color": WRONG},
        )
    else:
        ax.text(0.5, 0.5, f"production threshold {format_threshold(production)}: the bot answers no labelled message",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color=WRONG)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("share of messages the bot answers (coverage)")
    ax.set_ylabel("intent accuracy of answered messages")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    ax.set_title("risk-coverage: what each answer threshold costs")
    return _png(fig)


def f1_png(result: HeadResult) -> bytes:
    per_label = result.metrics["per_label"]
    labels = sorted((lab for lab, m in per_label.items() if m["support"] > 0), key=lambda lab: (per_label[lab]["f1"], lab))
    fig = _figure(8.0, max(3.0, 1.4 + 0.3 * len(labels)))
    ax = fig.add_subplot()
    f1 = [per_label[lab]["f1"] for lab in labels]
    colors = [GREY if lab in result.unseen else (WRONG if v < 0.5 else ACCENT) for lab, v in zip(labels, f1, strict=True)]
    ax.barh(range(len(labels)), f1, color=colors)
    names = [f"{lab} ({per_label[lab]['support']})" + (" [unseen]" if lab in result.unseen else "") for lab in labels]
    ax.set_yticks(range(len(labels)), labels=names, fontsize=9 if len(labels) > 15 else 10)
    for i, v in enumerate(f1):
        # Inside the bar's end (white) when there is room, else just right of it.
        if v >= 0.12:
            ax.text(v - 0.01, i, f"{v:.2f}", va="center", ha="right", fontsize=8, color="white", fontweight="bold")
        else:
            ax.text(v + 0.01, i, f"{v:.2f}", va="center", ha="left", fontsize=8)
    ax.axvline(result.metrics["macro_f1"], color="#212529", linestyle="--", linewidth=1, zorder=0)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (support in brackets)")
    ax.set_title(f"{result.head}: F1 per label, worst first (dashed: macro-F1 {result.metrics['macro_f1']:.3f})")
    ax.invert_yaxis()  # worst at the top, where the eye starts
    return _png(fig)


# -- HTML ---------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#212529;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #dee2e6;padding-bottom:.3rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.92rem}
th,td{border:1px solid #dee2e6;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f1f3f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{background:#fff5f5}.warn{background:#fff9db;border:1px solid #fcc419;padding:.6rem 1rem;border-radius:4px}
.muted{color:#868e96}img{max-width:100%;height:auto;border:1px solid #e9ecef;margin:.5rem 0}
.text{max-width:520px;word-break:break-word}.current{font-weight:bold;background:#e7f5ff}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _img(plots: dict[str, bytes], name: str, alt: str) -> str:
    if name not in plots:
        return ""
    data = base64.b64encode(plots[name]).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] | None = None, row_class: Sequence[str] | None = None) -> str:
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if numeric[j] else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(evaluation: Evaluation, plots: dict[str, bytes]) -> str:
    """The self-contained report page (cells are built pre-escaped)."""
    meta = evaluation.model_meta
    parts: list[str] = []
    title = f"nlu evaluation: {evaluation.model_name}"
    parts.append(f"<h1>{_e(title)}</h1>")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    files = ", ".join(f"{_e(Path(f['path']).name)} ({f['rows']} rows, sha256 {_e(str(f['sha256'])[:12])})" for f in evaluation.data_files)
    parts.append(
        f'<p class="muted">model {_e(evaluation.model_name)} created {_e(meta.get("created_at", "?"))}'
        f" · data {files} · report {created} · nlu {_e(__version__)}</p>"
    )

    # Summary: one line per head, then routing.
    parts.append("<h2>Summary</h2>")
    rows = [
        [_e(head), str(r.metrics["n"]), _num(r.metrics["accuracy"]), _num(r.metrics["macro_f1"]), _num(r.metrics["ece"]),
         _e(", ".join(f"{lab} ({n})" for lab, n in r.unseen.items()) or "–")]
        for head, r in evaluation.heads.items()
    ]
    parts.append(_table(["head", "n", "accuracy", "macro-F1", "ECE", "labels unseen in training"], rows, [False, True, True, True, True, False]))
    routing = evaluation.routing
    if routing is not None:
        parts.append(
            f"<p>With the routing policy in force "
            f"(answer threshold {format_threshold(routing.answer_threshold)}, "
            f"frustration threshold {format_threshold(routing.frustration_threshold)}), "
            f"the bot answers <b>{_pct(routing.answered)}</b> of messages with intent accuracy "
            f"<b>{_num(routing.answered_accuracy)}</b>, asks to clarify {_pct(routing.clarified)} and escalates "
            f"<b>{_pct(routing.escalated)}</b> to agents; {_pct(routing.frustrated_escalated)} of the "
            f"{routing.n_frustrated} frustrated messages are escalated.</p>"
        )
    unseen = {h: r.unseen for h, r in evaluation.heads.items() if r.unseen}
    if unseen:
        listed = "; ".join(f"{_e(h)}: " + ", ".join(f"{_e(lab)} ({n})" for lab, n in u.items()) for h, u in unseen.items())
        parts.append(
            f'<p class="warn">Labels in this data that the model never saw in training (always counted wrong): {listed}.</p>'
        )

    if routing is not None:
        parts.append("<h2>Routing</h2>")
        parts.append(_routing_section(evaluation, plots))

    errors = errors_frame(evaluation)
    for head, result in evaluation.heads.items():
        parts.append(f"<h2>{_e(head)}</h2>")
        parts.append(_img(plots, f"confusion_{head}.png", f"{head} confusion matrix"))
        parts.append(_img(plots, f"f1_{head}.png", f"{head} F1 per label"))
        parts.append(_img(plots, f"reliability_{head}.png", f"{head} reliability diagram"))
        parts.append(_img(plots, f"confidence_{head}.png", f"{head} confidence histogram"))
        parts.append(f"<h3>{_e(head)}: per label, worst first</h3>")
        parts.append(_per_label_table(result))
        mistakes = errors[errors["head"] == head].head(MISTAKES_SHOWN)
        parts.append(f"<h3>{_e(head)}: the {len(mistakes)} most confident mistakes</h3>")
        if len(mistakes):
            parts.append(_table(
                ["confidence", "text", "gold", "predicted"],
                [[_num(row.confidence), f'<span class="text">{_e(row.text)}</span>', _e(row.gold), _e(row.predicted)]
                 for row in mistakes.itertuples()],
                [True, False, False, False],
            ))
        else:
            parts.append("<p>No mistakes.</p>")
    parts.append('<p class="muted">Files: metrics.json, predictions.csv (every row), errors.csv (every mistake), PNG plots.</p>')
    body = "\n".join(p for p in parts if p)
    return (
        "<!DOCTYPE html>\n<html lang=\"es\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _per_label_table(result: HeadResult) -> str:
    per_label = result.metrics["per_label"]
    order = sorted(per_label, key=lambda lab: (per_label[lab]["f1"], -per_label[lab]["support"], lab))
    rows, classes = [], []
    for lab in order:
        m = per_label[lab]
        note = "unseen in training" if lab in result.unseen else ("never in this data" if m["support"] == 0 else "")
        rows.append([_e(lab), _num(m["f1"]), _num(m["precision"]), _num(m["recall"]), str(m["support"]), _e(note)])
        classes.append("bad" if m["f1"] < 0.5 else "")
    return _table(["label", "F1", "precision", "recall", "support", "note"], rows, [False, True, True, True, True, False], classes)


def _routing_section(evaluation: Evaluation, plots: dict[str, bytes]) -> str:
    routing = evaluation.routing
    assert routing is not None
    parts = [_table(
        ["answered", "answered accuracy", "clarified", "escalated", "frustrated escalated", "rows", "frustrated rows"],
        [[_pct(routing.answered), _num(routing.answered_accuracy), _pct(routing.clarified), _pct(routing.escalated),
          _pct(routing.frustrated_escalated), str(routing.n), str(routing.n_frustrated)]],
        [True] * 7,
    )]
    if routing.reasons_by_action:
        parts.append(_table(
            ["action", "reason", "rows"],
            [[_e(action), _e(r), str(n)] for action, counts in routing.reasons_by_action.items() for r, n in counts.items()],
            [False, False, True],
        ))
    parts.append(_img(plots, "risk_coverage.png", "risk-coverage curve"))
    if evaluation.sweep:
        parts.append("<h3>Threshold sweep</h3><p class=\"muted\">Routing outcome for each answer threshold, everything "
                     "else as in the policy. `nlu thresholds` prints the full table and picks one for a target.</p>")
        current = next(p for p in evaluation.sweep if p.threshold == routing.answer_threshold)
        shown = [p for p in evaluation.sweep if on_grid(p.threshold, 5) or p is current]
        parts.append(_table(
            ["answer threshold", "answered", "answered accuracy", "clarified", "escalated"],
            [[format_threshold(p.threshold), _pct(p.answered), _num(p.answered_accuracy), _pct(p.clarified), _pct(p.escalated)] for p in shown],
            [True] * 5,
            ["current" if p is current else "" for p in shown],
        ))
    return "\n".join(p for p in parts if p)
