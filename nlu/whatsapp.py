"""WhatsApp Cloud API webhook: signature check, payload parsing, and the outbound sender.

Everything here is framework-free so it can be tested (and reused) without HTTP:

* :func:`check_signature` verifies ``X-Hub-Signature-256`` (``sha256=<hex>``, the
  HMAC-SHA256 of the *raw* request body keyed with the app secret) in constant time.
  The server calls it before it parses a single byte of the body.
* :func:`parse_webhook` turns a decoded notification (``object`` ->
  ``entry[]`` -> ``changes[]`` -> ``value`` -> ``messages[]`` / ``statuses[]``) into the
  customer messages the service should handle. It is strict about the fields it reads
  (types are checked and a mistake names the JSON path) and lenient about everything
  else, because Meta adds fields to these payloads without notice. A mistake in the
  envelope refuses the notification; a mistake in one message ignores that message only.
  Each message keeps the business number it was sent to (``value.metadata.phone_number_id``),
  and with the deployment's numbers given, what was sent to another number is ignored.
* :class:`Sender` is where a reply body goes; :class:`LogSender`, the default, writes
  one JSON line per reply to a logger; :class:`nlu.cloud_api.CloudApiSender` makes the
  Graph API call, from the number the customer wrote to (:func:`send_reply`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from .errors import InputError

SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="


class PayloadError(InputError):
    """A signed webhook body that is not a WhatsApp notification we can read."""


# -- signature ----------------------------------------------------------------------------


class Signature(Enum):
    OK = "ok"
    MISSING = "missing"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"


def sign(secret: str, body: bytes) -> str:
    """The header value Meta sends for ``body`` (used by tests and the load generator)."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def check_signature(secret: str, body: bytes, header: str | None) -> Signature:
    """Compare ``header`` with the HMAC of ``body`` in constant time.

    The digest is always computed, even for a malformed header, so the time taken does
    not tell a caller which check failed.
    """
    expected = sign(secret, body).encode("ascii")
    if header is None or not header.strip():
        return Signature.MISSING
    # Header values arrive decoded as latin-1, so every character fits in one byte.
    given = header.strip().lower().encode("latin-1", errors="replace")
    if not given.startswith(SIGNATURE_PREFIX.encode("ascii")) or len(given) != len(expected):
        hmac.compare_digest(expected, expected)
        return Signature.MALFORMED
    return Signature.OK if hmac.compare_digest(expected, given) else Signature.MISMATCH


# -- payload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatsAppMessage:
    """One customer message from a notification, ready for ``Service.handle``.

    ``conversation_id`` is the customer's WhatsApp id (``contacts[].wa_id``, the same as
    the message's ``from``) or, when Meta withholds the phone number of a customer with a
    username, their business-scoped user id (``from_user_id``, ``contacts[].user_id``,
    e.g. ``"US.13491208655302741918"``); ``message_id`` is Meta's ``wamid...``, the
    idempotency key.
    A reply button or list row picked by the customer gives its ``button_id`` and, as
    ``text``, its title (what the customer saw and tapped). ``phone_number_id`` is the
    business number the customer wrote to, where the reply must come from (None when the
    change has no ``metadata``: the default number).
    """

    conversation_id: str
    message_id: str
    type: str
    text: str
    button_id: str | None = None
    phone_number_id: str | None = None
    context_message_id: str | None = None  # the bot message a button reply answers
    media: str | None = None  # a message without text to read: its type ("audio", "sticker"...)


@dataclass(frozen=True)
class Ignored:
    """Something in the notification that is acknowledged but not handled."""

    message_id: str | None
    type: str
    reason: str
    message: str | None = None  # what was wrong, for a message that could not be read
    phone_number_id: str | None = None  # for unserved_number: the business number it was sent to

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message_id": self.message_id, "type": self.type, "reason": self.reason}
        if self.message is not None:
            out["message"] = self.message
        if self.phone_number_id is not None:
            out["phone_number_id"] = self.phone_number_id
        return out


@dataclass(frozen=True)
class Status:
    """A delivery report (``statuses[]``) for a message the business sent."""

    message_id: str | None
    status: str  # sent, delivered, read, failed; anything else is "other"
    errors: tuple[str, ...] = ()  # "131047 Re-engagement message", for a failed one


