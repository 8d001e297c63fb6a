"""Queue throughput: N worker processes enqueueing, then claiming, on SQLite and PostgreSQL.

    python scripts/queue_bench.py [--backend sqlite|postgres|both] [--procs 1,2,4] [--tickets 2000]
                                  [--repeat 3] [--synchronous FULL] [--db PATH]

For each backend and each number of processes N, on a fresh database: N processes enqueue
``--tickets`` tickets between them at the same time (enqueue/s = tickets / wall time from
the start signal to the last commit), then N processes claim until the queue is empty
(claims/s likewise). Also reported: double claims (tickets handed to more than one
claimer; must be 0), the slowest single claim (fairness: nobody starves), and what is
left unclaimed (must be 0). Each run uses a fresh database; the median of ``--repeat``
runs is reported, because fsync time on a shared disk varies a lot from one second to
the next.

Both backends are durable: SQLite with ``synchronous=FULL`` (WAL), PostgreSQL with its
defaults (fsync on, synchronous_commit on) in a throwaway cluster this script starts on
127.0.0.1 and deletes afterwards (``nlu/testing_pg.py``, the same helper the tests use).
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

from nlu.queue import Queue, SQLiteQueue
from nlu.testing_pg import ClusterError, TempCluster

PREDICTION = {"intent": "estado_pedido", "confidence": 0.41, "sentiment": "negativo", "emotion": "enojo", "frustration": 0.8}
TEXT = "tercera vez que pregunto por el pedido 1029384 y nadie responde, mi cel 3104567821. ya me cansé"


def _open(backend: str, target: str, synchronous: str) -> Queue:
    if backend == "postgres":
        from nlu.queue_pg import PostgresQueue

        return PostgresQueue(target, timeout=60, pool_size=1)
    return SQLiteQueue(target, timeout=60, synchronous=synchronous)


def _worker(
    backend: str, target: str, synchronous: str, n: int, procs: int, tickets: int,
    ready: Any, start_enqueue: Any, start_claim: Any, out: Any,
) -> None:
    queue = _open(backend, target, synchronous)
    ready.set()
    start_enqueue.wait()
    for i in range(n, tickets, procs):
        queue.enqueue(
            conversation_id=f"conv-{i}", message_id=f"wamid.{i}", text=TEXT, prediction=PREDICTION,
            reasons=["frustration"], priority=(i % 10) / 10, turns=[{"role": "user", "text": TEXT}],
        )
    out.put(("enqueued", n, time.perf_counter()))
    start_claim.wait()
    ids: list[int] = []
    slowest = 0.0
    while True:
        t0 = time.perf_counter()
        ticket = queue.claim(f"agent-{n}", lease_seconds=600)
        slowest = max(slowest, time.perf_counter() - t0)
        if ticket is None:
            break
        ids.append(ticket.id)
    out.put(("claimed", n, time.perf_counter(), ids, slowest))
    queue.close()


def run_once(backend: str, target: str, tickets: int, procs: int, synchronous: str) -> dict[str, Any]:
    _open(backend, target, synchronous).close()  # create the schema before the clock starts
    ctx = mp.get_context("spawn")
    start_enqueue, start_claim, out = ctx.Event(), ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(procs)]
    workers = [
        ctx.Process(
            target=_worker,
            args=(backend, target, synchronous, n, procs, tickets, readies[n], start_enqueue, start_claim, out),
        )
        for n in range(procs)
    ]
    for w in workers:
        w.start()
    for ready in readies:
        ready.wait(120)
    t_enqueue = time.perf_counter()
    start_enqueue.set()
    enqueued = [out.get(timeout=600) for _ in workers]
    enqueue_wall = max(end for _, _, end in enqueued) - t_enqueue
    t_claim = time.perf_counter()
    start_claim.set()
    claimed = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    claim_wall = max(end for _, _, end, _, _ in claimed) - t_claim
    check = _open(backend, target, synchronous)
    left = check.depth()
    check.close()
    counts = Counter(i for *_, ids, _ in claimed for i in ids)
    return {
        "enqueue_per_s": tickets / enqueue_wall,
        "claims": sum(counts.values()),
        "claims_per_s": sum(counts.values()) / claim_wall,
        "double_claims": sum(c - 1 for c in counts.values() if c > 1),
        "left": left,
        "split": [len(ids) for *_, ids, _ in sorted(claimed, key=lambda r: r[1])],
        "slowest_claim_ms": max(s for *_, s in claimed) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--procs", default="1,2,4", help="comma-separated numbers of concurrent worker processes")
    parser.add_argument("--tickets", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell, each on a fresh database")
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"], help="SQLite durability (FULL is the default)")
    parser.add_argument("--db", type=Path, help="SQLite file to use (default: a temporary one; must not exist)")
    args = parser.parse_args(argv)
    procs = [int(p) for p in args.procs.split(",") if p.strip()]
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    cluster: TempCluster | None = None
    if "postgres" in backends:
        try:
            cluster = TempCluster(durable=True).start()
        except ClusterError as exc:
            print(f"postgres: {exc}", file=sys.stderr)
            return 1
    rows = []
    ok = True
    try:
        for backend in backends:
            for n in procs:
                runs = []
                for r in range(args.repeat):
                    with tempfile.TemporaryDirectory() as tmp:
                        if backend == "postgres":
                            assert cluster is not None
                            target = cluster.create_database(f"bench_{n}_{r}")
                        else:
                            target = str(args.db or Path(tmp) / "bench.db")
                        result = run_once(backend, target, args.tickets, n, args.synchronous)
                    runs.append(result)
                    ok &= result["double_claims"] == 0 and result["left"] == 0 and result["claims"] == args.tickets
                    print(
                        f"{backend} x{n} run {r + 1}: enqueue {result['enqueue_per_s']:,.0f}/s, "
                        f"{result['claims_per_s']:,.0f} claims/s (split {'/'.join(map(str, result['split']))}), "
                        f"double claims {result['double_claims']}, slowest claim {result['slowest_claim_ms']:.0f} ms, "
                        f"unclaimed {result['left']}",
                        file=sys.stderr,
                    )
                median = statistics.median
                rows.append((
                    backend, n, median(r["enqueue_per_s"] for r in runs), median(r["claims_per_s"] for r in runs),
                    sum(r["double_claims"] for r in runs), max(r["slowest_claim_ms"] for r in runs),
                ))
    finally:
        if cluster is not None:
            cluster.stop()

    sqlite_mode = f"synchronous={args.synchronous}"
    print(f"\n{args.tickets} tickets per run, median of {args.repeat} runs; SQLite WAL {sqlite_mode}, PostgreSQL fsync on\n")
    print("| backend | worker processes | enqueue/s | claims/s | double claims | slowest claim (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend, n, enqueue, claims, doubles, slowest in rows:
        print(f"| {backend} | {n} | {enqueue:,.0f} | {claims:,.0f} | {doubles} | {slowest:.0f} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
