"""Training in its own process: killed with SIGKILL it resumes exactly and never touches the model
of record until it completes; two runs at once take turns; its memory is bounded."""

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
from pipeline.model.checkpoint import TrainingState, load_published_state
from pipeline.publish import Artifact
from pipeline_devtools.datasets import START, TINY
from pipeline_devtools.warehouse_build import build_warehouse

SCRIPT = Path(__file__).parents[2] / "scripts" / "train.py"


def _command(root: Path, mode: str, epochs: int, batch: int, validation_days: int = 1) -> list[str]:
    return [sys.executable, str(SCRIPT), str(root), mode, str(epochs), str(batch), str(validation_days)]


def _run(root: Path, mode: str, epochs: int, batch: int, validation_days: int = 1) -> dict:
    done = subprocess.run(_command(root, mode, epochs, batch, validation_days), check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mode, epochs, batch", [("incremental", 1, 4), ("full", 4, 16)])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tiny_dataset, tmp_path, mode, epochs, batch):
    reference_wh = build_warehouse(tiny_dataset, tmp_path / "reference", chunk_rows=500)
    killed_wh = build_warehouse(tiny_dataset, tmp_path / "killed", chunk_rows=500)
    incumbent = None
    if mode == "full":  # a full retrain over a published model: the kills must never touch it
        for warehouse in (reference_wh, killed_wh):
            _run(warehouse.root, "full", 1, 64)
        incumbent = Artifact(killed_wh.checkpoint).live_version()
    reference = _run(reference_wh.root, mode, epochs, batch)
    run_file = killed_wh.training_run

    rng, kills, unfinished = random.Random(7), 0, 0
    while True:
        seen = run_file.stat().st_mtime_ns if run_file.exists() else 0
        process = subprocess.Popen(_command(killed_wh.root, mode, epochs, batch), stdout=subprocess.PIPE, text=True)
        if kills < 3:
            deadline = time.monotonic() + 60
            # wait for a fresh save of the unfinished run, then kill at a random moment after it
            while (not run_file.exists() or run_file.stat().st_mtime_ns == seen) and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                state = TrainingState.load(run_file)  # never corrupt, whenever the kill came
                unfinished += state.cursor is not None
                assert Artifact(killed_wh.checkpoint).live_version() == incumbent  # the model of record stays
                continue
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        resumed = json.loads(out.splitlines()[-1])
        break

    assert kills == 3 and unfinished >= 2  # the kills really landed mid-run
    assert resumed["resumed"]
    # a full retrain holds its newest day out for validation (and its resume picks the same best epoch)
    trained_days = tiny_dataset.days()[:-1] if mode == "full" else tiny_dataset.days()
    assert resumed["trained"] == reference["trained"] == {d: 4_000 for d in trained_days}
    # every (epoch, day, chunk) exactly once: same step and row counts, same prequential days
    assert (resumed["steps"], resumed["rows_seen"]) == (reference["steps"], reference["rows_seen"])
    assert resumed["history_days"] == reference["history_days"]
    # and bit for bit the model an uninterrupted run produces, now the model of record
    a, b = load_published_state(reference_wh.checkpoint), load_published_state(killed_wh.checkpoint)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert Artifact(killed_wh.checkpoint).record()["previous"] == incumbent
    # what the killed runs left (temporary saves, the unfinished run) is gone
    leftovers = [p.name for p in killed_wh.models.rglob("*") if ".tmp-" in p.name or ".staging-" in p.name]
    assert leftovers == [] and not run_file.exists()


@pytest.mark.slow
def test_two_training_runs_at_once_take_turns(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=500)
    processes = [subprocess.Popen(_command(warehouse.root, "incremental", 1, 16), stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        results.append(json.loads(out.splitlines()[-1]))
    first, second = sorted(results, key=lambda r: r["finished"])
    assert second["started"] < first["finished"]  # they really overlapped
    # one trained every day and published; the other waited, then found nothing new to train
    assert first["days_trained"] == tiny_dataset.days() and first["published"]
    assert second["days_trained"] == [] and second["published"] is None
    assert second["steps"] == first["steps"] and Artifact(warehouse.checkpoint).versions() == [first["published"]]


@pytest.mark.slow
def test_training_peak_rss_does_not_grow_with_the_number_of_rows(tmp_path):
    root = tmp_path / "data"
    generate(root, dataclasses.replace(TINY, train_files=8, test_files=0, rows_per_file=250_000, requests=0),
             progress=False)
    dataset = ReferenceDataset(root, START)
    small = build_warehouse(dataset, tmp_path / "small", chunk_rows=100_000, days=2)   # 0.5M rows
    large = build_warehouse(dataset, tmp_path / "large", chunk_rows=100_000)           # 2M rows
    a, b = _run(small.root, "full", 2, 8192, validation_days=0), _run(large.root, "full", 2, 8192, validation_days=0)
    assert (a["rows_seen"], b["rows_seen"]) == (1_000_000, 4_000_000)
    assert b["peak_rss_mb"] - a["peak_rss_mb"] < 24, (a, b)
