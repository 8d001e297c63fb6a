"""Soak test: the real `nlu serve` at a fixed request rate for a bounded time.

    python scripts/soak.py                       # train a model into a temp dir, 180 s at 50 req/s
    python scripts/soak.py --model models/es-demo --seconds 60 --rate 50

The server runs on a free 127.0.0.1 port with a temporary database and throw-away secrets
(the webhook and agent routes are served as in production, with the access log on). The
traffic is a seeded mix of normal customer messages (data/chats_test.csv), frustrated
ones, /v1/score calls, signed WhatsApp webhooks (a share of them redelivered with the same
message id, as Meta does when it misses a 200), agent calls, and garbage: empty, invalid
JSON, binary, wrong types, wrong content type, texts over the limit, bodies over the
limit, forged signatures and bad tokens.

Replies go through the real Cloud API sender to a local stand-in for the Graph API that
is down for a few seconds of every half minute (HTTP 503, as Meta answers an outage), so
some replies are deferred to the outbox and the resender sends them later.

It fails (exit 1) on any 5xx or transport error, a ticket lost or doubled (every message
whose response said "escalate" must have exactly one ticket with that id in the database,
and no other ticket may exist), a retried delivery answered differently, a webhook reply
lost or sent twice (every reply the webhook called "sent" reached the Graph API once, every
"deferred" one once more, later, quoting its message), resident memory growing after
warm-up, a traceback or a secret in the server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadtest import load_texts, percentile, rss_mib, server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from nlu.testing_graph import GraphStandIn  # noqa: E402
from nlu.whatsapp import sign  # noqa: E402

FRUSTRATED = [
    "QUIERO HABLAR CON UNA PERSONA YA!!!",
    "son unos inútiles, me cobraron dos veces y nadie responde 😡",
    "tercera vez que escribo y nada, pásame con un asesor",
    "voy a poner una denuncia en profeco si no me devuelven la plata",
    "esto es una estafa, ladrones!!! mi pedido no llega hace 3 semanas",
    "hablar con un humano por favor, el bot no entiende nada",
]
WA_ID_BASE = 5215500000000
PHONE_NUMBER_ID = "106540352242922"


class FlakyGraph(GraphStandIn):
    """The Graph API, down (HTTP 503, code 131016) for ``down_for`` seconds of every
    ``period``; ``taken`` holds the bodies it took, ``refused`` counts the others."""

    def __init__(self, period: float, down_for: float) -> None:
        self.period, self.down_for = period, down_for
        self.started = time.monotonic()
        self.taken: list[dict[str, Any]] = []
        self.refused = 0
        super().__init__()

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        down = self.down_for > 0 and (time.monotonic() - self.started) % self.period < self.down_for
        with self.lock:
            if down:
                self.refused += 1
                return 503, {}, {"error": {"code": 131016, "message": "Service unavailable"}}
            self.taken.append(request["body"])
        return super().answer(request)

    def heal(self) -> None:
        self.down_for = 0.0


# Shares of the traffic, in order of the draw.
MIX = [
    ("message", 0.40),
    ("frustrated", 0.10),
    ("score", 0.10),
    ("webhook", 0.12),
    ("webhook_retry", 0.06),
    ("agent", 0.04),
    ("garbage", 0.18),
]


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    escalated: dict[str, int] = field(default_factory=dict)  # message id -> ticket id
    deliveries: dict[str, str] = field(default_factory=dict)  # webhook message id -> "sent", "deferred", ...
    late: int = 0


class Traffic:
    """Builds the next request of the mix and checks its response."""

    def __init__(self, url: str, secret: str, token: str, seed: int) -> None:
        self.url = url
        self.secret = secret
        self.token = token
        self.rng = random.Random(seed)
        self.texts = load_texts()
        self.run = secrets.token_hex(4)
        self.conversations: list[dict[str, Any]] = []  # {"id", "consented", "turn"}
        self.webhooks_sent: list[tuple[str, bytes, str]] = []  # (message id, raw body, conversation)
        self.claimed: list[int] = []  # tickets the soak agent holds, resolved later
        self.n = 0
        self.tally = Tally()

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.run}-{self.n}"

    def _conversation(self) -> dict[str, Any]:
        if not self.conversations or self.rng.random() < 0.15:
            self.conversations.append({"id": self._id("c"), "consented": False})
            self.conversations = self.conversations[-200:]
        return self.rng.choice(self.conversations)

    def pick(self) -> tuple[str, str, str, bytes, dict[str, str]]:
        """(kind, method, path, body, headers)"""
        draw, kind = self.rng.random(), MIX[-1][0]
        for name, share in MIX:
            if draw < share:
                kind = name
                break
            draw -= share
        json_headers = {"Content-Type": "application/json"}
        if kind in ("message", "frustrated"):
            conversation = self._conversation()
            body: dict[str, Any] = {"conversation_id": conversation["id"], "message_id": self._id("m")}
            if not conversation["consented"]:
                conversation["consented"] = True
                body.update(text="", button_id="consent:yes")
            else:
                body["text"] = self.rng.choice(FRUSTRATED if kind == "frustrated" else self.texts)
            return kind, "POST", "/v1/messages", json.dumps(body, ensure_ascii=False).encode(), json_headers
        if kind == "score":
            body = {"texts": self.rng.sample(self.texts, 4)} if self.rng.random() < 0.3 else {"text": self.rng.choice(self.texts)}
            return kind, "POST", "/v1/score", json.dumps(body, ensure_ascii=False).encode(), json_headers
        if kind == "webhook_retry" and self.webhooks_sent:
            _, raw, _ = self.rng.choice(self.webhooks_sent[-100:])
            return kind, "POST", "/webhooks/whatsapp", raw, {**json_headers, "X-Hub-Signature-256": sign(self.secret, raw)}
        if kind in ("webhook", "webhook_retry"):
            kind = "webhook"
            wa_id = str(WA_ID_BASE + self.rng.randrange(300))
            message_id = self._id("wamid")
            if self.rng.random() < 0.3:
                message = {"from": wa_id, "id": message_id, "type": "interactive",
                           "interactive": {"type": "button_reply", "button_reply": {"id": "consent:yes", "title": "Sí, acepto"}}}
            else:
                text = self.rng.choice(FRUSTRATED if self.rng.random() < 0.3 else self.texts)
                message = {"from": wa_id, "id": message_id, "timestamp": str(int(time.time())), "type": "text", "text": {"body": text}}
            payload = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"},
                "contacts": [{"wa_id": wa_id}], "messages": [message]}}]}]}
            raw = json.dumps(payload, ensure_ascii=False).encode()
            self.webhooks_sent.append((message_id, raw, wa_id))
            return kind, "POST", "/webhooks/whatsapp", raw, {**json_headers, "X-Hub-Signature-256": sign(self.secret, raw)}
        if kind == "agent":
            auth = {"Authorization": f"Bearer {self.token}"}
            if self.claimed and self.rng.random() < 0.5:
                # Resolving hands the conversation back to the bot at its next message.
                body = json.dumps({"agent": "soak", "resolution": "resuelto, llamar al +34 612 345 678"}).encode()
                return kind, "POST", f"/v1/queue/{self.claimed.pop(0)}/resolve", body, {**json_headers, **auth}
            if self.rng.random() < 0.3:
                return kind, "GET", "/v1/queue?limit=20", b"", auth
            return kind, "POST", "/v1/queue/claim", json.dumps({"agent": "soak", "lease_seconds": 10}).encode(), {**json_headers, **auth}
        return self._garbage()

    def _garbage(self) -> tuple[str, str, str, bytes, dict[str, str]]:
        j = {"Content-Type": "application/json"}
        choices: list[tuple[str, bytes, dict[str, str]]] = [
            ("/v1/messages", b"", j),
            ("/v1/messages", b"{not json", j),
            ("/v1/score", bytes(self.rng.randrange(256) for _ in range(200)), j),
            ("/v1/score", b'{"text": 5}', j),
            ("/v1/score", b'{"texts": "hola"}', j),
            ("/v1/messages", b'{"conversation_id": [], "message_id": {}, "text": null}', j),
            ("/v1/messages", b'{"conversation_id": "c", "message_id": "m", "text": "   "}', j),
            ("/v1/score", json.dumps({"text": "a" * 100_000}).encode(), j),
            ("/v1/score", json.dumps({"texts": ["hola"] * 300}).encode(), j),
            ("/v1/score", b'{"text": "hola"}', {"Content-Type": "text/plain"}),
            ("/v1/score", b'{"text": "hola", "lang": "es"}', j),
            ("/v1/score", b"[" * 50_000, j),
            ("/v1/score", b'{"text": "\\ud83d"}', j),
            ("/webhooks/whatsapp", b'{"object": "whatsapp_business_account", "entry": []}', {**j, "X-Hub-Signature-256": "sha256=" + "0" * 64}),
            ("/webhooks/whatsapp", b'{"object": "whatsapp_business_account", "entry": []}', j),
            ("/v1/queue/claim", b'{"agent": "x"}', {**j, "Authorization": "Bearer " + secrets.token_hex(12)}),
            ("/v1/queue/99999999999999999999999/resolve", b'{"agent": "x"}', {**j, "Authorization": f"Bearer {self.token}"}),
            # Over the body limits (4 MiB, 1 MiB for the webhook): refused from Content-Length.
            ("/v1/score", b'{"text": "' + b"a" * (4 * 1024 * 1024 + 10) + b'"}', j),
            ("/webhooks/whatsapp", b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}', {**j, "X-Hub-Signature-256": "sha256=" + "0" * 64}),
        ]
        path, raw, headers = self.rng.choice(choices)
        if path == "/webhooks/whatsapp" and "X-Hub-Signature-256" not in headers and self.rng.random() < 0.5:
            raw = b"\xff\xfe garbage"  # signed garbage: refused by the parser, after the signature
            headers = {**headers, "X-Hub-Signature-256": sign(self.secret, raw)}
        return "garbage", "POST", path, raw, headers

    def check(self, kind: str, path: str, raw: bytes, r: httpx.Response) -> None:
        t = self.tally
        t.statuses[str(r.status_code)] += 1
        if r.status_code >= 500:
            t.problems.append(f"{r.status_code} on {kind} {path}: {r.text[:200]}")
            return
        if kind == "garbage":
            if r.status_code < 400:
                t.problems.append(f"garbage accepted on {path}: {raw[:60]!r} -> {r.status_code}")
            return
        if r.status_code != 200:
            t.problems.append(f"{r.status_code} on a good {kind} request to {path}: {r.text[:200]}")
            return
        body = r.json()
        if path == "/v1/queue/claim" and body.get("ticket"):
            self.claimed.append(body["ticket"]["id"])
        if path == "/v1/messages":
            self._escalation(json.loads(raw)["message_id"], body.get("action"), body.get("ticket"), body.get("duplicate"))
        elif path == "/webhooks/whatsapp":
            for m in body.get("messages", []):
                self._escalation(m["message_id"], m["action"], m["ticket"], m["duplicate"])
                if m.get("delivery") is not None:
                    if m["message_id"] in t.deliveries:
                        t.problems.append(f"{m['message_id']}: handed to the sender twice")
                    t.deliveries[m["message_id"]] = m["delivery"]

    def _escalation(self, message_id: str, action: str | None, ticket: Any, duplicate: bool | None) -> None:
        t = self.tally
        t.actions[f"{action}{' (duplicate)' if duplicate else ''}"] += 1
        ticket_id = ticket["id"] if isinstance(ticket, dict) else ticket
        if action == "escalate":
            if ticket_id is None:
                t.problems.append(f"{message_id}: escalated without a ticket")
            elif t.escalated.setdefault(message_id, ticket_id) != ticket_id:
                t.problems.append(f"{message_id}: ticket {ticket_id} on a retry, {t.escalated[message_id]} before")


async def drive(traffic: Traffic, seconds: float, rate: float, max_in_flight: int) -> None:
    """Open-loop load: request i is due at start + i/rate, whatever the earlier ones do."""
    tally = traffic.tally
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    gate = asyncio.Semaphore(max_in_flight)
    async with httpx.AsyncClient(base_url=traffic.url, limits=limits, timeout=30.0) as client:

        async def one(kind: str, method: str, path: str, raw: bytes, headers: dict[str, str]) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    r = await client.request(method, path, content=raw if method == "POST" else None, headers=headers)
                except httpx.TransportError as exc:
                    if len(raw) > 1024 * 1024:
                        # The server answers 413 from the header and closes the connection; the
                        # client may see the close before it finishes writing the body.
                        tally.statuses["413 (closed while sending)"] += 1
                    else:
                        tally.transport_errors[f"{kind} {path}: {type(exc).__name__}"] += 1
                    return
                tally.latencies.append(time.perf_counter() - started)
                traffic.check(kind, path, raw, r)

        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        i = 0
        while (due := start + i / rate) < start + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                tally.late += 1
            kind, method, path, raw, headers = traffic.pick()
            tally.kinds[kind] += 1
            tally.sent += 1
            task = asyncio.create_task(one(kind, method, path, raw, headers))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)


async def sample_rss(pid: int, every: float, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    start = time.perf_counter()
    while not stop.is_set():
        rss, _ = rss_mib(pid)
        if rss is not None:
            samples.append((time.perf_counter() - start, rss))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def soak(traffic: Traffic, pid: int, seconds: float, rate: float, every: float) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, every, samples, stop))
    await drive(traffic, seconds, rate, max_in_flight=64)
    stop.set()
    await sampler
    rss, _ = rss_mib(pid)
    if rss is not None:
        samples.append((samples[-1][0] + 0.001 if samples else 0.0, rss))
    return samples


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (MiB per minute) of (seconds, MiB) points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else 60 * sum((x - mx) * (y - my) for x, y in points) / var


def drain(url: str, seconds: float) -> bool:
    """Wait until the server's outbox is empty (its gauge reads 0); False if it never is."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if "\nnlu_whatsapp_outbox_depth 0\n" in httpx.get(f"{url}/metrics", timeout=5).text:
                return True
        time.sleep(1.0)
    return False


