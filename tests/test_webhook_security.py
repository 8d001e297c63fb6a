"""Webhook and agent-route security: constant-time checks on the raw body before parsing,
replays, and secrets that never reach a log line."""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from http_kit import RecordingSender, TestClient, in_process_client

import nlu.server
from nlu.errors import QueueUnavailable
from nlu.server import ServerSettings
from nlu.service import Service
from nlu.whatsapp import sign

VERIFY = "verifica-esto-SECRETO-123"
SECRET = "app-secret-SECRETO-0123456789abcdef"
TOKEN = "agente-token-SECRETO-0123456789"
WRONG_TOKEN = "token-equivocado-SECRETO-999999"
SETTINGS = ServerSettings(verify_token=VERIFY, app_secret=SECRET, agent_token=TOKEN, max_body_bytes=64 * 1024, max_webhook_bytes=16 * 1024)
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(service: Service, sender: RecordingSender) -> TestClient:
    # Secrets marked SECRETO, so a log line that leaks one is easy to find.
    return in_process_client(service, sender, SETTINGS)


def payload(message_id: str, text: str) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"wa_id": "5215512345678"}],
        "messages": [{"from": "5215512345678", "id": message_id, "type": "text", "text": {"body": text}}],
    }
    body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}
    return json.dumps(body, ensure_ascii=False).encode()


def post(client: TestClient, raw: bytes, signature: str | None = "sign") -> Any:
    headers = dict(JSON)
    if signature == "sign":
        headers["X-Hub-Signature-256"] = sign(SECRET, raw)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return client.post("/webhooks/whatsapp", content=raw, headers=headers)


@pytest.mark.parametrize("signature", ["sign", "sha256=" + "0" * 64, "sha256=short", None])
def test_webhook_security_signature_compared_in_constant_time_before_parsing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, signature: str | None
) -> None:
    events: list[str] = []
    real_compare = hmac.compare_digest
    real_parse = nlu.server.parse_webhook
    real_loads = json.loads

    def compare(a: Any, b: Any) -> bool:
        events.append("compare_digest")
        return real_compare(a, b)

    def parse(body: Any, *args: Any) -> Any:
        events.append("parse")
        return real_parse(body, *args)

    class SpyJson:
        @staticmethod
        def loads(raw: Any, *args: Any, **kwargs: Any) -> Any:
            events.append("json.loads")
            return real_loads(raw, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(json, name)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    monkeypatch.setattr(nlu.server, "parse_webhook", parse)
    monkeypatch.setattr(nlu.server, "json", SpyJson())
    r = post(client, payload("wamid.CT1", "hola"), signature=signature)
    if signature == "sign":
        assert r.status_code == 200
        # The HMAC comparison happens, on the raw bytes, before any byte is parsed.
        assert events[:3] == ["compare_digest", "json.loads", "parse"]
    else:
        assert r.status_code in (401, 403)
        assert "json.loads" not in events and "parse" not in events
        if signature is not None:
            assert "compare_digest" in events  # even a malformed header costs one comparison


def test_webhook_security_agent_token_compared_in_constant_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real_compare(a, b))
    assert client.get("/v1/queue", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}).status_code == 401
    assert client.get("/v1/queue", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert len(calls) == 2 and all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_webhook_security_concurrent_replays_make_one_ticket(client: TestClient, service: Service, sender: RecordingSender) -> None:
    assert post(client, payload("wamid.C0", "sí")).status_code == 200  # the consent question
    consent = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {
        "contacts": [{"wa_id": "5215512345678"}],
        "messages": [{"from": "5215512345678", "id": "wamid.C1", "type": "interactive",
                      "interactive": {"type": "button_reply", "button_reply": {"id": "consent:yes", "title": "Sí, acepto"}}}],
    }}]}]}
    assert post(client, json.dumps(consent).encode()).status_code == 200
    raw = payload("wamid.R1", "QUIERO HABLAR CON UNA PERSONA YA!!!")
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: post(client, raw), range(16)))
    assert all(r.status_code == 200 for r in responses)
    results = [r.json()["messages"][0] for r in responses]
    assert {m["ticket"] for m in results} == {results[0]["ticket"]} and results[0]["ticket"] is not None
    assert sum(not m["duplicate"] for m in results) == 1
    assert len(service.queue.list()) == 1
    escalation_reply = next(m["reply"] for m in results if not m["duplicate"])
    assert sum(1 for body in sender.sent if body == escalation_reply) == 1


def test_webhook_security_secrets_never_logged(client: TestClient, service: Service, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = [VERIFY, SECRET, TOKEN, WRONG_TOKEN]
    with caplog.at_level(logging.DEBUG):
        # Right and wrong credentials on every protected door.
        client.get("/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "42"})
        client.get("/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": WRONG_TOKEN, "hub.challenge": "42"})
        for token in (TOKEN, WRONG_TOKEN):
            headers = {"Authorization": f"Bearer {token}", **JSON}
            client.get("/v1/queue", headers=headers)
            client.post("/v1/queue/claim", json={"agent": "ana"}, headers=headers)
            client.post("/v1/queue/1/resolve", content=b"{bad json", headers=headers)
        post(client, payload("wamid.L1", "hola"))
        post(client, payload("wamid.L2", "hola"), signature=sign(WRONG_TOKEN, payload("wamid.L2", "hola")))
        post(client, b"{not json")
        # A message that carries a secret in its text is redacted or at least not logged.
        post(client, payload("wamid.L3", f"mi token es {WRONG_TOKEN}"))

        # The error paths that do log: storage failures (503) and unexpected errors (500).
        def locked(*args: Any, **kwargs: Any) -> Any:
            raise QueueUnavailable("nlu.db: cannot claim a ticket: database is locked")

        monkeypatch.setattr(service.queue, "claim", locked)
        r = client.post("/v1/queue/claim", json={"agent": "ana"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 503

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(service, "handle", broken)
        assert post(client, payload("wamid.L4", "hola")).status_code == 503
    # httpx logs the test client's own request lines (the client knows the secrets); every
    # other record, the server's, is checked, with its arguments unformatted too.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.name.startswith("nlu") for r in records), "the error paths above should have logged something"
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)
    for secret in secrets:
        assert secret not in text, secret
    assert repr(SETTINGS).count("SECRETO") == 0
