"""The bad-input matrix: every door (CLI, Python API, HTTP) against the inputs callers get wrong.

Each rejected input must give a documented error (exit code 1 with one ``error:`` line, an
``NLUError`` subclass, or a 4xx with ``{"error": {"code", "message"}}``), never a traceback
or a 5xx, and must leave nothing behind: no ticket, no conversation turn, no stored
outcome. The table in docs/reliability.md is this file in prose; the counts there come
from ``pytest --collect-only`` of this file plus the inputs the loops below send.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import ROWS, write_csv
from http_kit import AUTH, BODY_LIMIT, JSON, SECRET, SETTINGS, TOKEN, VERIFY, WEBHOOK_LIMIT, RecordingSender, TestClient
from typer.testing import CliRunner

from nlu import load_model
from nlu.cli import app as cli_app
from nlu.errors import ArtifactError, InputError, NLUError
from nlu.server import create_app
from nlu.service import InboundMessage, Service
from nlu.whatsapp import sign

runner = CliRunner()


# -- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nlu.db"


@pytest.fixture
def service(tiny_model_dir: Path, db: Path) -> Iterator[Service]:
    with Service.from_paths(tiny_model_dir, db=db) as svc:
        yield svc


def stored(db: Path) -> dict[str, int]:
    """Rows in every table a request could write to (read through a separate connection)."""
    with sqlite3.connect(db) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("tickets", "conversations", "conversation_turns", "conversation_messages")
        }


NOTHING = {"tickets": 0, "conversations": 0, "conversation_turns": 0, "conversation_messages": 0}


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body


def wa_payload(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5215512345678"}],
        "messages": messages,
        **extra,
    }
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"value": value, "field": "messages"}]}]}


def wa_text(message_id: str, body: Any) -> dict[str, Any]:
    return {"from": "5215512345678", "id": message_id, "timestamp": "1732520000", "type": "text", "text": {"body": body}}


ESCALATING = {"conversation_id": "c1", "message_id": "m1", "text": "quiero hablar con una persona YA!!!"}


# -- CLI ------------------------------------------------------------------------------

def _bad_files(root: Path) -> dict[str, Path]:
    """One data file per way a data file goes wrong."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "missing": root / "missing.csv",
        "empty": root / "empty.csv",
        "wrong-columns": root / "wrong.csv",
        "invalid-utf8": root / "latin1.csv",
        "binary": root / "binary.csv",
        "unterminated-quote": root / "quote.csv",
        "no-extension": root / "chats",
        "unknown-extension": root / "chats.xlsx",
        "directory": root / "folder.csv",
        "bad-parquet": root / "bad.parquet",
        "bad-jsonl": root / "bad.jsonl",
        "not-rasa-yaml": root / "bad.yml",
    }
    files["empty"].write_bytes(b"")
    files["wrong-columns"].write_text("mensaje,etiqueta\nhola,saludo\n", encoding="utf-8")
    files["invalid-utf8"].write_bytes("text,intent\ncampa\xf1a de env\xedo,precio\n".encode("latin-1"))
    files["binary"].write_bytes(bytes(range(256)) * 4)
    files["unterminated-quote"].write_text('text,intent\n"hola,saludo\n', encoding="utf-8")
    files["no-extension"].write_text("text,intent\nhola,saludo\n", encoding="utf-8")
    files["unknown-extension"].write_text("text,intent\nhola,saludo\n", encoding="utf-8")
    files["directory"].mkdir()
    files["bad-parquet"].write_bytes(b"PAR1 this is not parquet")
    files["bad-jsonl"].write_text('{"text": "hola", "intent": "saludo"}\n{"text": 5}\n{not json\n', encoding="utf-8")
    files["not-rasa-yaml"].write_text("nlu: [1, 2\n", encoding="utf-8")
    return files


BAD_FILES = [
    "missing", "empty", "wrong-columns", "invalid-utf8", "binary", "unterminated-quote", "no-extension",
    "unknown-extension", "directory", "bad-parquet", "bad-jsonl", "not-rasa-yaml",
]
# score-batch reads CSV/TSV/Parquet only: for JSONL and YAML the refusal is the extension.
DATA_COMMANDS = ["train", "data check", "evaluate", "thresholds", "score-batch"]


