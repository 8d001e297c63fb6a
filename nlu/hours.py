"""When people work the queue (``nlu.toml [handover]``), so that a customer handed over at
night is told when to expect an answer instead of "en cuanto esté disponible".

Hours are weekly spans in the business's time zone, plus closed dates (holidays)::

    [handover]
    timezone = "America/Mexico_City"
    hours = ["mon-fri 09:00-18:00", "sat 10:00-14:00"]
    closed_dates = ["2026-12-25", "2027-01-01"]

A span ends at or before midnight ("24:00" is the end of the day); a night shift is two
spans ("mon-fri 22:00-24:00", "tue-sat 00:00-06:00"). No hours means always open.
Outside the hours, an escalation still makes the ticket (the agents find it when they
start) and the reply is the catalogue's ``system.escalate_closed``, whose ``{opens}``
reads "hoy a las 15:00", "mañana a las 9:00", "el lunes a las 9:00" or "el lunes 5 de
enero a las 9:00".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

__all__ = ["BusinessHours", "MAX_OPENS"]

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DIAS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
_MESES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre")
# The longest {opens}: "el miércoles 30 de septiembre a las 23:59" (the catalogue checks
# system.escalate_closed against WhatsApp's limits with it).
MAX_OPENS = 41
_SPAN = re.compile(r"(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))? +(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})")
_LOOKAHEAD_DAYS = 370  # a year of closed dates and then some


@dataclass(frozen=True)
class BusinessHours:
    """Weekly opening spans (minutes from midnight per weekday, Monday 0) in ``zone``."""

    zone: ZoneInfo
    spans: tuple[tuple[tuple[int, int], ...], ...]  # per weekday: (start, end) minutes
    closed: frozenset[dt.date]

    @classmethod
    def parse(cls, timezone: str, hours: Sequence[str], closed_dates: Sequence[str] = (), where: str = "handover") -> BusinessHours | None:
        """The hours a config describes, or None when it sets none (always open)."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{where}.timezone: unknown time zone {timezone!r} (an IANA name such as 'America/Bogota')") from None
        if not hours:
            if closed_dates:
                raise ConfigError(f"{where}.closed_dates: set hours too (without them the queue is always open)")
            return None
        per_day: list[list[tuple[int, int]]] = [[] for _ in DAYS]
        for text in hours:
            match = _SPAN.fullmatch(text.strip().lower())
            if match is None:
                raise ConfigError(f"{where}.hours: {text!r} is not like 'mon-fri 09:00-18:00'")
            first, last = _day(match["first"], text, where), _day(match["last"] or match["first"], text, where)
            start, end = _minutes(match["start"], text, where), _minutes(match["end"], text, where)
            if start >= end:
                raise ConfigError(f"{where}.hours: {text!r} ends before it starts (a night shift is two spans, '22:00-24:00' and '00:00-06:00')")
            days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]  # "sat-mon"
            for day in days:
                per_day[day].append((start, end))
        closed = set()
        for text in closed_dates:
            try:
                closed.add(dt.date.fromisoformat(text))
            except ValueError:
                raise ConfigError(f"{where}.closed_dates: {text!r} is not a date like '2026-12-25'") from None
        return cls(zone, tuple(tuple(sorted(spans)) for spans in per_day), frozenset(closed))

    def is_open(self, at: dt.datetime) -> bool:
        local = at.astimezone(self.zone)
        if local.date() in self.closed:
            return False
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.spans[local.weekday()])

    def next_opening(self, at: dt.datetime) -> dt.datetime | None:
        """The first moment from ``at`` on when the queue is open (``at`` itself if open);
        None if it never opens within a year (every date closed)."""
        local = at.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        for offset in range(_LOOKAHEAD_DAYS):
            day = local.date() + dt.timedelta(days=offset)
            if day in self.closed:
                continue
            for start, end in self.spans[day.weekday()]:
                if offset == 0 and minute >= end:
                    continue
                if offset == 0 and minute >= start:
                    return local
                return dt.datetime.combine(day, dt.time(start // 60, start % 60), self.zone)
        return None

    def describe(self, opens: dt.datetime, now: dt.datetime) -> str:
        """``opens`` as a customer reads it, in Spanish, from ``now``."""
        opens, today = opens.astimezone(self.zone), now.astimezone(self.zone).date()
        clock = f"{opens.hour}:{opens.minute:02d}"
        at = f"a la {clock}" if opens.hour == 1 else f"a las {clock}"
        days = (opens.date() - today).days
        if days == 0:
            return f"hoy {at}"
        if days == 1:
            return f"mañana {at}"
        name = _DIAS[opens.weekday()]
        if days < 7:
            return f"el {name} {at}"
        return f"el {name} {opens.day} de {_MESES[opens.month - 1]} {at}"


def _day(name: str, text: str, where: str) -> int:
    if name not in DAYS:
        raise ConfigError(f"{where}.hours: {text!r}: unknown day {name!r}; days are {', '.join(DAYS)}")
    return DAYS.index(name)


def _minutes(clock: str, text: str, where: str) -> int:
    hour, minute = map(int, clock.split(":"))
    if not (0 <= hour <= 24 and 0 <= minute < 60) or (hour == 24 and minute):
        raise ConfigError(f"{where}.hours: {text!r}: {clock} is not a time of day")
    return hour * 60 + minute