@dataclass(frozen=True)
class Notification:
    messages: tuple[WhatsAppMessage, ...]
    statuses: tuple[Status, ...]
    ignored: tuple[Ignored, ...]


_STATUSES = ("sent", "delivered", "read", "failed")


# Media a customer can send with a caption: the caption is what they wrote ("me llegó
# roto" under a photo of the parcel), so it is handled as their text. What a customer
# sends that has no text the model can read (a voice note, a sticker, a photo without a
# caption, a location, a contact card) is still a message to answer: it goes to the
# service as ``media`` (the bot asks for text, or the agent holding the conversation
# sees it). Everything else (reactions, orders, system notices, ``unsupported`` edits and
# deletions, flow replies) is acknowledged, so Meta does not retry, and reported back as
# ignored.
_CAPTIONED = ("image", "video", "document")
_UNREADABLE = (*_CAPTIONED, "audio", "sticker", "location", "contacts")


def parse_webhook(payload: Any, phone_number_ids: Collection[str] | None = None) -> Notification:
    """Read a decoded webhook body; raise :class:`PayloadError` naming the bad path.

    ``phone_number_ids``: the business numbers this deployment serves. The messages and
    delivery reports of a change for another number (``metadata.phone_number_id``) are
    ignored as ``unserved_number``: one app receives the webhooks of every number of its
    business accounts, and another bot or a person may be answering those. A change that
    names no number is the default number's. None (the default) serves every number.
    """
    root = _object(payload, "body")
    obj = root.get("object")
    if obj != "whatsapp_business_account":
        raise PayloadError(f"body.object: expected \"whatsapp_business_account\", got {obj!r}")
    messages: list[WhatsAppMessage] = []
    ignored: list[Ignored] = []
    statuses: list[Status] = []
    for i, entry in enumerate(_list(root.get("entry"), "body.entry")):
        where = f"entry[{i}]"
        for j, change in enumerate(_list(_object(entry, where).get("changes", []), f"{where}.changes")):
            cwhere = f"{where}.changes[{j}]"
            change = _object(change, cwhere)
            if change.get("field", "messages") != "messages":
                ignored.append(Ignored(None, str(change.get("field")), "unsupported_field"))
                continue
            value = _object(change.get("value"), f"{cwhere}.value")
            vwhere = f"{cwhere}.value"
            metadata = value.get("metadata")
            phone_number_id = _optional_str(metadata.get("phone_number_id"), f"{vwhere}.metadata.phone_number_id") if isinstance(metadata, Mapping) else None
            if phone_number_id is not None and phone_number_ids is not None and phone_number_id not in phone_number_ids:
                ignored += _unserved(value, vwhere, phone_number_id)
                continue
            statuses += [_status(raw) for raw in _list(value.get("statuses", []), f"{vwhere}.statuses")]
            contacts = [_contact(c, f"{vwhere}.contacts[{k}]") for k, c in enumerate(_list(value.get("contacts", []), f"{vwhere}.contacts"))]
            for k, raw in enumerate(_list(value.get("messages", []), f"{vwhere}.messages")):
                message = _readable_message(raw, f"{vwhere}.messages[{k}]", contacts, phone_number_id)
                if isinstance(message, Ignored):
                    ignored.append(message)
                else:
                    messages.append(message)
    return Notification(tuple(messages), tuple(statuses), tuple(ignored))


def _unserved(value: Mapping[str, Any], where: str, phone_number_id: str) -> list[Ignored]:
    """Everything in a change for a business number this deployment does not serve, read
    only as far as naming it: its content is not ours to check or handle."""
    why = f"sent to business number {phone_number_id}, which this deployment does not serve"
    out = []
    for field in ("statuses", "messages"):
        for raw in _list(value.get(field, []), f"{where}.{field}"):
            item_id, kind = _named(raw)
            out.append(Ignored(item_id, "status" if field == "statuses" else kind, "unserved_number", why, phone_number_id))
    return out


