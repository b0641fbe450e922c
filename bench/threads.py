"""Benchmark: training throughput per thread setting, quiet and with one competing busy process.

    python bench/threads.py --warehouse DIR [--days 8] [--rounds 8] [--block-steps 3000] [--batch-size 1024]

The training loop's own parts (a prepared warehouse's feature tables and processed days, the
gatherer, the fused trainer, the thread tuner) run in one process; each round gives every setting
— 1 thread, 2 threads, 0 (adaptive, its state carried across rounds) — a block of steps in turn, so
a machine whose speed drifts affects them alike. Then the same with a spinning competitor
process. Prints one JSON object as its last line: per condition and setting, the microseconds per
step (median and total over rounds) and the ratio to the best setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine  # noqa: E402

SETTINGS = (1, 2, 0)


def measure(warehouse: Path, days: int, rounds: int, block_steps: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from pipeline.data.clicks import iter_chunks, live_partition
    from pipeline.data.layout import Warehouse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", required=True, type=Path, help="prepared by bench/training.py")
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--role", choices=("measure",), help=argparse.SUPPRESS)
    args = parser.parse_args()
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
