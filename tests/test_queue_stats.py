"""Queue statistics (nlu/queue_stats.py): `nlu queue stats` and GET /v1/queue/stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from http_kit import AUTH, RecordingSender, in_process_client
from typer.testing import CliRunner

from nlu import InputError
from nlu.cli import app
from nlu.hours import BusinessHours
from nlu.queue import QueueError, open_queue
from nlu.queue_stats import Durations, queue_stats, render_stats
from nlu.service import Service

MONDAY_NOON = 1_795_435_200.0  # 2026-11-23 12:00 UTC, a Monday
HOUR = 3600.0
runner = CliRunner()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ticket(queue: Any, clock: Clock, n: int, reasons: list[str], intent: str) -> int:
    made, _ = queue.enqueue(
        conversation_id=f"c{n}", message_id=f"m{n}", text="quiero hablar con alguien", prediction={"intent": intent},
        reasons=reasons, priority=1.0,
    )
    return int(made.id)


def busy_week(db: str) -> Any:
    """A Sunday and a Monday morning: two tickets answered and resolved, one claimed and
    answered, two waiting; and one ten days older, resolved without a message."""
    clock = Clock(MONDAY_NOON - 10 * 24 * HOUR)
    queue = open_queue(db, clock=clock)
    old = ticket(queue, clock, 0, ["human_requested"], "reembolso")
    queue.claim("ana")
    queue.resolve(old, "ana")

    def at(hours_from_sunday_noon: float) -> None:
        clock.now = MONDAY_NOON - 24 * HOUR + hours_from_sunday_noon * HOUR

    def message(ticket_id: int, agent: str) -> None:
        queue.add_agent_message(ticket_id, agent, f"reply-{ticket_id}", "Hola, soy de la tienda")
        queue.settle_agent_message(ticket_id, f"reply-{ticket_id}", True)

    at(0)
    a = ticket(queue, clock, 1, ["human_requested"], "reembolso")
    b = ticket(queue, clock, 2, ["frustrated", "negative_streak"], "estado_pedido")
    assert queue.claim("ana", lease_seconds=8 * HOUR).id == a
    at(0.5)
    message(a, "ana")  # first message after 30 min
    at(1)
    queue.resolve(a, "ana", "listo", intent="reembolso")  # resolved after 1 h
    assert queue.claim("luis", lease_seconds=8 * HOUR).id == b
    at(2)
    message(b, "luis")  # after 2 h
    c = ticket(queue, clock, 3, ["low_confidence"], "factura")
    ticket(queue, clock, 4, ["frustrated"], "reembolso")
    at(2.25)
    assert queue.claim("ana").id == c
    at(2.5)
    message(c, "ana")  # after 30 min
    at(4)
    queue.resolve(b, "luis", "cambio", intent="devolucion")  # after 4 h, and the bot's intent was another
    at(21)  # Monday 09:00
    ticket(queue, clock, 5, ["human_requested"], "estado_pedido")
    clock.now = MONDAY_NOON
    return queue


def test_queue_stats_figures_of_a_busy_day(db_url: str) -> None:
    queue = busy_week(db_url)
    try:
        stats = queue_stats(queue, days=7, now=MONDAY_NOON)
    finally:
        queue.close()
    assert stats.tickets == 5  # the one from ten days ago is outside the window
    assert stats.status == {"queued": 2, "claimed": 1, "resolved": 2}
    assert stats.first_response == Durations(3, 0.5 * HOUR, 2 * HOUR, 2 * HOUR)
    assert stats.resolution == Durations(2, 1 * HOUR, 4 * HOUR, 4 * HOUR)
    assert stats.waiting.n == 2 and stats.waiting.max == 22 * HOUR  # Sunday 14:00 until Monday noon
    assert stats.reasons == {"human_requested": 2, "frustrated": 2, "negative_streak": 1, "low_confidence": 1}
    assert stats.intents == {"reembolso": 2, "estado_pedido": 2, "factura": 1}
    assert set(stats.agents) == {"ana", "luis"} and stats.agents["ana"]["resolved"] == 1
    assert (stats.labelled, stats.corrected, stats.after_hours) == (2, 1, None)


def test_queue_stats_first_response_is_the_tickets_own_agent_message(tmp_path: Path) -> None:
    # A conversation's next ticket shows what agents wrote on the earlier one (copies,
    # older than the ticket): counted as its first response, they gave negative times.
    clock = Clock(MONDAY_NOON)
    with open_queue(str(tmp_path / "nlu.db"), clock=clock) as queue:
        first = ticket(queue, clock, 1, ["human_requested"], "reembolso")
        queue.claim("ana")
        clock.now += 0.5 * HOUR
        queue.add_agent_message(first, "ana", "1", "Hola, soy Ana")
        queue.settle_agent_message(first, "1", True)
        queue.resolve(first, "ana")
        clock.now += HOUR
        second, _ = queue.enqueue(
            conversation_id="c1", message_id="m2", text="otra vez yo", prediction={"intent": "reembolso"}, reasons=["human_requested"],
            priority=1.0, turns=[*queue.agent_messages("c1"), {"message_id": "m2", "action": "escalate", "text": "otra vez yo"}],
        )
        stats = queue_stats(queue, days=1, now=clock.now)
        assert stats.first_response == Durations(1, 0.5 * HOUR, 0.5 * HOUR, 0.5 * HOUR)  # the second has no answer yet
        queue.claim("luis")
        clock.now += 2 * HOUR
        queue.add_agent_message(second.id, "luis", "1", "Hola, soy Luis")
        stats = queue_stats(queue, days=1, now=clock.now)
    assert stats.first_response == Durations(2, 0.5 * HOUR, 2 * HOUR, 2 * HOUR)


def test_queue_stats_reasons_are_why_the_bot_escalated_not_what_came_later(tmp_path: Path) -> None:
    # A ticket's reasons also gather what the customer's later messages raised while they
    # waited (a legal threat, an opt-out): counted as "why escalated", they told the analyst
    # the bot hands over on opt-outs.
    clock = Clock(MONDAY_NOON)
    with open_queue(str(tmp_path / "nlu.db"), clock=clock) as queue:
        def message(message_id: str, reasons: list[str], action: str) -> None:
            turn = {"message_id": message_id, "action": action, "text": "...", "reasons": reasons, "created_at": clock.now}
            queue.enqueue(
                conversation_id="c1", message_id=message_id, text="...", prediction={"intent": "hablar_con_humano"},
                reasons=[r for r in reasons if r != "human_active"], priority=1.0, turns=[turn],
            )

        message("m1", ["human_requested"], "escalate")
        message("m2", ["human_active", "legal_threat", "sensitive_intent"], "handover")
        message("m3", ["human_active", "opt_out"], "handover")
        ticket(queue, clock, 2, ["frustration"], "queja")  # no turns (made before tickets kept them): its reasons
        stats = queue_stats(queue, days=1, now=clock.now + 1)
    assert stats.tickets == 2 and stats.reasons == {"human_requested": 1, "frustration": 1}


def test_queue_stats_counts_what_arrives_while_nobody_works(tmp_path: Path) -> None:
    queue = busy_week(str(tmp_path / "nlu.db"))
    week = BusinessHours.parse("UTC", ["mon-fri 09:00-18:00"])
    try:
        stats = queue_stats(queue, days=7, now=MONDAY_NOON, hours=week)
    finally:
        queue.close()
    assert stats.after_hours == 4  # the Sunday ones; Monday 09:00 is open
    assert "after hours: 4 (80%) arrived outside the [handover] hours" in render_stats(stats, 7)


def test_queue_stats_of_an_empty_queue_and_bad_windows(tmp_path: Path) -> None:
    with open_queue(str(tmp_path / "nlu.db")) as queue:
        stats = queue_stats(queue)
        assert stats.tickets == 0 and stats.first_response == Durations(0, None, None, None)
        assert render_stats(stats, 7)[0].endswith(": 0")
        for days in (0, -1, float("nan"), True):
            with pytest.raises(InputError, match="days must be a number > 0"):
                queue_stats(queue, days)
        with pytest.raises(QueueError, match="since must be a unix time"):
            list(queue.created_since(float("inf")))


def test_queue_stats_reads_in_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nlu.queue as queue_module

    monkeypatch.setattr(queue_module, "_PAGE", 2)
    clock = Clock(MONDAY_NOON)
    with open_queue(str(tmp_path / "nlu.db"), clock=clock) as queue:
        for n in range(7):
            ticket(queue, clock, n, ["human_requested"], "reembolso")
        assert [t.message_id for t in queue.created_since(0)] == [f"m{n}" for n in range(7)]
        assert queue_stats(queue, now=MONDAY_NOON + 1).tickets == 7


def test_queue_stats_cli_text_and_json(tmp_path: Path) -> None:
    db = str(tmp_path / "nlu.db")
    busy_week(db).close()
    config = tmp_path / "nlu.toml"
    config.write_text('[handover]\nhours = ["mon-fri 09:00-18:00"]\n', encoding="utf-8")
    result = runner.invoke(app, ["queue", "stats", "--db", db, "--days", "3650", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "tickets created in the last 3650 days" in result.stdout and ": 6" in result.stdout.splitlines()[0]
    assert "first agent message: median 30 min, p90 2 h, longest 2 h (3 tickets)" in result.stdout
    assert "resolution: median 1 h, p90 4 h, longest 4 h (3 tickets)" in result.stdout  # the old one (0 s) counts too
    assert "now: 2 queued" in result.stdout and "after hours: 4 (67%)" in result.stdout  # the old one came on a Friday noon
    assert "agents: ana 2 resolved" in result.stdout and "luis 1 resolved (median 4 h)" in result.stdout
    as_json = runner.invoke(app, ["queue", "stats", "--db", db, "--days", "3650", "--json"])
    stats = json.loads(as_json.stdout)
    assert stats["tickets"] == 6 and stats["after_hours"] is None and stats["first_response"]["median"] == 0.5 * HOUR
    bad = runner.invoke(app, ["queue", "stats", "--db", db, "--days", "0"])
    assert bad.exit_code != 0 and "--days" in bad.output


def test_queue_stats_over_http_for_dashboards(service: Service, tmp_path: Path) -> None:
    client = in_process_client(service, RecordingSender())
    assert client.get("/v1/queue/stats").status_code == 401
    r = client.get("/v1/queue/stats?days=1", headers=AUTH)
    assert r.status_code == 200 and r.json()["tickets"] == 0 and r.json()["status"] == {"queued": 0, "claimed": 0, "resolved": 0}
    assert client.get("/v1/queue/stats?days=0", headers=AUTH).status_code == 422
    assert client.get("/v1/queue/stats?days=x", headers=AUTH).status_code == 422
