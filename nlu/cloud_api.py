"""Sending the bot's replies through the WhatsApp Cloud API.

:class:`CloudApiSender` is the :class:`nlu.whatsapp.Sender` that ``nlu serve`` uses when
``NLU_WHATSAPP_ACCESS_TOKEN`` and ``NLU_WHATSAPP_PHONE_NUMBER_ID`` are set: each reply
body is POSTed to ``{api_url}/{phone_number_id}/messages`` with the access token as a
bearer token, over one pooled HTTPS connection (a TLS handshake per reply would cost more
than scoring the message).

Several business numbers. One app (one token) may send from several numbers of the
business (sales and support, one per country). A reply goes from the number the customer
wrote to (``send(body, phone_number_id=...)``), and only from a number the deployment
serves: ``NLU_WHATSAPP_PHONE_NUMBER_ID``, the default (agents' messages on tickets that
name no number, webhooks without one), plus those listed in
``NLU_WHATSAPP_PHONE_NUMBER_IDS``. The token's reach is not the test: Meta delivers the
webhooks of every number of the app's business accounts, some of which may belong to
another bot or a person's app, and answering those would talk over them.

Retries. A POST is sent again only when Meta cannot have delivered it: the connection
was never made, or Meta answered that it did not take the message (HTTP 429 or 503, or
one of its transient error codes). A request that timed out after it was sent, or got a
500, 502 or 504 without such a code (a proxy's or load balancer's answer says nothing of
the Graph API), is *not* retried, because the customer may already have the reply and a second one would arrive
twice; it is reported instead. Everything else Meta refuses (an expired token, a closed
24-hour customer-service window, a malformed body) raises :class:`SendError` at once with
Meta's code and message, which the server logs and counts.

Neither the token nor the customer's full number ever appears in an error or a log line.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from .errors import ConfigError, NLUError
from .whatsapp import mask_phone

__all__ = [
    "DEFAULT_API_URL", "ENV_ACCESS_TOKEN", "ENV_API_URL", "ENV_PHONE_NUMBER_ID", "ENV_PHONE_NUMBER_IDS", "CloudApiSender", "SendError",
    "sender_from_env",
]

ENV_ACCESS_TOKEN = "NLU_WHATSAPP_ACCESS_TOKEN"
ENV_PHONE_NUMBER_ID = "NLU_WHATSAPP_PHONE_NUMBER_ID"
ENV_PHONE_NUMBER_IDS = "NLU_WHATSAPP_PHONE_NUMBER_IDS"  # more business numbers served, comma-separated
ENV_API_URL = "NLU_WHATSAPP_API_URL"  # another Graph API version, or a proxy
DEFAULT_API_URL = "https://graph.facebook.com/v21.0"

# Meta's error codes that mean "not taken now, try again": API unknown / service errors (1,
# 2), call-rate limits (4, 80007, 130429), pair rate limit (131056), "something went wrong"
# (131000), service unavailable (131016), server temporarily unavailable (133004).
TRANSIENT_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056, 133004})
# Server errors after which the message may have been taken (500 internal error, 502 bad
# gateway, 504 gateway timeout), unless Meta's error code says it was not. 429 and 503 mean
# "not now" and are retried.
_MAYBE_TAKEN = frozenset({500, 502, 504})


def _renewable(status: int, code: int | None) -> bool:
    """A refusal of the credentials (HTTP 401, code 190: the token expired or was revoked):
    nothing went out, and the same reply goes through once the token is renewed."""
    return status == 401 or code == 190

log = logging.getLogger(__name__)


class SendError(NLUError):
    """Meta did not take a reply (or may not have): the message names why, without secrets."""

    def __init__(
        self, message: str, *, status: int | None = None, code: int | None = None, maybe_delivered: bool = False, retry: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.maybe_delivered = maybe_delivered  # sent, but no answer came: sending again could double it
        # Not delivered, and the same body may go through later (Meta unreachable or busy, the
        # token to be renewed): the server keeps a bot reply for resending (nlu.outbox).
        self.retry = retry and not maybe_delivered


class CloudApiSender:
    """POST reply bodies to the Cloud API; thread-safe (one ``httpx.Client`` pool).

    ``phone_number_id`` is the default business number, ``phone_number_ids`` the others it
    may send from (one token and one pool for all). ``attempts`` counts the first try;
    waits double from ``backoff`` seconds, or follow Meta's ``Retry-After`` up to
    ``max_wait``. The server sends while Meta waits for its webhook answer, so the whole
    budget stays at a few seconds."""

    def __init__(
        self,
        access_token: str,
        phone_number_id: str,
        *,
        phone_number_ids: Iterable[str] = (),
        api_url: str = DEFAULT_API_URL,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 0.25,
        max_wait: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        token = access_token.strip()
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            # Anything else cannot go in an HTTP header; saying so beats a failed first reply.
            raise ConfigError(f"{ENV_ACCESS_TOKEN} must be the access token Meta gives: printable ASCII without spaces")
        if not phone_number_id.strip().isdigit():
            raise ConfigError(f"{ENV_PHONE_NUMBER_ID} must be the numeric id Meta shows for the number, got {phone_number_id!r}")
        others = [number.strip() for number in phone_number_ids]
        for number in others:
            if not number.isdigit():
                raise ConfigError(f"{ENV_PHONE_NUMBER_IDS}: {number!r} is not the numeric id Meta shows for a number")
        if not _is_http_url(api_url):
            raise ConfigError(f"{ENV_API_URL} must be an http(s) URL, got {api_url!r}")
        if httpx.URL(api_url).scheme == "http" and not _is_loopback(httpx.URL(api_url).host):
            # The access token goes in every request's header.
            raise ConfigError(f"{ENV_API_URL} must use https (http only to this machine, e.g. a local proxy), got {api_url!r}")
        for name, value, low in (("timeout", timeout, 0.1), ("backoff", backoff, 0.0), ("max_wait", max_wait, 0.0)):
            if not (math.isfinite(value) and value >= low):
                raise ConfigError(f"{name} must be a number >= {low}, got {value!r}")
        if not 1 <= attempts <= 10:
            raise ConfigError(f"attempts must be 1..10, got {attempts!r}")
        self.phone_number_id = phone_number_id.strip()
        self.phone_number_ids = frozenset({self.phone_number_id, *others})
        self._api_url = api_url.rstrip("/")
        self.url = self._url(self.phone_number_id)  # the default number's
        self.attempts = attempts
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep
        self._token = token  # only to scrub it from what Meta (or a proxy) echoes back
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            # A connection that is not up in 2 s is not coming; retrying beats waiting.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
        )

    def __repr__(self) -> str:  # never the token
        return f"CloudApiSender({self.url!r})"

    def _url(self, phone_number_id: str) -> str:
        return f"{self._api_url}/{phone_number_id}/messages"

    def send(self, body: dict[str, Any], *, phone_number_id: str | None = None) -> None:
        """Send ``body`` from business number ``phone_number_id`` (None: the default)."""
        recipient = str(body.get("to") or body.get("recipient") or "")  # a phone number, or a BSUID
        to = mask_phone(recipient)
        number = self.phone_number_id if phone_number_id is None else phone_number_id
        if number not in self.phone_number_ids:
            # Refused before anything leaves: sending from the number the customer did not
            # write to would reach them from a stranger, or be refused by Meta.
            raise SendError(
                f"business number {number} is not one this deployment sends from; the reply to {to} was not sent"
                f" (serve it by listing it in {ENV_PHONE_NUMBER_IDS})"
            )
        url = self._url(number)
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left: sending it again cannot make a second message.
                failure = SendError(f"cannot reach the WhatsApp Cloud API to reply to {to}: {type(exc).__name__}", retry=True)
                wait = self._wait(attempt, None)
            except httpx.HTTPError as exc:
                # Sent, but no answer: Meta may have delivered it, so it is not sent again.
                raise SendError(
                    f"no answer from the WhatsApp Cloud API for the reply to {to} ({type(exc).__name__}); not retried, it may have been delivered",
                    maybe_delivered=True,
                ) from None
            else:
                if response.is_success:
                    if log.isEnabledFor(logging.DEBUG):  # parsing the answer only to log it
                        log.debug("sent reply to %s: %s", to, self._scrubbed(_message_id(response), recipient, to))
                    return
                status, code, detail = response.status_code, *_meta_error(response)
                detail = self._scrubbed(detail, recipient, to)
                if status in _MAYBE_TAKEN and code not in TRANSIENT_CODES:
                    # A gateway's error, or Meta's without its word that it did not take
                    # the message: the request may have gone through, so it is not sent again.
                    raise SendError(
                        f"WhatsApp Cloud API answered HTTP {status}{detail} for the reply to {to}; not retried, it may have been delivered",
                        status=status, code=code, maybe_delivered=True,
                    )
                transient = status in (429, 503) or code in TRANSIENT_CODES
                failure = SendError(
                    f"WhatsApp Cloud API refused the reply to {to}: HTTP {status}{detail}{_hint(code)}",
                    status=status, code=code, retry=transient or _renewable(status, code),
                )
                if not transient:
                    raise failure
                wait = self._wait(attempt, response.headers.get("Retry-After"))
            if attempt == self.attempts:
                raise failure
            log.warning("%s; retrying in %.2f s (attempt %d of %d)", failure, wait, attempt + 1, self.attempts)
            self._sleep(wait)

    def close(self) -> None:
        self._client.close()

    def _scrubbed(self, text: str, recipient: str, masked: str) -> str:
        """``text`` from the other side without the full number or the token, which some
        error messages quote back from the request."""
        if recipient:
            text = text.replace(recipient, masked)
        return text.replace(self._token, "***")

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        wait = self.backoff * 2 ** (attempt - 1)
        asked = _seconds(retry_after)
        return min(max(wait if asked is None else asked, 0.0), self.max_wait)


def sender_from_env(environ: Mapping[str, str]) -> CloudApiSender | None:
    """The Cloud API sender the environment configures, or None when none of its variables is set."""
    token = environ.get(ENV_ACCESS_TOKEN, "").strip()
    number = environ.get(ENV_PHONE_NUMBER_ID, "").strip()
    # Commas (or spaces) between the ids; an empty item (a trailing comma) is no number.
    others = environ.get(ENV_PHONE_NUMBER_IDS, "").replace(",", " ").split()
    if not token and not number and not others:
        return None
    if not token or not number:
        missing = ENV_ACCESS_TOKEN if not token else ENV_PHONE_NUMBER_ID
        raise ConfigError(f"{missing} not set: replies are sent only with both {ENV_ACCESS_TOKEN} and {ENV_PHONE_NUMBER_ID}")
    return CloudApiSender(token, number, phone_number_ids=others, api_url=environ.get(ENV_API_URL, "").strip() or DEFAULT_API_URL)


def _is_http_url(url: str) -> bool:
    """An http(s) URL naming a host: without one every send fails after the request is
    built, which reads as "sent, no answer" and leaves an agent's message unknown."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("https", "http") and bool(parsed.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After in seconds; None for none, an HTTP date or garbage (the backoff applies)."""
    try:
        seconds = float(retry_after) if retry_after is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _hint(code: int | None) -> str:
    """What a person can do about the refusals they meet most."""
    if code == 131047:
        return " (the customer last wrote more than 24 hours ago: WhatsApp lets only a template message through now)"
    if code == 132000:
        return " (the template takes another number of parameters than were given)"
    if code == 132001:
        return " (no such template, or it is not approved in that language: check its name and language code in WhatsApp Manager)"
    if code == 190:
        return f" (the access token has expired or was revoked: renew {ENV_ACCESS_TOKEN})"
    return ""


def _meta_error(response: httpx.Response) -> tuple[int | None, str]:
    """Meta's error code and a short description from an error body (``{"error": {...}}``)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None, ""
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code") if isinstance(error.get("code"), int) else None
    parts = [f"code {code}" if code is not None else "", str(error.get("message") or "")[:300]]
    details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
    if isinstance(details, str):
        parts.append(details[:300])
    if isinstance(error.get("fbtrace_id"), str):
        parts.append(f"fbtrace_id {error['fbtrace_id']}")
    shown = ": ".join(p for p in parts if p)
    return code, f", {shown}" if shown else ""


def _message_id(response: httpx.Response) -> str:
    try:
        return str(response.json()["messages"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return json.dumps(response.text[:200])
