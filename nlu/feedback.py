"""Agents' verdicts back into training data.

An agent who resolves a ticket can say which intent the customer meant
(``nlu queue resolve ID --agent ana --intent estado_pedido``; one the model lacks only
with ``--new-intent``, so a typo does not become a class). Those tickets are the
messages the bot could not handle alone, so they are the most useful rows to add to the
training data. :func:`export_labelled` writes them as a CSV that ``nlu data check`` and
``nlu train`` read as they are: ``text`` and ``intent``, plus columns for the analyst
(which the data loader ignores) saying where each row came from and what the bot thought.

The text is the ticket's, PII-redacted; the featuriser reads the redaction tags as the
placeholders of the raw text (:mod:`nlu.text`), so a redacted row trains the same features.
The conversation id is left out: on WhatsApp it is the customer's phone number, and the
ticket id already leads back to the conversation for whoever may read the queue. Tickets
without the customer's own words (a tapped button with no text, the note standing for a
message not kept before consent) are skipped: a blank text makes ``nlu train`` refuse the
whole file, and the note would teach the model the bot's words. So is a message chosen
by tapping a button (its text is the bot's own option title), and a bare request for a
person ("quiero hablar con una persona") that the agent labelled with the topic the
customer raised next: taught as such it would teach that asking for a person means a
refund (and clash with the training rows that say it means a person). A request that
names its topic too ("me cobraron dos veces, quiero hablar con una persona") is kept.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .atomic import make_dirs, write_atomic
from .config import RoutingPolicy
from .errors import OutputError
from .queue import Queue, Ticket
from .routing import fold, matches_any
from .service import is_pending_note
from .text import clean

__all__ = ["EXPORT_COLUMNS", "ExportSummary", "export_labelled"]

EXPORT_COLUMNS = (
    "text", "intent", "ticket_id", "predicted_intent", "predicted_confidence", "agent", "resolved_at",
)


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int
    per_intent: dict[str, int]  # most common first
    corrected: int  # rows whose agent intent differs from the bot's top intent
    skipped: int = 0  # labelled tickets without the customer's words on the topic (see the module docstring)


def export_labelled(queue: Queue, path: str | Path, policy: RoutingPolicy | None = None) -> ExportSummary:
    """Write every resolved ticket that an agent gave an intent to ``path`` (CSV), oldest
    first, all at once or not at all (the file is replaced atomically). ``policy`` says
    what a request for a person looks like (default: the default routing policy's)."""
    policy = policy or RoutingPolicy()
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise OutputError(f"{path}: the export is CSV; name a .csv file")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    counts: Counter[str] = Counter()
    corrected = skipped = 0
    for ticket in queue.labelled():
        assert ticket.agent_intent is not None  # labelled() returns labelled tickets only
        if not clean(ticket.text) or is_pending_note(ticket.text) or _tapped(ticket) or _person_not_topic(ticket, policy):
            skipped += 1
            continue
        predicted = ticket.prediction.get("intent")
        writer.writerow(_row(ticket, predicted))
        counts[ticket.agent_intent] += 1
        corrected += isinstance(predicted, str) and predicted != ticket.agent_intent
    write_atomic(make_dirs(path.parent) / path.name, buffer.getvalue().encode("utf-8"))
    return ExportSummary(path, sum(counts.values()), dict(counts.most_common()), corrected, skipped)


# The words of a bare request for a person ("quiero hablar con una persona ya"): a message
# that holds any other word of 4 letters or more names something besides.
_FILLER = frozenset({
    "quiero", "necesito", "quisiera", "deseo", "puedo", "puede", "pueden", "podria", "podrian",
    "seria", "favor", "porfa", "porfavor", "please", "ahora", "ahorita", "urgente", "gracias",
    "hola", "buenas", "buenos", "tardes", "dias", "noches", "alguien", "algun", "alguna", "alguno",
    "real", "humano", "humana", "persona", "personal", "asesor", "asesora", "agente", "operador",
    "operadora", "ejecutivo", "ejecutiva", "representante", "gente", "equipo", "ustedes", "usted",
    "mismo", "rapido", "pronto", "inmediato", "inmediatamente", "directamente", "hablar", "hable",
    "hablen", "comunicar", "comunicarme", "comuniquen", "contactar", "contactarme", "chatear",
    "conversar", "pasame", "pasen", "pasar", "pasarme", "transferir", "transfieran", "transfiere",
    "atienda", "atiendan", "atender", "atencion", "cliente", "clientes", "servicio", "llame",
    "llamen", "llamar", "llamada", "para", "pero", "tengo",
})
_CONTENT = re.compile(r"[a-zñ]{4,}")


def _tapped(ticket: Ticket) -> bool:
    """The escalating message was a button or list choice: its text is the option's title."""
    return any(t.get("message_id") == ticket.message_id and "button_choice" in (t.get("reasons") or ()) for t in ticket.turns)


def _person_not_topic(ticket: Ticket, policy: RoutingPolicy) -> bool:
    """A request for a person, labelled with another intent, that names no topic besides."""
    if ticket.agent_intent in policy.human_intents:
        return False
    folded = fold(ticket.text)
    if not matches_any(folded, policy.human_patterns):
        return False
    # Whole words, not what the patterns matched: a pattern spans up to 25 characters
    # between "hablar" and "persona", and "hablar del reembolso con alguien" is a topic.
    return all(w in _FILLER for w in _CONTENT.findall(folded))


def _row(ticket: Ticket, predicted: Any) -> list[Any]:
    confidence = ticket.prediction.get("confidence")
    return [
        ticket.text,
        ticket.agent_intent,
        ticket.id,
        predicted if isinstance(predicted, str) else "",
        f"{confidence:.4f}" if isinstance(confidence, int | float) else "",
        ticket.agent or "",
        # A ticket is not changed after it is resolved, so its last update is the resolution.
        datetime.fromtimestamp(ticket.updated_at, UTC).isoformat(timespec="seconds"),
    ]
