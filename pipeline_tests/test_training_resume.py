"""Training in its own process: killed with SIGKILL it resumes exactly; its memory is bounded."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.data.generate import generate
from pipeline.data.layout import ReferenceDataset
from pipeline.model.checkpoint import TrainingState
from pipeline_tests.conftest import START, TINY, build_warehouse

SCRIPT = Path(__file__).parent / "scripts" / "train.py"


def _command(root: Path, checkpoint: Path, mode: str, epochs: int, batch: int) -> list[str]:
    return [sys.executable, str(SCRIPT), str(root), str(checkpoint), mode, str(epochs), str(batch)]


@pytest.mark.slow
@pytest.mark.parametrize("mode, epochs, batch", [("incremental", 1, 4), ("full", 4, 16)])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_dataset, tmp_path, mode, epochs, batch):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=500)
    reference_ckpt, killed_ckpt = tmp_path / "reference.pt", tmp_path / "killed.pt"
    reference = json.loads(subprocess.run(_command(warehouse.root, reference_ckpt, mode, epochs, batch),
                                          check=True, capture_output=True, text=True).stdout.splitlines()[-1])

    rng, kills, unfinished = random.Random(7), 0, 0
    while True:
        seen = killed_ckpt.stat().st_mtime_ns if killed_ckpt.exists() else 0
        process = subprocess.Popen(_command(warehouse.root, killed_ckpt, mode, epochs, batch),
                                   stdout=subprocess.PIPE, text=True)
        if kills < 3:
            deadline = time.monotonic() + 60
            # wait for a fresh checkpoint, then kill at a random moment after it
            while (not killed_ckpt.exists() or killed_ckpt.stat().st_mtime_ns == seen) and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                state = TrainingState.load(killed_ckpt)  # never corrupt, whenever the kill came
                unfinished += state.cursor is not None
                continue
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        resumed = json.loads(out.splitlines()[-1])
        break

    assert kills == 3 and unfinished >= 2  # the kills really landed mid-run
    assert resumed["resumed"]
    assert resumed["trained"] == reference["trained"] == {d: 4_000 for d in tiny_dataset.days()}
    # every (epoch, day, chunk) exactly once: same step and row counts, same prequential days
    assert (resumed["steps"], resumed["rows_seen"]) == (reference["steps"], reference["rows_seen"])
    assert resumed["rows_seen"] == epochs * 12_000
    assert resumed["history_days"] == reference["history_days"]
    # and bit for bit the model an uninterrupted run produces
    a, b = TrainingState.load(reference_ckpt), TrainingState.load(killed_ckpt)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)


@pytest.mark.slow
def test_training_peak_rss_does_not_grow_with_the_number_of_rows(tmp_path):
    root = tmp_path / "data"
    generate(root, dataclasses.replace(TINY, train_files=8, test_files=0, rows_per_file=250_000, requests=0),
             progress=False)
    dataset = ReferenceDataset(root, START)
    small = build_warehouse(dataset, tmp_path / "small", chunk_rows=100_000, days=2)   # 0.5M rows
    large = build_warehouse(dataset, tmp_path / "large", chunk_rows=100_000)           # 2M rows

    def peak(warehouse):
        done = subprocess.run(_command(warehouse.root, warehouse.checkpoint, "full", 2, 8192),
                              check=True, capture_output=True, text=True)
        return json.loads(done.stdout.splitlines()[-1])

    a, b = peak(small), peak(large)
    assert (a["rows_seen"], b["rows_seen"]) == (1_000_000, 4_000_000)
    assert b["peak_rss_mb"] - a["peak_rss_mb"] < 24, (a, b)
