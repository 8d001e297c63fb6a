"""Bounded load generator for `nlu serve` on 127.0.0.1.

Every run stops at a fixed number of requests *or* a time limit, whichever comes first,
with N concurrent clients (asyncio + httpx, one keep-alive connection each). It reports
throughput, p50/p95/p99 latency, errors, the actions the service took, and the server's
RSS when it knows the server's pid.

    # against a running server (pid for the RSS figure)
    python scripts/loadtest.py --url http://127.0.0.1:8000 --route messages --concurrency 16 --pid 1234

    # start a server on a free loopback port, run the matrix, always stop the server
    python scripts/loadtest.py --serve models/es-demo --route messages,score --concurrency 1,16

Workloads: ``score`` posts one message per request, cycling through the bundled test
messages. ``messages`` plays conversations of a few turns (the consent button first, then
customer messages), with fresh message ids each run, so routing, the conversation state
and the queue are all exercised; escalated conversations then go to "handover".

The load generator shares the machine (and its 2 cores) with the server, so figures are
a floor for what the server does alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TURNS = 4  # customer messages per conversation after the consent button
FALLBACK_TEXTS = [
    "hola buenas tardes",
    "¿dónde está mi pedido #A-48213? ya van 3 días!!",
    "cuánto sale el envío a Medellín?",
    "quiero devolver unas zapatillas que me quedaron chicas",
    "me cobraron dos veces y nadie me devuelve la plata 😡",
    "gracias, muy amable",
]


@dataclass
class Result:
    route: str
    concurrency: int
    requests: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int]
    actions: dict[str, int] = field(default_factory=dict)
    rss_mib: float | None = None
    peak_rss_mib: float | None = None
    stopped_by: str = "requests"
    # CPU the load generator itself used, as a share of one core: near 100% means the
    # client, not the server, sets the pace and adds to the measured latency.
    client_cpu: float = 0.0

    def line(self) -> str:
        rss = "" if self.rss_mib is None else f"  RSS {self.rss_mib:.0f} MiB (peak {self.peak_rss_mib:.0f})"
        return (
            f"{self.route:<9} c={self.concurrency:<3} {self.requests:>6} req in {self.seconds:5.1f}s "
            f"{self.throughput:8.1f} req/s  p50 {self.p50_ms:6.2f} ms  p95 {self.p95_ms:6.2f} ms  "
            f"p99 {self.p99_ms:6.2f} ms  errors {self.errors}{rss}  client CPU {self.client_cpu:.0%}"
        )


def load_texts() -> list[str]:
    path = ROOT / "data" / "chats_test.csv"
    if not path.is_file():
        return FALLBACK_TEXTS
    with path.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh) if row.get("text", "").strip()]
    # Cap the length like a chat message (and the server's 4,096-character limit).
    return [t[:4096] for t in texts] or FALLBACK_TEXTS


def bodies(route: str, n: int, texts: list[str]) -> Iterator[bytes]:
    run = uuid.uuid4().hex[:10]  # fresh ids per run: a retry would only measure dedupe
    for i in range(n):
        if route == "score":
            yield json.dumps({"text": texts[i % len(texts)]}, ensure_ascii=False).encode()
            continue
        conversation, turn = divmod(i, TURNS + 1)
        message: dict[str, Any] = {"conversation_id": f"lt-{run}-{conversation}", "message_id": f"lt-{run}-{i}"}
        if turn == 0:
            message.update(text="", button_id="consent:yes")
        else:
            message["text"] = texts[i % len(texts)]
        yield json.dumps(message, ensure_ascii=False).encode()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def rss_mib(pid: int | None) -> tuple[float | None, float | None]:
    """(current, peak) resident memory of a process from /proc, in MiB."""
    if pid is None:
        return None, None
    values: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    except OSError:
        return None, None
    return values.get("VmRSS"), values.get("VmHWM")


async def run_load(url: str, route: str, requests: int, time_limit: float, concurrency: int, texts: list[str], warmup: int = 20) -> Result:
    path = {"score": "/v1/score", "messages": "/v1/messages"}[route]
    payloads = list(bodies(route, requests + warmup, texts))
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    errors = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        for body in payloads[:warmup]:  # connections, caches, first-call paths: not measured
            await client.post(path, content=body, headers=headers)
        queue = iter(payloads[warmup:])
        cpu_start = time.process_time()
        start = time.perf_counter()
        deadline = start + time_limit

        async def worker() -> None:
            nonlocal errors
            for body in queue:  # a shared iterator: each body is sent once
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    latencies.append(time.perf_counter() - t0)
                    statuses[type(exc).__name__] += 1
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[str(response.status_code)] += 1
                if response.status_code >= 400:
                    errors += 1
                elif route == "messages":
                    actions[response.json().get("action", "?")] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    done = len(latencies)
    ordered = sorted(latencies)
    return Result(
        route=route,
        concurrency=concurrency,
        requests=done,
        seconds=elapsed,
        throughput=done / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(ordered, 50) * 1000,
        p95_ms=percentile(ordered, 95) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] if ordered else 0.0) * 1000,
        errors=errors,
        statuses=dict(statuses),
        actions=dict(actions),
        stopped_by="requests" if done >= requests else "time",
        client_cpu=cpu / elapsed if elapsed > 0 else 0.0,
    )


# -- running a server for the duration ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(
    model_dir: str,
    db: str | None = None,
    workers: int = 1,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start `nlu serve` on a free loopback port; always stop it, whatever happens.

    ``env`` overrides the throw-away secrets (a caller that signs webhooks needs to know
    them); with ``log`` the server's output goes there with its access log on (the soak
    checks it), else to this terminal without the access log.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nlu-loadtest-") as tmp:
        full_env = {
            **os.environ,
            # Throw-away secrets: the webhook and agent routes are served as in production.
            "NLU_WHATSAPP_VERIFY_TOKEN": secrets.token_hex(16),
            "NLU_WHATSAPP_APP_SECRET": secrets.token_hex(16),
            "NLU_AGENT_TOKEN": secrets.token_hex(16),
            **(env or {}),
        }
        command = [
            sys.executable, "-m", "nlu", "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
            "--db", db or str(Path(tmp) / "nlu.db"), "--workers", str(workers),
        ]
        if log is None:
            command += ["--no-access-log", "--log-level", "warning"]
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT if log else None)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    where = f" (its output: {log.name})" if log is not None else ""
                    raise SystemExit(f"error: the server exited with code {process.returncode} before it was ready{where}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("error: the server was not ready after 120 s")
                time.sleep(0.2)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _stop_on_sigterm() -> None:
    # `make` and CI stop jobs with SIGTERM; turn it into an exception so the server's
    # `finally` runs (the Makefile needs no trap of its own).
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Server to load (ignored with --serve).")
    parser.add_argument("--serve", metavar="MODEL_DIR", help="Start `nlu serve MODEL_DIR` on a free loopback port for the runs.")
    parser.add_argument("--db", help="With --serve: database path (default: a temporary one, deleted afterwards).")
    parser.add_argument("--workers", type=int, default=1, help="With --serve: server worker processes.")
    parser.add_argument("--route", default="messages", help="messages, score, or both comma-separated.")
    parser.add_argument("--concurrency", default="1", help="Concurrent clients; a comma-separated list runs each.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per run (the run stops at this count).")
    parser.add_argument("--time-limit", type=float, default=30.0, help="Seconds per run (the run stops at this time).")
    parser.add_argument("--warmup", type=int, default=20, help="Unmeasured requests before each run.")
    parser.add_argument("--pid", type=int, help="Server pid, for its RSS after each run (automatic with --serve).")
    parser.add_argument("--json", metavar="FILE", help="Also write the results as JSON.")
    args = parser.parse_args(argv)

    routes = [r.strip() for r in args.route.split(",") if r.strip()]
    if not routes or any(r not in ("messages", "score") for r in routes):
        parser.error("--route takes messages, score or both")
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error("--concurrency takes integers")
    if any(c < 1 for c in levels) or args.requests < 1 or args.time_limit <= 0:
        parser.error("--concurrency, --requests and --time-limit must be positive")

    texts = load_texts()
    results: list[Result] = []
    _stop_on_sigterm()
    with contextlib.ExitStack() as stack:
        url, pid = args.url, args.pid
        if args.serve:
            url, process = stack.enter_context(server(args.serve, args.db, args.workers))
            pid = process.pid
            print(f"server pid {pid} on {url}, RSS {rss_mib(pid)[0]:.0f} MiB before load", flush=True)
        for route in routes:
            for concurrency in levels:
                result = asyncio.run(run_load(url, route, args.requests, args.time_limit, concurrency, texts, args.warmup))
                result.rss_mib, result.peak_rss_mib = rss_mib(pid)
                results.append(result)
                print(result.line(), flush=True)
                if result.actions:
                    print(f"{'':<9} actions {json.dumps(result.actions, sort_keys=True)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
