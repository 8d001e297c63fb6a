"""The WhatsApp Cloud API sender (nlu/cloud_api.py) against a local stand-in for the Graph
API: a real HTTP server on 127.0.0.1 that records each request and answers as scripted."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_kit import SECRET, SETTINGS, TOKEN, RecordingSender, TestClient, free_port
from typer.testing import CliRunner

from nlu.cli import app
from nlu.cloud_api import ENV_ACCESS_TOKEN, ENV_API_URL, ENV_PHONE_NUMBER_ID, CloudApiSender, SendError, sender_from_env
from nlu.errors import ConfigError
from nlu.server import ServerSettings, create_app, serve
from nlu.service import Service
from nlu.testing_graph import GraphStandIn
from nlu.whatsapp import sign

ACCESS_TOKEN = "EAAG-secreto-de-meta-123"
NUMBER_ID = "106540352242922"
BODY = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "5215512345678", "type": "text", "text": {"body": "Hola"}}
runner = CliRunner()
SENT = (200, {}, {"messaging_product": "whatsapp", "contacts": [{"input": "5215512345678", "wa_id": "5215512345678"}], "messages": [{"id": "wamid.HBgN"}]})


def meta_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"}}


class FakeGraph(GraphStandIn):
    """Answers POSTs with the scripted (status, headers, body) in turn; the last one repeats."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], dict[str, Any]]] = [SENT]
        self.delay = 0.0
        super().__init__()

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self.lock:
            answer = self.script[min(len(self.requests), len(self.script)) - 1]
        time.sleep(self.delay)
        return answer


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    fake = FakeGraph()
    yield fake
    fake.close()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def sender(graph: FakeGraph, sleeps: Sleeps, **options: Any) -> CloudApiSender:
    return CloudApiSender(ACCESS_TOKEN, NUMBER_ID, api_url=graph.url, sleep=sleeps, **options)


def test_cloud_api_posts_the_body_with_the_token(graph: FakeGraph, sleeps: Sleeps) -> None:
    sender(graph, sleeps).send(BODY)
    assert graph.requests == [{"path": f"/v21.0/{NUMBER_ID}/messages", "auth": f"Bearer {ACCESS_TOKEN}", "body": BODY}]
    assert sleeps == []


@pytest.mark.parametrize(("failure", "waits"), [
    ((500, {}, meta_error(2, "Service temporarily unavailable")), [0.25]),
    ((503, {}, {}), [0.25]),
    ((429, {"Retry-After": "1"}, meta_error(130429, "Rate limit hit")), [1.0]),
    ((429, {"Retry-After": "600"}, {}), [2.0]),  # capped: Meta is waiting for our webhook answer
    ((429, {"Retry-After": "nan"}, {}), [0.25]),
    ((400, {}, meta_error(131056, "(Business Account, Consumer Account) pair rate limit hit")), [0.25]),
])
def test_cloud_api_retries_what_meta_did_not_take(graph: FakeGraph, sleeps: Sleeps, failure: Any, waits: list[float]) -> None:
    graph.script = [failure, SENT]
    sender(graph, sleeps).send(BODY)
    assert len(graph.requests) == 2 and sleeps == waits


def test_cloud_api_gives_up_after_its_attempts_with_metas_reason(graph: FakeGraph, sleeps: Sleeps) -> None:
    graph.script = [(500, {}, meta_error(131000, "Something went wrong"))]
    with pytest.raises(SendError, match="HTTP 500, code 131000: Something went wrong") as raised:
        sender(graph, sleeps).send(BODY)
    assert len(graph.requests) == 3 and sleeps == [0.25, 0.5]
    assert (raised.value.status, raised.value.code) == (500, 131000)


def test_cloud_api_refusal_is_not_retried_and_names_no_secret(graph: FakeGraph, sleeps: Sleeps) -> None:
    graph.script = [(400, {}, meta_error(131047, "Re-engagement message"))]
    with pytest.raises(SendError) as raised:
        sender(graph, sleeps).send(BODY)
    message = str(raised.value)
    assert "HTTP 400, code 131047: Re-engagement message: fbtrace_id AbCdEf" in message
    assert "*********5678" in message and "5215512345678" not in message and ACCESS_TOKEN not in message
    assert len(graph.requests) == 1 and sleeps == []


