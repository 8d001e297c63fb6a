"""Read, validate and fingerprint labelled chat data.

Formats are chosen by extension: ``.csv``, ``.tsv``, ``.jsonl``, ``.parquet`` and Rasa NLU
YAML (``.yml``/``.yaml`` with an ``nlu:`` block). Columns: ``text`` (required) and any of
the head columns ``intent``, ``sentiment``, ``emotion``; an empty cell means "not labelled
for this head". Every problem names the file, the place in it (line for text formats,
row for Parquet, intent and example for Rasa YAML) and the column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from .config import HEADS
from .errors import DataError
from .text import clean

TEXT = "text"
SOURCE = "_source"  # file a row came from
WHERE = "_where"  # human-readable place of the row inside that file, e.g. "line 12"
OPTIONAL_COLUMNS = ("conversation_id", "turn")
SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet", ".yml", ".yaml")


@dataclass(frozen=True)
class FileInfo:
    path: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class Dataset:
    """Rows from one or more files: ``text``, the head columns present, and provenance."""

    frame: pd.DataFrame
    files: tuple[FileInfo, ...]

    @property
    def heads(self) -> tuple[str, ...]:
        """Head columns present in the data, in canonical order."""
        return tuple(h for h in HEADS if h in self.frame.columns)

    def labelled(self, head: str) -> pd.DataFrame:
        """Rows that carry a label for ``head``."""
        if head not in self.frame.columns:
            return self.frame.iloc[0:0]
        return self.frame[self.frame[head] != ""]

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class DataReport:
    """What ``nlu data check`` reports: counts, duplicates, and problems."""

    files: tuple[FileInfo, ...]
    rows: int
    label_counts: dict[str, dict[str, int]]
    duplicates: int
    errors: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.errors


def load_data(paths: Sequence[str | Path], columns: Mapping[str, str] | None = None) -> Dataset:
    """Read and concatenate data files; raise :class:`DataError` on unreadable structure.

    ``columns`` renames the files' own columns to ours (``{"tweet": "text", "label":
    "sentiment"}``), so third-party data is used as it is; see :func:`parse_column_map`.
    """
    if not paths:
        raise DataError("no data files given")
    renames = _checked_column_map(columns or {})
    frames = []
    infos = []
    for path in paths:
        frame, info = _read_file(Path(path), renames)
        frames.append(frame)
        infos.append(info)
    frame = pd.concat(frames, ignore_index=True, sort=False)
    for head in HEADS:
        if head in frame.columns:
            frame[head] = frame[head].fillna("")
    if not any(h in frame.columns for h in HEADS):
        names = ", ".join(str(p) for p in paths)
        raise DataError(f"{names}: no label column; expected at least one of {', '.join(HEADS)}")
    return Dataset(frame=frame, files=tuple(infos))


def check_data(dataset: Dataset, min_examples: int = 2) -> DataReport:
    """Validate labelled data: empty texts, rare labels, conflicting labels, duplicates."""
    frame = dataset.frame
    errors: list[str] = []
    warnings: list[str] = []

    for info in dataset.files:
        if info.rows == 0:
            (errors if len(frame) == 0 else warnings).append(f"{info.path}: no data rows")
    for place in _places(frame[frame[TEXT] == ""]):
        errors.append(f"{place}, column text: empty text")

    label_counts: dict[str, dict[str, int]] = {}
    for head in dataset.heads:
        labelled = dataset.labelled(head)
        counts = Counter(labelled[head])
        label_counts[head] = dict(counts.most_common())
        if len(counts) == 1:
            warnings.append(f"column {head}: only one label ({next(iter(counts))}); the {head} head will not be trained")
        for label, count in counts.items():
            if count < min_examples:
                first = labelled[labelled[head] == label].iloc[0]
                errors.append(
                    f"{_place(first)}, column {head}: label {label!r} has {count} example(s); "
                    f"at least {min_examples} are needed"
                )

    # The same text (ignoring case and spacing) must not carry two labels for one head.
    keys = frame[TEXT].map(_text_key)
    first_row: dict[str, int] = {}
    duplicates = 0
    for i, key in enumerate(keys):
        if not key:
            continue
        if key in first_row:
            duplicates += 1
        else:
            first_row[key] = i
    for head in dataset.heads:
        seen: dict[str, tuple[str, int]] = {}
        reported: set[str] = set()
        for i, (key, label) in enumerate(zip(keys, frame[head], strict=True)):
            if not key or not label:
                continue
            if key not in seen:
                seen[key] = (label, i)
            elif seen[key][0] != label and key not in reported:
                reported.add(key)
                other_label, j = seen[key]
                errors.append(
                    f"{_place(frame.iloc[i])}, column {head}: text {_short(frame[TEXT].iat[i])!r} is labelled "
                    f"{label!r} here and {other_label!r} at {_place(frame.iloc[j])}"
                )
    if duplicates:
        warnings.append(f"{duplicates} row(s) repeat an earlier text (same labels); they weigh double in training")
    return DataReport(
        files=dataset.files,
        rows=len(frame),
        label_counts=label_counts,
        duplicates=duplicates,
        errors=tuple(errors),
        warnings=tuple(warnings),
    )


def drop_conflicts(dataset: Dataset) -> tuple[Dataset, dict[str, int]]:
    """Clear a head's label on every row of a text that carries two labels for that head.

    Real annotated data (EmoEvent, TASS) has the same tweet labelled differently by
    different annotators. Neither label can be trusted, so both go; the row keeps its
    labels for the other heads. Returns the cleaned dataset and, per head, how many
    distinct texts lost their label.
    """
    frame = dataset.frame.copy()
    keys = frame[TEXT].map(_text_key)
    dropped: dict[str, int] = {}
    for head in dataset.heads:
        labelled = frame[head] != ""
        labels_per_key = frame.loc[labelled, head].groupby(keys[labelled]).nunique()
        conflicting = set(labels_per_key.index[labels_per_key > 1])
        conflicting.discard("")
        if conflicting:
            frame.loc[keys.isin(conflicting), head] = ""
            dropped[head] = len(conflicting)
    return Dataset(frame=frame, files=dataset.files), dropped


def require_valid(dataset: Dataset) -> Dataset:
    """``dataset`` if :func:`check_data` finds no errors; otherwise the first few as a DataError."""
    report = check_data(dataset)
    if report.errors:
        more = f" (and {len(report.errors) - 3} more; run `nlu data check`)" if len(report.errors) > 3 else ""
        raise DataError("; ".join(report.errors[:3]) + more)
    return dataset


def parse_column_map(specs: Sequence[str]) -> dict[str, str]:
    """``["tweet=text", "label=sentiment"]`` (the command line's ``--column``) -> a
    ``columns`` mapping for :func:`load_data` (which checks the targets)."""
    mapping: dict[str, str] = {}
    for spec in specs:
        source, sep, target = (part.strip() for part in spec.partition("="))
        if not sep or not source or not target:
            raise DataError(f"--column {spec!r}: expected FILE_COLUMN=COLUMN, e.g. tweet=text")
        if source in mapping:
            raise DataError(f"--column: {source!r} is mapped twice")
        mapping[source] = target
    return mapping


def _checked_column_map(columns: Mapping[str, str]) -> dict[str, str]:
    targets = (TEXT, *HEADS, *OPTIONAL_COLUMNS)
    seen: dict[str, str] = {}
    for source, target in columns.items():
        if target not in targets:
            raise DataError(f"column map {source!r} -> {target!r}: {target!r} is not one of {', '.join(targets)}")
        if target in seen:
            raise DataError(f"column map: both {seen[target]!r} and {source!r} are mapped to {target!r}")
        seen[target] = source
    return dict(columns)


def load_training_data(paths: Sequence[str | Path]) -> Dataset:
    """:func:`load_data` + :func:`check_data`, raising on the first problems found."""
    return require_valid(load_data(paths))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- readers -------------------------------------------------------------------------


def _read_file(path: Path, renames: Mapping[str, str]) -> tuple[pd.DataFrame, FileInfo]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if suffix == ".parquet":
        frame = _read_parquet(path)
    else:
        text = _decode(path, raw)
        if suffix in (".csv", ".tsv"):
            frame = _read_delimited(path, text, "," if suffix == ".csv" else "\t")
        elif suffix == ".jsonl":
            frame = _read_jsonl(path, text)
        else:
            frame = _read_rasa_yaml(path, text)
    frame = _validate_columns(path, _renamed(path, frame, renames))
    frame[SOURCE] = str(path)
    return frame, FileInfo(path=str(path), sha256=hashlib.sha256(raw).hexdigest(), rows=len(frame))


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # exc.start counts from the start of the file (after a BOM); the message gives the
        # byte within its line, counted from 1, as `nlu score -` does for stdin.
        data = exc.object
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}: not valid UTF-8 (byte {column}); save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, text: str, sep: str) -> pd.DataFrame:
    """Rows of a CSV or TSV, each placed at the physical line where it starts.

    Read with the csv module rather than pandas: pandas turns a trailing delimiter on every
    row into an index column (shifting each label one column left) and cannot say on which
    line a row starts once a quoted cell has spanned several lines.
    """
    if sep == ",":
        kind, hint = "CSV", "quote a text that holds a comma, and end no line with a comma"
    else:
        kind, hint = "TSV", "a text cannot hold a tab, and no line may end with one"
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    # TSV (IANA text/tab-separated-values) has no quoting, and chat text often starts with a
    # quote mark; CSV quotes as RFC 4180 does, strictly, so a stray quote is an error, not
    # a cell that silently swallows the rows after it.
    quoting: Literal[0, 3] = csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting, strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    places: list[str] = []
    start = 1  # physical line where the next row starts
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row:
                continue  # a blank line
            if header is None:
                header = _header(path, row)
                continue
            if len(row) > len(header):
                raise DataError(
                    f"{path}: line {line}: {len(row)} fields but the header has {len(header)}; {hint}"
                )
            rows.append(row + [""] * (len(header) - len(row)))  # a short row: unlabelled heads
            places.append(f"line {line}")
    except csv.Error as exc:
        reason = str(exc)
        if "end of data" in reason:
            reason = "a quote opened here is never closed"
        elif "expected after" in reason:
            reason = 'text follows a closing quote; quote the whole cell and double the quotes inside it ("""hola"" dice")'
        raise DataError(f"{path}: line {start}: cannot parse as {kind}: {reason}") from None
    assert header is not None  # the text is not blank, so some row was read
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    frame[WHERE] = places
    return frame


def _header(path: Path, row: list[str]) -> list[str]:
    names = [cell.strip() for cell in row]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            names[i] = f"unnamed {i + 1}"  # an empty column Excel left behind: kept, unused
        elif name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header")
        seen.add(names[i])
    return names


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = []
    places = []
    # Only "\n" ends a record: str.splitlines() also cuts at U+2028, U+0085 and others that
    # json.dumps(ensure_ascii=False) writes raw inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        places.append(f"line {number}")
    if not records:
        raise DataError(f"{path}: file is empty")
    frame = pd.DataFrame.from_records(records)
    frame[WHERE] = places
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many unrelated types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
    frame[WHERE] = [f"row {i + 1}" for i in range(len(frame))]
    return frame


def _read_rasa_yaml(path: Path, text: str) -> pd.DataFrame:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nlu"), list):
        raise DataError(f"{path}: not Rasa NLU data: expected a top-level 'nlu:' list")
    rows: list[dict[str, str]] = []
    for n, block in enumerate(doc["nlu"], start=1):
        if not isinstance(block, dict) or "intent" not in block:
            continue  # synonym, regex and lookup blocks carry no training examples
        intent = block["intent"]
        examples = block.get("examples")
        if not isinstance(intent, str) or not isinstance(examples, str):
            raise DataError(f"{path}: nlu entry {n}: 'intent' and 'examples' must be text")
        for k, line in enumerate(examples.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if not line.startswith("- "):
                raise DataError(f"{path}: intent {intent!r}, example {k}: expected '- text'")
            rows.append({
                TEXT: _strip_rasa_entities(line[2:]),
                "intent": intent,
                WHERE: f"intent {intent!r}, example {k}",
            })
    if not rows:
        raise DataError(f"{path}: no intent examples in the 'nlu:' block")
    return pd.DataFrame(rows)


def _strip_rasa_entities(text: str) -> str:
    """"[Madrid](city)" -> "Madrid": Rasa's inline entity annotations are not text."""
    import re

    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    return re.sub(r"\[([^\]]+)\]\{[^}]*\}", r"\1", text)


def _renamed(path: Path, frame: pd.DataFrame, renames: Mapping[str, str]) -> pd.DataFrame:
    if not renames:
        return frame
    missing = [source for source in renames if source not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} to map to {renames[missing[0]]!r} ({_columns_found(frame)})")
    clashes = [t for s, t in renames.items() if t in frame.columns and t not in renames]
    if clashes:
        raise DataError(f"{path}: column {clashes[0]!r} exists and another column is mapped to it; map or rename one of them")
    return frame.rename(columns=dict(renames))


def _validate_columns(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    if TEXT not in frame.columns:
        raise DataError(f"{path}: missing column 'text' ({_columns_found(frame)})")
    keep = [TEXT, *(h for h in HEADS if h in frame.columns), *(c for c in OPTIONAL_COLUMNS if c in frame.columns), WHERE]
    frame = frame[keep].copy()
    for column in (TEXT, *HEADS):
        # CSV cells are always text; JSONL and Parquet can hold numbers, lists, objects.
        if column in frame.columns:
            bad = frame[column].map(lambda v: v is not None and not isinstance(v, str) and not _is_missing(v))
            if bad.any():
                i = int(bad.to_numpy().argmax())
                value = frame[column].iloc[i]
                raise DataError(
                    f"{path}: {frame[WHERE].iloc[i]}, column {column}: expected a string, got {type(value).__name__}"
                )
    frame[TEXT] = frame[TEXT].map(lambda v: clean(v) if isinstance(v, str) else "")
    for head in HEADS:
        if head in frame.columns:
            frame[head] = frame[head].map(lambda v: v.strip() if isinstance(v, str) else "")
    return frame.reset_index(drop=True)


# --- helpers -------------------------------------------------------------------------


def _columns_found(frame: pd.DataFrame) -> str:
    found = [str(c) for c in frame.columns if c != WHERE][:10]  # WHERE is ours, not the file's
    return f"columns found: {', '.join(found) or 'none'}"


def _is_missing(value: Any) -> bool:
    """A missing cell (None, NaN, pandas' NA): "not labelled", not a wrong type."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array is not a scalar: not missing
        return False


def _text_key(text: str) -> str:
    return " ".join(text.casefold().split())


def _place(row: Any) -> str:
    return f"{row[SOURCE]}: {row[WHERE]}"


def _places(frame: pd.DataFrame) -> Iterable[str]:
    for _, row in frame.iterrows():
        yield _place(row)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_by_head(dataset: Dataset) -> dict[str, tuple[list[str], list[str]]]:
    """Texts and labels per head, keeping only rows labelled for that head."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for head in dataset.heads:
        labelled = dataset.labelled(head)
        if labelled[head].nunique() >= 2:
            out[head] = (labelled[TEXT].tolist(), labelled[head].tolist())
    return out

