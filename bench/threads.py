"""Benchmark: training throughput per thread setting, quiet and with one competing busy process.

    python bench/threads.py --warehouse DIR [--days 8] [--rounds 8] [--block-steps 3000] [--batch-size 1024]
    python bench/threads.py --mkl-cbwr [--batch-sizes 1024,8192] [--rounds 80] [--block-rows 204800]

The training loop's own parts (a prepared warehouse's feature tables and processed days, the
gatherer, the fused trainer, the thread tuner) run in one process; each round gives every setting
— 1 thread, 2 threads, 0 (adaptive, its state carried across rounds) — a block of steps in turn, so
a machine whose speed drifts affects them alike. Then the same with a spinning competitor
process. Prints one JSON object as its last line: per condition and setting, the microseconds per
step (median and total over rounds) and the ratio to the best setting.

``--mkl-cbwr``: the cost of MKL's strict reproducibility (pipeline/model/reproducible.py). Per
batch size, two step processes, one with ``MKL_CBWR=OFF`` (MKL's default) and one with
``AUTO,STRICT`` (MKL reads it once a process), each training the native step on a pool of random
pairs (gather and step in one call, as training does); each round asks each of them for a block
of ``--block-rows`` rows on 1 and on 2 threads, in an order rotated every round. Prints, per batch
size, the median µs a step of each (setting, threads), the ratio of medians strict/off per thread
count, the median of the rounds' own strict/off ratios, and the load averages before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipeline_devtools.benchmarks import machine

SETTINGS = (1, 2, 0)
CBWR = ("OFF", "AUTO,STRICT")  # MKL's default, and the pipeline's


def measure(warehouse: Path, days: int, rounds: int, block_steps: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from pipeline.data.layout import Warehouse
    from pipeline.data.processed_partition import iter_chunks, live_partition
    from pipeline.model.batches import BatchGatherer, FeatureTables, seeded_generator
    from pipeline.model.fused_trainer import FusedTrainer, bind_to_flat_buffers
    from pipeline.model.network import ClickMLP, make_optimizer
    from pipeline.model.threads import ThreadTuner

    layout = Warehouse(warehouse)
    tables = FeatureTables.load(layout)
    parts = [c for d in layout.processed_days()[:days] for c in iter_chunks(live_partition(layout.processed_clicks(d)))]
    arrays = [np.concatenate([p[i] for p in parts]) for i in range(3)]
    gatherer = BatchGatherer(tables, batch_size)
    runners = {}
    for setting in SETTINGS:
        torch.manual_seed(0)
        model = ClickMLP()
        trainer = FusedTrainer(bind_to_flat_buffers(model, make_optimizer(model, 1e-8)), batch_size)
        runners[setting] = (trainer, ThreadTuner(setting), [0])
    times = {s: [] for s in SETTINGS}

    def block(setting: int) -> float:
        """µs a step over ``block_steps`` steps, as training runs them (the pool's shuffle not timed)."""
        trainer, tuner, cursor = runners[setting]
        pool = gatherer.pool(*arrays, seeded_generator(setting, cursor[0]))
        cursor[0] += 1
        starts = range(0, min(block_steps * batch_size, len(pool)), batch_size)
        started = time.perf_counter()
        steps = trainer.train_pairs(tables.users, tables.restaurants, pool, tuner.paced(starts))
        return (time.perf_counter() - started) / steps

    for setting in SETTINGS:  # warm-up
        block(setting)
    for _ in range(rounds):
        for setting in SETTINGS:
            times[setting].append(block(setting))
    totals = {s: sum(t) for s, t in times.items()}
    best = min(totals.values())
    return {str(s): {"us_per_step_median": round(statistics.median(t) * 1e6), "us_per_step_mean": round(
                totals[s] / len(t) * 1e6), "vs_best": round(totals[s] / best, 3),
                     **runners[s][1].summary()} for s, t in times.items()}


def step_server(batch_size: int) -> None:
    """Role: answer each stdin line ``THREADS ROWS`` with the seconds per native training step over
    that many rows (whole batches) on that many threads, in the MKL_CBWR this process was given."""
    import torch

    from pipeline.model.batches import Pool
    from pipeline.model.fused_trainer import FusedTrainer, bind_to_flat_buffers
    from pipeline.model.network import ClickMLP, make_optimizer

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    users, restaurants = torch.randn(100_000, 30, generator=g), torch.randn(2_000, 10, generator=g)
    rows = 16 * batch_size
    pool = Pool(torch.randint(0, len(users), (rows,), generator=g, dtype=torch.int32),
                torch.randint(0, len(restaurants), (rows,), generator=g, dtype=torch.int32),
                (torch.rand(rows, generator=g) < 0.46).float(), torch.randperm(rows, generator=g))
    model = ClickMLP()
    trainer = FusedTrainer(bind_to_flat_buffers(model, make_optimizer(model, 1e-8)), batch_size)
    print(json.dumps({"kernel": trainer.kernel, "MKL_CBWR": os.environ.get("MKL_CBWR")}), flush=True)
    for line in sys.stdin:
        threads, block_rows = map(int, line.split())
        torch.set_num_threads(threads)
        steps = max(1, block_rows // batch_size)
        started = time.perf_counter()
        for first in range(0, steps, 16):
            trainer.train_pairs(users, restaurants, pool, range(0, min(16, steps - first) * batch_size, batch_size))
        print((time.perf_counter() - started) / steps, flush=True)
        trainer.take_loss()


def compare_mkl_cbwr(batch_size: int, rounds: int, block_rows: int) -> dict:
    """Step processes with MKL_CBWR=OFF and =AUTO,STRICT, interleaved block by block (see the module)."""
    servers = {cbwr: subprocess.Popen([sys.executable, __file__, "--role", "step-server", "--batch-size",
                                       str(batch_size)], env={**os.environ, "MKL_CBWR": cbwr},
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for cbwr in CBWR}
    try:
        started = {cbwr: json.loads(server.stdout.readline()) for cbwr, server in servers.items()}
        cases = [(cbwr, threads) for cbwr in CBWR for threads in (1, 2)]
        times: dict[tuple[str, int], list[float]] = {case: [] for case in cases}

        def block(cbwr: str, threads: int) -> float:
            servers[cbwr].stdin.write(f"{threads} {block_rows}\n")
            servers[cbwr].stdin.flush()
            return float(servers[cbwr].stdout.readline())

        for case in cases:  # warm-up
            block(*case)
        for round_ in range(rounds):
            for case in cases[round_ % len(cases):] + cases[:round_ % len(cases)]:
                times[case].append(block(*case))
    finally:
        for server in servers.values():
            server.stdin.close()
            server.wait(timeout=60)
    median = {case: statistics.median(t) for case, t in times.items()}
    result = {"kernels": {cbwr: s["kernel"] for cbwr, s in started.items()}}
    for threads in (1, 2):
        off, strict = times[("OFF", threads)], times[("AUTO,STRICT", threads)]
        ratios = [s / o for s, o in zip(strict, off, strict=True)]  # the same round's blocks
        result[f"{threads}_thread{'s' if threads > 1 else ''}"] = {
            "us_per_step_median_off": round(median[("OFF", threads)] * 1e6),
            "us_per_step_median_strict": round(median[("AUTO,STRICT", threads)] * 1e6),
            "strict_over_off_of_medians": round(median[("AUTO,STRICT", threads)] / median[("OFF", threads)], 3),
            "strict_over_off_median_of_rounds": round(statistics.median(ratios), 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, help="prepared by bench/training.py (required without --mkl-cbwr)")
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--mkl-cbwr", action="store_true", help="the cost of MKL_CBWR=AUTO,STRICT (see above)")
    parser.add_argument("--batch-sizes", default="1024,8192", help="with --mkl-cbwr")
    parser.add_argument("--block-rows", type=int, default=204_800, help="rows a block, with --mkl-cbwr")
    parser.add_argument("--role", choices=("measure", "step-server"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "step-server":
        step_server(args.batch_size)
        return
    if args.mkl_cbwr:
        load_before = os.getloadavg()
        sizes = map(int, args.batch_sizes.split(","))
        result = {str(b): compare_mkl_cbwr(b, args.rounds, args.block_rows) for b in sizes}
        command = " ".join(["python", "bench/threads.py", *sys.argv[1:]])
        print(json.dumps(result | {"rounds": args.rounds, "block_rows": args.block_rows,
                                   "load_average_before": load_before, "load_average_after": os.getloadavg(),
                                   "machine": machine(), "command": command}))
        return
    if args.warehouse is None:
        parser.error("--warehouse is required (or --mkl-cbwr)")
    if args.role == "measure":
        print(json.dumps(measure(args.warehouse, args.days, args.rounds, args.block_steps, args.batch_size)))
        return
    command = [sys.executable, __file__, "--warehouse", str(args.warehouse), "--days", str(args.days), "--rounds",
               str(args.rounds), "--block-steps", str(args.block_steps), "--batch-size", str(args.batch_size),
               "--role", "measure"]
    result = {}
    for condition in ("quiet", "busy"):
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "busy" else None
        try:
            done = subprocess.run(command, check=True, capture_output=True, text=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        result[condition] = json.loads(done.stdout.strip().splitlines()[-1])
    result |= {"batch_size": args.batch_size, "block_steps": args.block_steps, "rounds": args.rounds,
               "machine": machine(), "command": " ".join(["python", "bench/threads.py", *sys.argv[1:]])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
