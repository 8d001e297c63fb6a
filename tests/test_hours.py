"""Business hours of the human-agent team (nlu/hours.py, nlu.toml [handover]) and what a
customer handed over outside them reads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from http_kit import SECRET, SETTINGS, TestClient
from test_service import POLICY, SCRIPT, Chat, ScriptedModel

from nlu import ConfigError
from nlu.config import HandoverConfig, load_config
from nlu.conversation import open_conversations
from nlu.hours import MAX_OPENS, BusinessHours
from nlu.queue import open_queue
from nlu.responses import load_catalogue
from nlu.server import create_app
from nlu.service import Service
from nlu.whatsapp import sign

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


class DownSender:
    """Meta unreachable until ``up``; keeps the bodies it sent."""

    def __init__(self) -> None:
        self.up = False
        self.sent: list[dict[str, Any]] = []

    def send(self, body: dict[str, Any]) -> None:
        if not self.up:
            raise ConnectionError("graph api down")  # nothing went out: kept for resending
        self.sent.append(body)


@pytest.mark.parametrize(("resent_at", "reads"), [
    (at(14, 0, 10), "te responderá aquí mismo hoy a las 9:00"),  # past midnight: "mañana" would be Tuesday
    (at(14, 9, 30), "Te responderá aquí mismo en cuanto esté disponible"),  # the team is in by then
])
def test_hours_a_late_after_hours_reply_says_when_the_team_opens_from_when_it_is_sent(
    tmp_path: Path, resent_at: dt.datetime, reads: str
) -> None:
    # A handover reply Meta did not take at 23:50 on Sunday ("mañana a las 9:00") was sent
    # again word for word, whenever Meta took it: after midnight it named Tuesday, and
    # after 9:00 it said nobody was working while an agent could already answer.
    now = [at(13, 23, 50)]  # Sunday night
    db = tmp_path / "nlu.db"
    with Service(
        ScriptedModel(SCRIPT), open_queue(str(db)), open_conversations(db), load_catalogue(), POLICY, hours=hours(), clock=lambda: now[0],
    ) as service:
        chat = Chat(service, conversation_id="5215512345678")
        chat.consent()
        sender = DownSender()
        app = create_app(service, SETTINGS, sender=sender)
        app.state.resender.clock = lambda: now[0].timestamp()
        client = TestClient(app, raise_server_exceptions=False)
        value = {
            "messaging_product": "whatsapp", "contacts": [{"wa_id": "5215512345678"}],
            "messages": [{"from": "5215512345678", "id": "wamid.noche", "type": "text", "text": {"body": "quiero hablar con un asesor"}}],
        }
        raw = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}).encode()
        r = client.post("/webhooks/whatsapp", content=raw, headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, raw)})
        [message] = r.json()["messages"]
        assert message["action"] == "escalate" and message["delivery"] == "deferred"
        assert "te responderá aquí mismo mañana a las 9:00" in message["reply"]["text"]["body"]
        sender.up, now[0] = True, resent_at
        assert app.state.resender.run_once() == 1
        [late] = sender.sent
        assert reads in late["text"]["body"] and "Te paso con una persona" in late["text"]["body"]
        assert late["context"] == {"message_id": "wamid.noche"} and late["to"] == "5215512345678"


def test_hours_reply_now_rewrites_only_a_handovers_reply_and_keeps_its_disclosure(tmp_path: Path) -> None:
    now = [at(11, 21, 15)]  # Friday night
    db = tmp_path / "nlu.db"
    policy = dataclasses.replace(POLICY, require_consent=False)  # the first reply carries the disclosure
    with Service(
        ScriptedModel(SCRIPT), open_queue(str(db)), open_conversations(db), load_catalogue(), policy, hours=hours(), clock=lambda: now[0],
    ) as service:
        chat = Chat(service)
        first = chat.say("quiero hablar con un asesor")
        assert first.reply is not None and "mañana a las 10:00" in first.reply.text
        now[0] = at(12, 9, 0)  # Saturday morning: opens at 10:00 today
        later = service.reply_now(f"wamid.{chat.n}")
        disclosure = service.catalogue.system["disclosure"].text
        assert later is not None and later.text.startswith(disclosure + "\n\n") and "hoy a las 10:00" in later.text
        assert later.text.removeprefix(disclosure + "\n\n") == service.catalogue.system_reply("escalate_closed", opens="hoy a las 10:00").text
        assert service.reply_now("wamid.unknown") is None
        assert chat.say("hola").action == "handover" and service.reply_now(f"wamid.{chat.n}") is None  # no reply to rewrite
    with Service(ScriptedModel(SCRIPT), open_queue(str(db)), open_conversations(db), load_catalogue(), policy) as always_open:
        assert always_open.reply_now(f"wamid.{chat.n}") is None  # without hours no reply depends on when it is read
