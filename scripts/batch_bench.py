"""Batch scoring throughput: the local engine against Dask with N worker processes.

    python scripts/batch_bench.py [--rows 300000] [--workers 2] [--chunk-size 50000]
                                  [--model models/es-demo] [--dir /tmp/nlu_batch_bench]

Builds the input by repeating data/chats_test.csv (real message lengths, with a row id so
the rows differ) to --rows rows, as one CSV and one Parquet file (row groups of
--chunk-size rows) under --dir, then scores each with ``nlu.batch.score_file``:

* local: one process streaming chunks into one Parquet file;
* dask: a LocalCluster of --workers single-threaded worker processes, writing a folder
  of parts. Its start-up (processes, imports) is timed apart; the scoring time includes
  shipping the model to the workers, reading, scoring, routing and writing.

Prints messages/second (rows / wall time) per engine and input format, the speed-up over
local, and checks that both engines wrote the same rows. Without --model, a model is
trained on data/chats_train.csv into --dir first.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nlu import load_model
from nlu.batch import read_output, score_file

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(rows: int, directory: Path, chunk_size: int) -> dict[str, Path]:
    seed = pacsv.read_csv(ROOT / "data" / "chats_test.csv")
    repeats = -(-rows // seed.num_rows)
    table = pa.concat_tables([seed] * repeats).slice(0, rows)
    table = table.add_column(0, "id", pa.array(range(rows), pa.int64()))
    paths = {"csv": directory / f"chats_{rows}.csv", "parquet": directory / f"chats_{rows}.parquet"}
    if not paths["csv"].exists():
        pacsv.write_csv(table, paths["csv"])
    if not paths["parquet"].exists():
        pq.write_table(table, paths["parquet"], row_group_size=chunk_size)
    return paths


def model_dir(arg: str | None, directory: Path) -> Path:
    if arg:
        return Path(arg)
    path = directory / "model"
    if not (path / "meta.json").exists():
        from nlu import save_model, train
        from nlu.data import load_data

        print(f"training a model on data/chats_train.csv into {path} ...", flush=True)
        save_model(train(load_data([ROOT / "data" / "chats_train.csv"])), path, force=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dir", default="/tmp/nlu_batch_bench")
    parser.add_argument("--formats", default="parquet,csv")
    args = parser.parse_args()

    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    model = load_model(model_dir(args.model, directory))
    inputs = make_inputs(args.rows, directory, args.chunk_size)
    print(f"{os.cpu_count()} CPUs; {args.rows:,} rows repeated from data/chats_test.csv; chunk size {args.chunk_size:,}")
    # Dask needs every core; another program's load skews its figure more than local's.
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    client = Client(cluster)
    startup = time.perf_counter() - t0
    print(f"Dask LocalCluster start: {args.workers} workers x 1 thread in {startup:.1f} s\n")

    print(f"{'input':<8} {'engine':<10} {'parts':>5} {'seconds':>8} {'msgs/s':>9} {'vs local':>8}")
    try:
        for fmt in args.formats.split(","):
            source = inputs[fmt]
            out_local = directory / f"out_local_{fmt}.parquet"
            out_dask = directory / f"out_dask_{fmt}"
            local = score_file(model, source, out_local, chunk_size=args.chunk_size, force=True)
            print(f"{fmt:<8} {'local':<10} {local.parts:>5} {local.seconds:>8.1f} {local.rate:>9,.0f} {1:>7.2f}x", flush=True)
            dask = score_file(
                model, source, out_dask, engine="dask", scheduler=client, chunk_size=args.chunk_size, force=True
            )
            label = f"dask x{args.workers}"
            print(
                f"{fmt:<8} {label:<10} {dask.parts:>5} {dask.seconds:>8.1f} {dask.rate:>9,.0f} {dask.rate / local.rate:>7.2f}x",
                flush=True,
            )
            if not read_output(out_local).equals(read_output(out_dask)):
                print(f"MISMATCH: {out_local} and {out_dask} differ", file=sys.stderr)
                return 1
            shutil.rmtree(out_dask, ignore_errors=True)
            out_local.unlink(missing_ok=True)
    finally:
        client.close()
        cluster.close()
    print(f"\nboth engines wrote the same rows; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":  # the guard matters: Dask's worker processes re-import __main__
    sys.exit(main())
