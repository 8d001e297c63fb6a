"""HTTP service: a thin FastAPI adapter over :class:`nlu.service.Service`.

Why FastAPI (on uvicorn): the OpenAPI description at ``/openapi.json`` is generated from
the same route and pydantic model declarations that parse the requests, so the published
contract cannot drift from what the server accepts. uvicorn is a real ASGI server (no
Nagle stalls, keep-alive, graceful shutdown, several worker processes).

Layers, outermost first:

1. :class:`MetricsMiddleware` times every request and counts it by route template and
   status, so refusals by the next layer are counted too.
2. :class:`FrontDoor` refuses what must never reach a handler: agent routes without the
   bearer token (401), bodies over the limit (413, from ``Content-Length`` before reading,
   and by counting while streaming when there is none), and JSON routes posted with
   another content type (415).
3. The routes, whose pydantic models reject unknown fields, wrong types, empty or too
   long texts and batches over the limit. Every caller mistake, however it is detected,
   leaves as ``{"error": {"code", "message"}}`` with a 4xx status (see docs/http.md).

Handlers that touch the model or SQLite are plain ``def`` functions, so FastAPI runs them
in its thread pool and the event loop stays free for health checks and metrics.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse as _FastAPIJSONResponse
from fastapi.responses import PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import __version__
from .cloud_api import (
    ENV_ACCESS_TOKEN,
    ENV_PHONE_NUMBER_ID,
    ENV_PHONE_NUMBER_IDS,
    CloudApiSender,
    SendError,
    sender_from_env,
)
from .conversation import PendingReply
from .errors import (
    ConfigError,
    InputError,
    MessageConflict,
    NLUError,
    OptedOut,
    QueueError,
    StorageUnavailable,
    UnknownIntent,
    UnknownTicket,
    WindowClosed,
)
from .handover import send_agent_message
from .metrics_http import Metrics
from .outbox import Resender, keeps
from .privacy import redact
from .queue import (
    MAX_AGENT_CHARS,
    MAX_INTENT_CHARS,
    MAX_LEASE_SECONDS,
    MAX_LIST_LIMIT,
    MAX_TICKET_ID,
    MIN_LEASE_SECONDS,
    agent_problem,
    note_problem,
)
from .queue_stats import queue_stats
from .responses import (
    MAX_TEMPLATE_NAME,
    MAX_TEMPLATE_PARAMETERS,
    MAX_TEXT_BODY,
    Template,
    template_problem,
    to_whatsapp,
)
from .service import InboundMessage, Outcome, Service
from .text import UNPAIRED_SURROGATE
from .whatsapp import (
    SIGNATURE_HEADER,
    LogSender,
    Notification,
    PayloadError,
    Sender,
    Signature,
    WhatsAppMessage,
    check_signature,
    mask_phone,
    parse_webhook,
    send_reply,
    served_numbers,
)

log = logging.getLogger("nlu.server")

# -- limits (documented in docs/http.md; the OpenAPI schema shows the field limits) ------

MAX_TEXT_CHARS = MAX_TEXT_BODY  # WhatsApp's own limit for a text message
MAX_BATCH = 256  # texts per /v1/score call
MAX_ID_CHARS = 512
MAX_BUTTON_ID_CHARS = 256
MAX_CHALLENGE_CHARS = 256
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # a full batch of 4,096-character texts, JSON-escaped, fits
DEFAULT_MAX_WEBHOOK_BODY = 1024 * 1024  # Meta's notifications are a few KiB
MIN_AGENT_TOKEN_CHARS = 16

ENV_VERIFY_TOKEN = "NLU_WHATSAPP_VERIFY_TOKEN"
ENV_APP_SECRET = "NLU_WHATSAPP_APP_SECRET"
ENV_AGENT_TOKEN = "NLU_AGENT_TOKEN"
ENV_DB = "NLU_DB"
DEFAULT_DB = "var/nlu.db"
# Used only to hand the settings to uvicorn's worker processes (--workers > 1).
ENV_SETTINGS = "NLU_SERVE_SETTINGS"


# -- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``nlu serve`` needs. Secrets are excluded from ``repr`` so a logged or
    printed settings object never shows them."""

    model_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    config: str | None = None
    db: str = DEFAULT_DB
    webhook: bool = True
    agents: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_webhook_bytes: int = DEFAULT_MAX_WEBHOOK_BODY
    access_log: bool = True
    log_level: str = "info"
    verify_token: str | None = field(default=None, repr=False)
    app_secret: str | None = field(default=None, repr=False)
    agent_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **values: Any) -> ServerSettings:
        """Settings from ``values`` plus the secrets and ``NLU_DB`` from the environment."""
        env = os.environ if environ is None else environ
        if values.get("db") is None:
            values["db"] = env.get(ENV_DB, "").strip() or DEFAULT_DB
        return cls(
            verify_token=env.get(ENV_VERIFY_TOKEN) or None,
            app_secret=env.get(ENV_APP_SECRET) or None,
            agent_token=env.get(ENV_AGENT_TOKEN) or None,
            **values,
        )

    def check(self) -> None:
        """Refuse to start without the secrets of the enabled parts, naming the variable."""
        missing: list[str] = []
        flags: list[str] = []  # the way out: disable the parts that lack a secret
        if self.webhook:
            absent = [name for name, value in ((ENV_VERIFY_TOKEN, self.verify_token), (ENV_APP_SECRET, self.app_secret)) if not (value or "").strip()]
            missing += absent
            flags += ["--no-webhook"] if absent else []
        if self.agents and not (self.agent_token or "").strip():
            missing.append(ENV_AGENT_TOKEN)
            flags.append("--no-agents")
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: export it, or start with {' and '.join(flags)} to disable what needs it")
        if self.agents and len((self.agent_token or "").strip()) < MIN_AGENT_TOKEN_CHARS:
            raise ConfigError(f"{ENV_AGENT_TOKEN} is shorter than {MIN_AGENT_TOKEN_CHARS} characters; use a long random token")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be 1..65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        for name in ("max_body_bytes", "max_webhook_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigError(f"{name} must be at least 1024 bytes, got {getattr(self, name)}")

    def public(self) -> dict[str, Any]:
        """The non-secret settings, for the worker processes (secrets stay in the environment)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("verify_token", "app_secret", "agent_token")}


# -- errors -------------------------------------------------------------------------


class ApiError(HTTPException):
    """A caller mistake with its stable error code (the ``code`` of the error body)."""

    def __init__(self, status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code=status_code, detail={"code": code, "message": message}, headers=dict(headers or {}) or None)


class JSONResponse(_FastAPIJSONResponse):
    """FastAPI's JSON response, except that an unpaired surrogate (legal in a Python str,
    not encodable as UTF-8) goes out as U+FFFD instead of failing the response with a 500.
    Such strings reach a response when a caller's field is echoed back: an ignored webhook
    item's id or type, a refused value in an error message."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
            return UNPAIRED_SURROGATE.sub("\ufffd", text).encode("utf-8")


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=dict(headers or {}) or None)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}

