"""Business hours of the human-agent team (nlu/hours.py, nlu.toml [handover]) and what a
customer handed over outside them reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_service import POLICY, SCRIPT, Chat, ScriptedModel

from nlu import ConfigError
from nlu.config import HandoverConfig, load_config
from nlu.conversation import open_conversations
from nlu.hours import MAX_OPENS, BusinessHours
from nlu.queue import open_queue
from nlu.responses import load_catalogue
from nlu.service import Service

MEXICO = ZoneInfo("America/Mexico_City")  # UTC-6, no daylight saving time since 2022
WEEK = ("mon-fri 09:00-18:00", "sat 10:00-14:00")


def hours(*spans: str, timezone: str = "America/Mexico_City", closed: tuple[str, ...] = ()) -> BusinessHours:
    parsed = BusinessHours.parse(timezone, spans or WEEK, closed)
    assert parsed is not None
    return parsed


def at(day: int, hour: int, minute: int = 0, zone: ZoneInfo = MEXICO) -> dt.datetime:
    """A moment in the week of Monday 2026-12-07."""
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=zone)


@pytest.mark.parametrize(("moment", "expected"), [
    (at(7, 9, 0), True),     # Monday, the first minute
    (at(7, 8, 59), False),
    (at(7, 17, 59), True),
    (at(7, 18, 0), False),   # the end is not included
    (at(12, 11), True),      # Saturday
    (at(12, 14), False),
    (at(13, 11), False),     # Sunday
    (dt.datetime(2026, 12, 7, 15, 30, tzinfo=dt.UTC), True),  # 09:30 in Mexico City
    (dt.datetime(2026, 12, 7, 14, 30, tzinfo=dt.UTC), False),  # 08:30 there
])
def test_hours_open_in_the_business_time_zone(moment: dt.datetime, expected: bool) -> None:
    assert hours().is_open(moment) is expected


def test_hours_spans_wrap_the_week_and_reach_midnight() -> None:
    night = hours("sat-mon 20:00-24:00", "sun-tue 00:00-02:00")
    assert night.is_open(at(12, 23, 59)) and night.is_open(at(14, 23, 0)) and not night.is_open(at(15, 23, 0))
    assert night.is_open(at(13, 1, 0)) and night.is_open(at(8, 1, 59)) and not night.is_open(at(9, 1, 0))


def test_hours_closed_dates_are_closed() -> None:
    holidays = hours(closed=("2026-12-07",))
    assert not holidays.is_open(at(7, 10)) and holidays.is_open(at(8, 10))


@pytest.mark.parametrize(("moment", "opens"), [
    (at(7, 10), at(7, 10)),            # open now
    (at(7, 7, 30), at(7, 9)),          # later today
    (at(7, 18, 0), at(8, 9)),          # after closing: tomorrow
    (at(11, 19), at(12, 10)),          # Friday night: Saturday
    (at(12, 15), at(14, 9)),           # Saturday afternoon: Monday
])
def test_hours_next_opening(moment: dt.datetime, opens: dt.datetime) -> None:
    assert hours().next_opening(moment) == opens


def test_hours_next_opening_skips_holidays_and_follows_daylight_saving_time() -> None:
    christmas = hours(closed=("2026-12-24", "2026-12-25"))
    assert christmas.next_opening(at(23, 19)) == at(26, 10)
    # Madrid moves its clocks on Sunday 2027-03-28: Monday 09:00 is 07:00 UTC, not 08:00.
    madrid = hours(timezone="Europe/Madrid")
    opens = madrid.next_opening(dt.datetime(2027, 3, 27, 15, 0, tzinfo=dt.UTC))
    assert opens is not None and opens.astimezone(dt.UTC) == dt.datetime(2027, 3, 29, 7, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("now", "opens", "text"), [
    (at(7, 7), at(7, 9), "hoy a las 9:00"),
    (at(7, 19), at(8, 9), "mañana a las 9:00"),
    (at(12, 15), at(14, 9), "el lunes a las 9:00"),
    (at(7, 19), at(8, 13, 30), "mañana a las 13:30"),
    (at(7, 0), at(7, 1), "hoy a la 1:00"),
    (at(24, 19), dt.datetime(2027, 1, 4, 9, tzinfo=MEXICO), "el lunes 4 de enero a las 9:00"),
])
def test_hours_describe_the_opening_in_spanish(now: dt.datetime, opens: dt.datetime, text: str) -> None:
    assert hours().describe(opens, now) == text


def test_hours_longest_description_is_what_the_catalogue_checks() -> None:
    week = hours()
    start = dt.datetime(2027, 1, 1, 23, 59, tzinfo=MEXICO)
    longest = max(len(week.describe(start + dt.timedelta(days=d), start - dt.timedelta(days=8))) for d in range(366))
    assert longest == MAX_OPENS


@pytest.mark.parametrize(("raw", "message"), [
    ({"timezone": "Mars/Olympus", "hours": list(WEEK)}, "unknown time zone 'Mars/Olympus'"),
    ({"hours": ["lunes 9-18"]}, "'lunes 9-18' is not like 'mon-fri 09:00-18:00'"),
    ({"hours": ["mon-fri 18:00-09:00"]}, "ends before it starts"),
    ({"hours": ["mon-fry 09:00-18:00"]}, "unknown day 'fry'"),
    ({"hours": ["mon 09:00-25:00"]}, "25:00 is not a time of day"),
    ({"hours": list(WEEK), "closed_dates": ["25/12/2026"]}, "'25/12/2026' is not a date"),
    ({"closed_dates": ["2026-12-25"]}, "set hours too"),
])
def test_hours_config_mistakes_name_the_key(tmp_path: Path, raw: dict[str, object], message: str) -> None:
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in raw.items()]
    path = tmp_path / "nlu.toml"
    path.write_text("[handover]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nlu.toml") as raised:
        load_config(path)
    assert message in str(raised.value).replace('"', "'")


def test_hours_none_set_means_always_open() -> None:
    assert HandoverConfig().business_hours() is None
    assert HandoverConfig(timezone="Europe/Madrid").business_hours() is None


# -- the handover after hours ---------------------------------------------------------------


def after_hours_service(db: Path, now: dt.datetime, catalogue_path: Path | None = None) -> Service:
    db.parent.mkdir(parents=True, exist_ok=True)
    return Service(
        ScriptedModel(SCRIPT), open_queue(str(db)), open_conversations(db), load_catalogue(catalogue_path), POLICY,
        hours=hours(), clock=lambda: now,
    )


def test_hours_a_customer_handed_over_at_night_is_told_when_the_team_opens(tmp_path: Path) -> None:
    with after_hours_service(tmp_path / "nlu.db", at(11, 21, 15)) as service:  # Friday night
        chat = Chat(service)
        chat.consent()
        outcome = chat.say("quiero hablar con un asesor")
        assert outcome.action == "escalate" and outcome.ticket is not None  # the agents find it on Saturday
        assert outcome.reply is not None and "te responderá aquí mismo mañana a las 10:00" in outcome.reply.text
        assert "en cuanto esté disponible" not in outcome.reply.text


def test_hours_during_opening_hours_the_handover_reads_as_before(tmp_path: Path) -> None:
    with after_hours_service(tmp_path / "nlu.db", at(8, 11)) as service:
        chat = Chat(service)
        chat.consent()
        outcome = chat.say("quiero hablar con un asesor")
        assert outcome.reply is not None and outcome.reply.text == load_catalogue().system_reply("escalate").text


def test_hours_need_the_after_hours_message_in_the_catalogue(tmp_path: Path) -> None:
    source = Path(load_catalogue().source).read_text(encoding="utf-8")
    without = tmp_path / "responses.yaml"
    start = source.index("  escalate_closed:")
    end = source.index("\n  unreadable:")
    without.write_text(source[:start] + source[end + 1 :], encoding="utf-8")
    with pytest.raises(ConfigError, match="escalate_closed is needed"):
        after_hours_service(tmp_path / "nlu.db", at(8, 11), without)
    misplaced = tmp_path / "misplaced.yaml"
    misplaced.write_text(source.replace('text: "Te paso con una persona de nuestro equipo 🙋 Ya', 'text: "{opens} Te paso con una persona de nuestro equipo 🙋 Ya'), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"system.escalate.text: unknown placeholder \{opens\}"):
        load_catalogue(misplaced)


def test_hours_from_the_config_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "nlu.toml"
    config.write_text('[handover]\ntimezone = "America/Bogota"\nhours = ["mon-fri 08:00-17:00"]\n', encoding="utf-8")
    with Service.from_paths(tiny_model_dir, db=tmp_path / "nlu.db", config=config) as service:
        assert service.hours is not None and service.hours.zone == ZoneInfo("America/Bogota")
    with Service.from_paths(tiny_model_dir, db=tmp_path / "nlu.db") as service:
        assert service.hours is None