def test_cloud_api_error_that_echoes_the_number_or_token_names_neither(graph: FakeGraph, sleeps: Sleeps) -> None:
    # Meta's message and details (or a proxy's) are copied into the error, and some quote
    # the request back: the promise "no token, no full number" must not depend on them.
    echo = f"(#100) Invalid parameter to=5215512345678 with token {ACCESS_TOKEN}"
    graph.script = [(400, {}, {"error": {"message": echo, "code": 100, "error_data": {"details": "to: 5215512345678"}}})]
    with pytest.raises(SendError) as raised:
        sender(graph, sleeps).send(BODY)
    message = str(raised.value)
    assert "5215512345678" not in message and ACCESS_TOKEN not in message
    assert "Invalid parameter to=*********5678" in message


def test_cloud_api_unreachable_is_retried_then_reported(sleeps: Sleeps) -> None:
    closed = CloudApiSender(ACCESS_TOKEN, NUMBER_ID, api_url=f"http://127.0.0.1:{free_port()}/v21.0", sleep=sleeps)
    with pytest.raises(SendError, match=r"cannot reach the WhatsApp Cloud API to reply to \*+5678: ConnectError"):
        closed.send(BODY)
    assert sleeps == [0.25, 0.5]  # nothing left the machine, so sending again cannot double it


def test_cloud_api_no_answer_is_not_sent_again(graph: FakeGraph, sleeps: Sleeps) -> None:
    graph.delay = 1.0
    with pytest.raises(SendError, match="not retried, it may have been delivered"):
        sender(graph, sleeps, timeout=0.2).send(BODY)
    assert len(graph.requests) == 1 and sleeps == []  # a second copy could reach the customer


@pytest.mark.parametrize("status", [500, 502, 504])
def test_cloud_api_a_gateway_failure_without_metas_word_is_not_sent_again(graph: FakeGraph, sleeps: Sleeps, status: int) -> None:
    # A 504 (or 502, 500) from a proxy or load balancer with no Meta error body says
    # nothing about whether the Graph API took the message: sending again could double it.
    graph.script = [(status, {}, {}), SENT]
    with pytest.raises(SendError, match="it may have been delivered") as raised:
        sender(graph, sleeps).send(BODY)
    assert raised.value.maybe_delivered and raised.value.status == status
    assert len(graph.requests) == 1 and sleeps == []



# -- several business numbers -----------------------------------------------------------------

OTHER_ID = "209876543210987"  # a second business number of the same app (e.g. support)
ENV_PHONE_NUMBER_IDS = "NLU_WHATSAPP_PHONE_NUMBER_IDS"


def test_cloud_api_sends_from_the_number_it_is_given(graph: FakeGraph, sleeps: Sleeps) -> None:
    two = sender(graph, sleeps, phone_number_ids=[OTHER_ID])
    two.send(BODY, phone_number_id=OTHER_ID)
    two.send(BODY, phone_number_id=NUMBER_ID)
    two.send(BODY, phone_number_id=None)  # a webhook without metadata, an agent message of an old ticket
    two.send(BODY)
    assert [r["path"] for r in graph.requests] == [f"/v21.0/{OTHER_ID}/messages"] + [f"/v21.0/{NUMBER_ID}/messages"] * 3
    assert two.phone_number_id == NUMBER_ID and two.phone_number_ids == frozenset({NUMBER_ID, OTHER_ID})


def test_cloud_api_refuses_to_send_from_a_number_it_does_not_serve(graph: FakeGraph, sleeps: Sleeps) -> None:
    # The token may well be allowed to send from it (one app, several numbers); whether
    # this deployment answers for that number is configuration, not the token's reach.
    with pytest.raises(SendError, match=f"business number {OTHER_ID} is not one this deployment sends from.*{ENV_PHONE_NUMBER_IDS}") as raised:
        sender(graph, sleeps).send(BODY, phone_number_id=OTHER_ID)
    assert not raised.value.maybe_delivered and graph.requests == [] and sleeps == []


# -- configuration --------------------------------------------------------------------------


def test_cloud_api_from_env() -> None:
    assert sender_from_env({}) is None
    configured = sender_from_env({ENV_ACCESS_TOKEN: ACCESS_TOKEN, ENV_PHONE_NUMBER_ID: NUMBER_ID, ENV_API_URL: "https://graph.facebook.com/v22.0/"})
    assert configured is not None and configured.url == f"https://graph.facebook.com/v22.0/{NUMBER_ID}/messages"
    assert ACCESS_TOKEN not in repr(configured)
    for half in ({ENV_ACCESS_TOKEN: ACCESS_TOKEN}, {ENV_PHONE_NUMBER_ID: NUMBER_ID}, {ENV_ACCESS_TOKEN: " ", ENV_PHONE_NUMBER_ID: NUMBER_ID}):
        with pytest.raises(ConfigError, match="not set: replies are sent only with both"):
            sender_from_env(half)