# pydantic error types -> our codes; anything not listed is "invalid_request".
_TYPE_ERRORS = {
    "string_type", "list_type", "int_type", "bool_type", "dict_type", "model_type", "model_attributes_type",
    "int_parsing", "int_from_float", "float_type", "none_required", "is_instance_of", "union_tag_invalid",
}
_VALUE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error", "enum", "finite_number"}
_OWN_CODES = {"empty_text", "empty_field", "invalid_text", "invalid_type", "missing_field", "conflicting_fields", "invalid_template", "text_too_long", "batch_too_large", "empty_batch"}


def _where(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _describe(error: Mapping[str, Any]) -> tuple[int, str, str]:
    """(status, code, message) for one pydantic / FastAPI validation error."""
    kind = str(error.get("type", ""))
    loc = tuple(error.get("loc", ()))
    where = _where(loc)
    msg = str(error.get("msg", "invalid value"))
    if kind == "json_invalid":
        return 400, "invalid_json", f"body is not valid JSON: {error.get('ctx', {}).get('error', msg)}"
    if kind == "missing" and loc in (("body",), ()):
        return 400, "invalid_json", "body is empty; expected a JSON object"
    if kind == "missing":
        return 422, "missing_field", f"{where}: field required"
    if kind == "extra_forbidden":
        return 422, "unknown_field", f"{where}: unknown field"
    if kind in _OWN_CODES:
        return 422, kind, msg
    if kind == "string_unicode":
        return 422, "invalid_text", f"{where}: contains unpaired surrogate code points (invalid Unicode)"
    ctx = error.get("ctx") or {}
    if kind == "string_too_long":
        code = "text_too_long" if where.startswith(("text", "texts", "resolution")) else "field_too_long"
        return 422, code, f"{where}: longer than {ctx.get('max_length', '?')} characters"
    if kind == "too_long":
        return 422, "batch_too_large", f"{where}: at most {ctx.get('max_length', '?')} items per request, got {ctx.get('actual_length', 'more')}"
    if kind == "too_short":
        return 422, "empty_batch", f"{where}: must hold at least one item"
    if kind == "string_too_short":
        return 422, "empty_text" if where.startswith(("text", "texts")) else "empty_field", f"{where}: must not be empty"
    if kind in _TYPE_ERRORS or kind.endswith("_type"):
        if where == "body":
            return 422, "invalid_type", "body: expected a JSON object"
        return 422, "invalid_type", f"{where}: {msg}"
    if kind in _VALUE_ERRORS:
        return 422, "invalid_value", f"{where}: {msg}"
    return 422, "invalid_request", f"{where}: {msg}"


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    described = [_describe(e) for e in errors] or [(422, "invalid_request", "invalid request")]
    # The most basic problem wins: a broken body before a bad field.
    status, code, message = min(described, key=lambda d: (d[0] != 400, 0))
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if len(described) > 1:
        body["error"]["details"] = [{"code": c, "message": m} for _, c, m in described]
    return JSONResponse(body, status_code=status)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if isinstance(detail, Mapping) and "code" in detail:
        code, message = str(detail["code"]), str(detail.get("message", ""))
    else:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = str(detail) if detail else code
        if exc.status_code == 400:
            code, message = "invalid_json", "body could not be parsed as JSON (invalid UTF-8, nested too deeply, or an integer of over 4300 digits)"
    return error_response(exc.status_code, code, message, exc.headers)


async def _nlu_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Library errors raised while handling a request (convention: only server.py and
    cli.py turn them into statuses)."""
    assert isinstance(exc, NLUError)
    message = " ".join(str(exc).split())
    if isinstance(exc, UnknownTicket):
        return error_response(404, "unknown_ticket", message)
    if isinstance(exc, StorageUnavailable):
        # The queue (QueueUnavailable) or the conversation state failed: locked past its
        # timeout, disk full, corrupt. Nothing was written; a retry may succeed. The
        # message names the database file, so it goes to the log, not to the caller.
        log.error("database error on %s %s: %s", request.method, request.url.path, message)
        return error_response(503, "storage_unavailable", "the database is unavailable; retry later")
    if isinstance(exc, OptedOut):
        return error_response(409, "opted_out", message)  # an agent's message to a customer who opted out
    if isinstance(exc, UnknownIntent):
        return error_response(422, "unknown_intent", message)  # an agent's label the model does not have
    if isinstance(exc, WindowClosed):
        return error_response(409, "window_closed", message)  # free-form text after the 24-hour window
    if isinstance(exc, QueueError):
        # A refused operation: a ticket held by someone else, not claimed, already resolved.
        return error_response(409, "ticket_conflict", message)
    if isinstance(exc, MessageConflict):
        return error_response(409, "message_conflict", message)
    if isinstance(exc, InputError):
        return error_response(422, "invalid_input", message)
    log.error("%s while handling %s %s: %s", type(exc).__name__, request.method, request.url.path, message)
    return error_response(503, "unavailable", "the service cannot handle this request right now")


async def _sqlite_handler(request: Request, exc: Exception) -> JSONResponse:
    # Conversation state writes SQLite directly; a locked or full database is the
    # server's trouble, not the caller's, and a retry may succeed.
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "storage_unavailable", "the database is unavailable; retry later")


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; it has been logged")


# -- request and response models -------------------------------------------------------


class _Strict(BaseModel):
    # strict: no silent coercion ("3" is not 3, 1 is not "1"); forbid: a misspelt field is
    # an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


def _no_null(value: Any, name: str) -> Any:
    if value is None:
        raise PydanticCustomError("invalid_type", f"{name}: expected a string, got null")
    return value


def _has_surrogates(text: str) -> bool:
    return UNPAIRED_SURROGATE.search(text) is not None


def _check_text(text: str, where: str) -> str:
    if _has_surrogates(text):
        # Lone surrogates (from "\ud83d" escapes in JSON) are not Unicode text: they
        # cannot be stored or sent back to WhatsApp.
        raise PydanticCustomError("invalid_text", f"{where}: contains unpaired surrogate code points (invalid Unicode)")
    return text


def _queue_text(value: str, where: str, problem_of: Callable[[str], str | None], *, blank: str | None = None) -> str:
    """A field the queue stores: Unicode text (no lone surrogates, which reached the database
    driver as a 500), allowed by the queue's own rule (``agent_problem`` for one-line names
    and labels, ``note_problem`` for texts), and not blank when ``blank`` names its code."""
    if blank is not None and not value.strip():
        raise PydanticCustomError(blank, f"{where}: is blank")
    _check_text(value, where)
    problem = problem_of(value)
    if problem is not None:
        raise PydanticCustomError("invalid_text", f"{where}: {problem}")
    return value


def _exactly_one(fields: Mapping[str, tuple[Any, str]]) -> None:
    """Exactly one of two alternative fields (name -> (value, what it is)) given: without
    either, ``missing_field``; with both, ``conflicting_fields``."""
    (a, (a_value, a_what)), (b, (b_value, b_what)) = fields.items()
    if a_value is None and b_value is None:
        raise PydanticCustomError("missing_field", f'give "{a}" ({a_what}) or "{b}" ({b_what})')
    if a_value is not None and b_value is not None:
        raise PydanticCustomError("conflicting_fields", f'give either "{a}" or "{b}", not both')


class ScoreRequest(_Strict):
    """One text or a batch: exactly one of ``text`` and ``texts``."""

    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="One message.")
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] | None = Field(
        None, min_length=1, max_length=MAX_BATCH, description=f"Up to {MAX_BATCH} messages."
    )
    top: int = Field(3, ge=1, le=50, description="Intents listed in each ranking.")

    @field_validator("text", "texts", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: Any) -> Any:
        return _no_null(value, info.field_name)

    @model_validator(mode="after")
    def _one_of(self) -> ScoreRequest:
        _exactly_one({"text": (self.text, "one message"), "texts": (self.texts, "a list")})
        for i, text in enumerate([self.text] if self.texts is None else self.texts):
            where = "text" if self.texts is None else f"texts[{i}]"
            if text is None or not text.strip():
                raise PydanticCustomError("empty_text", f"{where}: is empty")
            _check_text(text, where)
        return self


class MessageRequest(_Strict):
    conversation_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="The customer's conversation (WhatsApp: wa_id).")
    message_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="Unique per message: the idempotency key.")
    text: str = Field(max_length=MAX_TEXT_CHARS, description="The message; may be empty only with button_id.")
    button_id: str | None = Field(None, min_length=1, max_length=MAX_BUTTON_ID_CHARS, description="Id of the reply button or list row tapped.")

    @field_validator("conversation_id", "message_id", "text", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: Any) -> Any:
        return _no_null(value, info.field_name)

    @model_validator(mode="after")
    def _check(self) -> MessageRequest:
        for name in ("conversation_id", "message_id"):
            if not getattr(self, name).strip():
                raise PydanticCustomError("empty_field", f"{name}: is blank")
            _check_text(getattr(self, name), name)
        if not self.text.strip() and self.button_id is None:
            raise PydanticCustomError("empty_text", "text: is empty")
        _check_text(self.text, "text")
        return self


class _AgentRequest(_Strict):
    agent: str = Field(min_length=1, max_length=MAX_AGENT_CHARS, description="Who is acting (shown on the ticket).")

    @field_validator("agent", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        return _no_null(value, "agent")

    @field_validator("agent")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _queue_text(value, "agent", agent_problem, blank="empty_field")


class ClaimRequest(_AgentRequest):
    lease_seconds: int = Field(
        300, ge=MIN_LEASE_SECONDS, le=MAX_LEASE_SECONDS, description="How long the claim holds before the ticket returns to the queue."
    )


class ResolveRequest(_AgentRequest):
    resolution: str = Field("", max_length=MAX_TEXT_CHARS, description="What the agent did (PII is redacted before storing).")
    intent: str | None = Field(
        None, max_length=MAX_INTENT_CHARS, description="The intent the customer meant, kept as a training label (`nlu queue export`)."
    )
    new_intent: bool = Field(
        False, description="`intent` is one the model does not have yet, on purpose (without it such a label is refused: 422 `unknown_intent`)."
    )

    @field_validator("intent")
    @classmethod
    def _intent_label(cls, value: str | None) -> str | None:
        return None if value is None else _queue_text(value, "intent", agent_problem, blank="empty_field")

    @field_validator("resolution")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _queue_text(value, "resolution", note_problem)


class ReleaseRequest(_AgentRequest):
    pass


class TemplateMessage(_Strict):
    """An approved WhatsApp template: what reaches a customer who last wrote more than 24 hours ago."""

    # The limits are template_problem's (422 invalid_template, one code for Meta's rules).
    name: str = Field(
        description=f"The template's name in WhatsApp Manager: lowercase letters, digits and underscores, at most {MAX_TEMPLATE_NAME}."
    )
    language: str = Field(description='The code of its approved translation, e.g. "es_MX", "es".')
    parameters: list[str] = Field(
        default_factory=list,
        description=f"The body's parameters {{{{1}}}}, {{{{2}}}}... in order, at most {MAX_TEMPLATE_PARAMETERS} (stored PII-redacted on the ticket).",
    )

    @model_validator(mode="after")
    def _metas_rules(self) -> TemplateMessage:
        problem = template_problem(self.name, self.language, self.parameters)
        if problem is not None:
            raise PydanticCustomError("invalid_template", problem)
        return self

    def to_template(self) -> Template:
        return Template(self.name, self.language, tuple(self.parameters))


class AgentMessageRequest(_AgentRequest):
    """A text, or (once the customer's 24-hour window has closed) a template: exactly one."""

    text: str | None = Field(
        None, min_length=1, max_length=MAX_TEXT_CHARS, description="What the customer receives (stored PII-redacted on the ticket)."
    )
    template: TemplateMessage | None = Field(None, description="An approved template message instead of a text.")
    message_id: str | None = Field(
        None, min_length=1, max_length=MAX_AGENT_CHARS,
        description="Your id for this message: a retried request with the same id sends nothing again.",
    )

    @field_validator("text", "template", mode="before")
    @classmethod
    def _content_not_null(cls, value: Any, info: Any) -> Any:
        return _no_null(value, info.field_name)

    @field_validator("text")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        return None if value is None else _queue_text(value, "text", note_problem, blank="empty_text")  # line breaks are fine

    @model_validator(mode="after")
    def _one_of(self) -> AgentMessageRequest:
        _exactly_one({"text": (self.text, "a message"), "template": (self.template, "an approved template message")})
        return self

    def content(self) -> str | Template:
        return self.template.to_template() if self.template is not None else str(self.text)

    @field_validator("message_id")
    @classmethod
    def _plain_id(cls, value: str | None) -> str | None:
        return None if value is None else _queue_text(value, "message_id", agent_problem, blank="empty_field")


class AgentMessageResponse(BaseModel):
    ticket: dict[str, Any]
    message: dict[str, Any] = Field(description=(
        'The ticket\'s turn for this message: "sent" true, null when WhatsApp did not answer, or (a duplicate only)'
        " false while the first request is still sending it, or if it stopped before hearing back."
    ))
    duplicate: bool = Field(description="True when this message_id was seen before: nothing was sent this time.")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ScoreResponse(BaseModel):
    model: str
    prediction: dict[str, Any] | None = Field(None, description="For a \"text\" request.")
    predictions: list[dict[str, Any]] | None = Field(None, description="For a \"texts\" request, in order.")


class MessageResponse(BaseModel):
    action: Literal["answer", "clarify", "escalate", "handover", "silent"]
    reply: dict[str, Any] | None = Field(description="Cloud API message body (text, interactive button or list); null when the bot stays quiet.")
    prediction: dict[str, Any] | None
    reasons: list[str]
    intent: str | None
    ticket: dict[str, Any] | None
    duplicate: bool = Field(description="True when this message id was handled before: the stored outcome, nothing redone.")


class TicketResponse(BaseModel):
    ticket: dict[str, Any] | None


class QueueResponse(BaseModel):
    tickets: list[dict[str, Any]]
    depth: int = Field(description="Tickets waiting for an agent (queued, or claimed with an expired lease).")


class WebhookResult(BaseModel):
    message_id: str
    action: str | None
    duplicate: bool
    reply: dict[str, Any] | None
    ticket: int | None


class WebhookResponse(BaseModel):
    messages: list[WebhookResult]
    statuses: int
    ignored: list[dict[str, Any]]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    nlu_version: str
    model: dict[str, Any]
    thresholds: dict[str, Any]
    parts: dict[str, bool]
    whatsapp_sender: Literal["cloud_api", "log", "custom"] = Field(
        description="Where WhatsApp replies go: the Cloud API, only the log (no credentials set), or a sender passed to create_app."
    )
    whatsapp_numbers: list[str] | None = Field(
        description="The business numbers (phone number ids, masked to their last 4 digits) replies go from, the default first;"
        " null when the sender does not say (every number's messages are handled)."
    )


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody} for s in statuses}


