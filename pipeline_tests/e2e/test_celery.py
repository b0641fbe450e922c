"""PIPELINE_EXECUTOR=celery on a real redis-server broker with two real `pipeline worker` processes: a
4-day ingest_clicks backfill and a training run give what the multiprocess executor gives, every step
runs in a worker's process, and a step process killed mid-step fails its run and leaves the model live."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import torch

from pipeline.publish import Artifact
from pipeline_devtools.celery_workers import celery_workers
from pipeline_devtools.dagster_runs import launch, run_environment
from pipeline_devtools.redis_server import RedisServer

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def _environment(tmp_path: Path, name: str, dataset: Path, **extra) -> dict:
    return run_environment(tmp_path / name, dataset, ROOT / "deploy/dagster.yaml", DAYS[0], **extra)


def _pipeline(env: dict) -> None:
    """The documented sequence: feature snapshots, a 4-day backfill in one ranged run, training."""
    launch(env, "--job", "feature_snapshots")
    launch(env, "--job", "ingest_clicks", "--partition-range", f"{DAYS[0]}...{DAYS[-1]}")
    launch(env, "--job", "train_model")


def _published(env: dict) -> dict:
    """What the runs published, independent of when and where: chunk contents, manifests without their
    timings and paths, the model's tensors and its evaluation."""
    warehouse = Path(env["PIPELINE_WAREHOUSE_DIR"])
    out = {}
    for day in DAYS:
        partition = warehouse / f"processed_clicks/date={day}"
        manifest = json.loads((partition / "_manifest.json").read_text())
        out[day] = ({k: v for k, v in manifest.items() if k not in ("seconds", "sources")},
                    [hashlib.sha256((partition / c["file"]).read_bytes()).hexdigest() for c in manifest["chunks"]])
    checkpoint = warehouse / "models/click_model/checkpoint"
    out["model"] = torch.load(checkpoint / "checkpoint.pt", weights_only=False)["model"]
    out["evaluation"] = json.loads((checkpoint / "evaluation.json").read_text())
    return out


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _step_process(home: str, job: str, step_key: str, known_runs: set[str], timeout_s: float = 120) -> int:
    """The pid of ``step_key``'s process in a new run of ``job`` (not one of ``known_runs``), from its
    STEP_START event."""
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(home) as instance:
        while time.monotonic() < deadline:
            for run in instance.get_runs(filters=dg.RunsFilter(job_name=job)):
                if run.run_id in known_runs:
                    continue
                for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records:
                    if record.event_log_entry.dagster_event.step_key == step_key:
                        return record.event_log_entry.dagster_event.pid
            time.sleep(0.2)
    raise AssertionError(f"{step_key} of a new {job} run did not start within {timeout_s} s")


def _killed_mid_step_fails_the_run_and_keeps_the_model(env: dict, tmp_path: Path) -> None:
    """SIGKILL of a worker's step process mid-training: the run fails promptly (it does not wait on a
    result that never comes), the published model stays live, and the worker takes the next step."""
    checkpoint = Artifact(Path(env["PIPELINE_WAREHOUSE_DIR"]) / "models/click_model/checkpoint")
    live = checkpoint.live_version()
    config = tmp_path / "long_training.yaml"
    config.write_text("ops: {click_model: {config: {mode: full, epochs: 200}}}\n")
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        known_runs = {run.run_id for run in instance.get_runs()}
    run = subprocess.Popen([str(BIN / "dg"), "launch", "--job", "train_model", "-c", str(config)], env=env,
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pid = _step_process(env["DAGSTER_HOME"], "train_model", "click_model", known_runs)
    time.sleep(1.0)  # inside the training loop
    os.kill(pid, signal.SIGKILL)
    output, _ = run.communicate(timeout=60)
    assert run.returncode != 0
    assert "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)" in output
    assert checkpoint.live_version() == live
    launch(env, "--job", "feature_snapshots")  # the worker replaced its step process


@pytest.mark.slow
def test_two_celery_workers_run_the_backfill_and_training_as_the_multiprocess_executor_does(tmp_path):
    dataset = tmp_path / "dataset"
    subprocess.run([str(BIN / "pipeline"), "generate", "--out", str(dataset), "--preset", "tiny",
                    "--train-files", "4", "--quiet"], check=True, capture_output=True)
    baseline = _environment(tmp_path, "multiprocess", dataset, PIPELINE_EXECUTOR="multiprocess")
    _pipeline(baseline)

    broker = RedisServer(str(tmp_path)).start()
    celery = _environment(tmp_path, "celery", dataset, PIPELINE_EXECUTOR="celery",
                          PIPELINE_CELERY_BROKER_URL=broker.url)
    with dg.DagsterInstance.from_config(celery["DAGSTER_HOME"]):
        pass  # the run host's instance exists before workers start (they refuse a fresh one)
    try:
        with celery_workers(celery, ["worker-a", "worker-b"], tmp_path) as workers:
            _pipeline(celery)
            worker_pids = {process.pid for process in workers.values()}
            with dg.DagsterInstance.from_config(celery["DAGSTER_HOME"]) as instance:
                runs = instance.get_runs()
                assert len(runs) == 3 and all(run.is_success for run in runs)
                starts = [record.event_log_entry.dagster_event
                          for run in runs for record in instance.get_records_for_run(
                              run.run_id, of_type=dg.DagsterEventType.STEP_START).records]
                delegated = [record.event_log_entry for run in runs for record in instance.get_records_for_run(
                    run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
                    if "in celery worker" in record.event_log_entry.message]
            # every step started in a step process of one of the two workers (Celery's prefork pool: a
            # child of the worker's main process), none in the runs' own processes
            assert {event.step_key for event in starts} >= {"user_features", "restaurant_features", "raw_clicks",
                                                            "processed_clicks", "click_model", "model_exports"}
            assert {_parent(event.pid) for event in starts} <= worker_pids, (starts, worker_pids)
            assert len(delegated) == len(starts)
            assert {entry.dagster_event.event_specific_data.metadata["Celery worker"].value.split("@")[0]
                    for entry in delegated} <= set(workers)
            _killed_mid_step_fails_the_run_and_keeps_the_model(celery, tmp_path)
    finally:
        broker.stop()
    expected, got = _published(baseline), _published(celery)
    assert got.keys() == expected.keys()
    for day in DAYS:
        assert got[day] == expected[day], day
    assert got["evaluation"] == expected["evaluation"]
    assert got["model"].keys() == expected["model"].keys()
    assert all(torch.equal(got["model"][k], expected["model"][k]) for k in expected["model"])
