from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROWS, write_csv

from nlu import DataError
from nlu.data import check_data, drop_conflicts, load_data, load_training_data, parse_column_map


def test_data_reads_every_format_alike(tmp_path: Path, tiny_csv: Path) -> None:
    frame = pd.read_csv(tiny_csv, dtype=str)
    tsv = tmp_path / "d.tsv"
    frame.to_csv(tsv, sep="\t", index=False)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in frame.to_dict("records")), encoding="utf-8")
    parquet = tmp_path / "d.parquet"
    frame.to_parquet(parquet)
    texts = load_data([tiny_csv]).frame["text"].tolist()
    for path in (tsv, jsonl, parquet):
        dataset = load_data([path])
        assert dataset.frame["text"].tolist() == texts
        assert dataset.heads == ("intent", "sentiment", "emotion")


def test_data_reads_rasa_yaml(tmp_path: Path) -> None:
    path = tmp_path / "nlu.yml"
    path.write_text(
        'version: "3.1"\nnlu:\n- intent: saludo\n  examples: |\n    - hola\n    - buenas [tardes](momento)\n'
        "- intent: despedida\n  examples: |\n    - chao\n    - nos vemos\n- synonym: cdmx\n  examples: |\n    - df\n",
        encoding="utf-8",
    )
    dataset = load_data([path])
    assert dataset.frame["text"].tolist() == ["hola", "buenas tardes", "chao", "nos vemos"]
    assert dataset.frame["intent"].tolist() == ["saludo", "saludo", "despedida", "despedida"]
    assert dataset.heads == ("intent",)


def test_data_empty_cell_means_unlabelled_for_that_head(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("hola", "saludo", ""), ("chao", "despedida", "neutral"), ("buenas", "saludo", ""), ("adiós", "despedida", "neutral")], ("text", "intent", "sentiment"))
    dataset = load_training_data([path])
    assert len(dataset.labelled("intent")) == 4
    assert len(dataset.labelled("sentiment")) == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "texto,intent\nhola,saludo\n", "missing column 'text'"),
        ("a.csv", "text,foo\nhola,x\n", "no label column"),
        ("a.csv", "", "file is empty"),
        ("a.txt", "hola", "unsupported file type .txt"),
        ("a.jsonl", '{"text": "hola", "intent": "saludo"}\n{"text": "chao",\n', "line 2: invalid JSON"),
        ("a.jsonl", '{"text": 3, "intent": "saludo"}\n', "line 1, column text: expected a string"),
        ("a.jsonl", '["hola"]\n', "line 1: expected a JSON object"),
        ("a.yml", "foo: bar\n", "expected a top-level 'nlu:' list"),
        ("a.yml", "nlu: [\n", "invalid YAML"),
        ("a.parquet", "not parquet", "cannot read as Parquet"),
    ],
)
def test_data_structural_errors_name_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_data([path])
    assert str(path) in str(info.value)


def test_data_unreadable_encoding_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,intent\nhola,saludo\ncanción,otro\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: line 3: not valid UTF-8"):
        load_data([path])


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_data_unreadable_encoding_names_the_byte_within_its_line(tmp_path: Path, bom: bytes) -> None:
    # "line 3 (byte 6)" is the 6th byte of line 3, as for stdin, not the offset in the file.
    path = tmp_path / "latin1.csv"
    path.write_bytes(bom + "text,intent\nhola,saludo\ncanción,otro\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: line 3: not valid UTF-8 \(byte 6\)"):
        load_data([path])


def test_data_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_data([tmp_path / "nope.csv"])


def test_data_check_reports_each_problem_with_place_and_column(tmp_path: Path) -> None:
    rows = [
        ("hola", "saludo"), ("buenas", "saludo"),
        ("   ", "saludo"),  # empty text, line 4
        ("chao", "despedida"), ("nos vemos", "despedida"),
        ("solo una vez", "raro"),  # rare label, line 7
        ("Hola", "despedida"),  # conflicts with line 2, line 8
        ("buenas", "saludo"),  # duplicate with the same label
    ]
    path = write_csv(tmp_path / "d.csv", rows, ("text", "intent"))
    report = check_data(load_data([path]))
    assert not report.ok
    errors = "\n".join(report.errors)
    assert f"{path}: line 4, column text: empty text" in errors
    assert f"{path}: line 7, column intent: label 'raro' has 1 example(s)" in errors
    assert f"{path}: line 8, column intent: text 'Hola' is labelled 'despedida' here and 'saludo' at {path}: line 2" in errors
    assert report.duplicates == 2  # "Hola" (case folded) and "buenas" repeat earlier texts
    assert report.label_counts["intent"]["saludo"] == 4
    with pytest.raises(DataError, match="empty text"):
        load_training_data([path])


