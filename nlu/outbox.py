"""Bot replies the WhatsApp sender could not hand over, sent again later.

A webhook reply whose send fails in a way that cannot have delivered it, and may work
later, is kept in the conversation store's outbox: ``SendError.retry`` (Meta unreachable,
rate-limited or unavailable, the access token expired), or any other exception of a
plugged-in sender (by the :class:`nlu.whatsapp.Sender` protocol, nothing was sent). The
webhook still answers Meta 200: its delivery was handled, and a redelivery could not help,
since the message is a duplicate by then and duplicates are never answered twice.

:class:`Resender` (one per server process, a daemon thread) polls the outbox, claims the
due replies (processes and instances sharing the database claim different ones) and sends
each again, quoting the customer's message (WhatsApp's ``context``): it now arrives late,
perhaps after the answers to later messages. Waits double from 10 s to 10 min. A reply is
given up, logged and counted, when

* it is older than 24 hours: WhatsApp's customer-service window has closed, Meta would
  refuse it (``expired``);
* the customer has opted out since it was made (``opted_out``); a reply made after the
  opt-out (its own confirmation, the consent question to a customer who then asked for a
  person) still goes;
* Meta refuses it for good: a malformed body, a number not on WhatsApp (``refused``);
* a send gets no usable answer, so it may have been delivered (``unknown``), or a claim
  outlives its lease because the process died during the send (``interrupted``): a reply
  is never sent twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .cloud_api import SendError
from .conversation import Conversations, PendingReply
from .metrics_http import Metrics
from .whatsapp import Sender, send_reply

__all__ = ["Resender", "keeps"]

log = logging.getLogger(__name__)

FIRST_WAIT = 10.0  # seconds before the second attempt; then doubling
MAX_WAIT = 600.0
MAX_AGE = 24 * 3600.0  # WhatsApp's customer-service window: free-form replies only within 24 hours
LEASE = 120.0  # far above a send's own budget (3 attempts of at most 5 s, waits of at most 2 s)
POLL = 5.0


def keeps(exc: BaseException) -> bool:
    """Whether a failed send is worth another attempt: nothing went out, and it may go through later."""
    return exc.retry if isinstance(exc, SendError) else isinstance(exc, Exception)


class Resender:
    """Sends the outbox's due replies again; :meth:`run_once` is one pass (tests call it),
    :meth:`start` runs passes every ``poll`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        conversations: Conversations,
        sender: Sender,
        metrics: Metrics | None = None,
        *,
        poll: float = POLL,
        clock: Callable[[], float] = time.time,
        refresh: Callable[[PendingReply], dict[str, Any] | None] | None = None,
    ) -> None:
        """``refresh`` gives a reply's body as it must read when sent now, or None to send
        it as it was kept (the server's: a handover's "mañana a las 9:00" is rewritten)."""
        self.conversations = conversations
        self.refresh = refresh
        self.sender = sender
        self.metrics = metrics or Metrics()
        self.poll = poll
        self.clock = clock  # tests move time on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the first failure ---------------------------------------------------------------

    def defer(
        self, message_id: str, conversation_id: str, body: Mapping[str, Any], error: BaseException, phone_number_id: str | None = None
    ) -> None:
        """Keep a reply whose first send (from business number ``phone_number_id``) failed
        with ``error`` (see :func:`keeps`) for resending from the same number."""
        now = self.clock()
        self.conversations.defer_reply(
            message_id, conversation_id, body, _reason(error), failed_at=now, retry_at=now + FIRST_WAIT, phone_number_id=phone_number_id
        )
        self.metrics.inc("nlu_whatsapp_replies_deferred_total")

    # -- resending -----------------------------------------------------------------------

    def run_once(self) -> int:
        """Attempt each due reply once, the longest due first; the number of attempts.

        Replies are claimed one at a time, each just before its attempt: a claim taken for
        a batch could outlive its lease while Meta is slow, and be dropped by another
        process as interrupted. The pass ends at the first failure that keeps its reply:
        Meta is down, and the other replies wait for the next pass rather than each
        spending the sender's attempts on it."""
        attempts = 0
        while not self._stop.is_set():
            now = self.clock()
            claimed, interrupted = self.conversations.claim_replies(now, LEASE, limit=1)
            if interrupted:
                log.warning("%d replies given up: a process stopped while resending them, and they may have been delivered", interrupted)
                self.metrics.inc("nlu_whatsapp_replies_given_up_total", {"reason": "interrupted"}, interrupted)
            if not claimed:
                return attempts
            attempts += 1
            if not self._attempt(claimed[0], now):
                return attempts
        return attempts

    def _attempt(self, reply: PendingReply, now: float) -> bool:
        """One attempt; False when the reply is kept for later (Meta is not taking replies)."""
        if now - reply.created_at > MAX_AGE:
            return self._give_up(reply, "expired", "not sent within 24 hours, WhatsApp's customer-service window")
        if self._opted_out_since(reply):
            return self._give_up(reply, "opted_out", "the customer has opted out since")
        body = (self.refresh(reply) if self.refresh is not None else None) or reply.body
        try:
            # A late reply quotes the message it answers, so it reads right after later ones.
            send_reply(self.sender, {**body, "context": {"message_id": reply.message_id}}, reply.phone_number_id)
        except Exception as exc:  # a plugged-in sender may fail in any way
            if not keeps(exc):
                maybe = isinstance(exc, SendError) and exc.maybe_delivered
                return self._give_up(reply, "unknown" if maybe else "refused", _reason(exc))
            wait = min(FIRST_WAIT * 2**reply.attempts, MAX_WAIT)
            log.warning("reply to message %s not sent again (attempt %d): %s; next in %.0f s", reply.message_id, reply.attempts + 1, _reason(exc), wait)
            self.conversations.settle_reply(reply.message_id, retry_at=now + wait, error=_reason(exc))
            return False
        self.conversations.settle_reply(reply.message_id)
        self.metrics.inc("nlu_whatsapp_sent_total")
        self.metrics.inc("nlu_whatsapp_resent_total")
        log.info("reply to message %s sent on attempt %d", reply.message_id, reply.attempts + 1)
        return True

    def _opted_out_since(self, reply: PendingReply) -> bool:
        # An opt-out before the reply's message does not count: the reply was made for a
        # customer who had opted out (the confirmation itself, the consent question to one
        # who then asked for a person). Read from the outcomes' order, not from the consent
        # at the first send, which may have taken seconds while the opt-out came in.
        if self.conversations.view(reply.conversation_id).consent != "revoked":
            return False
        return self.conversations.opted_out_after(reply.message_id)

    def _give_up(self, reply: PendingReply, reason: str, why: str) -> bool:
        self.conversations.settle_reply(reply.message_id)
        self.metrics.inc("nlu_whatsapp_replies_given_up_total", {"reason": reason})
        log.warning("reply to message %s given up after %d attempts: %s", reply.message_id, reply.attempts, why)
        return True

    # -- the thread ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="nlu-resender", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.run_once()
            except Exception:  # a busy database now is no reason to stop resending later
                log.exception("resending replies failed; trying again in %.0f s", self.poll)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