def test_cloud_api_from_env_with_several_numbers() -> None:
    single = sender_from_env({ENV_ACCESS_TOKEN: ACCESS_TOKEN, ENV_PHONE_NUMBER_ID: NUMBER_ID})
    assert single is not None and single.phone_number_ids == frozenset({NUMBER_ID})  # no new variable needed
    several = sender_from_env({ENV_ACCESS_TOKEN: ACCESS_TOKEN, ENV_PHONE_NUMBER_ID: NUMBER_ID, ENV_PHONE_NUMBER_IDS: f" {OTHER_ID}, 3333,"})
    assert several is not None and several.phone_number_id == NUMBER_ID  # the default is always served
    assert several.phone_number_ids == frozenset({NUMBER_ID, OTHER_ID, "3333"})
    with pytest.raises(ConfigError, match=f"{ENV_PHONE_NUMBER_IDS}: 'ventas' is not the numeric id"):
        sender_from_env({ENV_ACCESS_TOKEN: ACCESS_TOKEN, ENV_PHONE_NUMBER_ID: NUMBER_ID, ENV_PHONE_NUMBER_IDS: f"{OTHER_ID},ventas"})
    for half in ({ENV_PHONE_NUMBER_IDS: OTHER_ID}, {ENV_ACCESS_TOKEN: ACCESS_TOKEN, ENV_PHONE_NUMBER_IDS: OTHER_ID}):
        with pytest.raises(ConfigError, match="not set"):
            sender_from_env(half)


@pytest.mark.parametrize(("token", "number", "url", "message"), [
    ("con espacio", NUMBER_ID, "https://graph.facebook.com/v21.0", "printable ASCII without spaces"),
    ("tóken", NUMBER_ID, "https://graph.facebook.com/v21.0", "printable ASCII without spaces"),
    (ACCESS_TOKEN, "+52 55 1234", "https://graph.facebook.com/v21.0", "numeric id"),
    (ACCESS_TOKEN, NUMBER_ID, "graph.facebook.com/v21.0", "http\\(s\\) URL"),
    # No host: every send failed as "no answer, it may have been delivered", so an agent's
    # message was left unknown and could not be sent again, though nothing left the machine.
    (ACCESS_TOKEN, NUMBER_ID, "https://", "http\\(s\\) URL"),
    (ACCESS_TOKEN, NUMBER_ID, "https:///v21.0", "http\\(s\\) URL"),
    # The token travels in every request: in clear text only to this machine (a local proxy).
    (ACCESS_TOKEN, NUMBER_ID, "http://graph.facebook.com/v21.0", "https"),
    (ACCESS_TOKEN, NUMBER_ID, "http://10.0.0.7:8080/v21.0", "https"),
])
def test_cloud_api_bad_settings_are_config_errors(token: str, number: str, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CloudApiSender(token, number, api_url=url)


def test_cloud_api_serve_refuses_half_set_credentials_before_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_ACCESS_TOKEN, ACCESS_TOKEN)
    monkeypatch.delenv(ENV_PHONE_NUMBER_ID, raising=False)
    settings = ServerSettings(model_dir=str(tmp_path / "no-model"), verify_token="v", app_secret="s", agents=False)
    with pytest.raises(ConfigError, match=f"{ENV_PHONE_NUMBER_ID} not set"):
        serve(settings)


# -- through the webhook --------------------------------------------------------------------


def test_cloud_api_webhook_reply_reaches_the_graph_api(service: Service, graph: FakeGraph, sleeps: Sleeps, caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    assert client.get("/healthz").json()["whatsapp_sender"] == "cloud_api"
    value = {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": NUMBER_ID},
        "contacts": [{"wa_id": "5215512345678"}],
        "messages": [{"from": "5215512345678", "id": "wamid.1", "type": "text", "text": {"body": "hola"}}],
    }
    raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, raw)}

    assert client.post("/webhooks/whatsapp", content=raw, headers=headers).status_code == 200
    [request] = graph.requests
    assert request["body"]["to"] == "5215512345678" and request["body"]["messaging_product"] == "whatsapp"

    graph.script = [(401, {}, meta_error(190, "Error validating access token"))]
    raw2 = raw.replace(b"wamid.1", b"wamid.2")
    with caplog.at_level(logging.WARNING, logger="nlu.server"):
        r = client.post("/webhooks/whatsapp", content=raw2, headers={**headers, "X-Hub-Signature-256": sign(SECRET, raw2)})
    assert r.status_code == 200  # a failed send never costs Meta's delivery its answer
    assert r.json()["messages"][0]["delivery"] == "deferred"  # sent again once the token is renewed
    assert "code 190: Error validating access token" in caplog.text and ACCESS_TOKEN not in caplog.text
    metrics = client.get("/metrics").text
    assert "nlu_whatsapp_send_failures_total 1" in metrics
    assert "nlu_whatsapp_outbox_depth 1" in metrics


