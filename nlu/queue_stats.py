"""What the human-agent queue costs and how fast people answer: ``nlu queue stats`` and
``GET /v1/queue/stats``, for the analyst who sets the routing thresholds and the team
lead who staffs the queue.

Over the tickets created in a window (default the last 7 days): how many, in which
status now, how long customers waited for an agent's first message (first response
time, the service-level figure of customer service) and for the resolution, the age of
those still waiting, why the bot escalated (reason codes) and on which intent, each
agent's resolutions, how many the agents labelled (and corrected the bot's intent), and,
with ``[handover]`` hours, how many arrived while nobody works.

Times come from the ticket: created when the bot handed over, its first agent turn (not
the earlier tickets' agent messages that it shows), and the last update of a resolved
ticket (its resolution: later sends do not move it).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InputError
from .hours import BusinessHours
from .queue import Queue, Ticket

__all__ = ["Durations", "QueueStats", "queue_stats", "render_stats"]


@dataclass(frozen=True)
class Durations:
    """Seconds: how many, median, 90th percentile (nearest rank) and the longest."""

    n: int
    median: float | None
    p90: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Durations:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None, None)
        return cls(len(ordered), _rank(ordered, 0.5), _rank(ordered, 0.9), ordered[-1])


@dataclass(frozen=True)
class QueueStats:
    since: float
    until: float
    tickets: int
    status: dict[str, int]  # now: queued, claimed, resolved
    first_response: Durations  # created -> the agent's first message
    resolution: Durations  # created -> resolved
    waiting: Durations  # ages of the tickets still queued
    reasons: dict[str, int]  # reason code the bot escalated on -> tickets
    intents: dict[str, int]  # the bot's intent -> tickets
    agents: dict[str, dict[str, Any]]  # agent -> {"resolved": n, "resolution": Durations}
    labelled: int  # resolved with the agent's intent
    corrected: int  # ... where it differs from the bot's
    after_hours: int | None  # created outside [handover] hours; None without hours

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_stats(queue: Queue, days: float = 7.0, *, now: float | None = None, hours: BusinessHours | None = None) -> QueueStats:
    """The figures for the tickets created in the last ``days`` days (read in pages)."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not (math.isfinite(days) and days > 0):
        raise InputError(f"days must be a number > 0, got {days!r}")
    until = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    since = until - days * 86400.0
    return _summarise(queue.created_since(since), since, until, hours)


def _summarise(tickets: Iterable[Ticket], since: float, until: float, hours: BusinessHours | None) -> QueueStats:
    """One pass over the tickets as they are read: a month of a busy queue is not held in memory."""
    status = Counter({"queued": 0, "claimed": 0, "resolved": 0})
    reasons: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    first, resolution, waiting = [], [], []
    per_agent: dict[str, list[float]] = {}
    count = labelled = corrected = after_hours = 0
    for t in tickets:
        count += 1
        status[t.status] += 1
        reasons.update(_escalated_for(t))
        intents[str(t.prediction.get("intent") or "-")] += 1
        # Its own agents' messages: not those of earlier tickets it shows, older than itself.
        replies = [float(turn["created_at"]) for turn in t.agent_turns() if "created_at" in turn]
        if replies:
            first.append(min(replies) - t.created_at)
        if t.status == "resolved":
            took = t.updated_at - t.created_at
            resolution.append(took)
            per_agent.setdefault(t.agent or "-", []).append(took)
            if t.agent_intent:
                labelled += 1
                corrected += t.agent_intent != t.prediction.get("intent")
        elif t.status == "queued":
            waiting.append(until - t.created_at)
        if hours is not None and not hours.is_open(dt.datetime.fromtimestamp(t.created_at, dt.UTC)):
            after_hours += 1
    return QueueStats(
        since=since,
        until=until,
        tickets=count,
        status=dict(status),
        first_response=Durations.of(first),
        resolution=Durations.of(resolution),
        waiting=Durations.of(waiting),
        reasons=dict(reasons.most_common()),
        intents=dict(intents.most_common()),
        agents={a: {"resolved": len(v), "resolution": Durations.of(v)} for a, v in sorted(per_agent.items(), key=lambda kv: -len(kv[1]))},
        labelled=labelled,
        corrected=corrected,
        after_hours=after_hours if hours is not None else None,
    )


def render_stats(stats: QueueStats, days: float) -> list[str]:
    """The report as lines of text, for the terminal."""
    stamp = "%Y-%m-%d %H:%M"
    window = f"{_utc(stats.since).strftime(stamp)} .. {_utc(stats.until).strftime(stamp)} UTC"
    lines = [f"tickets created in the last {days:g} days ({window}): {stats.tickets}"]
    if not stats.tickets:
        return lines
    s = stats.status
    oldest = f" (oldest waiting {_duration(stats.waiting.max)})" if stats.waiting.n else ""
    lines.append(f"now: {s['queued']} queued{oldest}, {s['claimed']} claimed, {s['resolved']} resolved")
    lines.append(f"first agent message: {_spread(stats.first_response)}")
    lines.append(f"resolution: {_spread(stats.resolution)}")
    lines.append(f"why escalated: {_counts(stats.reasons)}")
    lines.append(f"bot's intent: {_counts(stats.intents)}")
    if stats.agents:
        lines.append(
            "agents: " + ", ".join(f"{a} {v['resolved']} resolved (median {_duration(v['resolution'].median)})" for a, v in stats.agents.items())
        )
    lines.append(f"labels: {stats.labelled} of {s['resolved']} resolved tickets have the agent's intent; the bot's intent was another in {stats.corrected}")
    if stats.after_hours is not None:
        lines.append(f"after hours: {stats.after_hours} ({stats.after_hours / stats.tickets:.0%}) arrived outside the [handover] hours")
    return lines


def _escalated_for(ticket: Ticket) -> Sequence[str]:
    """Why the bot handed the ticket over: the reasons of the message that made it. The
    ticket's own reasons also gather what the customer's later messages raised while they
    waited (a legal threat, an opt-out), which the bot did not escalate on."""
    for turn in ticket.turns:
        if turn.get("message_id") == ticket.message_id and isinstance(turn.get("reasons"), list):
            return [r for r in turn["reasons"] if r != "human_active"]
    return ticket.reasons  # a ticket whose turns do not hold its message


def _rank(ordered: Sequence[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{max(0, round(seconds))} s"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours / 24:.1f} days"


def _spread(d: Durations) -> str:
    if not d.n:
        return "none yet"
    return f"median {_duration(d.median)}, p90 {_duration(d.p90)}, longest {_duration(d.max)} ({d.n} tickets)"


def _counts(counts: Mapping[str, int], top: int = 8) -> str:
    shown = [f"{k} {v}" for k, v in list(counts.items())[:top]]
    rest = len(counts) - top
    return ", ".join(shown) + (f", {rest} more" if rest > 0 else "") if shown else "-"