def test_data_check_clean_file_is_ok(tiny_csv: Path) -> None:
    report = check_data(load_data([tiny_csv]))
    assert report.ok, report.errors
    assert report.rows == len(ROWS)
    assert report.files[0].sha256 and len(report.files[0].sha256) == 64


def test_data_several_files_keep_their_own_places(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", [("hola", "saludo"), ("chao", "despedida")], ("text", "intent"))
    b = write_csv(tmp_path / "b.csv", [("buenas", "saludo"), ("", "despedida")], ("text", "intent"))
    report = check_data(load_data([a, b]))
    assert any(e.startswith(f"{b}: line 3, column text") for e in report.errors)


def test_data_drop_conflicts_clears_only_the_conflicting_head(tmp_path: Path) -> None:
    rows = [
        ("hola buenas", "saludo", "neutral", "others"),
        ("Hola  BUENAS", "saludo", "positive", "others"),  # same text once case and spacing are folded
        ("gracias", "agradecimiento", "positive", "joy"),
    ]
    dataset = load_data([write_csv(tmp_path / "c.csv", rows)])
    assert any("labelled 'positive' here and 'neutral'" in e for e in check_data(dataset).errors)

    cleaned, dropped = drop_conflicts(dataset)

    assert dropped == {"sentiment": 1}
    frame = cleaned.frame
    assert frame["sentiment"].tolist() == ["", "", "positive"]  # both labels go: neither can be trusted
    assert frame["intent"].tolist() == ["saludo", "saludo", "agradecimiento"]  # other heads keep theirs
    assert not [e for e in check_data(cleaned).errors if "labelled" in e]
    assert dataset.frame["sentiment"].tolist()[:2] == ["neutral", "positive"]  # the input is not modified


def test_data_drop_conflicts_without_conflicts_changes_nothing(tiny_csv: Path) -> None:
    dataset = load_data([tiny_csv])
    cleaned, dropped = drop_conflicts(dataset)
    assert dropped == {}
    pd.testing.assert_frame_equal(cleaned.frame, dataset.frame)


def test_data_train_checks_a_dataset_built_in_code_like_a_file(tmp_path: Path) -> None:
    from nlu.train import train

    rows = [*ROWS, (ROWS[0][0], "despedida", ROWS[0][2], ROWS[0][3])]
    with pytest.raises(DataError, match="is labelled 'despedida' here"):
        train(load_data([write_csv(tmp_path / "c.csv", rows)]))


def test_data_check_header_only_file_is_a_problem_not_ok(tmp_path: Path, tiny_csv: Path) -> None:
    empty = write_csv(tmp_path / "empty.csv", [])
    assert check_data(load_data([empty])).errors == (f"{empty}: no data rows",)
    # Beside real data, an empty file is only worth a warning: the rest still trains.
    report = check_data(load_data([empty, tiny_csv]))
    assert not report.errors and f"{empty}: no data rows" in report.warnings


def test_data_missing_text_column_lists_only_the_files_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [("hola", "saludo")], ("txt", "intent"))
    with pytest.raises(DataError, match=r"missing column 'text' \(columns found: txt, intent\)$"):
        load_data([path])


def test_data_column_map_reads_third_party_columns_in_every_format(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["1", "2"], "tweet": ["qué asco de vuelo", "me encantó"], "label": ["N", "P"]})
    csv_path, jsonl_path, parquet_path = tmp_path / "t.csv", tmp_path / "t.jsonl", tmp_path / "t.parquet"
    frame.to_csv(csv_path, index=False)
    jsonl_path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in frame.to_dict("records")), encoding="utf-8")
    frame.to_parquet(parquet_path)
    for path in (csv_path, jsonl_path, parquet_path):
        dataset = load_data([path], columns={"tweet": "text", "label": "sentiment"})
        assert dataset.frame["text"].tolist() == ["qué asco de vuelo", "me encantó"]
        assert dataset.frame["sentiment"].tolist() == ["N", "P"]
        assert dataset.heads == ("sentiment",)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"twet": "text", "label": "sentiment"}, r"t.csv: no column 'twet' to map to 'text' \(columns found: tweet, label, text_es\)"),
        ({"tweet": "txt"}, "'txt' is not one of text, intent, sentiment, emotion"),
        ({"tweet": "text", "text_es": "text"}, "both 'tweet' and 'text_es' are mapped to 'text'"),
    ],
)
def test_data_column_map_errors_name_the_column(tmp_path: Path, columns: dict[str, str], message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text("tweet,label,text_es\nhola,P,hola\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_data([path], columns=columns)


def test_data_column_map_refuses_to_shadow_an_existing_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,tweet,intent\nhola,buenas,saludo\n", encoding="utf-8")
    with pytest.raises(DataError, match="t.csv: column 'text' exists and another column is mapped to it"):
        load_data([path], columns={"tweet": "text"})


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["tweet=text"], {"tweet": "text"}),
        ([" tweet = text ", "label=sentiment"], {"tweet": "text", "label": "sentiment"}),
        ([], {}),
    ],
)
def test_data_parse_column_map(specs: list[str], expected: dict[str, str]) -> None:
    assert parse_column_map(specs) == expected