def webhook_delivery(message_id: str, text: str = "hola") -> tuple[bytes, dict[str, str]]:
    value = {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": NUMBER_ID},
        "contacts": [{"wa_id": "5215512345678"}],
        "messages": [{"from": "5215512345678", "id": message_id, "type": "text", "text": {"body": text}}],
    }
    raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}).encode()
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, raw)}


def test_cloud_api_reply_meta_did_not_take_is_sent_again_once_not_twice(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    # Meta's API down for a while: the reply used to be logged and lost, since the
    # webhook had answered 200 and a redelivery is a duplicate, never answered again.
    app = create_app(service, SETTINGS, sender=sender(graph, sleeps))
    client = TestClient(app, raise_server_exceptions=False)
    graph.script = [(503, {}, {})]
    raw, headers = webhook_delivery("wamid.caido", "¿dónde está mi pedido?")
    r = client.post("/webhooks/whatsapp", content=raw, headers=headers)
    assert r.status_code == 200 and r.json()["messages"][0]["delivery"] == "deferred"
    assert len(graph.requests) == 3  # the sender's own attempts
    again = client.post("/webhooks/whatsapp", content=raw, headers=headers)  # Meta redelivers anyway
    assert again.json()["messages"][0]["duplicate"] and again.json()["messages"][0]["delivery"] is None
    assert len(graph.requests) == 3

    graph.script = [SENT]
    graph.requests.clear()
    resender = app.state.resender
    assert resender.run_once() == 0  # not due yet
    resender.clock = lambda: time.time() + 60
    assert resender.run_once() == 1
    [request] = graph.requests
    assert request["body"]["context"] == {"message_id": "wamid.caido"}
    assert request["body"]["to"] == "5215512345678" and request["body"] == {**r.json()["messages"][0]["reply"], "context": {"message_id": "wamid.caido"}}
    assert resender.run_once() == 0 and len(graph.requests) == 1
    metrics = client.get("/metrics").text
    assert "nlu_whatsapp_resent_total 1" in metrics and "nlu_whatsapp_outbox_depth 0" in metrics


def test_cloud_api_reply_refused_for_good_is_not_kept(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    graph.script = [(400, {}, meta_error(131026, "Message undeliverable"))]
    raw, headers = webhook_delivery("wamid.x")
    assert client.post("/webhooks/whatsapp", content=raw, headers=headers).json()["messages"][0]["delivery"] == "failed"
    graph.script = [(504, {}, {})]  # a gateway timeout: it may have been delivered
    raw, headers = webhook_delivery("wamid.y")
    assert client.post("/webhooks/whatsapp", content=raw, headers=headers).json()["messages"][0]["delivery"] == "unknown"
    assert service.conversations.outbox_depth() == 0


def test_cloud_api_the_server_runs_its_resender_while_it_serves(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    app = create_app(service, SETTINGS, sender=sender(graph, sleeps))
    with TestClient(app):
        assert app.state.resender.running
    assert not app.state.resender.running
    agents_only = create_app(service, ServerSettings(agent_token=TOKEN, webhook=False), sender=sender(graph, sleeps))
    with TestClient(agents_only):
        assert not agents_only.state.resender.running  # no webhook, no bot replies to resend


def test_cloud_api_healthz_says_when_replies_only_go_to_the_log(service: Service) -> None:
    client = TestClient(create_app(service, SETTINGS), raise_server_exceptions=False)
    assert client.get("/healthz").json()["whatsapp_sender"] == "log"



def wa_change(number: str | None, wa_id: str, message_id: str, text: str = "hola", button_id: str | None = None) -> dict[str, Any]:
    """One change of a notification: a customer's message to business number ``number``."""
    message: dict[str, Any] = {"from": wa_id, "id": message_id, "type": "text", "text": {"body": text}}
    if button_id is not None:
        message = {**message, "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": text}}}
        del message["text"]
    value: dict[str, Any] = {"messaging_product": "whatsapp", "contacts": [{"wa_id": wa_id}], "messages": [message]}
    if number is not None:
        value["metadata"] = {"display_phone_number": "15550001111", "phone_number_id": number}
    return {"field": "messages", "value": value}


def post_changes(client: TestClient, *changes: dict[str, Any]) -> Any:
    raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": list(changes)}]}).encode()
    r = client.post("/webhooks/whatsapp", content=raw, headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, raw)})
    assert r.status_code == 200, r.text
    return r.json()