def _cli(args: list[str], input: str | bytes | None = None) -> Any:
    result = runner.invoke(cli_app, args, input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_clean_failure(result: Any, *needles: str) -> None:
    """Exit 1, one "error: ..." line on stderr naming what is wrong, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_bad_input_cli_data_files(command: str, kind: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    path = _bad_files(tmp_path / "in")[kind]
    args = {
        "train": ["train", str(path), "--out", str(tmp_path / "model"), "-q"],
        "data check": ["data", "check", str(path)],
        "evaluate": ["evaluate", str(tiny_model_dir), str(path), "--out", str(tmp_path / "report"), "-q"],
        "thresholds": ["thresholds", str(tiny_model_dir), str(path)],
        "score-batch": ["score-batch", str(tiny_model_dir), str(path), str(tmp_path / "out.parquet"), "-q"],
    }[command]
    assert_clean_failure(_cli(args), path.name)
    # Nothing half-written.
    assert not (tmp_path / "model").exists() and not (tmp_path / "report").exists() and not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["score", "{tmp}/nope", "hola"], "model directory not found"),
        (["score", "{tmp}/in/empty.csv", "hola"], "model directory not found"),
        (["score", "{tmp}/in", "hola"], "meta.json"),
        (["score", "{model}", "\udcff\udcfe hola"], "not valid UTF-8"),  # undecodable argv bytes
        (["score-batch", "{model}", "{tmp}/ok.csv", "{tmp}/o.parquet", "--text-column", "mensaje", "-q"], "mensaje"),
        (["score-batch", "{model}", "{tmp}/ok.csv", "{tmp}/o.parquet", "--engine", "spark", "-q"], "spark"),
        (["train", "{tmp}/ok.csv", "--out", "{tmp}/m", "--cv", "1", "-q"], "cv"),
        (["train", "{tmp}/ok.csv", "--out", "{tmp}/m", "--config", "{tmp}/none.toml", "-q"], "none.toml"),
        (["train", "{tmp}/ok.csv", "--out", "{tmp}/m", "--config", "{tmp}/in/binary.csv", "-q"], "cannot read config"),
        (["train", "{tmp}/ok.csv", "--out", "{model}", "-q"], "already exists"),
        (["evaluate", "{model}"], "data file"),
        (["evaluate", "{model}", "{tmp}/ok.csv"], "--out"),
        (["queue", "list", "--db", "{tmp}/in/binary.csv"], "not a database"),
        (["queue", "list", "--db", "ftp://x/y"], "unsupported scheme"),
        (["queue", "list", "--status", "perdido", "--db", "{tmp}/q.db"], "perdido"),
        (["queue", "claim", "--agent", "  ", "--db", "{tmp}/q.db"], "agent"),
    (["queue", "claim", "--agent", "\udcff", "--db", "{tmp}/q.db"], "agent holds U+DCFF"),  # was UnicodeEncodeError
    (["queue", "claim", "--agent", "a\x00", "--db", "{tmp}/q.db"], "agent holds U+0000"),
        (["queue", "resolve", "7", "--agent", "ana", "--db", "{tmp}/q.db"], "no ticket 7"),
        (["queue", "release", "7", "--agent", "ana", "--db", "{tmp}/q.db"], "no ticket 7"),
    ],
    ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else v,
)
def test_bad_input_cli_arguments(args: list[str], needle: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    _bad_files(tmp_path / "in")
    write_csv(tmp_path / "ok.csv", ROWS[:8])
    args = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in args]
    assert_clean_failure(_cli(args), needle)


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        (b"hola\n\xff\xfe adios\n", "stdin line 2: not valid UTF-8"),
        (b"\xc3\x28\n", "stdin line 1"),
        (b"hola\n" + "adiós".encode("latin-1") + b"\n", "stdin line 2"),
    ],
)
def test_bad_input_cli_score_stdin_invalid_utf8(stdin: bytes, needle: str, tiny_model_dir: Path) -> None:
    assert_clean_failure(_cli(["score", str(tiny_model_dir), "-"], input=stdin), needle)


@pytest.mark.parametrize("text", ["", "   ", "\x00", "😡" * 500, "a" * 200_000, "\u202eRTL\u0301"], ids=["empty", "blank", "nul", "emoji", "huge", "rtl"])
def test_bad_input_cli_score_odd_text_is_scored(text: str, tiny_model_dir: Path) -> None:
    # The library scores any string (an empty one gets the prior-like, low-confidence
    # ranking); refusing empty text is a policy of the HTTP door, not of `nlu score`.
    result = _cli(["score", str(tiny_model_dir), text])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["text"] == text and 0.0 <= out["confidence"] <= 1.0


def test_bad_input_cli_score_stdin_bom_and_crlf(tiny_model_dir: Path) -> None:
    result = _cli(["score", str(tiny_model_dir), "-"], input="\ufeffhola\r\nadiós\r\n".encode())
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["hola", "adiós"]


# -- Python API -----------------------------------------------------------------------

NON_TEXTS = [None, 3, 3.5, True, b"hola", bytearray(b"hola"), ["hola"], {"text": "hola"}, object()]


@pytest.mark.parametrize("value", NON_TEXTS, ids=lambda v: type(v).__name__)
def test_bad_input_api_score_refuses_non_strings(tiny_model: Any, value: Any) -> None:
    with pytest.raises(InputError, match="expected a string"):
        tiny_model.score(value)


@pytest.mark.parametrize(
    "texts",
    [None, "hola", b"hola", 3, {"a": "hola"}, iter(["hola"]), (t for t in ["hola"]), ["hola", None], ["hola", 3], [b"x"], [["hola"]]],
    ids=["none", "bare-string", "bytes", "int", "dict", "iterator", "generator", "with-none", "with-int", "with-bytes", "nested"],
)
def test_bad_input_api_score_batch_refuses(tiny_model: Any, texts: Any) -> None:
    with pytest.raises(InputError):
        tiny_model.score_batch(texts)


@pytest.mark.parametrize(
    "texts",
    [[], [""], ["   "], ["\x00\x01"], ["\ud800"], ["a" * 1_000_000], ["😡👍🏽🇲🇽" * 10_000], ("hola", "adios"), np.array(["hola", "adios"])],
    ids=["empty-list", "empty", "blank", "control", "lone-surrogate", "1M-chars", "emoji", "tuple", "numpy"],
)
def test_bad_input_api_score_batch_accepts_any_strings(tiny_model: Any, texts: Any) -> None:
    predictions = tiny_model.score_batch(texts)
    assert len(predictions) == len(texts)
    for p in predictions:
        assert p.intent is not None and 0.0 <= p.confidence <= 1.0
        assert abs(sum(prob for _, prob in p.ranking) - 1.0) < 1e-6


@pytest.mark.parametrize(
    "where", [None, 3, b"/tmp", "", "/no/such/model", "{model}/meta.json", "{model}/.."], ids=["none", "int", "bytes", "empty", "missing", "a-file", "parent"]
)
def test_bad_input_api_load_model_refuses(where: Any, tiny_model_dir: Path) -> None:
    if isinstance(where, str):
        where = where.format(model=tiny_model_dir)
    with pytest.raises(ArtifactError):
        load_model(where)


@pytest.mark.parametrize(
    "fields",
    [
        ("", "m1", "hola", None),
        ("   ", "m1", "hola", None),
        (None, "m1", "hola", None),
        (5, "m1", "hola", None),
        ("c1", "", "hola", None),
        ("c1", "m1", None, None),
        ("c1", "m1", b"hola", None),
        ("c1", "m1", "", None),
        ("c1", "m1", "   ", None),
        ("c1", "m1", "a" * 4097, None),
        ("c" * 513, "m1", "hola", None),
        ("c1", "m1", "hola", 5),
        ("c1", "m1", "hola", "b" * 257),
    ],
)
def test_bad_input_api_inbound_message_refuses(fields: tuple[Any, ...], service: Service, db: Path) -> None:
    with pytest.raises(InputError):
        InboundMessage(*fields)
    assert stored(db) == NOTHING


@pytest.mark.parametrize(
    "raw",
    [None, [], "hola", {"conversation_id": "c"}, {**ESCALATING, "canal": "wa"}, {**ESCALATING, "text": 5}],
    ids=["none", "list", "string", "missing", "unknown-field", "wrong-type"],
)
def test_bad_input_api_message_from_dict_refuses(raw: Any) -> None:
    with pytest.raises(InputError):
        InboundMessage.from_dict(raw)


@pytest.mark.parametrize("message", [None, "hola", ESCALATING, ("c1", "m1", "hola")], ids=["none", "string", "dict", "tuple"])
def test_bad_input_api_service_handle_refuses(message: Any, service: Service, db: Path) -> None:
    with pytest.raises(InputError):
        service.handle(message)
    assert stored(db) == NOTHING


# -- HTTP: the generic matrix over every JSON route -------------------------------------

VALID = {
    "/v1/score": {"text": "hola"},
    "/v1/messages": ESCALATING,
    "/v1/queue/claim": {"agent": "ana"},
    "/v1/queue/1/resolve": {"agent": "ana"},
    "/v1/queue/1/release": {"agent": "ana"},
    "/v1/queue/1/messages": {"agent": "ana", "text": "hola"},
}
POST_ROUTES = [*VALID, "/webhooks/whatsapp"]

# (id, raw body, (status, code) on /v1/*, (status, code) on the signed webhook)
GENERIC_BODIES: list[tuple[str, bytes, tuple[int, str], tuple[int, str]]] = [
    ("empty", b"", (400, "invalid_json"), (400, "invalid_json")),
    ("whitespace", b" \n\t ", (400, "invalid_json"), (400, "invalid_json")),
    ("truncated", b'{"text": "hola"', (400, "invalid_json"), (400, "invalid_json")),
    ("trailing-garbage", b'{"text": "hola"} x', (400, "invalid_json"), (400, "invalid_json")),
    ("single-quotes", b"{'text': 'hola'}", (400, "invalid_json"), (400, "invalid_json")),
    ("invalid-utf8", b'{"text": "\xff\xfe"}', (400, "invalid_json"), (400, "invalid_json")),
    ("latin1", '{"text": "campaña"}'.encode("latin-1"), (400, "invalid_json"), (400, "invalid_json")),
    ("binary", bytes(range(256)), (400, "invalid_json"), (400, "invalid_json")),
    ("deep-nesting", b"[" * 100_00, (400, "invalid_json"), (400, "invalid_json")),
    ("nan", b"NaN", (422, "invalid_type"), (422, "invalid_payload")),
    ("infinity", b"-Infinity", (422, "invalid_type"), (422, "invalid_payload")),
    ("null", b"null", (422, "invalid_type"), (422, "invalid_payload")),
    ("list", b'[{"text": "hola"}]', (422, "invalid_type"), (422, "invalid_payload")),
    ("string", b'"hola"', (422, "invalid_type"), (422, "invalid_payload")),
    ("number", b"42", (422, "invalid_type"), (422, "invalid_payload")),
    ("bool", b"true", (422, "invalid_type"), (422, "invalid_payload")),
]


@pytest.mark.parametrize("case", GENERIC_BODIES, ids=[c[0] for c in GENERIC_BODIES])
@pytest.mark.parametrize("path", POST_ROUTES)
def test_bad_input_http_generic_bodies(client: TestClient, db: Path, sender: RecordingSender, path: str, case: Any) -> None:
    name, raw, on_api, on_webhook = case
    if path == "/webhooks/whatsapp":
        status, code = on_webhook
        headers = {**JSON, "X-Hub-Signature-256": sign(SECRET, raw)}  # signed: the parser is what is tested
    else:
        status, code = on_api
        headers = {**JSON, **AUTH}
    assert_error(client.post(path, content=raw, headers=headers), status, code)
    assert stored(db) == NOTHING and sender.sent == []


@pytest.mark.parametrize("path", list(VALID))
@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "text/json", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx"],
)
def test_bad_input_http_wrong_content_type(client: TestClient, db: Path, path: str, content_type: str | None) -> None:
    headers = dict(AUTH) if content_type is None else {**AUTH, "Content-Type": content_type}
    assert_error(client.post(path, content=json.dumps(VALID[path]).encode(), headers=headers), 415, "unsupported_media_type")
    assert stored(db) == NOTHING


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json"])
def test_bad_input_http_json_content_type_variants_accepted(client: TestClient, content_type: str) -> None:
    assert client.post("/v1/score", content=b'{"text": "hola"}', headers={"Content-Type": content_type}).status_code == 200


@pytest.mark.parametrize("path", list(VALID))
def test_bad_input_http_unknown_fields_are_422(client: TestClient, db: Path, path: str) -> None:
    # Decision: /v1/* bodies are strict (a misspelt "texto" must not be silently ignored).
    body = {**VALID[path], "texto": "hola"}
    assert_error(client.post(path, json=body, headers=AUTH), 422, "unknown_field")
    assert stored(db) == NOTHING


def test_bad_input_http_webhook_unknown_fields_are_ignored(client: TestClient) -> None:
    # Decision: the webhook is lenient about fields it does not read, because Meta adds
    # fields to its notifications without notice; the ones it reads are type-checked.
    payload = wa_payload([{**wa_text("wamid.U1", "hola"), "nuevo_campo": {"x": 1}}], extra_field=[1, 2])
    payload["nuevo"] = True
    raw = json.dumps(payload).encode()
    r = client.post("/webhooks/whatsapp", content=raw, headers={**JSON, "X-Hub-Signature-256": sign(SECRET, raw)})
    assert r.status_code == 200 and r.json()["messages"][0]["message_id"] == "wamid.U1"


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_bad_input_http_huge_bodies_are_413(client: TestClient, db: Path, path: str, how: str) -> None:
    limit = WEBHOOK_LIMIT if path == "/webhooks/whatsapp" else BODY_LIMIT
    raw = json.dumps({**VALID.get(path, {}), "text": "a" * (limit + 10)}).encode()
    headers = {**JSON, **AUTH, "X-Hub-Signature-256": sign(SECRET, raw)}
    if how == "chunked":
        content: Any = (raw[i : i + 4096] for i in range(0, len(raw), 4096))  # no Content-Length
    else:
        content = raw
    assert_error(client.post(path, content=content, headers=headers), 413, "body_too_large")
    assert stored(db) == NOTHING


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "", "0x10"])
@pytest.mark.parametrize("path", ["/v1/score", "/webhooks/whatsapp"])
def test_bad_input_http_malformed_content_length(client: TestClient, path: str, value: str) -> None:
    r = client.post(path, content=b'{"text": "hola"}', headers={**JSON, "Content-Length": value})
    assert r.status_code in (400, 413) and r.json()["error"]["code"] in ("invalid_content_length", "body_too_large")


# -- HTTP: per-route fields ---------------------------------------------------------------

SCORE_BODIES = [
    ({}, "missing_field"),
    ({"text": None}, "invalid_type"),
    ({"text": 3}, "invalid_type"),
    ({"text": 3.5}, "invalid_type"),
    ({"text": True}, "invalid_type"),
    ({"text": ["hola"]}, "invalid_type"),
    ({"text": {"body": "hola"}}, "invalid_type"),
    ({"text": ""}, "empty_text"),
    ({"text": " \t\n\u00a0"}, "empty_text"),
    ({"text": "\ud83d"}, "invalid_text"),
    ({"text": "a" * 4097}, "text_too_long"),
    ({"texts": None}, "invalid_type"),
    ({"texts": "hola"}, "invalid_type"),
    ({"texts": {"0": "hola"}}, "invalid_type"),
    ({"texts": []}, "empty_batch"),
    ({"texts": ["hola", None]}, "invalid_type"),
    ({"texts": ["hola", 1]}, "invalid_type"),
    ({"texts": ["hola", ""]}, "empty_text"),
    ({"texts": ["hola", "   "]}, "empty_text"),
    ({"texts": ["hola", "a" * 4097]}, "text_too_long"),
    ({"texts": ["hola"] * 257}, "batch_too_large"),
    ({"texts": ["hola"] * 5_000}, "batch_too_large"),
    ({"text": "hola", "texts": ["hola"]}, "conflicting_fields"),
    ({"text": "hola", "top": "3"}, "invalid_type"),
    ({"text": "hola", "top": 3.0}, "invalid_type"),
    ({"text": "hola", "top": 0}, "invalid_value"),
    ({"text": "hola", "top": 51}, "invalid_value"),
    ({"text": "hola", "top": None}, "invalid_type"),
]


@pytest.mark.parametrize(("body", "code"), SCORE_BODIES, ids=[f"{i}-{c}" for i, (_, c) in enumerate(SCORE_BODIES)])
def test_bad_input_http_score_fields(client: TestClient, body: Any, code: str) -> None:
    assert_error(client.post("/v1/score", content=json.dumps(body).encode(), headers=JSON), 422, code)


MESSAGE_BODIES = [
    ({"message_id": "m1", "text": "hola"}, "missing_field"),
    ({"conversation_id": "c1", "text": "hola"}, "missing_field"),
    ({"conversation_id": "c1", "message_id": "m1"}, "missing_field"),
    ({**ESCALATING, "conversation_id": None}, "invalid_type"),
    ({**ESCALATING, "conversation_id": 5215512345678}, "invalid_type"),
    ({**ESCALATING, "message_id": ["m1"]}, "invalid_type"),
    ({**ESCALATING, "text": None}, "invalid_type"),
    ({**ESCALATING, "text": 1}, "invalid_type"),
    ({**ESCALATING, "text": {"body": "hola"}}, "invalid_type"),
    ({**ESCALATING, "text": ""}, "empty_text"),
    ({**ESCALATING, "text": " \n "}, "empty_text"),
    ({**ESCALATING, "text": "\udc00 hola"}, "invalid_text"),
    ({**ESCALATING, "text": "a" * 4097}, "text_too_long"),
    ({**ESCALATING, "conversation_id": ""}, "empty_field"),
    ({**ESCALATING, "conversation_id": "   "}, "empty_field"),
    ({**ESCALATING, "message_id": "\t"}, "empty_field"),
    ({**ESCALATING, "message_id": "\ud800"}, "invalid_text"),
    ({**ESCALATING, "conversation_id": "c" * 513}, "field_too_long"),
    ({**ESCALATING, "button_id": 3}, "invalid_type"),
    ({**ESCALATING, "button_id": ""}, "empty_field"),
    ({**ESCALATING, "button_id": "b" * 257}, "field_too_long"),
    ({**ESCALATING, "canal": "whatsapp"}, "unknown_field"),
]


@pytest.mark.parametrize(("body", "code"), MESSAGE_BODIES, ids=[f"{i}-{c}" for i, (_, c) in enumerate(MESSAGE_BODIES)])
def test_bad_input_http_messages_fields_store_nothing(client: TestClient, db: Path, body: Any, code: str) -> None:
    assert_error(client.post("/v1/messages", content=json.dumps(body).encode(), headers=JSON), 422, code)
    assert stored(db) == NOTHING


AGENT_BODIES = [
    ("/v1/queue/claim", {}, "missing_field"),
    ("/v1/queue/claim", {"agent": None}, "invalid_type"),
    ("/v1/queue/claim", {"agent": 7}, "invalid_type"),
    ("/v1/queue/claim", {"agent": ""}, "empty_field"),
    ("/v1/queue/claim", {"agent": "  "}, "empty_field"),
    ("/v1/queue/claim", {"agent": "a" * 129}, "field_too_long"),
    ("/v1/queue/claim", {"agent": "\ud800"}, "invalid_text"),
    ("/v1/queue/claim", {"agent": "ana\u0000"}, "invalid_text"),
    ("/v1/queue/claim", {"agent": "ana\u001b[8m"}, "invalid_text"),
    ("/v1/queue/claim", {"agent": "ana\nluis"}, "invalid_text"),
    ("/v1/queue/claim", {"agent": "\u202eana"}, "invalid_text"),
    ("/v1/queue/1/release", {"agent": "ana\u009b"}, "invalid_text"),
    ("/v1/queue/1/resolve", {"agent": "ana", "resolution": "ok \udc00"}, "invalid_text"),
    ("/v1/queue/1/resolve", {"agent": "ana", "resolution": "ok\u0000"}, "invalid_text"),
    ("/v1/queue/claim", {"agent": "ana", "lease_seconds": 9}, "invalid_value"),
    ("/v1/queue/claim", {"agent": "ana", "lease_seconds": 86401}, "invalid_value"),
    ("/v1/queue/claim", {"agent": "ana", "lease_seconds": "60"}, "invalid_type"),
    ("/v1/queue/claim", {"agent": "ana", "lease_seconds": 60.5}, "invalid_type"),
    ("/v1/queue/claim", {"agent": "ana", "lease_seconds": None}, "invalid_type"),
    ("/v1/queue/claim", {"agent": "ana", "priority": 1}, "unknown_field"),
    ("/v1/queue/1/resolve", {}, "missing_field"),
    ("/v1/queue/1/resolve", {"agent": "ana", "resolution": 3}, "invalid_type"),
    ("/v1/queue/1/resolve", {"agent": "ana", "resolution": "x" * 4097}, "text_too_long"),
    ("/v1/queue/1/resolve", {"agent": ["ana"]}, "invalid_type"),
    ("/v1/queue/1/release", {"agent": True}, "invalid_type"),
    ("/v1/queue/1/release", {"agent": "ana", "resolution": "x"}, "unknown_field"),
    ("/v1/queue/abc/resolve", {"agent": "ana"}, "invalid_type"),
    ("/v1/queue/1.5/release", {"agent": "ana"}, "invalid_type"),
    ("/v1/queue/999/resolve", {"agent": "ana"}, "unknown_ticket"),
    ("/v1/queue/0/release", {"agent": "ana"}, "invalid_value"),
    ("/v1/queue/-1/release", {"agent": "ana"}, "invalid_value"),
    ("/v1/queue/9223372036854775808/resolve", {"agent": "ana"}, "invalid_value"),  # past SQLite's int64
    ("/v1/queue/99999999999999999999999/resolve", {"agent": "ana"}, "invalid_value"),
    ("/v1/queue/1/messages", {"agent": "ana"}, "missing_field"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": ""}, "empty_text"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": " \n"}, "empty_text"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": None}, "invalid_type"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "x" * 4097}, "text_too_long"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "hola \ud83d"}, "invalid_text"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "hola\u001b[2J"}, "invalid_text"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "hola", "message_id": ""}, "empty_field"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "hola", "message_id": "a\nb"}, "invalid_text"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "hola", "message_id": "m" * 129}, "field_too_long"),
    ("/v1/queue/1/messages", {"agent": "ana", "text": "hola", "to": "5215512345678"}, "unknown_field"),
    ("/v1/queue/999/messages", {"agent": "ana", "text": "hola"}, "unknown_ticket"),
]


@pytest.mark.parametrize(("path", "body", "code"), AGENT_BODIES, ids=[f"{i}-{c}" for i, (_, _, c) in enumerate(AGENT_BODIES)])
def test_bad_input_http_agent_fields(client: TestClient, db: Path, path: str, body: Any, code: str) -> None:
    r = client.post(path, content=json.dumps(body).encode(), headers={**JSON, **AUTH})
    assert_error(r, 404 if code == "unknown_ticket" else 422, code)
    assert stored(db)["tickets"] == 0


@pytest.mark.parametrize(
    "query",
    ["status=lost", "status=", "limit=0", "limit=501", "limit=-1", "limit=many", "limit=1.5", "status=queued&limit=1e3"],
)
def test_bad_input_http_queue_list_query(client: TestClient, query: str) -> None:
    r = client.get(f"/v1/queue?{query}", headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_value", "invalid_type")


def test_bad_input_http_utf16_json_with_bom_is_read(client: TestClient) -> None:
    # Lenient on purpose: Python's JSON reader detects UTF-16/32 from the BOM (RFC 8259
    # allows readers to); anything else that is not UTF-8 is invalid_json (above).
    r = client.post("/v1/score", content='{"text": "hola"}'.encode("utf-16"), headers=JSON)
    assert r.status_code == 200


def test_bad_input_http_queue_list_ignores_unknown_query_parameters(client: TestClient) -> None:
    # Query strings are lenient (proxies and caches add parameters); bodies are strict.
    assert client.get("/v1/queue?utm_source=x", headers=AUTH).status_code == 200


AGENT_ROUTES = [
    ("GET", "/v1/queue"), ("POST", "/v1/queue/claim"), ("POST", "/v1/queue/1/resolve"), ("POST", "/v1/queue/1/release"),
    ("POST", "/v1/queue/1/messages"),
]
TOKENS = [
    (None, "missing_token"),
    ("", "missing_token"),
    ("Bearer", "invalid_token"),
    ("Bearer ", "invalid_token"),
    ("Bearer nope", "invalid_token"),
    (f"Bearer {TOKEN}x", "invalid_token"),
    (f"Bearer {TOKEN[:-1]}", "invalid_token"),
    (f"Bearer {TOKEN.upper()}", "invalid_token"),
    (f"Basic {TOKEN}", "invalid_token"),
    (f"Token {TOKEN}", "invalid_token"),
    (TOKEN, "invalid_token"),
    ("Bearer " + "é" * 23, "invalid_token"),
]


@pytest.mark.parametrize(("header", "code"), TOKENS, ids=[f"{i}-{c}" for i, (_, c) in enumerate(TOKENS)])
@pytest.mark.parametrize(("method", "path"), AGENT_ROUTES)
def test_bad_input_http_agent_token(client: TestClient, service: Service, db: Path, method: str, path: str, header: str | None, code: str) -> None:
    client.post("/v1/messages", json={"conversation_id": "c1", "message_id": "m0", "text": "", "button_id": "consent:yes"})
    client.post("/v1/messages", json=ESCALATING)
    before = stored(db)
    headers: dict[str, Any] = {**JSON}
    if header is not None:
        headers["Authorization"] = header.encode("utf-8") if not header.isascii() else header
    body = {"agent": "ana"} if method == "POST" else None
    r = client.request(method, path, json=body, headers=headers)
    assert_error(r, 401, code)
    assert stored(db) == before and service.queue.get(1).status == "queued"  # nothing claimed or changed


VERIFY_QUERIES = [
    {},
    {"hub.mode": "subscribe"},
    {"hub.mode": "subscribe", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.verify_token": VERIFY},
    {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.verify_token": VERIFY + "x", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.verify_token": VERIFY.upper(), "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
    {"hub.mode": "", "hub.verify_token": VERIFY, "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": ""},
    {"hub.mode": "subscribe", "hub.verify_token": "ñandú", "hub.challenge": "1"},
]


@pytest.mark.parametrize("query", VERIFY_QUERIES)
def test_bad_input_http_webhook_verify(client: TestClient, query: dict[str, str]) -> None:
    assert_error(client.get("/webhooks/whatsapp", params=query), 403, "verification_failed")


def test_bad_input_http_webhook_verify_long_challenge(client: TestClient) -> None:
    r = client.get("/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "x" * 257})
    assert_error(r, 422, "field_too_long")


SIGNATURES = [
    (None, 401, "missing_signature"),
    ("", 401, "missing_signature"),
    ("   ", 401, "missing_signature"),
    ("sha256=", 403, "invalid_signature"),
    ("sha256=" + "0" * 64, 403, "invalid_signature"),
    ("sha256=" + "0" * 63, 403, "invalid_signature"),
    ("sha256=" + "0" * 65, 403, "invalid_signature"),
    ("sha1=" + "0" * 40, 403, "invalid_signature"),
    ("SHA256", 403, "invalid_signature"),
    ("garbage", 403, "invalid_signature"),
    ("sha256=" + "zz" * 32, 403, "invalid_signature"),
    ("sha256=" + "é" * 64, 403, "invalid_signature"),
    ("other-secret", 403, "invalid_signature"),
    ("signed-other-body", 403, "invalid_signature"),
]


@pytest.mark.parametrize(("signature", "status", "code"), SIGNATURES, ids=[f"{i}-{c}" for i, (_, _, c) in enumerate(SIGNATURES)])
def test_bad_input_http_webhook_signature_stores_nothing(
    client: TestClient, db: Path, sender: RecordingSender, signature: str | None, status: int, code: str
) -> None:
    raw = json.dumps(wa_payload([wa_text("wamid.S1", "quiero hablar con una persona")])).encode()
    headers: dict[str, Any] = {**JSON}
    if signature == "other-secret":
        signature = sign("not-the-secret", raw)
    elif signature == "signed-other-body":
        signature = sign(SECRET, raw.replace(b"persona", b"PERSONA"))
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature.encode("latin-1") if not signature.isascii() else signature
    assert_error(client.post("/webhooks/whatsapp", content=raw, headers=headers), status, code)
    assert stored(db) == NOTHING and sender.sent == []


WEBHOOK_PAYLOADS = [
    {"object": "page", "entry": []},
    {"entry": []},
    {"object": "whatsapp_business_account", "entry": {}},
    {"object": "whatsapp_business_account", "entry": "x"},
    {"object": "whatsapp_business_account", "entry": [None]},
    {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": None}]}]},
    {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"messages": "x"}}]}]},
    {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": 3}}]}]},
]


@pytest.mark.parametrize("payload", WEBHOOK_PAYLOADS, ids=[f"payload-{i}" for i in range(len(WEBHOOK_PAYLOADS))])
def test_bad_input_http_webhook_signed_malformed_stores_nothing(client: TestClient, db: Path, sender: RecordingSender, payload: Any) -> None:
    raw = json.dumps(payload).encode()
    assert_error(client.post("/webhooks/whatsapp", content=raw, headers={**JSON, "X-Hub-Signature-256": sign(SECRET, raw)}), 422, "invalid_payload")
    assert stored(db) == NOTHING and sender.sent == []


# A broken message inside a well-formed notification: only that message is refused.
WEBHOOK_BAD_MESSAGES = [
    {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"messages": [None]}}]}]},
    wa_payload([{"id": "w", "type": "text", "text": {"body": "hola"}, "from": 5}]),
    wa_payload([wa_text("wamid.T1", 5)]),
    wa_payload([wa_text("wamid.T2", None)]),
    wa_payload([wa_text("wamid.T3", ["hola"])]),
    wa_payload([{**wa_text("wamid.T4", "hola"), "id": None}]),
    wa_payload([{**wa_text("wamid.T5", "hola"), "text": "hola"}]),
]


@pytest.mark.parametrize("payload", WEBHOOK_BAD_MESSAGES, ids=[f"message-{i}" for i in range(len(WEBHOOK_BAD_MESSAGES))])
def test_bad_input_http_webhook_signed_malformed_message_is_acknowledged_not_stored(
    client: TestClient, db: Path, sender: RecordingSender, payload: Any
) -> None:
    # Acknowledged (a 422 made Meta redeliver the whole batch, good messages included,
    # for days) and listed as ignored with the JSON path of the mistake.
    raw = json.dumps(payload).encode()
    r = client.post("/webhooks/whatsapp", content=raw, headers={**JSON, "X-Hub-Signature-256": sign(SECRET, raw)})
    assert r.status_code == 200 and r.json()["messages"] == []
    [ignored] = r.json()["ignored"]
    assert ignored["reason"] == "invalid_message" and "messages[0]" in ignored["message"]
    assert stored(db) == NOTHING and sender.sent == []


@pytest.mark.parametrize(
    "body", ["", "   ", "\ud800 hola"], ids=["empty", "blank", "lone-surrogate"]
)
def test_bad_input_http_webhook_unusable_message_is_acknowledged_not_stored(
    client: TestClient, db: Path, sender: RecordingSender, body: str
) -> None:
    # Retrying cannot fix these, so the webhook answers 200 (Meta stops redelivering) and
    # lists the message as ignored; nothing is stored and nothing is sent.
    raw = json.dumps(wa_payload([wa_text("wamid.X1", body)])).encode()
    r = client.post("/webhooks/whatsapp", content=raw, headers={**JSON, "X-Hub-Signature-256": sign(SECRET, raw)})
    assert r.status_code == 200 and r.json()["messages"] == [] and r.json()["ignored"]
    assert stored(db) == NOTHING and sender.sent == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/score", 405), ("PUT", "/v1/messages", 405), ("DELETE", "/v1/queue/1/resolve", 405),
        ("PATCH", "/webhooks/whatsapp", 405), ("POST", "/healthz", 405), ("POST", "/metrics", 405), ("HEAD", "/healthz", 405),
        ("GET", "/v1/nada", 404), ("GET", "/", 404), ("GET", "/v1/queue/1", 404), ("GET", "/../etc/passwd", 404),
    ],
)
def test_bad_input_http_wrong_method_or_path(client: TestClient, method: str, path: str, status: int) -> None:
    r = client.request(method, path, headers=AUTH)
    assert r.status_code == status
    if method != "HEAD":
        assert r.json()["error"]["code"] in ("method_not_allowed", "not_found")


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_bad_input_http_operations_ignore_query_and_body(client: TestClient, path: str) -> None:
    r = client.request("GET", path + "?x=1&y=%ff", content=b"\xff garbage", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200


def test_bad_input_http_retried_rejection_then_valid_message_is_stored_once(client: TestClient, db: Path) -> None:
    # A rejected request must not "use up" its message id: the corrected retry is handled.
    client.post("/v1/messages", json={"conversation_id": "c1", "message_id": "m0", "text": "", "button_id": "consent:yes"})
    assert_error(client.post("/v1/messages", json={**ESCALATING, "text": 5}), 422, "invalid_type")
    r = client.post("/v1/messages", json=ESCALATING)
    assert r.status_code == 200 and r.json()["action"] == "escalate" and r.json()["duplicate"] is False
    assert stored(db)["tickets"] == 1


# -- the raw ASGI door: how much of a refused body is read --------------------------------


def _drive(app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: int, chunk: bytes) -> tuple[int, int]:
    """Call the ASGI app with a body of ``chunks`` x ``chunk``; return (status, bytes pulled)."""
    pulled = 0
    sent = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled, sent
        if sent >= chunks:
            return {"type": "http.disconnect"}
        sent += 1
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < chunks}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    return status, pulled


@pytest.mark.parametrize("path", ["/v1/score", "/v1/messages", "/webhooks/whatsapp"])
def test_bad_input_http_oversized_body_is_refused_before_it_is_read(service: Service, path: str) -> None:
    app = create_app(service, SETTINGS, sender=RecordingSender())
    chunk = b"a" * 8192
    # Declared too large: refused from the header, not one byte pulled.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(100 * 1024 * 1024).encode())]
    assert _drive(app, path, headers, 12_800, chunk) == (413, 0)
    # Chunked (no Content-Length), 100 MiB on offer: reading stops just past the limit.
    status, pulled = _drive(app, path, [(b"content-type", b"application/json")], 12_800, chunk)
    limit = WEBHOOK_LIMIT if path == "/webhooks/whatsapp" else BODY_LIMIT
    assert status == 413 and pulled <= limit + len(chunk)


def test_bad_input_all_errors_are_nlu_errors() -> None:
    # The API door's promise: one catchable root for every refusal above.
    assert issubclass(InputError, NLUError) and issubclass(ArtifactError, NLUError)
