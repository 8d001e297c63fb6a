from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROWS, write_csv
from typer.testing import CliRunner

from nlu.batch import RESULT_COLUMNS, BatchProgress, read_output, score_file
from nlu.cli import app
from nlu.errors import ConfigError, DataError
from nlu.routing import first_message_decisions
from nlu.service import policy_for

TEXTS = [r[0] for r in ROWS]  # 36 messages
runner = CliRunner()
# dask's Parquet reader calls reset_index(inplace=True), deprecated in pandas 3.1.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")


def expected_rows(model: Any, texts: list[str]) -> list[dict[str, Any]]:
    predictions = model.score_batch(texts)
    decisions = first_message_decisions(predictions, texts, policy_for(model))
    return [
        {
            "intent": p.intent,
            "confidence": p.confidence,
            "sentiment": p.sentiment,
            "sentiment_confidence": p.sentiment_confidence,
            "emotion": p.emotion,
            "emotion_confidence": p.emotion_confidence,
            "frustration": p.frustration,
            "action": d.action,
            "reasons": list(d.reasons),
        }
        for p, d in zip(predictions, decisions, strict=True)
    ]


def results(table: pa.Table) -> list[dict[str, Any]]:
    return table.select(list(RESULT_COLUMNS)).to_pylist()


@pytest.fixture()
def messages_csv(tmp_path: Path) -> Path:
    # An id column to see that input columns come through, and the gold labels whose
    # names clash with the result columns.
    rows = [(str(i), *row) for i, row in enumerate(ROWS)]
    return write_csv(tmp_path / "messages.csv", rows, header=("id", "text", "intent", "sentiment", "emotion"))


def write_parquet(path: Path, texts: list[str], first_id: int = 0, **kwargs: Any) -> Path:
    ids = list(range(first_id, first_id + len(texts)))
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": texts}), path, **kwargs)
    return path


# -- local engine ------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 35, 36, 50_000], ids=lambda n: f"chunk{n}")
def test_batch_local_equals_score_batch(tiny_model: Any, messages_csv: Path, tmp_path: Path, chunk_size: int) -> None:
    seen: list[BatchProgress] = []
    result = score_file(tiny_model, messages_csv, tmp_path / "out.parquet", chunk_size=chunk_size, progress=seen.append)
    table = read_output(tmp_path / "out.parquet")
    assert result.rows == table.num_rows == len(TEXTS)
    assert results(table) == expected_rows(tiny_model, TEXTS)
    # Chunks of chunk_size rows, the last one shorter: the file is never read whole.
    steps = [b.rows - a.rows for a, b in zip([BatchProgress(0, 0.0), *seen], seen, strict=False)]
    assert steps == [min(chunk_size, len(TEXTS) - i) for i in range(0, len(TEXTS), chunk_size)]
    assert seen[-1].fraction == pytest.approx(1.0)