def test_cloud_api_webhook_replies_from_the_number_the_customer_wrote_to(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps, phone_number_ids=[OTHER_ID])), raise_server_exceptions=False)
    sales, support = "5215512345678", "5491155550000"
    delivery = (wa_change(NUMBER_ID, sales, "wamid.s1"), wa_change(OTHER_ID, support, "wamid.p1"))
    body = post_changes(client, *delivery)
    assert [m["message_id"] for m in body["messages"]] == ["wamid.s1", "wamid.p1"] and body["ignored"] == []
    assert {r["body"]["to"]: r["path"] for r in graph.requests} == {sales: f"/v21.0/{NUMBER_ID}/messages", support: f"/v21.0/{OTHER_ID}/messages"}
    assert post_changes(client, *delivery)["messages"][1]["duplicate"] and len(graph.requests) == 2  # a redelivery sends nothing
    assert client.get("/healthz").json()["whatsapp_numbers"] == ["*" * 11 + NUMBER_ID[-4:], "*" * 11 + OTHER_ID[-4:]]


def test_cloud_api_a_deferred_reply_is_resent_from_the_number_the_customer_wrote_to(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    app = create_app(service, SETTINGS, sender=sender(graph, sleeps, phone_number_ids=[OTHER_ID]))
    client = TestClient(app, raise_server_exceptions=False)
    graph.script = [(503, {}, {})]
    body = post_changes(client, wa_change(OTHER_ID, "5491155550000", "wamid.p9"))
    assert body["messages"][0]["delivery"] == "deferred"
    graph.script = [SENT]
    graph.requests.clear()
    app.state.resender.clock = lambda: time.time() + 60
    assert app.state.resender.run_once() == 1
    [request] = graph.requests
    assert request["path"] == f"/v21.0/{OTHER_ID}/messages" and request["body"]["context"] == {"message_id": "wamid.p9"}


def test_cloud_api_webhook_ignores_a_number_this_deployment_does_not_serve(
    service: Service, graph: FakeGraph, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    # One app, two numbers, and this deployment serves one: the other number's customers
    # are another bot's or a person's. Answering them from our number (what happened) is
    # a stranger talking over that conversation, or a refusal from Meta.
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    with caplog.at_level(logging.WARNING, logger="nlu.server"):
        body = post_changes(client, wa_change(OTHER_ID, "5491155550000", "wamid.x1"), wa_change(NUMBER_ID, "5215512345678", "wamid.ok"))
        post_changes(client, wa_change(OTHER_ID, "5491155550000", "wamid.x2"))
    assert [m["message_id"] for m in body["messages"]] == ["wamid.ok"]
    assert [(i["message_id"], i["reason"], i["phone_number_id"]) for i in body["ignored"]] == [("wamid.x1", "unserved_number", OTHER_ID)]
    assert [r["body"]["to"] for r in graph.requests] == ["5215512345678"]
    assert service.conversations.outcome("wamid.x1") is None  # not handled: no state, no ticket, no reply
    assert 'nlu_whatsapp_ignored_total{reason="unserved_number"} 2' in client.get("/metrics").text
    warnings = [r.getMessage() for r in caplog.records if OTHER_ID in r.getMessage()]
    assert len(warnings) == 1 and "NLU_WHATSAPP_PHONE_NUMBER_IDS" in warnings[0]  # once per number, not per message


def test_cloud_api_webhook_remembers_a_bounded_number_of_unserved_numbers(
    service: Service, graph: FakeGraph, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    # Each unserved number is warned about once, so the server remembers the ones it
    # warned about; a signed sender inventing ids must not grow that set without end.
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    with caplog.at_level(logging.WARNING, logger="nlu.server"):
        for batch in range(3):
            post_changes(client, *(wa_change(str(300000000000000 + 50 * batch + i), "5491155550000", f"wamid.{batch}.{i}") for i in range(50)))
    assert sum("ignoring webhooks for business number" in r.getMessage() for r in caplog.records) == 100
    assert 'nlu_whatsapp_ignored_total{reason="unserved_number"} 150' in client.get("/metrics").text  # all still counted


def test_cloud_api_webhook_single_number_deployment_is_unchanged(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    assert client.get("/healthz").json()["whatsapp_numbers"] == ["*" * 11 + NUMBER_ID[-4:]]
    post_changes(client, wa_change(NUMBER_ID, "5215512345678", "wamid.1"), wa_change(None, "5215500000001", "wamid.2"))
    assert [r["path"] for r in graph.requests] == [f"/v21.0/{NUMBER_ID}/messages"] * 2  # no metadata: the default number
    # A sender of one's own (another channel, a test) gets every number's messages and the
    # body alone, as before: it was never told which numbers it serves.
    recording = RecordingSender()
    custom = TestClient(create_app(service, SETTINGS, sender=recording), raise_server_exceptions=False)
    assert custom.get("/healthz").json()["whatsapp_numbers"] is None
    post_changes(custom, wa_change(OTHER_ID, "5215500000002", "wamid.3"))
    assert [b["to"] for b in recording.sent] == ["5215500000002"]


# -- agents' messages -----------------------------------------------------------------------


def held_ticket(db: Any) -> int:
    from nlu.queue import open_queue

    with open_queue(db) as queue:
        ticket, _ = queue.enqueue(conversation_id="5215512345678", message_id="wamid.1", text="una persona", prediction={}, reasons=[], priority=1.0)
        queue.claim("ana")
    return ticket.id


def test_cloud_api_agent_message_outside_the_window_says_why(service: Service, graph: FakeGraph, sleeps: Sleeps, tmp_path: Path) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    ticket_id = held_ticket(service.queue.path)
    graph.script = [(400, {}, meta_error(131047, "Re-engagement message"))]
    r = client.post(f"/v1/queue/{ticket_id}/messages", headers={"Authorization": f"Bearer {TOKEN}"}, json={"agent": "ana", "text": "Hola"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "send_failed"
    assert "more than 24 hours ago" in r.json()["error"]["message"]


def test_cloud_api_cli_queue_send(graph: FakeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "nlu.db"
    ticket_id = held_ticket(db)
    argv = ["queue", "send", str(ticket_id), "Hola, soy Ana", "--agent", "ana", "--message-id", "m1", "--db", str(db)]
    monkeypatch.delenv(ENV_ACCESS_TOKEN, raising=False)
    monkeypatch.delenv(ENV_PHONE_NUMBER_ID, raising=False)
    result = runner.invoke(app, argv)
    assert result.exit_code == 1 and f"{ENV_ACCESS_TOKEN} and {ENV_PHONE_NUMBER_ID} not set" in result.stderr

    for name, value in ((ENV_ACCESS_TOKEN, ACCESS_TOKEN), (ENV_PHONE_NUMBER_ID, NUMBER_ID), (ENV_API_URL, graph.url)):
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ticket {ticket_id}: message m1 sent"
    again = runner.invoke(app, argv)
    assert again.stdout.strip() == f"ticket {ticket_id}: message m1 was sent before; not sent again"
    assert [r["body"]["text"]["body"] for r in graph.requests] == ["Hola, soy Ana"]


def test_cloud_api_cli_queue_send_to_a_customer_who_opted_out_sends_nothing(graph: FakeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlu.conversation import open_conversations

    db = tmp_path / "nlu.db"
    ticket_id = held_ticket(db)
    with open_conversations(db) as conversations:
        conversations.record("5215512345678", "wamid.baja", {"action": "answer", "reasons": ["opt_out"]}, consent="revoked")
    for name, value in ((ENV_ACCESS_TOKEN, ACCESS_TOKEN), (ENV_PHONE_NUMBER_ID, NUMBER_ID), (ENV_API_URL, graph.url)):
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["queue", "send", str(ticket_id), "Hola, soy Ana", "--agent", "ana", "--db", str(db)])
    assert result.exit_code == 1 and f"ticket {ticket_id}: the customer opted out of messages" in result.stderr
    assert graph.requests == []


def test_cloud_api_an_agents_only_instance_sends_agent_messages(
    graph: FakeGraph, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --no-webhook still serves the agent routes, and their messages need the Cloud API:
    # the sender was built only when the webhook was on, so every message was a 503.
    from nlu.server import ENV_SETTINGS, app_from_env

    db = tmp_path / "nlu.db"
    ticket_id = held_ticket(db)
    settings = ServerSettings(model_dir=str(tiny_model_dir), db=str(db), webhook=False)
    for name, value in ((ENV_ACCESS_TOKEN, ACCESS_TOKEN), (ENV_PHONE_NUMBER_ID, NUMBER_ID), (ENV_API_URL, graph.url), ("NLU_AGENT_TOKEN", TOKEN)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ENV_SETTINGS, json.dumps(settings.public()))
    client = TestClient(app_from_env(), raise_server_exceptions=False)
    assert client.get("/healthz").json()["whatsapp_sender"] == "cloud_api"
    r = client.post(f"/v1/queue/{ticket_id}/messages", headers={"Authorization": f"Bearer {TOKEN}"}, json={"agent": "ana", "text": "Hola"})
    assert r.status_code == 200, r.text
    assert [req["body"]["text"]["body"] for req in graph.requests] == ["Hola"]
    assert graph.requests[0]["path"] == f"/v21.0/{NUMBER_ID}/messages"  # a ticket that names no number: the default


def test_cloud_api_agent_message_goes_from_the_number_the_customer_last_wrote_to(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps, phone_number_ids=[OTHER_ID])), raise_server_exceptions=False)
    customer, auth = "5491155550000", {"Authorization": f"Bearer {TOKEN}"}
    post_changes(client, wa_change(OTHER_ID, customer, "wamid.1", "Sí, acepto", button_id="consent:yes"))
    [escalated] = post_changes(client, wa_change(OTHER_ID, customer, "wamid.2", "quiero hablar con una persona"))["messages"]
    assert escalated["action"] == "escalate" and escalated["ticket"] is not None
    assert client.post("/v1/queue/claim", headers=auth, json={"agent": "ana"}).json()["ticket"]["id"] == escalated["ticket"]

    def agent_says(text: str) -> str:
        r = client.post(f"/v1/queue/{escalated['ticket']}/messages", headers=auth, json={"agent": "ana", "text": text})
        assert r.status_code == 200, r.text
        [request] = [q for q in graph.requests if q["body"].get("text", {}).get("body") == text]
        return str(request["path"])

    assert agent_says("Hola, soy Ana") == f"/v21.0/{OTHER_ID}/messages"
    # The customer writes to the other number while Ana holds the ticket: she follows.
    assert post_changes(client, wa_change(NUMBER_ID, customer, "wamid.3", "¿me escuchan?"))["messages"][0]["action"] == "handover"
    assert agent_says("Sí, aquí sigo") == f"/v21.0/{NUMBER_ID}/messages"
    turns = service.queue.get(escalated["ticket"]).turns
    assert [(t["message_id"], t.get("phone_number_id")) for t in turns if t.get("action") != "agent"] == [("wamid.2", OTHER_ID), ("wamid.3", NUMBER_ID)]


def test_cloud_api_agent_message_to_a_number_no_longer_served_is_not_sent_from_another(
    service: Service, graph: FakeGraph, sleeps: Sleeps
) -> None:
    # The customer wrote to a number this instance does not serve (dropped from the list,
    # or `nlu queue send` run without it): the default number is a stranger to them.
    from nlu.queue import open_queue

    with open_queue(service.queue.path) as queue:
        ticket, _ = queue.enqueue(
            conversation_id="5215512345678", message_id="wamid.1", text="una persona", prediction={}, reasons=[], priority=1.0,
            turns=[{"message_id": "wamid.1", "text": "una persona", "action": "escalate", "phone_number_id": OTHER_ID}],
        )
        queue.claim("ana")
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    r = client.post(f"/v1/queue/{ticket.id}/messages", headers={"Authorization": f"Bearer {TOKEN}"}, json={"agent": "ana", "text": "Hola"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "send_failed"
    assert OTHER_ID in r.json()["error"]["message"] and ENV_PHONE_NUMBER_IDS in r.json()["error"]["message"]
    assert graph.requests == [] and [t["message_id"] for t in service.queue.get(ticket.id).turns] == ["wamid.1"]  # can be sent once fixed


# -- template messages: reaching a customer after the 24-hour window -----------------------

TEMPLATE = {"name": "seguimiento_caso", "language": "es_MX", "parameters": ["Ana", "#A-48213"]}
TEMPLATE_BODY = {
    "messaging_product": "whatsapp", "recipient_type": "individual", "to": "5215512345678", "type": "template",
    "template": {
        "name": "seguimiento_caso", "language": {"code": "es_MX"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "#A-48213"}]}],
    },
}


def test_cloud_api_agent_template_reaches_a_customer_outside_the_window(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    ticket_id = held_ticket(service.queue.path)
    path, auth = f"/v1/queue/{ticket_id}/messages", {"Authorization": f"Bearer {TOKEN}"}
    graph.script = [(400, {}, meta_error(131047, "Re-engagement message")), SENT]
    assert client.post(path, headers=auth, json={"agent": "ana", "text": "Hola"}).json()["error"]["code"] == "send_failed"

    r = client.post(path, headers=auth, json={"agent": "ana", "template": TEMPLATE, "message_id": "t1"})
    assert r.status_code == 200, r.text
    assert graph.requests[-1] == {"path": f"/v21.0/{NUMBER_ID}/messages", "auth": f"Bearer {ACCESS_TOKEN}", "body": TEMPLATE_BODY}
    message = r.json()["message"]
    assert message["sent"] is True and message["template"] == TEMPLATE  # nothing here to redact (an order number is not PII)
    assert [t["message_id"] for t in service.queue.get(ticket_id).turns] == ["t1"]  # the failed text left none
    again = client.post(path, headers=auth, json={"agent": "ana", "template": TEMPLATE, "message_id": "t1"})
    assert again.status_code == 200 and again.json()["duplicate"] is True and len(graph.requests) == 2


def test_cloud_api_agent_template_meta_refuses_says_why_and_leaves_no_turn(service: Service, graph: FakeGraph, sleeps: Sleeps) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    ticket_id = held_ticket(service.queue.path)
    path, auth = f"/v1/queue/{ticket_id}/messages", {"Authorization": f"Bearer {TOKEN}"}
    for code, hint in ((132000, "number of parameters"), (132001, "not approved in that language")):
        graph.script = [(400, {}, meta_error(code, f"(#{code}) template problem"))]
        r = client.post(path, headers=auth, json={"agent": "ana", "template": TEMPLATE})
        assert r.status_code == 502 and r.json()["error"]["code"] == "send_failed"
        assert hint in r.json()["error"]["message"], r.text
    assert service.queue.get(ticket_id).turns == ()  # can be sent again


@pytest.mark.parametrize(("body", "code"), [
    ({"text": "Hola", "template": TEMPLATE}, "conflicting_fields"),
    ({}, "missing_field"),
    ({"template": {**TEMPLATE, "name": "Seguimiento Caso"}}, "invalid_template"),
    ({"template": {**TEMPLATE, "language": "es-MX"}}, "invalid_template"),
    ({"template": {**TEMPLATE, "parameters": ["Ana\nLuis"]}}, "invalid_template"),
    ({"template": {**TEMPLATE, "name": "a" * 513}}, "invalid_template"),
    ({"template": {**TEMPLATE, "parameters": ["x"] * 101}}, "invalid_template"),
    ({"template": {**TEMPLATE, "parameters": "Ana"}}, "invalid_type"),
    ({"template": {**TEMPLATE, "parameters": [1]}}, "invalid_type"),
    ({"template": {"name": "seguimiento_caso"}}, "missing_field"),
    ({"template": {**TEMPLATE, "header": "x"}}, "unknown_field"),
    ({"template": "seguimiento_caso"}, "invalid_type"),
    ({"text": None}, "invalid_type"),
    ({"template": None}, "invalid_type"),
    ({"agent": None, "template": TEMPLATE}, "invalid_type"),
])
def test_cloud_api_agent_template_request_mistakes_are_422(service: Service, graph: FakeGraph, sleeps: Sleeps, body: dict[str, Any], code: str) -> None:
    client = TestClient(create_app(service, SETTINGS, sender=sender(graph, sleeps)), raise_server_exceptions=False)
    ticket_id = held_ticket(service.queue.path)
    r = client.post(f"/v1/queue/{ticket_id}/messages", headers={"Authorization": f"Bearer {TOKEN}"}, json={"agent": "ana", **body})
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert graph.requests == []


def test_cloud_api_cli_queue_send_template(graph: FakeGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "nlu.db"
    ticket_id = held_ticket(db)
    for name, value in ((ENV_ACCESS_TOKEN, ACCESS_TOKEN), (ENV_PHONE_NUMBER_ID, NUMBER_ID), (ENV_API_URL, graph.url)):
        monkeypatch.setenv(name, value)
    base = ["queue", "send", str(ticket_id), "--agent", "ana", "--db", str(db)]
    template = ["--template", "seguimiento_caso", "--language", "es_MX", "--param", "Ana", "--param", "#A-48213"]
    for argv, message in (
        ([*base, "Hola", *template], "either TEXT or --template"),
        (base, "either TEXT or --template"),
        ([*base, "--template", "seguimiento_caso"], "--language"),
        ([*base, "Hola", "--param", "Ana"], "--param and --language go with --template"),
        ([*base, "--template", "Seguimiento", "--language", "es_MX"], "lowercase"),
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 1 and message in result.stderr, (argv, result.output)
    assert graph.requests == []

    result = runner.invoke(app, [*base, *template, "--message-id", "t1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ticket {ticket_id}: template seguimiento_caso, message t1 sent"
    assert [r["body"] for r in graph.requests] == [TEMPLATE_BODY]
    again = runner.invoke(app, [*base, *template, "--message-id", "t1"])
    assert again.stdout.strip() == f"ticket {ticket_id}: template seguimiento_caso, message t1 was sent before; not sent again"
    assert len(graph.requests) == 1