def _named(raw: Any) -> tuple[str | None, str]:
    """The id and type of a message (or report) we will not read further, as far as they
    are there: (None, "unknown") for what is not even an object."""
    fields = raw if isinstance(raw, Mapping) else {}
    item_id, kind = fields.get("id"), fields.get("type")
    return (item_id if isinstance(item_id, str) and item_id else None), (kind if isinstance(kind, str) else "unknown")


def _status(raw: Any) -> Status:
    # Read leniently: a delivery report changes nothing here, it is counted and, when a
    # reply failed, logged; a report we cannot read must not refuse the notification.
    fields = raw if isinstance(raw, Mapping) else {}
    message_id, status, errors = fields.get("id"), fields.get("status"), fields.get("errors")
    reasons = [f"{e.get('code', '?')} {e.get('title', '')}".strip() for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []
    return Status(
        message_id if isinstance(message_id, str) else None,
        status if isinstance(status, str) and status in _STATUSES else "other",
        tuple(reasons),
    )


@dataclass(frozen=True)
class _Contact:
    wa_id: str | None  # the phone-number id; withheld for some customers with a username
    user_id: str | None  # the business-scoped user id (BSUID), sent since April 2026


def _contact(raw: Any, where: str) -> _Contact:
    contact = _object(raw, where)
    return _Contact(_optional_str(contact.get("wa_id"), f"{where}.wa_id"), _optional_str(contact.get("user_id"), f"{where}.user_id"))


def _conversation_id(raw: Mapping[str, Any], where: str, contacts: list[_Contact]) -> str:
    """Who sent the message: the phone-number id when Meta shares it, else the BSUID.

    The phone number stays the key whenever it is there, so conversations stored before
    BSUIDs existed carry on; a customer whose number Meta withholds (a username, no recent
    contact) has only ``from_user_id`` and ``contacts[].user_id``.
    """
    sender = _optional_str(raw.get("from"), f"{where}.from")
    wa_ids = [c.wa_id for c in contacts if c.wa_id is not None]
    # contacts[].wa_id is the customer's id; with one contact it is the sender, and with
    # several (rare; batched notifications) the one equal to "from" is.
    if sender is not None and (sender in wa_ids or not wa_ids):
        return sender
    if len(wa_ids) == 1:
        return wa_ids[0]
    if sender is not None:
        raise PayloadError(f"{where}.from: cannot tell which contact sent the message")
    user_id = _optional_str(raw.get("from_user_id"), f"{where}.from_user_id")
    user_ids = [c.user_id for c in contacts if c.user_id is not None]
    if user_id is not None:
        return user_id
    if len(user_ids) == 1:
        return user_ids[0]
    raise PayloadError(f"{where}: no from or from_user_id, and no single contact to take it from")


def _readable_message(raw: Any, where: str, contacts: list[_Contact], phone_number_id: str | None) -> WhatsAppMessage | Ignored:
    """One message, or an :class:`Ignored` ``invalid_message`` naming what is wrong with it.

    A message we cannot read must not fail the whole notification: Meta batches several
    messages (and several customers) in one delivery and redelivers all of it until it
    sees a 200, so a 422 lost every other message in the batch, on every redelivery.
    """
    try:
        return _message(_object(raw, where), where, contacts, phone_number_id)
    except PayloadError as exc:
        return Ignored(*_named(raw), "invalid_message", str(exc))


def _message(raw: Mapping[str, Any], where: str, contacts: list[_Contact], phone_number_id: str | None) -> WhatsAppMessage | Ignored:
    message_id = _string(raw.get("id"), f"{where}.id")
    conversation_id = _conversation_id(raw, where, contacts)
    kind = _string(raw.get("type"), f"{where}.type")
    context = raw.get("context")
    context_id = _optional_str(context.get("id"), f"{where}.context.id") if isinstance(context, Mapping) else None
    common: dict[str, Any] = {
        "conversation_id": conversation_id, "message_id": message_id, "phone_number_id": phone_number_id, "context_message_id": context_id,
    }
    if kind == "text":
        body = _string(_object(raw.get("text"), f"{where}.text").get("body"), f"{where}.text.body")
        return WhatsAppMessage(type="text", text=body, **common)
    if kind == "interactive":
        interactive = _object(raw.get("interactive"), f"{where}.interactive")
        sub = _string(interactive.get("type"), f"{where}.interactive.type")
        if sub not in ("button_reply", "list_reply"):
            return Ignored(message_id, f"interactive.{sub}", "unsupported_type")
        picked = _object(interactive.get(sub), f"{where}.interactive.{sub}")
        button_id = _string(picked.get("id"), f"{where}.interactive.{sub}.id")
        title = _optional_str(picked.get("title"), f"{where}.interactive.{sub}.title") or ""
        return WhatsAppMessage(type=sub, text=title, button_id=button_id, **common)
    if kind == "button":  # quick-reply button of a template message
        button = _object(raw.get("button"), f"{where}.button")
        payload = _optional_str(button.get("payload"), f"{where}.button.payload")
        text = _optional_str(button.get("text"), f"{where}.button.text") or ""
        return WhatsAppMessage(type="button", text=text, button_id=payload, **common)
    if kind in _CAPTIONED:
        media = _object(raw.get(kind), f"{where}.{kind}")
        caption = _optional_str(media.get("caption"), f"{where}.{kind}.caption")
        if caption is not None and caption.strip():
            return WhatsAppMessage(type=kind, text=caption, **common)
    if kind in _UNREADABLE:
        return WhatsAppMessage(type=kind, text="", media=kind, **common)
    return Ignored(message_id, kind, "unsupported_type")


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where}: expected an object, got {_json_type(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PayloadError(f"{where}: expected an array, got {_json_type(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where}: expected a non-empty string, got {_json_type(value)}")
    return value


def _optional_str(value: Any, where: str) -> str | None:
    return None if value is None else _string(value, where)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


# -- sending ------------------------------------------------------------------------------


class Sender(Protocol):
    """Delivers a Cloud API message body (``POST /{phone-number-id}/messages``).

    A real implementation (:class:`nlu.cloud_api.CloudApiSender`) holds the access token
    and the phone number id and makes the HTTP call. It raises on failure (the server logs
    and counts it): ``nlu.cloud_api.SendError(..., maybe_delivered=True)`` when the request
    may have reached the customer (sent, no answer), so it is never sent again; a
    ``SendError`` without ``retry=True`` when it was refused for good; any other exception
    means nothing was sent, and a bot reply is kept for resending (``nlu.outbox``).
    """

    def send(self, body: dict[str, Any]) -> None: ...


@runtime_checkable
class NumbersSender(Protocol):
    """A :class:`Sender` for several business numbers: it names the ones it serves (its
    default among them) and sends from the one given (None: the default).
    :class:`nlu.cloud_api.CloudApiSender` is one; a sender with only ``send(body)`` keeps
    getting the body alone."""

    phone_number_id: str
    phone_number_ids: frozenset[str]

    def send(self, body: dict[str, Any], *, phone_number_id: str | None = None) -> None: ...


def send_reply(sender: Sender, body: dict[str, Any], phone_number_id: str | None) -> None:
    """Send ``body`` from business number ``phone_number_id`` (the one the customer wrote
    to) when the sender serves several numbers; any other sender gets the body alone."""
    if isinstance(sender, NumbersSender):
        sender.send(body, phone_number_id=phone_number_id)
    else:
        sender.send(body)


def served_numbers(sender: Sender) -> tuple[str, ...] | None:
    """The business numbers ``sender`` serves, its default first; None when it does not
    say (every number)."""
    if not isinstance(sender, NumbersSender):
        return None
    return tuple(sorted(sender.phone_number_ids | {sender.phone_number_id}, key=lambda n: (n != sender.phone_number_id, n)))


class LogSender:
    """The default sender: one JSON line per reply on the ``nlu.whatsapp.outbox`` logger.

    The recipient's number (or BSUID) is masked to its last four characters (it is personal data); the
    body holds only the bot's own wording, and no secret ever reaches this logger.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("nlu.whatsapp.outbox")

    def send(self, body: dict[str, Any]) -> None:
        shown = dict(body)
        for address in ("to", "recipient"):  # a phone number, or a BSUID
            if isinstance(shown.get(address), str):
                shown[address] = mask_phone(shown[address])
        self.logger.info(json.dumps(shown, ensure_ascii=False, sort_keys=True))


def mask_phone(number: str) -> str:
    return "*" * max(0, len(number) - 4) + number[-4:]