def test_batch_scoring_slices_do_not_change_results(tiny_model: Any, messages_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nlu.batch.SCORE_SLICE", 5)  # 36 rows: 7 slices, the last of 1
    score_file(tiny_model, messages_csv, tmp_path / "out.parquet", chunk_size=16)
    assert results(read_output(tmp_path / "out.parquet")) == expected_rows(tiny_model, TEXTS)


def test_batch_keeps_input_columns_and_renames_clashing_ones(tiny_model: Any, messages_csv: Path, tmp_path: Path) -> None:
    score_file(tiny_model, messages_csv, tmp_path / "out.parquet", chunk_size=10)
    table = read_output(tmp_path / "out.parquet")
    assert table.column_names == ["id", "text", "intent_input", "sentiment_input", "emotion_input", *RESULT_COLUMNS]
    assert table.column("id").to_pylist() == [str(i) for i in range(len(ROWS))]
    assert table.column("intent_input").to_pylist() == [r[1] for r in ROWS]
    assert table.schema.field("reasons").type == pa.list_(pa.string())


def test_batch_refuses_a_clash_it_cannot_rename(tiny_model: Any, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [("hola", "a", "b")], header=("text", "intent", "intent_input"))
    with pytest.raises(DataError, match="'intent_input'"):
        score_file(tiny_model, source, tmp_path / "out.parquet")


@pytest.mark.parametrize("chunk_size", [5, 100])
def test_batch_reads_parquet_file_and_folder_of_parts_in_order(tiny_model: Any, tmp_path: Path, chunk_size: int) -> None:
    single = write_parquet(tmp_path / "one.parquet", TEXTS, row_group_size=8)
    parts = tmp_path / "parts"
    parts.mkdir()
    # part.10 sorts before part.2 as text; the parts must be read as numbered.
    for number, (start, stop) in zip((1, 2, 10), ((0, 12), (12, 20), (20, 36)), strict=True):
        write_parquet(parts / f"part.{number}.parquet", TEXTS[start:stop], first_id=start)
    (parts / "_SUCCESS").write_text("")  # markers written by other engines are skipped
    for source in (single, parts):
        out = tmp_path / f"{source.stem}.out.parquet"
        result = score_file(tiny_model, source, out, chunk_size=chunk_size)
        table = read_output(out)
        assert result.rows == len(TEXTS)
        assert table.column("id").to_pylist() == list(range(len(TEXTS)))
        assert table.schema.field("id").type == pa.int64()
        assert results(table) == expected_rows(tiny_model, TEXTS)


def test_batch_parts_with_differing_columns_are_unified(tiny_model: Any, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(pa.table({"text": ["hola"], "canal": ["whatsapp"]}), parts / "a.parquet")
    pq.write_table(pa.table({"text": ["gracias"]}), parts / "b.parquet")
    score_file(tiny_model, parts, tmp_path / "out.parquet")
    assert read_output(tmp_path / "out.parquet").select(["text", "canal"]).to_pylist() == [
        {"text": "hola", "canal": "whatsapp"},
        {"text": "gracias", "canal": None},
    ]


def test_batch_empty_input_writes_an_empty_table(tiny_model: Any, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "empty.csv", [], header=("text",))
    result = score_file(tiny_model, source, tmp_path / "out.parquet")
    table = read_output(tmp_path / "out.parquet")
    assert result.rows == table.num_rows == 0
    assert table.column_names == ["text", *RESULT_COLUMNS]


def test_batch_csv_cells_are_text_not_missing_values(tiny_model: Any, tmp_path: Path) -> None:
    # pandas would read "NA", "null" and an empty cell as missing; they are messages.
    source = write_csv(tmp_path / "in.csv", [("NA",), ("null",), ("",), ("1234",)], header=("text",))
    score_file(tiny_model, source, tmp_path / "out.parquet")
    table = read_output(tmp_path / "out.parquet")
    assert table.column("text").to_pylist() == ["NA", "null", "", "1234"]
    assert results(table) == expected_rows(tiny_model, ["NA", "null", "", "1234"])


def test_batch_tsv_has_no_quoting_so_a_leading_quote_is_text(tiny_model: Any, tmp_path: Path) -> None:
    texts = ['"no funciona', "hola", '"gracias" dijo']
    path = tmp_path / "in.tsv"
    path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    score_file(tiny_model, path, tmp_path / "out.parquet")
    assert read_output(tmp_path / "out.parquet").column("text").to_pylist() == texts


def test_batch_other_text_column(tiny_model: Any, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(t,) for t in TEXTS[:5]], header=("mensaje",))
    score_file(tiny_model, source, tmp_path / "out.parquet", text_column="mensaje")
    assert results(read_output(tmp_path / "out.parquet")) == expected_rows(tiny_model, TEXTS[:5])


# -- output --------------------------------------------------------------------------------


def test_batch_refuses_existing_output_unless_forced(tiny_model: Any, messages_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(DataError, match="already exists; pass --force"):
        score_file(tiny_model, messages_csv, out)
    assert out.read_bytes() == b"keep me"
    score_file(tiny_model, messages_csv, out, force=True)
    assert read_output(out).num_rows == len(TEXTS)
    # A folder (what the dask engine writes) is replaced too.
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    score_file(tiny_model, messages_csv, folder, force=True)
    assert folder.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "messages.csv", "out.parquet"]


def test_batch_force_never_replaces_a_folder_of_other_files(tiny_model: Any, messages_csv: Path, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    (folder / "es").mkdir(parents=True)
    (folder / "es" / "report.html").write_text("keep me", encoding="utf-8")
    (folder / "part.0.parquet").write_bytes(b"")
    for engine in ("local", "dask"):
        with pytest.raises(DataError, match=r"reports: a folder that is not Parquet output \(it holds es/report\.html\)"):
            score_file(tiny_model, messages_csv, folder, engine=engine, force=True)
    assert (folder / "es" / "report.html").read_text(encoding="utf-8") == "keep me"
    # An earlier output of the dask engine is replaced, with Dask's and Spark's own files.
    (folder / "es" / "report.html").unlink()
    (folder / "_SUCCESS").write_bytes(b"")
    score_file(tiny_model, messages_csv, folder, force=True)
    assert folder.is_file()


def test_batch_refuses_to_overwrite_its_input(tiny_model: Any, messages_csv: Path) -> None:
    with pytest.raises(DataError, match="would overwrite the input"):
        score_file(tiny_model, messages_csv, messages_csv, force=True)
    assert messages_csv.read_text(encoding="utf-8").startswith("id,text")


def test_batch_failure_leaves_no_output_and_no_temporary_file(tiny_model: Any, tmp_path: Path) -> None:
    texts: list[str | None] = list(TEXTS)
    texts[30] = None  # in the fourth chunk, after three were written
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), tmp_path / "in.parquet")
    with pytest.raises(DataError, match=r"in\.parquet: row 31, column 'text': empty \(null\)"):
        score_file(tiny_model, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_size=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


# -- bad input -------------------------------------------------------------------------------


def _bad_inputs(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    yield "missing column", write_csv(tmp_path / "a.csv", [("hola",)], header=("mensaje",)), r"a\.csv: no column 'text'; the columns are 'mensaje'"
    numbers = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    yield "numbers", numbers, r"b\.parquet: column 'text' holds int64, expected text"
    garbage = tmp_path / "c.parquet"
    garbage.write_bytes(b"not parquet at all")
    yield "garbage parquet", garbage, r"c\.parquet: unreadable Parquet"
    latin1 = tmp_path / "d.csv"
    latin1.write_bytes("text\ncañón\n".encode("latin-1"))
    yield "not utf-8", latin1, r"d\.csv: unreadable"
    yield "not found", tmp_path / "nope.csv", r"nope\.csv: input not found"
    other = tmp_path / "e.xlsx"
    other.write_bytes(b"")
    yield "unsupported", other, r"e\.xlsx: unsupported input type \.xlsx"
    (tmp_path / "empty_dir").mkdir()
    yield "empty folder", tmp_path / "empty_dir", r"empty_dir: folder holds no Parquet files"
    # pandas took the first cell of such rows as an index and scored the labels as text
    trailing = tmp_path / "f.csv"
    trailing.write_text("text,intent\nhola,saludo,\nchao,despedida,\n", encoding="utf-8")
    yield "trailing comma", trailing, r"f\.csv: near data row 1: a row has more fields than the header"
    longer = tmp_path / "g.csv"
    longer.write_text("text,intent\nhola,saludo\nchao,despedida,x\n", encoding="utf-8")
    yield "long row", longer, r"g\.csv: unreadable near data row 1: .*Expected 2 fields in line 3, saw 3"


CASES = ["missing column", "numbers", "garbage parquet", "not utf-8", "not found", "unsupported", "empty folder", "trailing comma", "long row"]


@pytest.mark.parametrize("case", CASES)
def test_batch_bad_input_names_file_and_column(tiny_model: Any, tmp_path: Path, case: str) -> None:
    cases = {name: (path, pattern) for name, path, pattern in _bad_inputs(tmp_path)}
    path, pattern = cases[case]
    with pytest.raises(DataError, match=pattern):
        score_file(tiny_model, path, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"engine": "spark"}, "unknown engine 'spark'"),
        ({"scheduler": "tcp://127.0.0.1:8786"}, "use --engine dask"),
        ({"chunk_size": 0}, "chunk size must be at least 1"),
    ],
)
def test_batch_bad_options(tiny_model: Any, messages_csv: Path, tmp_path: Path, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        score_file(tiny_model, messages_csv, tmp_path / "out.parquet", **kwargs)


# -- CLI ---------------------------------------------------------------------------------------


def test_batch_cli_scores_and_refuses_to_overwrite(tiny_model_dir: Path, tiny_model: Any, messages_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    args = ["score-batch", str(tiny_model_dir), str(messages_csv), str(out), "--chunk-size", "7"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"scored {len(TEXTS)} messages" in result.stdout
    assert results(read_output(out)) == expected_rows(tiny_model, TEXTS)

    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {out}: already exists; pass --force to replace it"
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_batch_cli_missing_text_column_is_one_line(tiny_model_dir: Path, messages_csv: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["score-batch", str(tiny_model_dir), str(messages_csv), str(tmp_path / "o.parquet"), "--text-column", "body"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {messages_csv}: no column 'body'")


# -- Dask engine -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed", reason="the dask engine needs pip install 'nlu[dask]'")
    import logging

    # Two single-threaded workers in this process: the same scheduling, partitioning and
    # per-worker model copy as separate processes, without their start-up time.
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.mark.parametrize("fmt", ["csv", "parquet folder"])
def test_batch_dask_equals_local(tiny_model: Any, dask_client: Any, messages_csv: Path, tmp_path: Path, fmt: str) -> None:
    if fmt == "csv":
        source = messages_csv
    else:
        source = tmp_path / "parts"
        source.mkdir()
        write_parquet(source / "part.0.parquet", TEXTS[:20], row_group_size=4)
        write_parquet(source / "part.1.parquet", TEXTS[20:], first_id=20, row_group_size=4)
    local = score_file(tiny_model, source, tmp_path / "local.parquet", chunk_size=8)
    dask = score_file(tiny_model, source, tmp_path / "dask", engine="dask", scheduler=dask_client, chunk_size=8)
    assert dask.rows == local.rows == len(TEXTS)
    assert dask.parts >= 2  # the work was spread over partitions
    assert read_output(tmp_path / "dask").equals(read_output(tmp_path / "local.parquet"))
    assert sorted(p.name for p in (tmp_path / "dask").iterdir())[:2] == ["part.00000.parquet", "part.00001.parquet"]


def test_batch_dask_by_scheduler_address(tiny_model: Any, dask_client: Any, messages_csv: Path, tmp_path: Path) -> None:
    address = dask_client.scheduler.address
    seen: list[BatchProgress] = []
    result = score_file(tiny_model, messages_csv, tmp_path / "out", engine="dask", scheduler=address, chunk_size=10, progress=seen.append)
    assert result.rows == len(TEXTS)
    assert seen[-1] == BatchProgress(len(TEXTS), 1.0)
    assert results(read_output(tmp_path / "out")) == expected_rows(tiny_model, TEXTS)
    with pytest.raises(DataError, match="already exists"):
        score_file(tiny_model, messages_csv, tmp_path / "out", engine="dask", scheduler=address)
    # A folder of parts replaces a file with --force (and a file a folder, tested above).
    (tmp_path / "file.parquet").write_bytes(b"old")
    score_file(tiny_model, messages_csv, tmp_path / "file.parquet", engine="dask", scheduler=address, force=True)
    assert read_output(tmp_path / "file.parquet").num_rows == len(TEXTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.parquet", "messages.csv", "out"]


def test_batch_dask_bad_row_is_a_data_error(tiny_model: Any, dask_client: Any, tmp_path: Path) -> None:
    texts: list[str | None] = list(TEXTS)
    texts[13] = None
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), tmp_path / "in.parquet", row_group_size=10)
    with pytest.raises(DataError, match=r"in\.parquet \(partition 1\): row 4, column 'text': empty \(null\)"):
        score_file(tiny_model, tmp_path / "in.parquet", tmp_path / "out", engine="dask", scheduler=dask_client, chunk_size=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_batch_dask_unreachable_scheduler(tiny_model: Any, messages_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr("nlu.batch.CONNECT_TIMEOUT", "0.5s")
    with pytest.raises(ConfigError, match="cannot connect to the Dask scheduler at tcp://127.0.0.1:9"):
        score_file(tiny_model, messages_csv, tmp_path / "out", engine="dask", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "out").exists()


def test_batch_dask_local_cluster_of_processes(tiny_model_dir: Path, tiny_model: Any, messages_csv: Path, tmp_path: Path) -> None:
    """The CLI default: a LocalCluster of two worker processes, the model pickled to them."""
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    result = runner.invoke(app, ["score-batch", str(tiny_model_dir), str(messages_csv), str(out), "--engine", "dask", "--chunk-size", "10"])
    assert result.exit_code == 0, result.output
    assert results(read_output(out)) == expected_rows(tiny_model, TEXTS)
