"""Batch scoring: every message of a CSV or Parquet file, all heads and the routing decision.

``score_file(model, INPUT, OUTPUT)`` reads a CSV/TSV file, a Parquet file or a folder of
Parquet parts, scores each message with :meth:`Model.score_batch`, routes it with
:func:`nlu.routing.decide` as the first message of a new conversation whose consent is
granted (how ``nlu evaluate`` measures routing), and writes Parquet: the input columns
plus :data:`RESULT_COLUMNS`. An input column whose name is a result column is kept as
``<name>_input`` (a labelled file keeps its gold ``intent`` as ``intent_input``).

Two engines, one scoring function (:func:`score_table`):

* ``local`` streams the input in chunks of ``chunk_size`` rows (pandas ``read_csv``
  chunks, ``ParquetFile.iter_batches``) into one ``pyarrow.parquet.ParquetWriter``, so
  memory is bounded by a chunk, not the file: a 10-million-row file fits.
* ``dask`` reads with ``dask.dataframe``, scores and writes each partition on the workers
  (``map_partitions``), and writes a folder of parts ``part.00000.parquet``, ... in input
  order. Only row counts travel back to the client.

Output is atomic in both: a hidden temporary sibling is written, then renamed onto
OUTPUT; an existing OUTPUT is refused unless ``force``. Progress is reported through a
callback; the library never prints.

Row numbers in errors count data rows from 1 (the CSV header is not a row); with the Dask
engine they count within a partition.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .atomic import check_can_create, make_dirs
from .errors import ConfigError, DataError, OutputError
from .routing import first_message_decisions, policy_for

if TYPE_CHECKING:
    import pandas as pd

    from .config import RoutingPolicy
    from .model import Model

Engine = Literal["local", "dask"]
ENGINES: tuple[str, ...] = ("local", "dask")

# Appended to the input columns, in this order.
RESULT_SCHEMA = pa.schema(
    [
        ("intent", pa.string()),
        ("confidence", pa.float64()),
        ("sentiment", pa.string()),
        ("sentiment_confidence", pa.float64()),
        ("emotion", pa.string()),
        ("emotion_confidence", pa.float64()),
        ("frustration", pa.float64()),
        ("action", pa.string()),
        ("reasons", pa.list_(pa.string())),
    ]
)
RESULT_COLUMNS: tuple[str, ...] = tuple(RESULT_SCHEMA.names)
CLASH_SUFFIX = "_input"

CSV_SEPARATORS = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
CONNECT_TIMEOUT = "10s"  # to reach a Dask scheduler given by address
# Rows featurised at once. Measured on the bundled test messages: 5,000-row slices score
# about 25% faster than 50,000-row ones (the sparse matrices stay in cache) and keep the
# peak memory near 450 MB instead of 1.3 GB; chunks and partitions can stay large.
SCORE_SLICE = 5_000


@dataclass(frozen=True)
class BatchProgress:
    """How far a run is: messages scored so far and, when known, the share of the input done."""

    rows: int
    fraction: float | None


@dataclass(frozen=True)
class BatchResult:
    """What a run did. ``output`` is a file (local) or a folder of parts (dask)."""

    input: str
    output: str
    engine: str
    rows: int
    parts: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second, wall clock, reading and writing included."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "engine": self.engine,
            "rows": self.rows,
            "parts": self.parts,
            "seconds": self.seconds,
            "rate": self.rate,
        }


ProgressCallback = Callable[[BatchProgress], None]


# -- scoring one table (shared by both engines) -------------------------------------------


def output_schema(input_schema: pa.Schema) -> pa.Schema:
    """Input columns (clashing names suffixed ``_input``) followed by the result columns."""
    fields = [input_schema.field(i).with_name(name) for i, name in enumerate(_renamed(input_schema.names))]
    return pa.schema(fields + list(RESULT_SCHEMA))


def _renamed(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        if name in RESULT_COLUMNS:
            new = name + CLASH_SUFFIX
            if new in names or new in RESULT_COLUMNS:
                raise DataError(f"input columns {name!r} and {new!r} both clash with the output column {name!r}; rename one")
            name = new
        out.append(name)
    return out


def check_text_column(schema: pa.Schema, text_column: str, source: str) -> None:
    """The text column exists and holds strings (a DataError naming file and column if not)."""
    if text_column not in schema.names:
        raise DataError(
            f"{source}: no column {text_column!r}; the columns are {', '.join(map(repr, schema.names)) or 'none'} "
            "(choose one with --text-column)"
        )
    kind = schema.field(text_column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind)):
        raise DataError(f"{source}: column {text_column!r} holds {kind}, expected text (strings)")


def _is_string_view(kind: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(kind))


def _texts(table: pa.Table, text_column: str, source: str, first_row: int) -> list[str]:
    column = table.column(text_column)
    if column.null_count:
        i = pc.index(pc.is_null(column), True).as_py()
        raise DataError(f"{source}: row {first_row + i}, column {text_column!r}: empty (null), expected a message")
    texts = column.to_pylist()
    for i, text in enumerate(texts):  # a dictionary or view column still yields str
        if not isinstance(text, str):
            raise DataError(f"{source}: row {first_row + i}, column {text_column!r}: expected text, got {type(text).__name__}")
    return texts


def score_table(
    model: Model,
    table: pa.Table,
    policy: RoutingPolicy,
    text_column: str = "text",
    *,
    source: str = "input",
    first_row: int = 1,
) -> pa.Table:
    """Score and route every row of ``table``; returns it with the result columns appended
    (schema :func:`output_schema` of the table's). ``source`` and ``first_row`` only
    serve error messages."""
    check_text_column(table.schema, text_column, source)
    texts = _texts(table, text_column, source, first_row)
    predictions = []
    for start in range(0, len(texts), SCORE_SLICE):
        predictions.extend(model.score_batch(texts[start : start + SCORE_SLICE]))
    decisions = first_message_decisions(predictions, texts, policy)
    results = {
        "intent": [p.intent for p in predictions],
        "confidence": [p.confidence for p in predictions],
        "sentiment": [p.sentiment for p in predictions],
        "sentiment_confidence": [p.sentiment_confidence for p in predictions],
        "emotion": [p.emotion for p in predictions],
        "emotion_confidence": [p.emotion_confidence for p in predictions],
        "frustration": [p.frustration for p in predictions],
        "action": [d.action for d in decisions],
        "reasons": [list(d.reasons) for d in decisions],
    }
    columns = list(table.columns) + [pa.array(results[f.name], f.type) for f in RESULT_SCHEMA]
    return pa.Table.from_arrays(columns, schema=output_schema(table.schema.remove_metadata()))


# -- reading the input --------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    path: Path
    kind: Literal["csv", "parquet"]
    files: tuple[Path, ...]
    schema: pa.Schema  # without metadata; CSV columns are all strings
    rows: int | None  # known for Parquet (footer metadata), not for CSV


def _natural_key(path: Path) -> list[Any]:
    # part.2 before part.10, as the parts were written.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _csv_options(path: Path) -> dict[str, Any]:
    """How pandas and Dask read a delimited input: as ``nlu.data`` reads training data.

    TSV has no quoting (a message may start with a quote mark). ``index_col=False``: by
    default pandas takes a row one field longer than the header as an index column and
    shifts every cell, so the labels would be scored as the text.
    """
    tsv = path.suffix.lower() == ".tsv"
    return {
        "sep": CSV_SEPARATORS[path.suffix.lower()],
        "quoting": csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
        "index_col": False,
        "encoding": "utf-8",
    }


@contextlib.contextmanager
def _rows_fit_the_header(path: Path, where: Callable[[], str]) -> Iterator[None]:
    """With ``index_col=False`` pandas only warns, and drops the cells, when the first
    rows are longer than the header (later ones are a ParserError): make it an error."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            yield
        except pd.errors.ParserWarning:
            raise DataError(
                f"{path}: {where()}: a row has more fields than the header; "
                "quote a text that holds the delimiter, and end no line with one"
            ) from None


def open_input(path: str | Path, text_column: str = "text") -> _Input:
    """Find the input's files and schema, and check the text column, before any scoring."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.suffix in PARQUET_SUFFIXES and p.is_file() and not _hidden(p.relative_to(path))),
            key=_natural_key,
        )
        if not files:
            raise DataError(f"{path}: folder holds no Parquet files ({', '.join(PARQUET_SUFFIXES)})")
        kind: Literal["csv", "parquet"] = "parquet"
    elif not path.exists():
        raise DataError(f"{path}: input not found")
    elif path.suffix.lower() in CSV_SEPARATORS:
        files, kind = [path], "csv"
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        files, kind = [path], "parquet"
    else:
        raise DataError(f"{path}: unsupported input type {path.suffix or '(no extension)'}; use .csv, .tsv, .parquet or a folder of Parquet parts")

    rows: int | None = None
    if kind == "csv":
        import pandas as pd

        try:
            names = list(pd.read_csv(path, nrows=0, dtype=str, **_csv_options(path)).columns)
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            raise DataError(f"{path}: unreadable: {_one_line(exc)}") from None
        schema = pa.schema([(str(n), pa.string()) for n in names])
    else:
        schemas, rows = [], 0
        for f in files:
            try:
                meta = pq.read_metadata(f)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"{f}: unreadable Parquet: {_one_line(exc)}") from None
            schemas.append(meta.schema.to_arrow_schema().remove_metadata())
            rows += meta.num_rows
        try:
            schema = pa.unify_schemas(schemas)
        except pa.ArrowException as exc:
            raise DataError(f"{path}: Parquet parts have incompatible columns: {_one_line(exc)}") from None
    check_text_column(schema, text_column, str(path))
    _renamed(schema.names)  # refuse unresolvable column clashes before any work
    return _Input(path, kind, tuple(files), schema, rows)


def _is_part(relative: Path) -> bool:
    """A file that a folder of Parquet parts may hold: a part, or Dask's and Spark's own files."""
    return relative.suffix in PARQUET_SUFFIXES or _hidden(relative)


def _hidden(relative: Path) -> bool:
    # Dask and Spark keep _metadata, _SUCCESS, .crc files next to the parts.
    return any(part.startswith((".", "_")) for part in relative.parts)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class _Chunk:
    table: pa.Table
    source: str
    first_row: int
    fraction: float | None


def iter_chunks(source: _Input, chunk_size: int) -> Iterator[_Chunk]:
    """The input as tables of at most ``chunk_size`` rows, in file order, cast to
    ``source.schema``. Holds one chunk (plus the reader's buffer) in memory at a time."""
    if chunk_size < 1:
        raise ConfigError(f"chunk size must be at least 1, got {chunk_size}")
    if source.kind == "csv":
        yield from _csv_chunks(source, chunk_size)
        return
    done = 0
    for f in source.files:
        first_row = 1
        try:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=chunk_size):
                table = _conform(pa.Table.from_batches([batch]), source.schema, f)
                done += table.num_rows
                yield _Chunk(table, str(f), first_row, done / source.rows if source.rows else 1.0)
                first_row += table.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{f}: unreadable Parquet: {_one_line(exc)}") from None


def _conform(table: pa.Table, schema: pa.Schema, where: object) -> pa.Table:
    """Cast a part's table to the unified schema; a column a part lacks becomes nulls."""
    if table.schema.remove_metadata() == schema:
        return table.replace_schema_metadata(None)
    columns = []
    for field in schema:
        if field.name in table.column_names:
            try:
                columns.append(table.column(field.name).cast(field.type))
            except pa.ArrowException as exc:
                raise DataError(f"{where}: column {field.name!r} cannot be read as {field.type}: {_one_line(exc)}") from None
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _csv_chunks(source: _Input, chunk_size: int) -> Iterator[_Chunk]:
    import pandas as pd

    path = source.path
    size = path.stat().st_size or 1
    first_row = 1
    try:
        with path.open("rb") as fh, _rows_fit_the_header(path, lambda: f"near data row {first_row}"):
            # Every column as text and no NA guessing: "NA" or "" is a message, not a null.
            reader = pd.read_csv(
                fh, dtype=str, keep_default_na=False, na_filter=False, chunksize=chunk_size, **_csv_options(path)
            )
            with reader:
                for frame in reader:
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    table = _conform(table, source.schema, path)
                    # fh.tell() runs ahead by the parser's buffer: good enough for a bar.
                    yield _Chunk(table, str(path), first_row, min(fh.tell() / size, 1.0))
                    first_row += table.num_rows
    except (UnicodeDecodeError, ValueError) as exc:  # pandas' ParserError is a ValueError
        raise DataError(f"{path}: unreadable near data row {first_row}: {_one_line(exc)}") from None


# -- writing the output atomically ----------------------------------------------------------


def _check_output(output: Path, source: _Input, force: bool) -> None:
    if output.exists() and not force:
        raise DataError(f"{output}: already exists; pass --force to replace it")
    if output.is_dir() and not output.is_symlink():
        # --force replaces an earlier output (a file, or a folder of Parquet parts), never a
        # folder of other files: `score-batch in.csv reports --force` deleted reports/.
        other = next((p for p in sorted(output.rglob("*")) if not p.is_dir() and not _is_part(p.relative_to(output))), None)
        if other is not None:
            raise DataError(
                f"{output}: a folder that is not Parquet output (it holds {other.relative_to(output)}); "
                "--force replaces only a Parquet output, choose another output"
            )
    check_can_create(output)
    resolved = output.resolve()
    for f in (source.path, *source.files):
        f = f.resolve()
        if resolved == f or resolved in f.parents:
            raise DataError(f"{output}: would overwrite the input {f}; write the output elsewhere")


def _temporary_sibling(output: Path, directory: bool) -> Path:
    make_dirs(output.parent)
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
            tmp.chmod(0o755)  # mkdtemp makes it private; the output is shared like any other file
            return tmp
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
        os.close(fd)
        os.chmod(name, 0o644)
    except OSError as exc:
        raise OutputError(f"{output}: cannot write: {exc.strerror or exc}") from None
    return Path(name)


def _install(tmp: Path, output: Path, force: bool) -> None:
    """Move a finished temporary file or folder onto ``output`` (replacing it with ``force``)."""
    if output.exists() or output.is_symlink():
        if not force:
            raise DataError(f"{output}: already exists; pass --force to replace it")
        if tmp.is_dir() or (output.is_dir() and not output.is_symlink()):
            # rename() cannot put a folder over a file or a non-empty folder: move the
            # old output aside first, so OUTPUT is missing for a moment, never half-written.
            old = output.with_name(f".{output.name}.old")
            _discard(old)
            output.rename(old)
            tmp.rename(output)
            _discard(old)
            return
    os.replace(tmp, output)  # atomic for a file over a file


def _discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# -- the engines ----------------------------------------------------------------------------


def score_file(
    model: Model,
    input: str | Path,
    output: str | Path,
    *,
    engine: str = "local",
    text_column: str = "text",
    chunk_size: int = 50_000,
    policy: RoutingPolicy | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
    scheduler: Any = None,
    n_workers: int = 2,
) -> BatchResult:
    """Score every message of ``input`` and write Parquet to ``output``.

    ``engine="local"`` writes one Parquet file; ``engine="dask"`` writes a folder of
    parts. ``scheduler`` (dask only) is a scheduler address or a ``distributed.Client``;
    without one a ``LocalCluster`` of ``n_workers`` single-threaded worker processes is
    started and stopped. ``policy`` defaults to the model's production routing policy.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if scheduler is not None and engine != "dask":
        raise ConfigError("a Dask scheduler was given but the engine is local; use --engine dask")
    if chunk_size < 1:
        raise ConfigError(f"chunk size must be at least 1, got {chunk_size}")
    source = open_input(input, text_column)
    output = Path(output)
    _check_output(output, source, force)
    policy = policy if policy is not None else policy_for(model)
    if engine == "dask":
        return _score_dask(model, source, output, text_column, chunk_size, policy, force, progress, scheduler, n_workers)
    return _score_local(model, source, output, text_column, chunk_size, policy, force, progress)


def _score_local(
    model: Model,
    source: _Input,
    output: Path,
    text_column: str,
    chunk_size: int,
    policy: RoutingPolicy,
    force: bool,
    progress: ProgressCallback | None,
) -> BatchResult:
    started = time.perf_counter()
    schema = output_schema(source.schema)
    tmp = _temporary_sibling(output, directory=False)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in iter_chunks(source, chunk_size):
                scored = score_table(model, chunk.table, policy, text_column, source=chunk.source, first_row=chunk.first_row)
                writer.write_table(scored)
                rows += scored.num_rows
                if progress is not None:
                    progress(BatchProgress(rows, chunk.fraction))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        _install(tmp, output, force)
    except OSError as exc:  # disk full while writing: nothing is left behind
        _discard(tmp)
        raise OutputError(f"{output}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        _discard(tmp)
        raise
    return BatchResult(str(source.path), str(output), "local", rows, 1, time.perf_counter() - started)


# Dask ---------------------------------------------------------------------------------------


def _score_partition(
    frame: pd.DataFrame,
    model: Model,
    policy: RoutingPolicy,
    text_column: str,
    out_dir: str,
    in_schema: pa.Schema,
    chunk_size: int,
    source: str,
    partition_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Runs on a worker: score one partition, write it as ``part.NNNNN.parquet``, return
    its row count (the only thing that travels back to the client)."""
    import pandas as pd

    number = int(partition_info["number"]) if partition_info else 0
    where = f"{source} (partition {number})"
    # Back to the input's own Arrow types (Dask may widen string to large_string).
    table = _conform(pa.Table.from_pandas(frame, preserve_index=False), in_schema, where)
    # Score in slices of chunk_size so a large partition's feature matrix stays small.
    pieces = [
        score_table(model, table.slice(start, chunk_size), policy, text_column, source=where, first_row=start + 1)
        for start in range(0, table.num_rows, chunk_size)
    ]
    scored = pa.concat_tables(pieces) if pieces else output_schema(in_schema).empty_table()
    pq.write_table(scored, os.path.join(out_dir, f"part.{number:05d}.parquet"))
    return pd.DataFrame({"rows": [scored.num_rows]}, dtype="int64")


@contextlib.contextmanager
def _dask_client(scheduler: Any, n_workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler  # the caller's; the caller closes it
        return
    if scheduler is not None:
        try:
            client = Client(str(scheduler), timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the Dask scheduler at {scheduler}: {_one_line(exc)}") from None
        with client:
            yield client
        return
    if n_workers < 1:
        raise ConfigError(f"workers must be at least 1, got {n_workers}")
    # One thread per worker process: scoring is CPU-bound Python and numpy, so threads
    # in one process would fight over the GIL; processes use the cores.
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _read_dask(source: _Input, chunk_size: int) -> Any:
    """A Dask DataFrame of the input with partitions of about ``chunk_size`` rows, so
    the work spreads over the workers even when the input is one file."""
    import dask.dataframe as dd
    import pandas as pd

    # Arrow-backed columns (ArrowDtype) keep the input's Arrow types through pandas, so
    # the parts have the same schema as the local engine's file.
    if source.kind == "csv":
        path = source.path
        with path.open("rb") as fh:
            sample = fh.read(1 << 20)
        bytes_per_row = len(sample) / max(sample.count(b"\n"), 1)
        # Dask splits a CSV at newlines inside byte blocks: a quoted field holding a
        # newline would be cut in two. Such files need Parquet (or the local engine).
        # Dask parses a sample here, in the client, to learn the columns: a long first row
        # fails now. A block that starts with a long row warns on a worker and drops the
        # extra cells; the text column is intact.
        with _rows_fit_the_header(path, lambda: "in the first rows"):
            return dd.read_csv(
                str(path),
                dtype=pd.ArrowDtype(pa.string()),
                keep_default_na=False,
                na_filter=False,
                blocksize=max(1024, int(bytes_per_row * chunk_size)),
                **_csv_options(path),
            )
    groups = sum(pq.ParquetFile(f).metadata.num_row_groups for f in source.files)
    rows = source.rows or 0
    per_group = max(rows / max(groups, 1), 1.0)
    ddf = dd.read_parquet(
        [str(f) for f in source.files], split_row_groups=max(1, round(chunk_size / per_group)), dtype_backend="pyarrow"
    )
    wanted = math.ceil(rows / chunk_size) if rows else 1
    if ddf.npartitions < wanted:
        ddf = ddf.repartition(npartitions=wanted)
    return ddf


def _score_dask(
    model: Model,
    source: _Input,
    output: Path,
    text_column: str,
    chunk_size: int,
    policy: RoutingPolicy,
    force: bool,
    progress: ProgressCallback | None,
    scheduler: Any,
    n_workers: int,
) -> BatchResult:
    try:
        import pandas as pd
        from distributed import as_completed
    except ImportError:
        raise ConfigError("the dask engine needs Dask: pip install 'nlu[dask]'") from None

    started = time.perf_counter()
    try:
        ddf = _read_dask(source, chunk_size)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{source.path}: unreadable: {_one_line(exc)}") from None
    tmp = _temporary_sibling(output, directory=True)
    rows = 0
    try:
        with _dask_client(scheduler, n_workers) as client:
            # The model goes to every worker once: scattered from the client (which has
            # already verified it), broadcast to all workers, and passed to each task as a
            # reference to that worker's copy. The alternatives are worse: embedding the
            # model in the task graph ships it with every partition, and loading it from
            # MODEL_DIR in a worker plugin needs the model on a filesystem every worker
            # sees and repeats the sha256 check per worker. Workers that join later fetch
            # it from a peer that holds it.
            model_ref = client.scatter(model, broadcast=True, hash=False)
            counts = ddf.map_partitions(
                _score_partition,
                model_ref,
                policy,
                text_column,
                str(tmp),
                source.schema,
                chunk_size,
                str(source.path),
                meta=pd.DataFrame({"rows": pd.Series([], dtype="int64")}),
                enforce_metadata=False,
                align_dataframes=False,
            )
            futures = client.compute(counts.to_delayed())
            for done, future in enumerate(as_completed(futures), start=1):
                rows += int(future.result()["rows"].sum())
                if progress is not None:
                    progress(BatchProgress(rows, done / len(futures)))
            parts = len(futures)
            del model_ref
        _install(tmp, output, force)
    except BaseException:
        _discard(tmp)
        raise
    return BatchResult(str(source.path), str(output), "dask", rows, parts, time.perf_counter() - started)


def read_output(path: str | Path) -> pa.Table:
    """Read what :func:`score_file` wrote (a file, or a folder of parts in order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted((p for p in path.glob("*.parquet") if not _hidden(p.relative_to(path))), key=_natural_key)
        return pa.concat_tables([pq.read_table(f) for f in files])
    return pq.read_table(path)