# The agent token is checked by FrontDoor before the body is even read; this dependency
# only puts the bearer scheme into the OpenAPI description.
_bearer = HTTPBearer(auto_error=False, description=f"The agent token ({ENV_AGENT_TOKEN}).")
Agent = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
TicketId = Annotated[int, PathParam(ge=1, le=MAX_TICKET_ID, description="Ticket id.")]


# -- the two outer layers ---------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AGENT_PREFIX = "/v1/queue"
WEBHOOK_PATH = "/webhooks/whatsapp"


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"request body is larger than {limit} bytes")


async def _send_error(send: Send, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FrontDoor:
    """Auth, body size and content type, checked before any handler or body parsing."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self._token = (settings.agent_token or "").strip().encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        if self.settings.agents and (path == AGENT_PREFIX or path.startswith(AGENT_PREFIX + "/")):
            problem = self._auth_problem(headers.get("authorization"))
            if problem is not None:
                await _send_error(send, 401, problem[0], problem[1], {"WWW-Authenticate": 'Bearer realm="nlu-agents"'})
                return

        limit = self.settings.max_webhook_bytes if path == WEBHOOK_PATH else self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _send_error(send, 400, "invalid_content_length", "Content-Length is not a number")
                return
            if int(length) > limit:
                await _send_error(send, 413, "body_too_large", f"request body is larger than {limit} bytes")
                return

        if scope["method"] == "POST" and path.startswith("/v1/"):
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if not (ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))):
                await _send_error(send, 415, "unsupported_media_type", f"send the body as application/json, not {ctype or 'no content type'}")
                return

        received = 0

        async def capped_receive() -> Message:
            # Without Content-Length (chunked), count while reading and stop at the limit
            # instead of buffering whatever the caller sends.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, capped_receive, send)

    def _auth_problem(self, header: str | None) -> tuple[str, str] | None:
        if not header:
            return "missing_token", "agent routes need Authorization: Bearer <NLU_AGENT_TOKEN>"
        scheme, _, token = header.partition(" ")
        given = token.strip().encode("latin-1", errors="replace")
        # compare_digest runs in time independent of where the tokens differ.
        ok = hmac.compare_digest(given, self._token)
        if scheme.lower() != "bearer" or not ok:
            return "invalid_token", "the bearer token is not valid"
        return None


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(self._route(scope), scope["method"], status, time.perf_counter() - start)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return str(route.path)
        # Refused before routing (401/413/415): find the template the path would match.
        for candidate in self.router.routes:
            match, _ = candidate.matches({**scope, "type": "http"})
            if match != Match.NONE:
                return str(candidate.path)
        return "unmatched"


# -- the application ---------------------------------------------------------------------


MESSAGE_RANKING = 5  # intents listed in /v1/messages predictions (the ticket keeps them all)


def _outcome_body(outcome: Outcome, to: str) -> dict[str, Any]:
    body = outcome.to_dict()
    body["reply"] = None if outcome.reply is None else to_whatsapp(outcome.reply, to=to)
    if body["prediction"] is not None:
        body["prediction"]["ranking"] = body["prediction"]["ranking"][:MESSAGE_RANKING]
    return body


def create_app(
    service: Service,
    settings: ServerSettings | None = None,
    *,
    sender: Sender | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The ASGI application around a loaded :class:`Service` (the testable factory).

    ``settings`` must pass :meth:`ServerSettings.check`; disabled parts have no routes.
    ``sender`` receives every WhatsApp reply body the webhook produces (default: a log).
    """
    settings = settings or ServerSettings()
    settings.check()
    sender = sender or LogSender()
    sender_kind = "cloud_api" if isinstance(sender, CloudApiSender) else "log" if isinstance(sender, LogSender) else "custom"
    served = served_numbers(sender)
    metrics = metrics or Metrics()
    model = service.model
    # Webhook replies that could not be sent wait in the outbox; this process resends them,
    # each as it must read when it goes (an after-hours handover says when the team opens).
    def refresh(reply: PendingReply) -> dict[str, Any] | None:
        fresh = service.reply_now(reply.message_id)
        return None if fresh is None else to_whatsapp(fresh, to=reply.conversation_id)

    resender = Resender(service.conversations, sender, metrics, refresh=refresh)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.webhook:
            resender.start()
        try:
            yield
        finally:
            resender.stop()

    app = FastAPI(
        title="nlu",
        version=__version__,
        summary="Spanish chat NLU for customer-service bots: score, route, answer or hand over to a person.",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.sender = sender
    app.state.resender = resender

    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(NLUError, _nlu_error_handler)
    app.add_exception_handler(sqlite3.OperationalError, _sqlite_handler)
    app.add_exception_handler(Exception, _unexpected_handler)

    # -- scoring and messages ------------------------------------------------------------

    @app.post("/v1/score", tags=["bot"], response_model=None, responses={200: {"model": ScoreResponse}, **_errors(400, 413, 415, 422)})
    def score(request: ScoreRequest) -> JSONResponse:
        """Score one text (`{"text": ...}`) or a batch (`{"texts": [...]}`): intent ranking, sentiment, emotion, frustration."""
        texts = [request.text] if request.text is not None else list(request.texts or [])
        predictions = []
        for prediction in model.score_batch(texts):
            out = prediction.to_dict()
            out["ranking"] = out["ranking"][: request.top]
            predictions.append(out)
        metrics.inc("nlu_scored_texts_total", value=len(predictions))
        if request.texts is None:
            return JSONResponse({"model": model.name, "prediction": predictions[0]})
        return JSONResponse({"model": model.name, "predictions": predictions})

    @app.post("/v1/messages", tags=["bot"], response_model=None, responses={200: {"model": MessageResponse}, **_errors(400, 409, 413, 415, 422, 503)})
    def messages(request: MessageRequest) -> JSONResponse:
        """Handle one customer message in its conversation: answer, clarify (buttons or list), escalate to a
        person (with the ticket), or stay quiet while a person holds the conversation. Idempotent on
        `message_id`: a retry returns the stored outcome with `duplicate: true`."""
        message = InboundMessage(request.conversation_id, request.message_id, request.text, request.button_id)
        outcome = service.handle(message)
        _count_outcome(metrics, outcome)
        return JSONResponse(_outcome_body(outcome, request.conversation_id))

    # -- agents ----------------------------------------------------------------------------

    if settings.agents:
        agent_errors = _errors(401, 413, 415, 422, 503)

        @app.get("/v1/queue", tags=["agents"], response_model=None, responses={200: {"model": QueueResponse}, **agent_errors})
        def queue_list(
            _: Agent,
            status: Annotated[Literal["queued", "claimed", "resolved"] | None, Query(description="Only tickets in this status.")] = None,
            limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
        ) -> JSONResponse:
            """List tickets: waiting ones first, in the order agents take them (priority, then age), then resolved ones newest first."""
            tickets = service.queue.list(status=status, limit=limit)
            return JSONResponse({"tickets": [t.to_dict() for t in tickets], "depth": service.queue.depth()})

        @app.get("/v1/queue/stats", tags=["agents"], response_model=None, responses=agent_errors)
        def queue_stats_route(
            _: Agent, days: Annotated[float, Query(gt=0, le=3660, description="Tickets created in this many days up to now.")] = 7
        ) -> JSONResponse:
            """Tickets in the window: status now, first agent message and resolution times (seconds: n, median, p90, max),
            reasons, the bot's intents, agents, labels, and `after_hours` with `[handover]` hours (else null)."""
            return JSONResponse(queue_stats(service.queue, days, hours=service.hours).to_dict())

        @app.post("/v1/queue/claim", tags=["agents"], response_model=None, responses={200: {"model": TicketResponse}, **agent_errors})
        def queue_claim(_: Agent, request: ClaimRequest) -> JSONResponse:
            """Claim the next ticket (highest priority first) for `lease_seconds`; `ticket` is null when none waits."""
            ticket = service.queue.claim(request.agent, lease_seconds=request.lease_seconds)
            return JSONResponse({"ticket": None if ticket is None else ticket.to_dict()})

        @app.post(
            "/v1/queue/{ticket_id}/resolve", tags=["agents"], response_model=None,
            responses={200: {"model": TicketResponse}, **_errors(401, 404, 409, 413, 415, 422, 503)},
        )
        def queue_resolve(_: Agent, ticket_id: TicketId, request: ResolveRequest) -> JSONResponse:
            """Resolve a ticket you hold; the bot takes the conversation back at the customer's next message."""
            with _known_ticket(ticket_id):
                ticket = service.queue.resolve(
                    ticket_id, request.agent, request.resolution, intent=request.intent, new_intent=request.new_intent
                )
            return JSONResponse({"ticket": ticket.to_dict()})

        @app.post(
            "/v1/queue/{ticket_id}/release", tags=["agents"], response_model=None,
            responses={200: {"model": TicketResponse}, **_errors(401, 404, 409, 413, 415, 422, 503)},
        )
        def queue_release(_: Agent, ticket_id: TicketId, request: ReleaseRequest) -> JSONResponse:
            """Give a ticket you hold back to the queue for another agent."""
            with _known_ticket(ticket_id):
                ticket = service.queue.release(ticket_id, request.agent)
            return JSONResponse({"ticket": ticket.to_dict()})

        @app.post(
            "/v1/queue/{ticket_id}/messages", tags=["agents"], response_model=None,
            responses={200: {"model": AgentMessageResponse}, **_errors(401, 404, 409, 413, 415, 422, 502, 503)},
        )
        def queue_message(_: Agent, ticket_id: TicketId, request: AgentMessageRequest) -> JSONResponse:
            """Send the ticket's customer a WhatsApp message as the agent holding it, a `text` or (after the 24-hour window,
            see the ticket's `window_closes_at`) a `template`; it joins the ticket's turns."""
            if sender_kind == "log":
                # Answering 200 would tell the agent the customer has a message they never get.
                raise ApiError(503, "sender_not_configured", f"replies are not sent: set {ENV_ACCESS_TOKEN} and {ENV_PHONE_NUMBER_ID}")
            with _known_ticket(ticket_id):
                try:
                    sent = send_agent_message(
                        service.queue, sender, ticket_id, request.agent, request.content(), request.message_id,
                        conversations=service.conversations,
                    )
                except SendError as exc:  # WhatsApp refused it, could not be reached, or did not answer
                    metrics.inc("nlu_whatsapp_send_failures_total")
                    log.warning("agent message on ticket %s not sent: %s", ticket_id, exc)
                    # Sent with no answer: the customer may have it, so a retry must not be
                    # told "send it again" (the turn stays, "sent": null).
                    raise ApiError(502, "send_unknown" if exc.maybe_delivered else "send_failed", str(exc)) from None
                except NLUError:
                    raise  # the queue's refusals: 409, 503
                except Exception:  # a plugged-in sender may fail in any way
                    metrics.inc("nlu_whatsapp_send_failures_total")
                    log.exception("sender failed for an agent message on ticket %s", ticket_id)
                    raise ApiError(502, "send_failed", "the sender failed; see the server log") from None
            if not sent.duplicate:
                metrics.inc("nlu_whatsapp_sent_total")
            return JSONResponse({"ticket": sent.ticket.to_dict(), "message": sent.turn, "duplicate": sent.duplicate})

    # -- WhatsApp webhook --------------------------------------------------------------------

    if settings.webhook:
        verify_token = (settings.verify_token or "").encode("utf-8")
        app_secret = settings.app_secret or ""
        warned: set[str] = set()  # unserved business numbers already logged

        @app.get("/webhooks/whatsapp", tags=["whatsapp"], response_class=PlainTextResponse, responses=_errors(403))
        def webhook_verify(
            mode: Annotated[str | None, Query(alias="hub.mode")] = None,
            token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
            challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=MAX_CHALLENGE_CHARS)] = None,
        ) -> PlainTextResponse:
            """Meta's subscription handshake: echo `hub.challenge` when `hub.verify_token` matches."""
            given = (token or "").encode("utf-8", errors="replace")
            ok = hmac.compare_digest(given, verify_token)
            if mode != "subscribe" or not ok or not challenge:
                raise ApiError(403, "verification_failed", "hub.mode must be subscribe and hub.verify_token must match")
            return PlainTextResponse(challenge)

        @app.post(
            "/webhooks/whatsapp", tags=["whatsapp"], response_model=None,
            responses={200: {"model": WebhookResponse}, **_errors(400, 401, 403, 413, 422, 503)},
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "description": "A WhatsApp Cloud API notification, signed with X-Hub-Signature-256.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "parameters": [{"name": SIGNATURE_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}],
            },
        )
        async def webhook_receive(request: Request) -> JSONResponse:
            """Customer messages from WhatsApp: the signature is checked on the raw body before anything is parsed;
            text, button and list replies and media captions are handled, voice notes, stickers and other unreadable messages get a request for text, status updates are counted. Each reply body is
            handed to the sender once (never again for a retried delivery) and returned here."""
            body = await _read_capped(request, settings.max_webhook_bytes)
            verdict = check_signature(app_secret, body, request.headers.get(SIGNATURE_HEADER))
            if verdict is not Signature.OK:
                metrics.inc("nlu_whatsapp_signature_failures_total", {"reason": verdict.value})
                if verdict is Signature.MISSING:
                    raise ApiError(401, "missing_signature", f"{SIGNATURE_HEADER} header is required")
                raise ApiError(403, "invalid_signature", f"{SIGNATURE_HEADER} does not match the body")
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
            try:
                notification = parse_webhook(payload, served)
            except PayloadError as exc:
                raise ApiError(422, "invalid_payload", str(exc)) from None
            _warn_unserved(notification, warned)
            return JSONResponse(await run_in_threadpool(_handle_notification, service, sender, resender, metrics, notification))

    # -- operations ----------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"], response_model=None, responses={200: {"model": HealthResponse}})
    def healthz() -> JSONResponse:
        """Liveness with the loaded model's metadata and the routing thresholds in force."""
        policy = service.policy
        return JSONResponse(
            {
                "status": "ok",
                "nlu_version": __version__,
                "model": {
                    "name": model.name,
                    "nlu_version": model.meta.get("nlu_version"),
                    "created_at": model.meta.get("created_at"),
                    "sha256": model.meta.get("model_sha256"),
                    "heads": {head: len(model.labels(head)) for head in model.heads},
                    "labels": sum(len(model.labels(head)) for head in model.heads),
                },
                "thresholds": {
                    "answer_threshold": policy.answer_threshold,
                    "frustration_threshold": policy.frustration_threshold,
                    "clarify_min_probability": policy.clarify_min_probability,
                    "clarify_max_options": policy.clarify_max_options,
                },
                "parts": {"webhook": settings.webhook, "agents": settings.agents},
                # Whether replies reach customers, or only the log (no Cloud API credentials).
                "whatsapp_sender": sender_kind,
                "whatsapp_numbers": None if served is None else [mask_phone(number) for number in served],
            }
        )

    def _queue_depth() -> float | None:
        try:
            return float(service.queue.depth())
        except NLUError:
            return None  # a scrape must not fail because the database is busy

    def _outbox_depth() -> float | None:
        try:
            return float(service.conversations.outbox_depth())
        except NLUError:
            return None

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_route() -> PlainTextResponse:
        """Prometheus text format: requests by route and status, latency histogram, actions, queue depth."""
        text = metrics.render(
            {
                "nlu_queue_depth": ("Tickets waiting for an agent.", _queue_depth),
                "nlu_whatsapp_outbox_depth": ("Bot replies waiting to be sent again.", _outbox_depth),
            }
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(FrontDoor, settings=settings)  # type: ignore[arg-type]
    app.add_middleware(MetricsMiddleware, metrics=metrics, router=app.router)  # type: ignore[arg-type]
    return app


@contextmanager
def _known_ticket(ticket_id: int) -> Iterator[None]:
    # The library's message names the database file; a caller only needs the id.
    try:
        yield
    except UnknownTicket:
        raise ApiError(404, "unknown_ticket", f"no ticket {ticket_id}") from None


def _warn_unserved(notification: Notification, warned: set[str]) -> None:
    """Say once per process (they are counted every time) that a business number's
    webhooks are ignored: right for another bot's number, a mistake for one of ours."""
    for item in notification.ignored:
        number = item.phone_number_id
        # At most _MAX_WARNED numbers are remembered: a signed sender inventing ids must not
        # grow the set for ever. ascii(): an id with lone surrogates cannot be written to a log.
        if item.reason == "unserved_number" and number is not None and number not in warned and len(warned) < _MAX_WARNED:
            warned.add(number)
            log.warning(
                "ignoring webhooks for business number %s: not %s nor in %s (say so there if this deployment should answer it)",
                ascii(number)[1:-1][:64], ENV_PHONE_NUMBER_ID, ENV_PHONE_NUMBER_IDS,
            )


_MAX_WARNED = 100


def _count_outcome(metrics: Metrics, outcome: Outcome) -> None:
    if outcome.duplicate:
        metrics.inc("nlu_duplicates_total")
    else:
        metrics.inc("nlu_actions_total", {"action": outcome.action})


async def _read_capped(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _kept(text: str) -> str:
    """A customer's text as far as we handle it: WhatsApp lets them send up to 65,536
    characters, we score and store the first 4,096 (the last one marks the cut). A long
    complaint is answered from its start rather than not at all.

    A long text is redacted before it is cut: the start of a phone number or an e-mail
    address across the cut ("55123…") no longer looks like one, and would be stored as it
    came. (The featuriser reads the tags as the raw text's placeholders.)"""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    text = redact(text)
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def _handle_notification(
    service: Service, sender: Sender, resender: Resender, metrics: Metrics, notification: Notification
) -> dict[str, Any]:
    """Run each message through the service; send each fresh reply once (in a worker thread)."""
    results: list[dict[str, Any]] = []
    ignored = [item.to_dict() for item in notification.ignored]
    for status in notification.statuses:
        metrics.inc("nlu_whatsapp_statuses_total", {"status": status.status})
        if status.status == "failed":
            # The Graph API took the reply, but WhatsApp could not deliver it (outside the
            # 24-hour window, not a WhatsApp number, ...): the customer never saw it.
            log.warning("WhatsApp could not deliver message %s: %s", status.message_id, "; ".join(status.errors) or "no reason given")
    for item in notification.ignored:
        metrics.inc("nlu_whatsapp_ignored_total", {"reason": item.reason})
    for wa in notification.messages:
        metrics.inc("nlu_whatsapp_messages_total", {"type": wa.type})
        try:
            if _has_surrogates(wa.conversation_id + wa.message_id + wa.text + (wa.button_id or "") + (wa.phone_number_id or "")):
                raise InputError("the message contains unpaired surrogate code points (invalid Unicode)")
            message = InboundMessage(wa.conversation_id, wa.message_id, _kept(wa.text), wa.button_id, media=wa.media, phone_number_id=wa.phone_number_id)
        except InputError as exc:
            # Retrying cannot fix it, so it is acknowledged (Meta stops retrying) and reported.
            ignored.append({"message_id": wa.message_id, "type": wa.type, "reason": "invalid_message", "message": str(exc)})
            metrics.inc("nlu_whatsapp_ignored_total", {"reason": "invalid_message"})
            continue
        # A storage failure raises out of here as a 503, so Meta redelivers; the messages
        # already handled come back as duplicates and are not sent twice.
        try:
            outcome = service.handle(message)
        except MessageConflict as exc:
            # The id is another conversation's: no retry can fix that either.
            ignored.append({"message_id": wa.message_id, "type": wa.type, "reason": "message_conflict", "message": str(exc)})
            metrics.inc("nlu_whatsapp_ignored_total", {"reason": "message_conflict"})
            continue
        _count_outcome(metrics, outcome)
        reply = None if outcome.reply is None else to_whatsapp(outcome.reply, to=wa.conversation_id)
        delivery = None if reply is None or outcome.duplicate else _deliver(sender, resender, metrics, wa, reply)
        results.append(
            {
                "message_id": wa.message_id,
                "action": outcome.action,
                "duplicate": outcome.duplicate,
                "reply": reply,
                "delivery": delivery,
                "ticket": None if outcome.ticket is None else outcome.ticket.id,
            }
        )
    return {"messages": results, "statuses": len(notification.statuses), "ignored": ignored}


def _deliver(sender: Sender, resender: Resender, metrics: Metrics, wa: WhatsAppMessage, reply: dict[str, Any]) -> str:
    """Hand a fresh reply to the sender once: "sent"; "deferred" when it failed but may go
    through later (kept in the outbox for the resender); "unknown" when it may have been
    delivered; "failed" when it was refused for good. The webhook's answer never depends on it."""
    try:
        send_reply(sender, reply, wa.phone_number_id)  # from the number the customer wrote to
    except Exception as exc:  # a plugged-in sender may fail in any way; never lose the response
        metrics.inc("nlu_whatsapp_send_failures_total")
        if isinstance(exc, SendError):  # Meta's refusal says why: no traceback needed
            log.warning("reply to message %s not sent: %s", wa.message_id, exc)
        else:
            log.exception("sender failed for message %s", wa.message_id)
        if not keeps(exc):
            return "unknown" if isinstance(exc, SendError) and exc.maybe_delivered else "failed"
        try:
            resender.defer(wa.message_id, wa.conversation_id, reply, exc, wa.phone_number_id)
        except NLUError as storage:
            log.error("reply to message %s not kept for resending: %s", wa.message_id, storage)
            return "failed"
        return "deferred"
    metrics.inc("nlu_whatsapp_sent_total")
    return "sent"


# -- running -------------------------------------------------------------------------------


class _RedactQuery(logging.Filter):
    """Access-log lines carry the query string; the verify handshake puts the verify token
    there. Drop every query string from the access log rather than risk a secret in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            path = record.args[2]
            record.args = (*record.args[:2], path.split("?", 1)[0], *record.args[3:])
        return True


def _configure_logging(level: str) -> None:
    """uvicorn configures only its own loggers; give ours (the outbox, errors) a handler
    at the same level, in uvicorn's style, and keep query strings out of access lines."""
    logging.getLogger("uvicorn.access").addFilter(_RedactQuery())
    logger = logging.getLogger("nlu")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel("DEBUG" if level.lower() == "trace" else level.upper())


# Scored once before a worker takes traffic (see load_service).
_WARM_UP = [
    "hola, ¿dónde está mi pedido?",
    "quiero hablar con una persona",
    "¿cuánto cuesta el envío?",
    "gracias, muy amable",
    "me cobraron dos veces!!",
    "chau",
]


def load_service(settings: ServerSettings) -> Service:
    """Load and verify the model, the catalogue and the database (raises NLUError)."""
    if not settings.model_dir:
        raise ConfigError("no model directory given")
    service = Service.from_paths(settings.model_dir, db=settings.db, config=settings.config)
    # The first score pays up to a second of one-off set-up (spaCy, the sort timing), and
    # the first batch of several messages its own ~60 ms (the bigram table of the
    # vectorised featuriser path, features._VECTORISE_FROM); pay both here, not in front
    # of the first customers, and prove the model scores before accepting traffic.
    service.model.score(_WARM_UP[0])
    service.model.score_batch(_WARM_UP)
    return service


def _sender(settings: ServerSettings) -> CloudApiSender | None:
    """The Cloud API sender when the webhook or the agent routes are on (agents write to
    customers through it too) and the environment has its credentials; None means the
    default log sender."""
    return sender_from_env(os.environ) if settings.webhook or settings.agents else None


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings from NLU_SERVE_SETTINGS, secrets from
    the usual environment variables."""
    raw = os.environ.get(ENV_SETTINGS)
    if not raw:
        raise ConfigError(f"{ENV_SETTINGS} is not set; start the server with `nlu serve`")
    settings = ServerSettings.from_env(**json.loads(raw))
    _configure_logging(settings.log_level)
    return create_app(load_service(settings), settings, sender=_sender(settings))


# glibc's malloc gives each thread that allocates at the same time as another its own arena
# (up to 8 per core), and an arena keeps what was freed in it. The request threads of a
# busy server (more of them while Meta is slow to take a reply) so grow the resident
# memory for minutes: the soak measured +15-21 MiB in 150 s with the default, +5 MiB
# with two arenas, at no throughput cost on these 2-core machines.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number for the arena limit (glibc malloc.h)


def bound_malloc_arenas(environ: MutableMapping[str, str] | None = None) -> bool:
    """Limit glibc's malloc arenas to MALLOC_ARENAS for this process (mallopt) and for the
    workers it starts (MALLOC_ARENA_MAX, read by glibc at start), unless the operator set
    MALLOC_ARENA_MAX. True when this process's limit was set."""
    environ = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in environ or not sys.platform.startswith("linux"):
        return False
    environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)
    try:
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to bound
        return False


def serve(settings: ServerSettings) -> None:
    """Check everything, then run uvicorn. Raises NLUError (before uvicorn starts) when
    a secret is missing or the model, catalogue or database is unusable."""
    import uvicorn

    bound_malloc_arenas()
    settings.check()
    if settings.log_level.lower() not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ConfigError(f"--log-level must be critical, error, warning, info or debug, got {settings.log_level!r}")
    sender = _sender(settings)  # refuses half-set credentials before anything loads
    try:
        service = load_service(settings)  # verifies the model even when workers load their own
    except BaseException:
        if sender is not None:
            sender.close()
        raise
    _configure_logging(settings.log_level)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "server_header": False,
    }
    if settings.workers == 1:
        app = create_app(service, settings, sender=sender)
        try:
            uvicorn.run(app, **common)
        finally:
            service.close()
            if sender is not None:
                sender.close()
        return
    service.close()
    if sender is not None:
        sender.close()  # each worker makes its own
    os.environ[ENV_SETTINGS] = json.dumps(replace(settings, workers=1).public())
    uvicorn.run("nlu.server:app_from_env", factory=True, workers=settings.workers, **common)