def reply_problems(deliveries: dict[str, str], taken: list[dict[str, Any]], drained: bool, given_up: dict[str, str]) -> list[str]:
    """Each reply the webhook called "sent" reached the Graph API once, each "deferred" one
    once more quoting its message, unless the server logged it given up because the
    customer opted out meanwhile (the traffic has opt-outs), and nothing else did."""
    problems = [] if drained else ["the outbox did not empty after the Graph API came back"]
    resent = Counter(b["context"]["message_id"] for b in taken if "context" in b)
    deferred = {m for m, d in deliveries.items() if d == "deferred"}
    opted_out = {m for m, why in given_up.items() if "opted out" in why}
    for what, ids in (
        ("deferred replies never sent again", deferred - set(resent) - opted_out),
        ("replies sent again more than once", {m for m, n in resent.items() if n > 1}),
        ("resent replies the webhook had not deferred", set(resent) - deferred),
    ):
        if ids:
            problems.append(f"{len(ids)} {what}: {sorted(ids)[:5]}")
    first = sum("context" not in b for b in taken)
    sent = sum(d == "sent" for d in deliveries.values())
    if first != sent:
        problems.append(f"the Graph API took {first} first sends, the webhook reported {sent} sent")
    other = Counter(d for d in deliveries.values() if d not in ("sent", "deferred"))
    if other:
        problems.append(f"replies neither sent nor deferred: {dict(other)}")
    return problems