@pytest.mark.parametrize(
    ("specs", "message"),
    [(["tweet"], "expected FILE_COLUMN=COLUMN"), (["=text"], "expected FILE_COLUMN=COLUMN"), (["a=text", "a=intent"], "'a' is mapped twice")],
)
def test_data_parse_column_map_rejects_malformed_specs(specs: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_column_map(specs)


def test_data_parquet_number_in_text_column_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "n.parquet"
    pd.DataFrame({"text": [None, 7], "intent": ["saludo", "saludo"]}).to_parquet(path)  # a float column
    with pytest.raises(DataError, match="n.parquet: row 2, column text: expected a string, got float"):
        load_data([path])


# --- delimited files: every cell lands in its own column, and places are physical lines ---


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # pandas took a trailing comma on every row as an index column and shifted the labels
        ("text,intent\nhola,saludo,\nchao,despedida,\n", "line 2: 3 fields but the header has 2"),
        ("text,intent\nhola,saludo\nchao,despedida,x\n", "line 3: 3 fields but the header has 2"),
        ("text,intent,intent\nhola,saludo,otro\n", "column 'intent' appears twice in the header"),
        ('text,intent\n"no" funciona,queja\n', "line 2: cannot parse as CSV"),
        ('text,intent\nhola,saludo\n"chao,despedida\nadiós,despedida\n', "line 3: cannot parse as CSV"),
    ],
)
def test_data_csv_row_that_does_not_fit_the_header_names_its_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_data([path])
    assert str(path) in str(info.value)


def test_data_csv_short_row_is_unlabelled_not_shifted(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,intent,sentiment\nhola,saludo\nchao,despedida,neutral\n", encoding="utf-8")
    frame = load_data([path]).frame
    assert frame["intent"].tolist() == ["saludo", "despedida"]
    assert frame["sentiment"].tolist() == ["", "neutral"]


def test_data_places_are_physical_lines_after_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        'text,intent\n\nhola,saludo\n"una línea\ny otra",saludo\n\n\n"",saludo\nchao,despedida\n', encoding="utf-8"
    )
    dataset = load_data([path])
    assert dataset.frame["_where"].tolist() == ["line 3", "line 4", "line 8", "line 9"]
    assert dataset.frame["text"].tolist()[1] == "una línea y otra"  # clean() folds the newline
    assert any(e.startswith(f"{path}: line 8, column text: empty text") for e in check_data(dataset).errors)


def test_data_tsv_has_no_quoting_so_a_leading_quote_is_text(tmp_path: Path) -> None:
    # An unmatched quote used to swallow every following row into one cell.
    path = tmp_path / "d.tsv"
    path.write_text('text\tintent\n"no funciona\tqueja\nhola\tsaludo\n"gracias" dijo\tagradecer\n', encoding="utf-8")
    frame = load_data([path]).frame
    assert frame["text"].tolist() == ['"no funciona', "hola", '"gracias" dijo']
    assert frame["intent"].tolist() == ["queja", "saludo", "agradecer"]


def test_data_jsonl_splits_records_on_newlines_only(tmp_path: Path) -> None:
    # json.dumps(ensure_ascii=False) writes U+2028 and U+0085 raw; str.splitlines cut records there.
    records = [{"text": "hola\u2028buenas", "intent": "saludo"}, {"text": "chao\x85adiós", "intent": "despedida"}]
    path = tmp_path / "d.jsonl"
    path.write_bytes("\r\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode())
    dataset = load_data([path])
    assert dataset.frame["intent"].tolist() == ["saludo", "despedida"]
    assert dataset.frame["_where"].tolist() == ["line 1", "line 2"]
