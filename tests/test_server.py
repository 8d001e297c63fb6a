"""The HTTP service, in-process through the ASGI app, plus one real `nlu serve` process."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_kit import AUTH, SECRET, SETTINGS, TOKEN, VERIFY, RecordingSender, TestClient, serving
from typer.testing import CliRunner

from nlu.cli import app as cli_app
from nlu.errors import ConfigError, QueueUnavailable
from nlu.metrics_http import Metrics
from nlu.server import (
    ENV_AGENT_TOKEN,
    ENV_APP_SECRET,
    ENV_VERIFY_TOKEN,
    ServerSettings,
    _RedactQuery,
    create_app,
    load_service,
)
from nlu.service import Service
from nlu.whatsapp import LogSender, PayloadError, Signature, check_signature, parse_webhook, sign

WA_ID = "5215512345678"


# -- helpers ----------------------------------------------------------------------------


def wa_text(message_id: str, body: str, wa_id: str = WA_ID) -> dict[str, Any]:
    return {"from": wa_id, "id": message_id, "timestamp": "1732520000", "type": "text", "text": {"body": body}}


def wa_choice(message_id: str, kind: str, choice_id: str, title: str, wa_id: str = WA_ID) -> dict[str, Any]:
    picked = {"id": choice_id, "title": title}
    if kind == "list_reply":
        picked["description"] = "opción"
    return {
        "from": wa_id, "id": message_id, "timestamp": "1732520001", "type": "interactive",
        "context": {"from": "15550001111", "id": "wamid.bot-question"},
        "interactive": {"type": kind, kind: picked},
    }


def wa_payload(messages: list[dict[str, Any]] | None = None, statuses: list[dict[str, Any]] | None = None, wa_id: str = WA_ID) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"}}
    if messages:
        value["contacts"] = [{"profile": {"name": "Ana"}, "wa_id": wa_id}]
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}]}


def post_webhook(client: TestClient, payload: Any, secret: str = SECRET, raw: bytes | None = None, signature: str | None = "sign") -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Hub-Signature-256"] = sign(secret, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return client.post("/webhooks/whatsapp", content=body, headers=headers)


def consent(client: TestClient, conversation: str = "c1") -> None:
    r = client.post("/v1/messages", json={"conversation_id": conversation, "message_id": f"{conversation}-consent", "text": "", "button_id": "consent:yes"})
    assert r.status_code == 200 and r.json()["reasons"] == ["consent_granted"]


def escalate(client: TestClient, conversation: str = "c1", message_id: str = "m-esc") -> dict[str, Any]:
    consent(client, conversation)
    r = client.post("/v1/messages", json={"conversation_id": conversation, "message_id": message_id, "text": "quiero hablar con una persona"})
    assert r.status_code == 200 and r.json()["action"] == "escalate"
    return r.json()


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]


# -- scoring ---------------------------------------------------------------------------


def test_server_worker_is_warm_before_taking_traffic(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A worker pays the featuriser's one-off set-up at start-up, for single messages and
    # for batches (their path needs the bigram table), not on its first requests.
    service = load_service(ServerSettings(model_dir=str(tiny_model_dir), db=str(tmp_path / "nlu.db")))
    try:
        runtime = service.model.featurizer._runtime()
        assert runtime.bigrams is not None
        assert "quiero" in runtime.chunks
    finally:
        service.close()


def test_server_score_one_text(client: TestClient) -> None:
    r = client.post("/v1/score", json={"text": "dónde está mi pedido #A-48213??"})
    assert r.status_code == 200
    body = r.json()
    assert body["prediction"]["intent"] == "estado_pedido"
    assert len(body["prediction"]["ranking"]) == 3
    assert 0.0 <= body["prediction"]["frustration"] <= 1.0


def test_server_score_batch_keeps_order(client: TestClient) -> None:
    texts = ["hola buenas", "cuánto cuesta la licuadora?", "mil gracias!!"]
    r = client.post("/v1/score", json={"texts": texts, "top": 1})
    assert r.status_code == 200
    predictions = r.json()["predictions"]
    assert [p["intent"] for p in predictions] == ["saludo", "precio_producto", "agradecimiento"]
    assert all(len(p["ranking"]) == 1 for p in predictions)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "missing_field"),
        ({"text": 3}, 422, "invalid_type"),
        ({"text": None}, 422, "invalid_type"),
        ({"text": ["hola"]}, 422, "invalid_type"),
        ({"texts": "hola"}, 422, "invalid_type"),
        ({"texts": ["hola", 2]}, 422, "invalid_type"),
        ({"text": ""}, 422, "empty_text"),
        ({"text": "  \n\t "}, 422, "empty_text"),
        ({"texts": ["hola", " "]}, 422, "empty_text"),
        ({"texts": []}, 422, "empty_batch"),
        ({"text": "a" * 4097}, 422, "text_too_long"),
        ({"texts": ["hola", "a" * 4097]}, 422, "text_too_long"),
        ({"texts": ["hola"] * 257}, 422, "batch_too_large"),
        ({"text": "hola", "texts": ["hola"]}, 422, "conflicting_fields"),
        ({"text": "hola", "lang": "es"}, 422, "unknown_field"),
        ({"text": "hola", "top": "3"}, 422, "invalid_type"),
        ({"text": "hola", "top": 0}, 422, "invalid_value"),
        ([{"text": "hola"}], 422, "invalid_type"),
        ("hola", 422, "invalid_type"),
        (None, 422, "invalid_type"),
    ],
)
def test_server_score_rejects_bad_bodies(client: TestClient, body: Any, status: int, code: str) -> None:
    assert_error(client.post("/v1/score", content=json.dumps(body), headers={"Content-Type": "application/json"}), status, code)


def test_server_score_limits_are_inclusive(client: TestClient) -> None:
    assert client.post("/v1/score", json={"text": "a" * 4096}).status_code == 200
    assert client.post("/v1/score", json={"texts": ["hola"] * 256}).status_code == 200


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"text": "hola"', "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[" * 50_000, "invalid_json"),
        (b'{"text": "\\ud83d"}', "invalid_text"),  # a lone surrogate cannot be stored or sent
    ],
    ids=["truncated", "empty", "invalid-utf8", "deep-nesting", "lone-surrogate"],
)
def test_server_unparseable_bodies(client: TestClient, raw: bytes, code: str) -> None:
    r = client.post("/v1/score", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400 if code == "invalid_json" else 422, code)


JSON_POSTS = ["/v1/score", "/v1/messages", "/v1/queue/claim", "/v1/queue/1/resolve", "/v1/queue/1/release"]


@pytest.mark.parametrize("path", JSON_POSTS)
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_server_wrong_content_type_is_415(client: TestClient, path: str, content_type: str | None) -> None:
    headers = {**AUTH} if content_type is None else {**AUTH, "Content-Type": content_type}
    assert_error(client.post(path, content=b'{"text": "hola"}', headers=headers), 415, "unsupported_media_type")


def test_server_json_with_charset_is_accepted(client: TestClient) -> None:
    r = client.post("/v1/score", content=b'{"text": "hola"}', headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/v1/score", "/webhooks/whatsapp"])
def test_server_body_over_limit_refused_from_content_length(client: TestClient, path: str) -> None:
    big = b'{"text": "' + b"a" * 70_000 + b'"}'
    r = client.post(path, content=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "body_too_large")


@pytest.mark.parametrize("path", ["/v1/score", "/webhooks/whatsapp"])
def test_server_body_over_limit_refused_while_streaming(client: TestClient, path: str) -> None:
    # A generator body is sent chunked, with no Content-Length to check up front.
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(100):
            yield b"a" * 1024
        yield b'"}'

    r = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "body_too_large")


# -- messages --------------------------------------------------------------------------


def test_server_messages_consent_then_answer(client: TestClient) -> None:
    r = client.post("/v1/messages", json={"conversation_id": "c1", "message_id": "m1", "text": "hola"})
    assert r.status_code == 200
    first = r.json()
    assert first["action"] == "answer" and first["reasons"] == ["no_consent"]
    reply = first["reply"]
    assert reply["messaging_product"] == "whatsapp" and reply["to"] == "c1" and reply["type"] == "interactive"
    assert [b["reply"]["id"] for b in reply["interactive"]["action"]["buttons"]] == ["consent:yes", "consent:no"]

    consent(client)
    r = client.post("/v1/messages", json={"conversation_id": "c1", "message_id": "m2", "text": "cuánto cuesta la licuadora oster?"})
    body = r.json()
    assert body["action"] == "answer" and body["intent"] == "precio_producto"
    assert body["reply"]["type"] == "text" and body["reply"]["text"]["body"]
    assert body["prediction"]["intent"] == "precio_producto" and body["ticket"] is None and body["duplicate"] is False


def test_server_messages_retry_is_answered_once(client: TestClient, service: Service) -> None:
    first = escalate(client, message_id="m-esc")
    again = client.post("/v1/messages", json={"conversation_id": "c1", "message_id": "m-esc", "text": "quiero hablar con una persona"}).json()
    assert again["duplicate"] is True and again["action"] == "escalate"
    assert again["ticket"]["id"] == first["ticket"]["id"]
    assert len(service.queue.list()) == 1


def test_server_messages_while_person_holds_conversation(client: TestClient) -> None:
    escalate(client)
    r = client.post("/v1/messages", json={"conversation_id": "c1", "message_id": "m-after", "text": "hola? sigue ahí alguien?"})
    assert r.status_code == 200 and r.json()["action"] == "handover" and r.json()["reply"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"message_id": "m", "text": "hola"}, "missing_field"),
        ({"conversation_id": "c", "text": "hola"}, "missing_field"),
        ({"conversation_id": "c", "message_id": "m"}, "missing_field"),
        ({"conversation_id": 5, "message_id": "m", "text": "hola"}, "invalid_type"),
        ({"conversation_id": "c", "message_id": "m", "text": 1.5}, "invalid_type"),
        ({"conversation_id": "c", "message_id": "m", "text": None}, "invalid_type"),
        ({"conversation_id": "c", "message_id": "m", "text": "   "}, "empty_text"),
        ({"conversation_id": " ", "message_id": "m", "text": "hola"}, "empty_field"),
        ({"conversation_id": "", "message_id": "m", "text": "hola"}, "empty_field"),
        ({"conversation_id": "c", "message_id": "m", "text": "a" * 4097}, "text_too_long"),
        ({"conversation_id": "c" * 513, "message_id": "m", "text": "hola"}, "field_too_long"),
        ({"conversation_id": "c", "message_id": "m", "text": "hola", "channel": "wa"}, "unknown_field"),
        ({"conversation_id": "c", "message_id": "m", "text": "hola", "button_id": 3}, "invalid_type"),
    ],
)
def test_server_messages_rejects_bad_bodies(client: TestClient, body: dict[str, Any], code: str) -> None:
    assert_error(client.post("/v1/messages", json=body), 422, code)


# -- agents ----------------------------------------------------------------------------

AGENT_CALLS = [
    ("GET", "/v1/queue", None),
    ("POST", "/v1/queue/claim", {"agent": "ana"}),
    ("POST", "/v1/queue/1/resolve", {"agent": "ana"}),
    ("POST", "/v1/queue/1/release", {"agent": "ana"}),
]


@pytest.mark.parametrize(("method", "path", "body"), AGENT_CALLS)
@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_token"),
        ("Bearer nope", "invalid_token"),
        (f"Bearer {TOKEN}x", "invalid_token"),
        (f"Basic {TOKEN}", "invalid_token"),
        (f"Bearer {TOKEN[:-1]}", "invalid_token"),
        ("Bearer", "invalid_token"),
    ],
)
def test_server_agent_routes_need_the_token(client: TestClient, method: str, path: str, body: Any, header: str | None, code: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    # Auth is checked first: even a malformed body gets 401, not 400.
    r = client.request(method, path, content=b"{not json", headers={**headers, "Content-Type": "application/json"})
    assert_error(r, 401, code)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_server_queue_claim_resolve_release(client: TestClient) -> None:
    ticket = escalate(client)["ticket"]
    escalate(client, conversation="c2", message_id="m-esc-2")

    listed = client.get("/v1/queue", headers=AUTH).json()
    assert listed["depth"] == 2 and {t["id"] for t in listed["tickets"]} >= {ticket["id"]}
    assert client.get("/v1/queue?status=resolved", headers=AUTH).json()["tickets"] == []

    claimed = client.post("/v1/queue/claim", headers=AUTH, json={"agent": "ana", "lease_seconds": 60}).json()["ticket"]
    assert claimed["status"] == "claimed" and claimed["agent"] == "ana"
    other = client.post("/v1/queue/claim", headers=AUTH, json={"agent": "bruno"}).json()["ticket"]
    assert other["id"] != claimed["id"]
    assert client.post("/v1/queue/claim", headers=AUTH, json={"agent": "carla"}).json() == {"ticket": None}

    assert_error(client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": "bruno"}), 409, "ticket_conflict")
    assert_error(client.post(f"/v1/queue/{claimed['id']}/release", headers=AUTH, json={"agent": "bruno"}), 409, "ticket_conflict")
    released = client.post(f"/v1/queue/{other['id']}/release", headers=AUTH, json={"agent": "bruno"}).json()["ticket"]
    assert released["status"] == "queued" and released["agent"] is None

    resolved = client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": "ana", "resolution": "reembolso hecho"}).json()
    assert resolved["ticket"]["status"] == "resolved"
    retried = client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": "ana", "resolution": "reembolso hecho"})
    assert retried.status_code == 200 and retried.json() == resolved
    other_note = client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": "ana", "resolution": "otra cosa"})
    assert_error(other_note, 409, "ticket_conflict")
    assert "with another note" in other_note.json()["error"]["message"]
    assert_error(client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": "bruno"}), 409, "ticket_conflict")


@pytest.mark.parametrize("resolution", [b'"ok \\ud83d"', b'"ok \\u0000"', b'"\\u001b[2J"'])
def test_server_queue_resolve_refuses_a_bad_note_with_422(client: TestClient, resolution: bytes) -> None:
    # A lone surrogate in the note reached the database driver: a 500.
    ticket = escalate(client)["ticket"]
    assert client.post("/v1/queue/claim", headers=AUTH, json={"agent": "ana"}).status_code == 200
    body = b'{"agent": "ana", "resolution": ' + resolution + b"}"
    r = client.post(f"/v1/queue/{ticket['id']}/resolve", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert_error(r, 422, "invalid_text")
    assert "resolution: " in r.json()["error"]["message"]
    held = client.get("/v1/queue?status=claimed", headers=AUTH).json()["tickets"]
    assert [(t["id"], t["agent"]) for t in held] == [(ticket["id"], "ana")]


def test_server_queue_agent_names_are_compared_in_nfc(client: TestClient) -> None:
    nfc, nfd = "Jos\u00e9", "Jose\u0301"
    escalate(client)
    claimed = client.post("/v1/queue/claim", headers=AUTH, json={"agent": nfd}).json()["ticket"]
    assert claimed["agent"] == nfc
    r = client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": nfc})
    assert r.status_code == 200 and r.json()["ticket"]["agent"] == nfc


def test_server_queue_list_shows_waiting_tickets_first(client: TestClient) -> None:
    done = [escalate(client, conversation=f"old{i}", message_id=f"m-old-{i}")["ticket"]["id"] for i in range(3)]
    for _ in done:
        claimed = client.post("/v1/queue/claim", headers=AUTH, json={"agent": "ana"}).json()["ticket"]
        assert client.post(f"/v1/queue/{claimed['id']}/resolve", headers=AUTH, json={"agent": "ana"}).status_code == 200
    waiting = [escalate(client, conversation=f"new{i}", message_id=f"m-new-{i}")["ticket"]["id"] for i in range(2)]
    listed = client.get("/v1/queue?limit=2", headers=AUTH).json()
    assert [(t["id"], t["status"]) for t in listed["tickets"]] == [(i, "queued") for i in waiting]
    everything = client.get("/v1/queue", headers=AUTH).json()["tickets"]
    assert [t["id"] for t in everything] == [*waiting, *reversed(done)]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/queue/999/resolve", {"agent": "ana"}, 404, "unknown_ticket"),
        ("POST", "/v1/queue/999/release", {"agent": "ana"}, 404, "unknown_ticket"),
        ("POST", "/v1/queue/abc/resolve", {"agent": "ana"}, 422, "invalid_type"),
        ("POST", "/v1/queue/1/resolve", {}, 422, "missing_field"),
        ("POST", "/v1/queue/1/resolve", {"agent": " "}, 422, "empty_field"),
        ("POST", "/v1/queue/1/resolve", {"agent": "ana", "resolution": 3}, 422, "invalid_type"),
        ("POST", "/v1/queue/claim", {"agent": "ana", "lease_seconds": 1}, 422, "invalid_value"),
        ("POST", "/v1/queue/claim", {"agent": "ana", "lease_seconds": "60"}, 422, "invalid_type"),
        ("POST", "/v1/queue/claim", {"agent": "ana", "priority": 1}, 422, "unknown_field"),
        ("GET", "/v1/queue?status=lost", None, 422, "invalid_value"),
        ("GET", "/v1/queue?limit=0", None, 422, "invalid_value"),
        ("GET", "/v1/queue?limit=501", None, 422, "invalid_value"),
        ("GET", "/v1/queue?limit=99999999999999999999", None, 422, "invalid_value"),
        ("POST", "/v1/queue/0/resolve", {"agent": "ana"}, 422, "invalid_value"),
        ("POST", "/v1/queue/99999999999999999999/release", {"agent": "ana"}, 422, "invalid_value"),
        ("GET", "/v1/queue?limit=many", None, 422, "invalid_type"),
    ],
)
def test_server_queue_caller_errors(client: TestClient, method: str, path: str, body: Any, status: int, code: str) -> None:
    assert_error(client.request(method, path, json=body, headers=AUTH), status, code)


# -- WhatsApp webhook --------------------------------------------------------------------


def test_server_webhook_verify_handshake(client: TestClient) -> None:
    r = client.get("/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"})
    assert r.status_code == 200 and r.text == "1158201444" and r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY},
        {},
    ],
)
def test_server_webhook_verify_refuses(client: TestClient, params: dict[str, str]) -> None:
    assert_error(client.get("/webhooks/whatsapp", params=params), 403, "verification_failed")


def test_server_webhook_text_message_is_answered_and_sent(client: TestClient, sender: RecordingSender) -> None:
    r = post_webhook(client, wa_payload([wa_text("wamid.A1", "hola buenas")]))
    assert r.status_code == 200
    body = r.json()
    assert [m["message_id"] for m in body["messages"]] == ["wamid.A1"]
    reply = body["messages"][0]["reply"]
    assert reply["to"] == WA_ID and reply["type"] == "interactive"  # the consent question
    assert sender.sent == [reply]


@pytest.mark.parametrize(
    ("signature", "status", "code"),
    [
        (None, 401, "missing_signature"),
        ("", 401, "missing_signature"),
        ("sha256=" + "0" * 64, 403, "invalid_signature"),
        ("sha1=abc", 403, "invalid_signature"),
        ("garbage", 403, "invalid_signature"),
        ("sha256=" + "é" * 64, 403, "invalid_signature"),
    ],
)
def test_server_webhook_bad_signature(client: TestClient, sender: RecordingSender, service: Service, signature: str | None, status: int, code: str) -> None:
    payload = wa_payload([wa_text("wamid.S1", "quiero hablar con una persona")])
    body = json.dumps(payload).encode()
    headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature.encode("latin-1")  # raw bytes, as a forger could send
    assert_error(client.post("/webhooks/whatsapp", content=body, headers=headers), status, code)
    assert sender.sent == [] and service.conversations.outcome("wamid.S1") is None


def test_server_webhook_signed_with_another_secret(client: TestClient) -> None:
    assert_error(post_webhook(client, wa_payload([wa_text("wamid.S2", "hola")]), secret="not-the-secret"), 403, "invalid_signature")


def test_server_webhook_body_altered_after_signing(client: TestClient, sender: RecordingSender) -> None:
    original = json.dumps(wa_payload([wa_text("wamid.S3", "hola")])).encode()
    signature = sign(SECRET, original)
    tampered = original.replace(b"hola", b"HOLA")
    r = client.post("/webhooks/whatsapp", content=tampered, headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert_error(r, 403, "invalid_signature")
    # Re-serialising the same JSON differently also breaks it: the check is on the raw bytes.
    reformatted = json.dumps(json.loads(original), indent=1).encode()
    r = client.post("/webhooks/whatsapp", content=reformatted, headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert_error(r, 403, "invalid_signature")
    assert sender.sent == []


def test_server_webhook_signature_checked_before_parsing(client: TestClient) -> None:
    # Garbage that is not even JSON: refused for its signature, never parsed.
    assert_error(post_webhook(client, None, raw=b"\x00\xffnot json", signature="sha256=" + "a" * 64), 403, "invalid_signature")
    assert_error(post_webhook(client, None, raw=b"\x00\xffnot json"), 400, "invalid_json")


def test_server_webhook_message_longer_than_we_keep_is_handled_from_its_start(client: TestClient, service: Service) -> None:
    # WhatsApp lets a customer send up to 65,536 characters; over 4,096 the message was
    # acknowledged and ignored, so a long complaint got no answer and no ticket.
    assert post_webhook(client, wa_payload([wa_choice("wamid.C1", "button_reply", "consent:yes", "Sí, acepto")])).status_code == 200
    long = "quiero hablar con una persona. " + "Les cuento todo lo que pasó con mi pedido. " * 200
    assert len(long) > 4096
    r = post_webhook(client, wa_payload([wa_text("wamid.L1", long)]))
    assert r.status_code == 200 and r.json()["ignored"] == []
    [handled] = r.json()["messages"]
    assert handled["action"] == "escalate" and handled["ticket"] is not None
    ticket = service.queue.get(handled["ticket"])
    assert len(ticket.text) == 4096 and ticket.text.endswith("…") and long.startswith(ticket.text[:-1])


@pytest.mark.parametrize("pii", ["ana.perez.gonzalez@gmail.com", "5512345678"])
def test_server_webhook_cut_of_a_long_message_keeps_no_half_of_a_phone_or_email(client: TestClient, service: Service, pii: str) -> None:
    # Cut first, redacted after: the start of a number or an address across the cut
    # ("55123…", "ana.perez.gonzalez@gm…") no longer looked like one and was stored as it came.
    assert post_webhook(client, wa_payload([wa_choice("wamid.C1", "button_reply", "consent:yes", "Sí, acepto")])).status_code == 200
    head = "quiero hablar con una persona, " + "x" * 4100
    long = head[: 4095 - len(pii) // 2 - len(" escríbanme al ")] + " escríbanme al " + pii + " gracias" * 100
    assert long.index(pii) < 4095 < long.index(pii) + len(pii)  # the cut falls inside it
    r = post_webhook(client, wa_payload([wa_text("wamid.L1", long)]))
    text = service.queue.get(r.json()["messages"][0]["ticket"]).text
    assert len(text) <= 4096 and text.endswith("…")
    assert pii[: len(pii) // 2] not in text


def test_server_webhook_retry_makes_one_ticket_and_one_send(client: TestClient, sender: RecordingSender, service: Service) -> None:
    assert post_webhook(client, wa_payload([wa_choice("wamid.C1", "button_reply", "consent:yes", "Sí, acepto")])).status_code == 200
    payload = wa_payload([wa_text("wamid.E1", "quiero hablar con una persona, ya!")])
    first = post_webhook(client, payload).json()["messages"][0]
    assert first["action"] == "escalate" and first["duplicate"] is False and first["ticket"] is not None
    for _ in range(3):  # Meta redelivers when it did not see our 200 in time
        again = post_webhook(client, payload).json()["messages"][0]
        assert again["duplicate"] is True and again["ticket"] == first["ticket"] and again["reply"] == first["reply"]
    tickets = service.queue.list()
    assert len(tickets) == 1 and tickets[0].message_id == "wamid.E1"
    assert len([b for b in sender.sent if b == first["reply"]]) == 1
    assert len(sender.sent) == 2  # the consent confirmation and the handover notice


def test_server_webhook_same_message_twice_in_one_delivery(client: TestClient, sender: RecordingSender) -> None:
    message = wa_text("wamid.D1", "hola")
    body = post_webhook(client, wa_payload([message, message])).json()
    assert [m["duplicate"] for m in body["messages"]] == [False, True]
    assert len(sender.sent) == 1


def test_server_webhook_button_reply_continues_conversation(client: TestClient, sender: RecordingSender) -> None:
    first = post_webhook(client, wa_payload([wa_text("wamid.B1", "hola")])).json()["messages"][0]
    buttons = first["reply"]["interactive"]["action"]["buttons"]
    yes = next(b["reply"] for b in buttons if b["reply"]["id"] == "consent:yes")

    # The customer taps the button the bot sent: the service reads it in context.
    second = post_webhook(client, wa_payload([wa_choice("wamid.B2", "button_reply", yes["id"], yes["title"])])).json()["messages"][0]
    assert second["action"] == "answer" and second["reply"]["type"] == "text"

    # A list row naming an intent is taken as that intent.
    third = post_webhook(client, wa_payload([wa_choice("wamid.B3", "list_reply", "intent:precio_producto", "Precios")])).json()["messages"][0]
    assert third["action"] == "answer"
    assert [b["to"] for b in sender.sent] == [WA_ID] * 3


def test_server_webhook_customer_without_a_shared_phone_number_is_answered(client: TestClient, sender: RecordingSender) -> None:
    # Since 2026 a customer with a WhatsApp username may reach us without a phone number:
    # no "from", no contacts[].wa_id, only the business-scoped user id. Such a delivery was
    # a 422 ("expected a non-empty string" at contacts[0].wa_id): Meta redelivered it for
    # days, and every message in it was lost.
    bsuid = "MX.13491208655302741918"
    payload = wa_payload([{"from_user_id": bsuid, "id": "wamid.U1", "timestamp": "1765000000", "type": "text", "text": {"body": "hola"}}])
    payload["entry"][0]["changes"][0]["value"]["contacts"] = [{"profile": {"name": "Ana", "username": "@ana.lopez"}, "user_id": bsuid}]
    r = post_webhook(client, payload)
    assert r.status_code == 200, r.text
    [handled] = r.json()["messages"]
    # Addressed the way the Cloud API takes a BSUID: "recipient" ("to" is a phone number).
    assert handled["message_id"] == "wamid.U1" and handled["reply"]["recipient"] == bsuid and "to" not in handled["reply"]
    assert [b["recipient"] for b in sender.sent] == [bsuid]


def test_whatsapp_parse_keeps_the_phone_number_as_the_key_when_meta_sends_both() -> None:
    # During the rollout both ids arrive; the phone number stays the conversation key so
    # conversations stored before BSUIDs existed carry on.
    payload = wa_payload([{**wa_text("wamid.U2", "hola"), "from_user_id": "MX.1349"}])
    payload["entry"][0]["changes"][0]["value"]["contacts"][0]["user_id"] = "MX.1349"
    assert [m.conversation_id for m in parse_webhook(payload).messages] == [WA_ID]


def test_server_webhook_status_updates_are_acknowledged(client: TestClient, sender: RecordingSender) -> None:
    statuses = [
        {"id": "wamid.OUT1", "status": "sent", "timestamp": "1732520002", "recipient_id": WA_ID},
        {"id": "wamid.OUT1", "status": "delivered", "timestamp": "1732520003", "recipient_id": WA_ID},
        {"id": "wamid.OUT1", "status": "read", "timestamp": "1732520004", "recipient_id": WA_ID},
    ]
    r = post_webhook(client, wa_payload(statuses=statuses))
    assert r.status_code == 200 and r.json() == {"messages": [], "statuses": 3, "ignored": []}
    assert sender.sent == []


def test_server_webhook_failed_delivery_of_a_reply_is_counted_and_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    # A reply the Graph API accepted can still fail to reach the customer (here: outside
    # the 24-hour window). It was counted with the reads and deliveries, so nobody knew.
    statuses = [
        {"id": "wamid.OUT1", "status": "delivered", "timestamp": "1765000001", "recipient_id": WA_ID},
        {"id": "wamid.OUT2", "status": "failed", "timestamp": "1765000002", "recipient_id": WA_ID,
         "errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                     "error_data": {"details": "Message failed to send because more than 24 hours have passed"}}]},
    ]
    with caplog.at_level(logging.WARNING, logger="nlu.server"):
        r = post_webhook(client, wa_payload(statuses=statuses))
    assert r.status_code == 200 and r.json()["statuses"] == 2
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    assert metrics.value("nlu_whatsapp_statuses_total", {"status": "failed"}) == 1
    assert metrics.value("nlu_whatsapp_statuses_total", {"status": "delivered"}) == 1
    assert "wamid.OUT2" in caplog.text and "131047 Re-engagement message" in caplog.text and WA_ID not in caplog.text


def test_server_webhook_reaction_is_acknowledged_not_answered(client: TestClient, sender: RecordingSender) -> None:
    reaction = {"from": WA_ID, "id": "wamid.R1", "timestamp": "1", "type": "reaction", "reaction": {"message_id": "wamid.bot", "emoji": "👍"}}
    r = post_webhook(client, wa_payload([reaction]))
    assert r.status_code == 200
    assert r.json()["ignored"] == [{"message_id": "wamid.R1", "type": "reaction", "reason": "unsupported_type"}]
    assert sender.sent == []


def _wa(message_id: str, kind: str, content: Any) -> dict[str, Any]:
    return {"from": WA_ID, "id": message_id, "timestamp": "1765000000", "type": kind, kind: content}


# What a customer sends that the bot cannot read, but that still asks for an answer.
UNREADABLE = [
    _wa("wamid.U1", "audio", {"id": "m1", "mime_type": "audio/ogg; codecs=opus", "voice": True}),
    _wa("wamid.U2", "sticker", {"id": "m2", "mime_type": "image/webp", "animated": False}),
    _wa("wamid.U3", "location", {"latitude": 19.43, "longitude": -99.13, "name": "Zócalo"}),
    _wa("wamid.U4", "contacts", [{"name": {"formatted_name": "Luis"}, "phones": [{"phone": "+52 55 1234 5678"}]}]),
    _wa("wamid.U5", "image", {"id": "m9", "mime_type": "image/jpeg", "sha256": "x"}),  # no caption
]


def test_server_webhook_voice_note_and_other_unreadable_messages_get_a_request_for_text(
    client: TestClient, sender: RecordingSender, service: Service
) -> None:
    # A voice note (the way many customers write on WhatsApp) was acknowledged and ignored:
    # the customer heard nothing back.
    consent(client, WA_ID)
    r = post_webhook(client, wa_payload(UNREADABLE))
    assert r.status_code == 200 and r.json()["ignored"] == []
    handled = r.json()["messages"]
    assert [m["message_id"] for m in handled] == [m["id"] for m in UNREADABLE]
    assert all(m["action"] == "answer" and "solo puedo leer mensajes de texto" in m["reply"]["text"]["body"] for m in handled)
    assert len(sender.sent) == len(UNREADABLE)
    assert service.conversations.view(WA_ID).turns == ()  # nothing scored, nothing to route on
    again = post_webhook(client, wa_payload(UNREADABLE)).json()["messages"]
    assert all(m["duplicate"] for m in again) and len(sender.sent) == len(UNREADABLE)


# What Meta delivers that is no message to answer (webhook reference, messages/*).
NON_TEXT = [
    _wa("wamid.N5", "reaction", {"message_id": "wamid.bot-answer", "emoji": "👍"}),
    _wa("wamid.N6", "order", {"catalog_id": "c1", "product_items": [{"product_retailer_id": "sku-1", "quantity": 1, "item_price": 10, "currency": "MXN"}]}),
    {"from": WA_ID, "id": "wamid.N7", "timestamp": "1", "type": "unsupported", "unsupported": {"type": "edit"},
     "errors": [{"code": 131051, "title": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}]},
    {"from": WA_ID, "id": "wamid.N8", "timestamp": "1", "type": "system",
     "system": {"body": "User Ana changed from 5215512345678 to 5215587654321", "wa_id": "5215587654321", "type": "user_changed_number"}},
    _wa("wamid.N10", "interactive", {"type": "nfm_reply", "nfm_reply": {"response_json": "{}", "body": "Sent", "name": "flow"}}),
]


def test_server_webhook_non_text_messages_are_acknowledged_not_scored(client: TestClient, sender: RecordingSender, service: Service) -> None:
    r = post_webhook(client, wa_payload(NON_TEXT))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["messages"] == [] and [i["message_id"] for i in body["ignored"]] == [m["id"] for m in NON_TEXT]
    assert {i["reason"] for i in body["ignored"]} == {"unsupported_type"}
    assert sender.sent == [] and service.conversations.view(WA_ID).turns == ()


@pytest.mark.parametrize("kind", ["image", "video", "document"])
def test_server_webhook_media_caption_is_handled_as_the_customers_text(client: TestClient, sender: RecordingSender, kind: str) -> None:
    # A photo of a broken parcel captioned "quiero hablar con una persona" was ignored
    # whole: the customer's words were lost and the bot said nothing.
    consent(client, WA_ID)
    media = {"id": "m1", "mime_type": "image/jpeg", "caption": "quiero hablar con una persona"}
    r = post_webhook(client, wa_payload([_wa("wamid.C1", kind, media)]))
    assert r.status_code == 200, r.text
    [handled] = r.json()["messages"]
    assert handled["action"] == "escalate" and handled["ticket"] is not None
    assert sender.sent == [handled["reply"]]


@pytest.mark.parametrize(
    "where",
    ["message id", "message type", "change field"],
)
def test_server_webhook_echoes_lone_surrogates_as_replacement_characters(client: TestClient, sender: RecordingSender, where: str) -> None:
    # A lone surrogate in a field the response echoes (an ignored item) is legal JSON but
    # cannot be encoded as UTF-8: the item is acknowledged with U+FFFD, not a 500 that
    # Meta would redeliver for days.
    message = wa_text("wamid.\ud800" if where == "message id" else "wamid.S1", "hola")
    if where == "message type":
        message["type"] = "x\ud800"
    payload = wa_payload([message])
    if where == "change field":
        payload["entry"][0]["changes"][0]["field"] = "\ud800"
    raw = json.dumps(payload).encode()  # ASCII escapes, as Meta would send them
    r = post_webhook(client, None, raw=raw)
    assert r.status_code == 200
    body = r.json()
    assert body["messages"] == [] and len(body["ignored"]) == 1
    assert "\ufffd" in json.dumps(body["ignored"][0], ensure_ascii=False)
    assert sender.sent == []


def test_server_message_id_of_another_conversation_is_a_conflict(client: TestClient, service: Service) -> None:
    escalate(client, "c1", "m-shared")
    consent(client, "c2")
    r = client.post("/v1/messages", json={"conversation_id": "c2", "message_id": "m-shared", "text": "hola"})
    assert_error(r, 409, "message_conflict")
    assert "c1" not in r.json()["error"]["message"]
    assert len(service.queue.list()) == 1


def test_server_webhook_message_id_of_another_conversation_is_acknowledged(client: TestClient, sender: RecordingSender, service: Service) -> None:
    escalate(client, "c1", "wamid.shared")
    r = post_webhook(client, wa_payload([wa_text("wamid.shared", "hola")]))
    assert r.status_code == 200  # a redelivery cannot fix it: acknowledged and reported
    assert r.json()["ignored"][0]["reason"] == "message_conflict" and r.json()["messages"] == []
    assert sender.sent == [] and len(service.queue.list()) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"object": "page", "entry": []},
        {"object": "whatsapp_business_account"},
        {"object": "whatsapp_business_account", "entry": {}},
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {"contacts": [{"wa_id": 5}]}}]}]},
        [],
    ],
)
def test_server_webhook_signed_but_malformed(client: TestClient, payload: Any) -> None:
    assert_error(post_webhook(client, payload), 422, "invalid_payload")


def test_server_webhook_batched_delivery_answers_each_customer_once(client: TestClient, sender: RecordingSender) -> None:
    # Under load Meta batches: several entries, changes and customers in one POST, with
    # delivery reports mixed in. Each customer gets their own reply, once, also when the
    # whole batch is redelivered.
    ana, luis = "5215511110000", "573001112222"
    batch = wa_payload([wa_text("wamid.A1", "hola", ana), wa_text("wamid.L1", "buenas", luis)])
    batch["entry"][0]["changes"][0]["value"]["contacts"] = [{"profile": {"name": "Ana"}, "wa_id": ana}, {"profile": {"name": "Luis"}, "wa_id": luis}]
    reports = wa_payload(statuses=[{"id": "wamid.OUT9", "status": "read", "timestamp": "1765000003", "recipient_id": ana}])
    batch["entry"].append(reports["entry"][0])
    batch["entry"][0]["changes"].append(wa_payload([wa_text("wamid.A2", "gracias", ana)], wa_id=ana)["entry"][0]["changes"][0])
    first = post_webhook(client, batch).json()
    assert [(m["message_id"], m["duplicate"]) for m in first["messages"]] == [("wamid.A1", False), ("wamid.L1", False), ("wamid.A2", False)]
    assert first["statuses"] == 1 and first["ignored"] == []
    again = post_webhook(client, batch).json()
    assert [m["duplicate"] for m in again["messages"]] == [True, True, True]
    assert sorted(b["to"] for b in sender.sent) == sorted([ana, luis, ana])


@pytest.mark.parametrize(
    "unreadable",
    [
        {"id": "wamid.bad", "type": "text"},  # no text
        {"from": WA_ID, "id": "wamid.bad", "type": "text", "text": {"body": 5}},
        {"from": WA_ID, "id": "wamid.bad", "type": "interactive", "interactive": {"type": "button_reply"}},
        None,
    ],
)
def test_server_webhook_unreadable_message_does_not_sink_its_batch(client: TestClient, sender: RecordingSender, unreadable: Any) -> None:
    # Meta batches messages (and customers) in one delivery and redelivers all of it until
    # it sees a 200. One message we cannot read used to make the whole delivery a 422:
    # the good messages beside it were never handled, however often Meta retried.
    payload = wa_payload([wa_text("wamid.G1", "hola"), unreadable, wa_text("wamid.G2", "gracias")])
    r = post_webhook(client, payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["message_id"] for m in body["messages"]] == ["wamid.G1", "wamid.G2"]
    [ignored] = body["ignored"]
    assert ignored["reason"] == "invalid_message" and "messages[1]" in ignored["message"]
    assert ignored["message_id"] == (None if unreadable is None else "wamid.bad")
    assert len(sender.sent) == 2


def test_server_webhook_sender_failure_still_answers(service: Service) -> None:
    failing = RecordingSender(fail=True)
    metrics = Metrics()
    client = TestClient(create_app(service, SETTINGS, sender=failing, metrics=metrics), raise_server_exceptions=False)
    r = post_webhook(client, wa_payload([wa_text("wamid.F1", "hola")]))
    assert r.status_code == 200 and r.json()["messages"][0]["reply"] is not None
    assert metrics.value("nlu_whatsapp_send_failures_total") == 1


def test_server_database_failure_is_503_not_a_caller_error(client: TestClient, service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(*args: Any, **kwargs: Any) -> Any:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.Error as exc:
            raise QueueUnavailable("nlu.db: cannot claim a ticket: database is locked") from exc

    monkeypatch.setattr(service.queue, "claim", locked)
    assert_error(client.post("/v1/queue/claim", headers=AUTH, json={"agent": "ana"}), 503, "storage_unavailable")

    def store_locked(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(service, "handle", store_locked)
    assert_error(client.post("/v1/messages", json={"conversation_id": "c", "message_id": "m", "text": "hola"}), 503, "storage_unavailable")
    assert_error(post_webhook(client, wa_payload([wa_text("wamid.L1", "hola")])), 503, "storage_unavailable")


# -- no 5xx for garbage ------------------------------------------------------------------

GARBAGE: list[bytes] = [
    b"", b"null", b"0", b"-1e999", b"NaN", b"true", b'""', b"[]", b"{}", b"[[[[[[[[", b"{" * 10_000, b"[" * 20_000,
    b'{"text": {}}', b'{"texts": [[]]}', b'{"texts": [null]}', b'{"text": "\\u0000"}', b'{"text": "\\ud800\\udc00"}',
    b'{"text": "\\udc00"}', b'{"conversation_id": [], "message_id": {}, "text": 1}', b'{"agent": null}',
    b'{"agent": "a", "lease_seconds": 1e309}', b'{"agent": "a", "lease_seconds": -5}', b'{"agent": "a", "resolution": []}',
    b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": null}]}]}',
    b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"messages": [null]}}]}]}',
    b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": 3}}]}]}',
    "{\"text\": \"hola 😡🇦🇷 ñandú \u202e\u0301\"}".encode(), b"\xc3\x28", b"\xef\xbb\xbf{}", "{\"text\": \"x\"}".encode("utf-16"),
]


@pytest.mark.parametrize("path", [*JSON_POSTS, "/v1/queue/99999999999999999999999/resolve", "/webhooks/whatsapp"])
def test_server_garbage_never_gives_5xx(client: TestClient, path: str) -> None:
    for raw in GARBAGE:
        for headers in ({"Content-Type": "application/json", **AUTH}, {"Content-Type": "application/json"}):
            if path == "/webhooks/whatsapp":
                headers = {**headers, "X-Hub-Signature-256": sign(SECRET, raw)}
            r = client.post(path, content=raw, headers=headers)
            assert r.status_code < 500, (path, raw[:60], r.status_code, r.text)
            if r.status_code >= 400:
                assert r.json()["error"]["code"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/score"), ("PUT", "/v1/messages"), ("DELETE", "/v1/queue/1/resolve"), ("GET", "/nada"), ("GET", "/webhooks/whatsapp?hub.challenge=" + "x" * 300)],
)
def test_server_wrong_method_or_path_is_4xx(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, headers=AUTH)
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"]


# -- operations ---------------------------------------------------------------------------


def test_server_healthz_reports_the_model(client: TestClient, tiny_model_dir: Path) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["model"]["name"] == tiny_model_dir.name
    assert body["model"]["heads"] == {"intent": 6, "sentiment": 3, "emotion": 4} and body["model"]["labels"] == 13
    assert 0 < body["thresholds"]["answer_threshold"] < 1 and "frustration_threshold" in body["thresholds"]


def test_server_metrics_count_requests_actions_and_queue(client: TestClient) -> None:
    escalate(client)
    client.post("/v1/score", json={"text": 1})
    client.get("/v1/queue")  # refused by the front door, still counted under its route
    text = client.get("/metrics").text
    assert 'nlu_http_requests_total{method="POST",route="/v1/messages",status="200"} 2' in text
    assert 'nlu_http_requests_total{method="POST",route="/v1/score",status="422"} 1' in text
    assert 'nlu_http_requests_total{method="GET",route="/v1/queue",status="401"} 1' in text
    assert 'nlu_actions_total{action="escalate"} 1' in text
    assert 'nlu_http_request_duration_seconds_bucket{le="+Inf",route="/v1/messages"} 2' in text
    assert "nlu_queue_depth 1" in text


def test_server_openapi_lists_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert documented == {
        ("POST", "/v1/score"), ("POST", "/v1/messages"),
        ("GET", "/v1/queue"), ("GET", "/v1/queue/stats"), ("POST", "/v1/queue/claim"), ("POST", "/v1/queue/{ticket_id}/resolve"),
        ("POST", "/v1/queue/{ticket_id}/release"),
        ("POST", "/v1/queue/{ticket_id}/messages"),
        ("GET", "/webhooks/whatsapp"), ("POST", "/webhooks/whatsapp"), ("GET", "/healthz"), ("GET", "/metrics"),
    }
    score = spec["paths"]["/v1/score"]["post"]
    assert "422" in score["responses"] and "415" in score["responses"]
    schema = spec["components"]["schemas"]["ScoreRequest"]
    assert schema["properties"]["texts"]["anyOf"][0]["maxItems"] == 256
    assert spec["paths"]["/v1/queue/claim"]["post"]["security"]


def test_server_parts_can_be_disabled(service: Service) -> None:
    settings = ServerSettings(webhook=False, agents=False)
    client = TestClient(create_app(service, settings), raise_server_exceptions=False)
    assert client.post("/webhooks/whatsapp", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 404
    assert client.get("/v1/queue", headers=AUTH).status_code == 404
    assert client.post("/v1/score", json={"text": "hola"}).status_code == 200
    assert set(client.get("/openapi.json").json()["paths"]) == {"/v1/score", "/v1/messages", "/healthz", "/metrics"}


@pytest.mark.parametrize(
    ("env", "values", "missing"),
    [
        ({}, {}, [ENV_VERIFY_TOKEN, ENV_APP_SECRET, ENV_AGENT_TOKEN]),
        ({ENV_VERIFY_TOKEN: "v", ENV_APP_SECRET: "s"}, {}, [ENV_AGENT_TOKEN]),
        ({ENV_AGENT_TOKEN: TOKEN}, {}, [ENV_VERIFY_TOKEN, ENV_APP_SECRET]),
        ({ENV_AGENT_TOKEN: TOKEN, ENV_APP_SECRET: " "}, {"agents": True}, [ENV_VERIFY_TOKEN, ENV_APP_SECRET]),
        ({}, {"webhook": False}, [ENV_AGENT_TOKEN]),
        ({}, {"agents": False}, [ENV_VERIFY_TOKEN, ENV_APP_SECRET]),
    ],
)
def test_server_settings_name_the_missing_secret(env: dict[str, str], values: dict[str, Any], missing: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        ServerSettings.from_env(env, **values).check()
    message = str(info.value)
    assert all(name in message for name in missing)
    assert all(name not in message for name in {ENV_VERIFY_TOKEN, ENV_APP_SECRET, ENV_AGENT_TOKEN} - set(missing))
    # The way out names only the parts that lack a secret: --no-agents does not help
    # when only the webhook's secrets are missing.
    assert ("--no-webhook" in message) == (ENV_APP_SECRET in missing or ENV_VERIFY_TOKEN in missing)
    assert ("--no-agents" in message) == (ENV_AGENT_TOKEN in missing)


def test_server_settings_short_agent_token_and_secrets_not_in_repr() -> None:
    with pytest.raises(ConfigError, match="shorter"):
        ServerSettings.from_env({ENV_AGENT_TOKEN: "corto"}, webhook=False).check()
    settings = ServerSettings.from_env({ENV_AGENT_TOKEN: TOKEN, ENV_APP_SECRET: SECRET, ENV_VERIFY_TOKEN: VERIFY})
    settings.check()
    assert TOKEN not in repr(settings) and SECRET not in repr(settings) and VERIFY not in repr(settings)
    assert ServerSettings.from_env({"NLU_DB": "/x/y.db"}).db == "/x/y.db"


def test_server_access_log_drops_query_strings() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', ("1.2.3.4", "GET", f"/webhooks/whatsapp?hub.verify_token={VERIFY}", "1.1", 200), None)
    _RedactQuery().filter(record)
    assert VERIFY not in record.getMessage() and "/webhooks/whatsapp" in record.getMessage()


# -- whatsapp.py on its own ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Signature.MISSING),
        ("   ", Signature.MISSING),
        ("sha256=", Signature.MALFORMED),
        ("md5=" + "0" * 64, Signature.MALFORMED),
        ("sha256=" + "0" * 64, Signature.MISMATCH),
    ],
)
def test_whatsapp_check_signature(header: str | None, expected: Signature) -> None:
    assert check_signature(SECRET, b"{}", header) is expected


def test_whatsapp_signature_accepts_upper_case_hex() -> None:
    header = sign(SECRET, b'{"a": 1}')
    assert check_signature(SECRET, b'{"a": 1}', header) is Signature.OK
    assert check_signature(SECRET, b'{"a": 1}', "sha256=" + header[7:].upper()) is Signature.OK


def test_whatsapp_parse_reads_every_supported_type() -> None:
    template_button = {"from": WA_ID, "id": "wamid.T", "type": "button", "button": {"payload": "intent:estado_pedido", "text": "Mi pedido"}}
    notification = parse_webhook(
        wa_payload([wa_text("wamid.1", "hola"), wa_choice("wamid.2", "button_reply", "consent:yes", "Sí"), wa_choice("wamid.3", "list_reply", "intent:devolucion", "Devoluciones"), template_button])
    )
    assert [(m.type, m.text, m.button_id) for m in notification.messages] == [
        ("text", "hola", None), ("button_reply", "Sí", "consent:yes"), ("list_reply", "Devoluciones", "intent:devolucion"), ("button", "Mi pedido", "intent:estado_pedido"),
    ]
    assert {m.conversation_id for m in notification.messages} == {WA_ID}
    assert notification.messages[1].context_message_id == "wamid.bot-question"
    assert notification.messages[0].phone_number_id == "106540352242922"


def test_whatsapp_parse_errors_name_the_path() -> None:
    payload = wa_payload([wa_text("wamid.1", "hola")])
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = ["no"]
    [ignored] = parse_webhook(payload).ignored
    assert ignored.reason == "invalid_message" and ignored.message is not None
    assert ignored.message.startswith("entry[0].changes[0].value.messages[0].text.body:")
    payload["entry"][0]["changes"][0]["value"]["metadata"] = {"phone_number_id": 7}
    with pytest.raises(PayloadError, match=r"entry\[0\]\.changes\[0\]\.value\.metadata\.phone_number_id"):
        parse_webhook(payload)


def test_whatsapp_parse_keeps_each_messages_business_number_and_ignores_numbers_not_served() -> None:
    # One delivery may hold changes for several numbers of the business (one app, one WABA).
    payload = wa_payload([wa_text("wamid.1", "hola")], statuses=[{"id": "wamid.out", "status": "delivered"}])
    other = wa_payload([wa_text("wamid.2", "buenas", wa_id="5491155550000")], wa_id="5491155550000")["entry"][0]["changes"][0]
    other["value"]["metadata"] = {"display_phone_number": "15550002222", "phone_number_id": "209876543210987"}
    payload["entry"][0]["changes"].append(other)
    every = parse_webhook(payload)  # no list of served numbers (a log or custom sender): every one, as before
    assert [(m.message_id, m.phone_number_id) for m in every.messages] == [("wamid.1", "106540352242922"), ("wamid.2", "209876543210987")]
    assert every.ignored == () and len(every.statuses) == 1
    served = parse_webhook(payload, phone_number_ids=frozenset({"106540352242922"}))
    assert [m.message_id for m in served.messages] == ["wamid.1"] and len(served.statuses) == 1
    [ignored] = served.ignored
    assert (ignored.message_id, ignored.type, ignored.reason, ignored.phone_number_id) == ("wamid.2", "text", "unserved_number", "209876543210987")
    assert ignored.to_dict()["phone_number_id"] == "209876543210987" and "does not serve" in (ignored.message or "")
    # A number we do not serve: its messages and its delivery reports are someone else's.
    neither = parse_webhook(payload, phone_number_ids=frozenset({"333"}))
    assert neither.messages == () and neither.statuses == ()
    assert [(i.message_id, i.type, i.reason) for i in neither.ignored] == [
        ("wamid.out", "status", "unserved_number"), ("wamid.1", "text", "unserved_number"), ("wamid.2", "text", "unserved_number"),
    ]
    # A change without metadata names no number: it is the default number's.
    del payload["entry"][0]["changes"][0]["value"]["metadata"]
    [message] = parse_webhook(payload, phone_number_ids=frozenset({"333"})).messages
    assert (message.message_id, message.phone_number_id) == ("wamid.1", None)


def test_whatsapp_log_sender_masks_the_number(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nlu.whatsapp.outbox"):
        LogSender().send({"messaging_product": "whatsapp", "to": WA_ID, "type": "text", "text": {"body": "¡Hola!"}})
    line = json.loads(caplog.records[0].getMessage())
    assert line["to"].endswith(WA_ID[-4:]) and WA_ID not in caplog.text and line["text"]["body"] == "¡Hola!"


# -- the command and the real server ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, ENV_VERIFY_TOKEN),
        (["--no-webhook"], {}, ENV_AGENT_TOKEN),
        (["--no-webhook", "--no-agents", "--port", "0"], {}, "--port"),
        (["--no-webhook", "--no-agents", "--log-level", "loud"], {}, "--log-level"),
    ],
)
def test_cli_serve_refuses_to_start_without_secrets(tiny_model_dir: Path, args: list[str], env: dict[str, str], expected: str) -> None:
    clean = {name: "" for name in (ENV_VERIFY_TOKEN, ENV_APP_SECRET, ENV_AGENT_TOKEN)}
    result = CliRunner().invoke(cli_app, ["serve", str(tiny_model_dir), *args], env={**clean, **env})
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_serve_refuses_a_bad_model(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "broken"), "--no-webhook", "--no-agents", "--db", str(tmp_path / "db")])
    assert result.exit_code == 1 and "meta.json" in result.stderr and "Traceback" not in result.stderr


def test_server_real_process_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    with serving(tiny_model_dir, db=str(tmp_path / "nlu.db")) as base:
        r = httpx.post(f"{base}/v1/messages", json={"conversation_id": "c1", "message_id": "m1", "text": "hola"}, timeout=10)
        assert r.status_code == 200 and r.json()["action"] == "answer"
        r = httpx.post(f"{base}/webhooks/whatsapp", content=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 401


def test_server_bounds_malloc_arenas_for_itself_and_its_workers_unless_the_operator_did() -> None:
    import platform

    from nlu.server import MALLOC_ARENAS, bound_malloc_arenas

    env: dict[str, str] = {}
    bounded = bound_malloc_arenas(env)
    assert env == {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}  # uvicorn's worker processes inherit it
    if platform.libc_ver()[0] == "glibc":
        assert bounded  # mallopt took it for this process
    own = {"MALLOC_ARENA_MAX": "8"}
    assert not bound_malloc_arenas(own) and own == {"MALLOC_ARENA_MAX": "8"}
