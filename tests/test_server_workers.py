"""Many workers behave as one: two real `nlu serve` processes (in the slow variant one has
`--workers 2`) share one PostgreSQL queue and conversation store."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_kit import AUTH, SECRET, serving

from nlu.whatsapp import sign


def webhook(base: str, wa_id: str, message: dict[str, Any]) -> httpx.Response:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": wa_id}],
            "messages": [{"from": wa_id, "timestamp": "1732520000", **message}],
        }}]}],
    }
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(SECRET, body)}
    return httpx.post(f"{base}/webhooks/whatsapp", content=body, headers=headers, timeout=30)


# Two single-worker instances take ~5 s to start; with `--workers 2` the supervisor and each
# worker load the model (~10 s more on two cores), so that variant runs with `make test-slow`.
@pytest.mark.parametrize("workers", [
    pytest.param((1, 1), id="two-instances"),
    pytest.param((2, 1), marks=pytest.mark.slow, id="workers-2"),
])
def test_server_instances_share_one_postgres_queue(tiny_model_dir: Path, pg_url: str, workers: tuple[int, int]) -> None:
    customers = [f"52155{n:08d}" for n in range(12)]
    with ExitStack() as stack, ThreadPoolExecutor(2) as starter:
        # Start both at once (each loads the model), then register their clean-up.
        starting = [starter.submit(stack.enter_context, serving(tiny_model_dir, pg_url, n)) for n in workers]
        servers = [f.result() for f in starting]

        # Consent first (on either server), so the next message can escalate.
        for n, wa_id in enumerate(customers):
            consent = {"id": f"wamid.consent-{n}", "type": "interactive",
                       "interactive": {"type": "button_reply", "button_reply": {"id": "consent:yes", "title": "Sí, acepto"}}}
            r = webhook(servers[n % 2], wa_id, consent)
            assert r.status_code == 200 and r.json()["messages"][0]["action"] == "answer", r.text

        # Meta retries a delivery; the retry lands on the other instance while the first is
        # still being handled: every message is posted to both servers at the same time.
        def deliver(job: tuple[str, str]) -> dict[str, Any]:
            base, wa_id = job
            message = {"id": f"wamid.esc-{wa_id}", "type": "text", "text": {"body": "QUIERO HABLAR CON UNA PERSONA YA!!!"}}
            r = webhook(base, wa_id, message)
            assert r.status_code == 200, r.text
            return dict(r.json()["messages"][0])

        jobs = [(base, wa_id) for wa_id in customers for base in servers]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(deliver, jobs))
        by_message: dict[str, list[dict[str, Any]]] = {}
        for result in results:
            by_message.setdefault(result["message_id"], []).append(result)
        tickets = set()
        for message_id, pair in by_message.items():
            assert [r["action"] for r in pair] == ["escalate", "escalate"], message_id
            assert pair[0]["ticket"] == pair[1]["ticket"] is not None  # one ticket ...
            assert sorted(r["duplicate"] for r in pair) == [False, True]  # ... and one reply sent
            tickets.add(pair[0]["ticket"])
        assert len(tickets) == len(customers)
        listed = httpx.get(f"{servers[1]}/v1/queue", params={"limit": 500}, headers=AUTH, timeout=10).json()
        assert sorted(t["id"] for t in listed["tickets"]) == sorted(tickets) and listed["depth"] == len(customers)

        # Agents claiming through both servers at once never get the same ticket.
        def claim_all(job: tuple[str, str]) -> list[int]:
            base, agent = job
            got = []
            while True:
                r = httpx.post(f"{base}/v1/queue/claim", json={"agent": agent, "lease_seconds": 600}, headers=AUTH, timeout=30)
                assert r.status_code == 200, r.text
                if r.json()["ticket"] is None:
                    return got
                got.append(r.json()["ticket"]["id"])

        agents = [(base, f"agent-{n}-{i}") for n, base in enumerate(servers) for i in range(3)]
        with ThreadPoolExecutor(len(agents)) as pool:
            claimed = [ticket for got in pool.map(claim_all, agents) for ticket in got]
        counts = Counter(claimed)
        assert set(counts) == tickets and max(counts.values()) == 1