def tickets_in(db: Path) -> list[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [(int(a), str(b)) for a, b in conn.execute("SELECT id, message_id FROM tickets")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Model directory to serve (default: train one on data/chats_train.csv into a temp dir).")
    parser.add_argument("--seconds", type=float, default=180.0, help="How long to send traffic.")
    parser.add_argument("--rate", type=float, default=50.0, help="Requests per second (open loop).")
    parser.add_argument("--warmup", type=float, default=None, help="Seconds excluded from the memory trend (default: a sixth of the run, at least 20).")
    parser.add_argument("--rss-every", type=float, default=5.0, help="Seconds between RSS samples.")
    parser.add_argument("--max-growth-mib", type=float, default=16.0, help="Fail when RSS grows more than this after warm-up.")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--graph-period", type=float, default=30.0, help="Seconds between the Graph API stand-in's outages.")
    parser.add_argument("--graph-down", type=float, default=4.0, help="Seconds each outage lasts (0: never down).")
    parser.add_argument("--drain", type=float, default=90.0, help="Seconds to wait, after the traffic, for the outbox to empty.")
    parser.add_argument("--json", metavar="FILE", help="Also write the summary as JSON.")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be positive")
    warmup = args.warmup if args.warmup is not None else max(20.0, args.seconds / 6)

    with tempfile.TemporaryDirectory(prefix="nlu-soak-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if model is None or not (Path(model) / "meta.json").is_file():
            model = str(tmp / "model")
            print(f"training a model on data/chats_train.csv into {model} ...", flush=True)
            subprocess.run([sys.executable, "-m", "nlu", "train", str(ROOT / "data" / "chats_train.csv"), "--out", model, "-q"], check=True)
        secret, token, verify, access = (secrets.token_hex(16) for _ in range(4))
        graph = FlakyGraph(args.graph_period, args.graph_down)
        env = {
            "NLU_WHATSAPP_VERIFY_TOKEN": verify, "NLU_WHATSAPP_APP_SECRET": secret, "NLU_AGENT_TOKEN": token,
            "NLU_WHATSAPP_ACCESS_TOKEN": access, "NLU_WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID, "NLU_WHATSAPP_API_URL": graph.url,
        }
        log_path = tmp / "server.log"
        with log_path.open("wb") as log, server(model, str(tmp / "nlu.db"), env=env, log=log) as (url, process):
            # The handshake, with the verify token in the query string: it must not reach the log.
            handshake = httpx.get(f"{url}/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": verify, "hub.challenge": "7"})
            rss_start = rss_mib(process.pid)[0] or 0.0
            print(f"server pid {process.pid} on {url}, RSS {rss_start:.1f} MiB; {args.rate:g} req/s for {args.seconds:g} s", flush=True)
            traffic = Traffic(url, secret, token, args.seed)
            started = time.perf_counter()
            samples = asyncio.run(soak(traffic, process.pid, args.seconds, args.rate, args.rss_every))
            elapsed = time.perf_counter() - started
            graph.heal()
            drained = drain(url, args.drain)
            alive = process.poll() is None
        log_text = log_path.read_text(errors="replace")
        tickets = tickets_in(tmp / "nlu.db")
        graph.close()

    t = traffic.tally
    problems = list(t.problems)
    if handshake.status_code != 200:
        problems.append(f"verify handshake answered {handshake.status_code}")
    if not alive:
        problems.append("the server died during the run")
    if t.transport_errors:
        problems.append(f"{sum(t.transport_errors.values())} transport errors: {dict(t.transport_errors)}")
    by_message = Counter(message_id for _, message_id in tickets)
    doubled = [m for m, n in by_message.items() if n > 1]
    lost = [m for m, ticket_id in t.escalated.items() if (ticket_id, m) not in set(tickets)]
    unexplained = [m for m in by_message if m not in t.escalated]
    if doubled:
        problems.append(f"{len(doubled)} message ids with more than one ticket: {doubled[:5]}")
    if lost:
        problems.append(f"{len(lost)} escalated messages without their ticket: {lost[:5]}")
    if unexplained:
        problems.append(f"{len(unexplained)} tickets for messages never reported escalated: {unexplained[:5]}")
    given_up = dict(re.findall(r"reply to message (\S+) given up after \d+ attempts: ([^\n]*)", log_text))
    problems += reply_problems(t.deliveries, graph.taken, drained, given_up)
    for name, value in (("app secret", secret), ("agent token", token), ("verify token", verify), ("access token", access)):
        if value in log_text:
            problems.append(f"the {name} appears in the server log")
    if "Traceback" in log_text:
        problems.append("a traceback in the server log")

    after_warmup = [(x, y) for x, y in samples if x >= warmup] or samples[-1:]
    rss_warm = after_warmup[0][1] if after_warmup else 0.0
    rss_end = samples[-1][1] if samples else 0.0
    rss_peak = max((y for _, y in samples), default=0.0)
    trend = slope(after_warmup)
    if rss_end - rss_warm > args.max_growth_mib:
        problems.append(f"RSS grew {rss_end - rss_warm:.1f} MiB after warm-up (limit {args.max_growth_mib:g})")

    lat = sorted(t.latencies)
    fives = sum(n for s, n in t.statuses.items() if s.startswith("5"))
    summary = {
        "seconds": round(elapsed, 1),
        "rate_target": args.rate,
        "requests": t.sent,
        "achieved_rate": round(t.sent / elapsed, 1),
        "late_by_over_1s": t.late,
        "by_kind": dict(t.kinds),
        "statuses": dict(sorted(t.statuses.items())),
        "5xx": fives,
        "transport_errors": sum(t.transport_errors.values()),
        "actions": dict(t.actions),
        "escalated_messages": len(t.escalated),
        "webhook_replies": dict(Counter(t.deliveries.values())),
        "graph_api": {"taken": len(graph.taken), "refused_while_down": graph.refused, "resent": sum("context" in b for b in graph.taken)},
        "replies_given_up": dict(Counter(why for why in given_up.values())),
        "outbox_drained": drained,
        "tickets_in_db": len(tickets),
        "latency_ms": {"p50": round(percentile(lat, 50) * 1000, 1), "p99": round(percentile(lat, 99) * 1000, 1), "max": round(lat[-1] * 1000, 1) if lat else 0},
        "rss_mib": {"start": round(rss_start, 1), "after_warmup": round(rss_warm, 1), "end": round(rss_end, 1), "peak": round(rss_peak, 1),
                    "slope_after_warmup_mib_per_min": round(trend, 3), "warmup_s": warmup, "samples": len(samples)},
        "problems": problems,
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("soak: FAILED" if problems else "soak: ok", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
