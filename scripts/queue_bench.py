"""Queue throughput: N processes claiming concurrently from one SQLite queue.

    python scripts/queue_bench.py [--tickets 2000] [--procs 2] [--synchronous FULL] [--repeat 3]

Fills a fresh database with tickets, starts the claimers together, and prints claims per
second (all claims / wall time from the start signal to the last claim), the number of
double claims (tickets handed to more than one claimer; must be 0), the slowest single
claim (fairness: nobody starves), and enqueue speed. Each run uses a fresh database; the
figures of every run and their median are printed, because fsync time on a shared disk
varies a lot from one second to the next.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from nlu.queue import SQLiteQueue

PREDICTION = {"intent": "estado_pedido", "confidence": 0.41, "sentiment": "negativo", "emotion": "enojo", "frustration": 0.8}
TEXT = "tercera vez que pregunto por el pedido 1029384 y nadie responde, mi cel 3104567821. ya me cansé"


def _claimer(path: str, agent: str, synchronous: str, ready: Any, start: Any, out: Any) -> None:
    queue = SQLiteQueue(path, timeout=60, synchronous=synchronous)
    ready.set()
    start.wait()
    ids: list[int] = []
    slowest = 0.0
    while True:
        t0 = time.perf_counter()
        ticket = queue.claim(agent, lease_seconds=600)
        slowest = max(slowest, time.perf_counter() - t0)
        if ticket is None:
            break
        ids.append(ticket.id)
    out.put((agent, ids, time.perf_counter(), slowest))
    queue.close()


def run_once(tickets: int, procs: int, synchronous: str, db: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(db or Path(tmp) / "bench.db")
        queue = SQLiteQueue(path, synchronous=synchronous)
        t0 = time.perf_counter()
        for i in range(tickets):
            queue.enqueue(
                conversation_id=f"conv-{i % 300}", message_id=f"wamid.{i}", text=TEXT, prediction=PREDICTION,
                reasons=["frustration"], priority=(i % 10) / 10, turns=[{"role": "user", "text": TEXT}],
            )
        enqueue_s = time.perf_counter() - t0
        queue.close()

        ctx = mp.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        readies = [ctx.Event() for _ in range(procs)]
        workers = [
            ctx.Process(target=_claimer, args=(path, f"agent-{n}", synchronous, readies[n], start, out))
            for n in range(procs)
        ]
        for w in workers:
            w.start()
        for ready in readies:
            ready.wait(120)
        t_start = time.perf_counter()
        start.set()
        results = sorted(out.get(timeout=600) for _ in workers)
        for w in workers:
            w.join()
        wall = max(end for _, _, end, _ in results) - t_start
        with SQLiteQueue(path) as check:
            left = check.depth()
    counts = Counter(i for _, ids, _, _ in results for i in ids)
    return {
        "enqueue_per_s": tickets / enqueue_s,
        "claims": sum(counts.values()),
        "wall_s": wall,
        "claims_per_s": sum(counts.values()) / wall,
        "double_claims": sum(c - 1 for c in counts.values() if c > 1),
        "left": left,
        "split": [len(ids) for _, ids, _, _ in results],
        "slowest_claim_ms": max(s for _, _, _, s in results) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"], help="SQLite durability (FULL is the default)")
    parser.add_argument("--repeat", type=int, default=3, help="runs, each on a fresh database")
    parser.add_argument("--db", type=Path, help="database file to use (default: a temporary one; must not exist)")
    args = parser.parse_args(argv)

    print(f"{args.tickets} tickets, {args.procs} claiming processes, synchronous={args.synchronous}")
    runs = []
    for n in range(args.repeat):
        r = run_once(args.tickets, args.procs, args.synchronous, args.db)
        runs.append(r)
        print(
            f"run {n + 1}: {r['claims_per_s']:7,.0f} claims/s ({r['claims']} in {r['wall_s']:.2f} s, split "
            f"{'/'.join(map(str, r['split']))}), double claims {r['double_claims']}, slowest claim "
            f"{r['slowest_claim_ms']:.0f} ms, unclaimed {r['left']}; enqueue {r['enqueue_per_s']:,.0f}/s"
        )
    median = statistics.median
    print(
        f"median: {median(r['claims_per_s'] for r in runs):,.0f} claims/s, "
        f"enqueue {median(r['enqueue_per_s'] for r in runs):,.0f}/s; "
        f"double claims total {sum(r['double_claims'] for r in runs)}"
    )
    ok = all(r["double_claims"] == 0 and r["left"] == 0 and r["claims"] == args.tickets for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
