"""An agent writing to the customer of the ticket they hold.

On WhatsApp through the Cloud API the business number belongs to the API: the agents
cannot answer from a phone, so their messages go out through the same sender as the
bot's replies (``POST /v1/queue/{id}/messages``, ``nlu queue send``), and from the business
number the customer last wrote to, as the ticket's turns record it (the sender's default
number for a ticket whose turns name none).

Each message is a turn of the ticket, so every agent who opens it sees the whole
exchange (the customer's answers join the ticket as handover turns), and so does the
agent of the conversation's next ticket (:meth:`nlu.queue.Queue.agent_messages` reads
them back for its history). The order makes a
retry safe: the turn is recorded first with ``"sent": false`` under the caller's
``message_id``, then sent, then marked sent, or removed when the send failed. A retried
request with the same ``message_id`` finds the turn and sends nothing, so the customer
never gets a message twice; a message whose send failed can be sent again. When the
request went out but no answer came, the turn stays with ``"sent": null`` (unknown), and
a retry sends nothing: the agent reads the ticket and decides.

More than 24 hours after the customer's last message (the ticket's ``window_closes_at``)
WhatsApp delivers only an approved template message: a free-form text is refused with
:class:`nlu.errors.WindowClosed` (HTTP 409 ``window_closed``) before it is sent, where
Meta would refuse it with code 131047. A :class:`nlu.responses.Template` instead of the
text sends one, with the same guarantees, and its turn keeps the template's name,
language and (redacted) parameters.

A customer who opted out ("BAJA", "no me escriban más", the "Darme de baja" button, also
while a person holds the conversation) gets no agent message: the conversation's consent
is read once the turn is recorded and just before the send, and a revoked one removes the
turn and raises :class:`nlu.errors.OptedOut` (HTTP 409 ``opted_out``) until the customer
opts in again, or writes to the ticket again: without the consent requirement the bot
goes on serving a customer who opted out (they write first), so a request for a person
after "BAJA" is answered by one. With it, messages after an opt-out are silent and join
no ticket. Opting out of messages does not close the case, so the agent can still
resolve the ticket (or release it).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .cloud_api import SendError
from .conversation import Conversations
from .errors import NLUError, OptedOut, WindowClosed
from .queue import Queue, Ticket
from .responses import Reply, Template, template_body, to_whatsapp
from .whatsapp import Sender, send_reply

__all__ = ["AgentMessage", "send_agent_message"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentMessage:
    ticket: Ticket
    turn: dict[str, Any]  # as stored: the text redacted, "sent" true once it went out
    duplicate: bool  # a retried request: nothing was sent this time


def send_agent_message(
    queue: Queue,
    sender: Sender,
    ticket_id: int,
    agent: str,
    text: str | Template,
    message_id: str | None = None,
    *,
    conversations: Conversations,
) -> AgentMessage:
    """Send ``text`` from ``agent`` (who must hold the ticket) to the ticket's customer,
    unless the customer opted out (``conversations`` keeps their consent; :class:`OptedOut`).
    A :class:`Template` instead of a text sends that approved template message: the only
    kind WhatsApp delivers once the customer last wrote more than 24 hours ago.

    The sender's exception propagates, after the turn is removed (nothing was sent) or,
    for a :class:`SendError` that may have been delivered and for an interruption
    (``KeyboardInterrupt``, ``SystemExit``), kept with ``"sent": None``."""
    message_id = message_id if message_id is not None else f"agent-{uuid.uuid4().hex}"
    ticket, turn, new = queue.add_agent_message(ticket_id, agent, message_id, text)
    if not new:
        return AgentMessage(ticket, turn, duplicate=True)  # nothing is sent again
    try:
        # Read once the turn is recorded: an opt-out arriving meanwhile has the shortest
        # window left before the send.
        if _opted_out(ticket, conversations):
            raise OptedOut(
                f"ticket {ticket.id}: the customer opted out of messages; nothing was sent, and nothing can be "
                "until they opt in again (resolve the ticket when the case is done)"
            )
        closes = ticket.window_closes_at
        if not isinstance(text, Template) and closes is not None and time.time() >= closes:
            # Meta would refuse it (code 131047) after a round trip. The window counts from
            # when nlu handled the customer's message, never before Meta's own timestamp,
            # so a text refused here is one Meta refuses too.
            raise WindowClosed(
                f"ticket {ticket.id}: the customer last wrote more than 24 hours ago, so WhatsApp delivers only an "
                "approved template message now; nothing was sent (send a template instead)"
            )
    except BaseException:
        queue.settle_agent_message(ticket.id, message_id, sent=False)  # nothing went out
        raise
    try:
        # The conversation id of a WhatsApp conversation is the customer's wa_id.
        to = ticket.conversation_id
        body = template_body(text, to) if isinstance(text, Template) else to_whatsapp(Reply(text=text), to=to)
        send_reply(sender, body, _business_number(ticket))
    except SendError as exc:
        # Sent but unanswered: keep the turn (sent: null) so a retry cannot send it twice.
        queue.settle_agent_message(ticket.id, message_id, sent=None if exc.maybe_delivered else False)
        raise
    except Exception:
        queue.settle_agent_message(ticket.id, message_id, sent=False)
        raise
    except BaseException:
        # Ctrl-C or an exit can strike after the request left: unknown, like no answer.
        queue.settle_agent_message(ticket.id, message_id, sent=None)
        raise
    try:
        ticket = queue.settle_agent_message(ticket.id, message_id, sent=True)
    except NLUError as exc:
        # The customer has the message; only its mark is missing ("sent": false stays, and a
        # retry sends nothing). Reporting a failure would invite sending it again.
        log.warning("message %s on ticket %s was sent, but marking it sent failed: %s", message_id, ticket.id, exc)
        return AgentMessage(ticket, {**turn, "sent": True}, duplicate=False)
    stored = next(t for t in ticket.agent_turns() if t.get("message_id") == message_id)  # not an earlier ticket's
    return AgentMessage(ticket, stored, duplicate=False)


def _opted_out(ticket: Ticket, conversations: Conversations) -> bool:
    """Whether the customer opted out and has not written to the ticket since (the opt-out
    joins the ticket as their latest turn, or came after it)."""
    if conversations.view(ticket.conversation_id).consent != "revoked":
        return False
    said = ticket.customer_turns()
    latest = said[-1] if said else {}
    if "opt_out" in latest.get("reasons", ()) or latest.get("message_id") is None:
        return True
    # From when nlu began handling it: an opt-out that another worker recorded meanwhile
    # (the bot held the conversation as far as it knew, so it joined no ticket) came after.
    wrote = latest.get("created_at")
    since = float(wrote) if isinstance(wrote, int | float) and not isinstance(wrote, bool) and math.isfinite(wrote) else None
    return conversations.opted_out_after(str(latest["message_id"]), since=since)


def _business_number(ticket: Ticket) -> str | None:
    """The business number the customer last wrote to; None when no turn names one (a
    ticket from ``/v1/messages``, or from before nlu kept it): the sender's default."""
    for turn in reversed(ticket.customer_turns()):
        number = turn.get("phone_number_id")
        if isinstance(number, str) and number:
            return number
    return None
