"""Training over processed partitions: incremental and full runs, resuming, the gate, validation and
epoch selection, and what it refuses."""

import math
import re

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.audits import AuditResult, Rejected
from pipeline.data.clicks import publish_partition
from pipeline.data.features import RESTAURANTS, USERS, load_snapshot
from pipeline.data.processed_partition import live_partition, read_manifest
from pipeline.model.batches import BatchGatherer, FeatureTables
from pipeline.model.checkpoint import TrainingState, load_checkpoint_model, load_published_state
from pipeline.model.evaluate import accuracy_gate
from pipeline.model.training import NonFiniteTraining, TrainConfig, score_partitions, train
from pipeline.model.training.plan import build_plan
from pipeline.operations import status
from pipeline.publish import Artifact
from pipeline_devtools.warehouse_build import build_warehouse

FAST = dict(batch_size=512, threads=1)


def _quiet(message):
    pass


def _train(warehouse, gate=None, **config):
    result = train(warehouse, TrainConfig(**{**FAST, **config}), log=_quiet, gate=gate)
    return result.state, result.report


def test_incremental_trains_each_new_day_once_and_scores_it_first(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    state, report = _train(warehouse)
    assert report.days == ["2026-01-01", "2026-01-02"] and report.rows == 8_000
    assert state.trained == {"2026-01-01": 4_000, "2026-01-02": 4_000}
    assert [p["day"] for p in report.prequential] == report.days
    first_day_accuracy = report.prequential[0]["prequential_accuracy"]

    # nothing new: nothing trained, nothing changed
    weights = {k: v.clone() for k, v in state.model.items()}
    state, report = _train(warehouse)
    assert report.days == [] and report.rows == 0
    assert all(torch.equal(weights[k], v) for k, v in state.model.items())

    # a new day arrives: only it is trained, warm-started, and scored before training
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)
    state, report = _train(warehouse)
    assert report.days == ["2026-01-03"] and report.rows == 4_000
    assert sorted(state.trained) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [h["day"] for h in state.history] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert report.prequential[0]["prequential_accuracy"] > first_day_accuracy  # it learned something
    assert state.versions["users_ids"] == read_manifest(warehouse.processed_clicks("2026-01-03"))["users_ids_version"]


def test_full_retrain_visits_every_chunk_once_an_epoch_in_a_shuffled_order_of_its_own(warehouse):
    settings = dict(mode="full", epochs=3, window_start="2026-01-02", shuffle_chunks=2, validation_days=0)
    chunks = {"2026-01-02": 3, "2026-01-03": 3}  # chunks of 1500, 1500 and 1000 rows
    plan = build_plan(TrainConfig(**FAST, **settings), sorted(chunks), chunks)
    epochs = [[piece for e, pool in plan if e == epoch for piece in pool] for epoch in range(3)]
    assert all(sorted(order) == [(d, c) for d in sorted(chunks) for c in range(3)] for order in epochs)
    assert len({tuple(order) for order in epochs}) == 3  # not the days in order, not one order reused
    assert any(len({d for d, _ in pool}) == 2 for _, pool in plan)  # pools (and so batches) mix days
    assert plan == build_plan(TrainConfig(**FAST, **settings), sorted(chunks), chunks)  # seeded

    state, report = _train(warehouse, **settings)
    assert report.rows == 3 * 8_000 and len(report.epoch_seconds) == 3
    assert state.trained == {"2026-01-02": 4_000, "2026-01-03": 4_000}
    rows = [1500, 1500, 1000]
    assert state.rows_seen == 24_000 and state.steps == sum(
        math.ceil(sum(rows[c] for _, c in pool) / 512) for _, pool in plan)  # batches of 512 cut from each pool
    assert report.prequential == []  # a fresh model has no "new" day to score


def test_mismatched_architecture_and_stale_partitions_are_refused(warehouse, tiny_dataset):
    _train(warehouse, **{})
    with pytest.raises(ValueError, match="architecture .* differs"):
        _train(warehouse, hidden=(32, 16))
    manifest_path = warehouse.processed_clicks("2026-01-02") / "_manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace(read_manifest(
        warehouse.processed_clicks("2026-01-02"))["users_ids_version"], "other"))
    with pytest.raises(ValueError, match=r"\['2026-01-02'\] were resolved against other feature ids"):
        _train(warehouse, mode="full")


def test_an_unfinished_run_resumes_only_with_the_same_settings(warehouse):
    config = dict(mode="full", epochs=2, checkpoint_every_chunks=1)
    _unfinished_run(warehouse, **config)
    with pytest.raises(ValueError, match="unfinished full run .* set restart=true"):
        _train(warehouse, mode="full", epochs=2, lr=0.01)
    assert Artifact(warehouse.checkpoint).live_version() is None  # nothing was ever published
    state, report = _train(warehouse, **config)
    assert report.resumed and state.cursor is None and not warehouse.training_run.exists()
    load_checkpoint_model(warehouse.checkpoint)


def _unfinished_run(warehouse, **config):
    """Leave an unfinished run behind: train, stop before publishing, then move its cursor back
    one step, as if it had been killed during the last step with that step's weights applied."""
    def crash(model, tables):
        raise RuntimeError("killed before publishing")

    with pytest.raises(RuntimeError, match="killed before publishing"):
        _train(warehouse, gate=crash, **config)
    state = TrainingState.load(warehouse.training_run)
    assert state.cursor.position == len(state.cursor.plan)  # complete, not published
    finished = {k: v.clone() for k, v in state.model.items()}
    state.cursor.position, state.cursor.chunk = len(state.cursor.plan) - 1, 1
    state.save(warehouse.training_run)
    return finished


def test_restart_discards_the_unfinished_run_and_starts_from_the_model_of_record(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    incumbent, _ = _train(warehouse)
    build_warehouse(tiny_dataset, warehouse.root, chunk_rows=1500)
    clean_pass = _unfinished_run(warehouse)  # an abandoned run that got through day 3 once already
    state, report = _train(warehouse, restart=True)
    assert report.discarded_unfinished and not report.resumed and report.days == ["2026-01-03"]
    # one pass over day 3 from the model of record: 3 + 3 + 2 batches, not the abandoned run's extra ones
    assert state.steps == incumbent.steps + 8
    assert all(torch.equal(clean_pass[k], v) for k, v in state.model.items())


def test_a_full_retrain_replaces_the_model_of_record_only_when_it_passes_the_gate(tiny_dataset, warehouse):
    incumbent, _ = _train(warehouse)
    version = Artifact(warehouse.checkpoint).live_version()
    bar = accuracy_gate(tiny_dataset.test_files(), "accuracy_meets_reference_bar", bar=0.99)
    with pytest.raises(Rejected, match=r"accuracy_meets_reference_bar: held-out accuracy 0\.\d+ < 0\.99"):
        _train(warehouse, gate=bar, mode="full", epochs=2)
    assert Artifact(warehouse.checkpoint).live_version() == version
    assert not warehouse.training_run.exists()  # finished and rejected: nothing to resume
    published = load_checkpoint_model(warehouse.checkpoint)[1].model
    assert all(torch.equal(incumbent.model[k], v) for k, v in published.items())
    state, _ = _train(warehouse, gate=accuracy_gate(tiny_dataset.test_files(), "accuracy_meets_reference_bar"),
                      mode="full", epochs=2, lr=3e-3)
    published = Artifact(warehouse.checkpoint)
    assert published.live_version() != version and published.record()["previous"] == version
    assert (published.live() / "evaluation.json").exists()
    assert state.trained == {d: n for d, n in incumbent.trained.items() if d != "2026-01-03"}  # held out


def test_a_full_retrain_over_an_empty_window_is_an_error_naming_it(warehouse):
    _train(warehouse)
    version = Artifact(warehouse.checkpoint).live_version()
    with pytest.raises(ValueError, match=r"empty window \[2027-01-01, last day\]: processed days are "
                                         r"2026-01-01 to 2026-01-03"):
        _train(warehouse, mode="full", window_start="2027-01-01")
    assert Artifact(warehouse.checkpoint).live_version() == version


def test_a_non_finite_loss_stops_training_without_saving(warehouse):
    incumbent, _ = _train(warehouse, mode="full", window_end="2026-01-02", validation_days=0)
    version = Artifact(warehouse.checkpoint).live_version()
    with pytest.raises(NonFiniteTraining, match=r"non-finite .* while training day 2026-01-03, chunk \d+ "
                                                r"\(epoch 0, step \d+\): training stopped without saving"):
        _train(warehouse, lr=1e35, checkpoint_every_chunks=1)
    assert Artifact(warehouse.checkpoint).live_version() == version and not warehouse.training_run.exists()
    published = load_published_state(warehouse.checkpoint)
    assert all(torch.isfinite(v).all() for v in published.model.values())
    assert all(torch.equal(incumbent.model[k], v) for k, v in published.model.items())


def test_every_published_checkpoint_records_its_audits(warehouse):
    checked = []

    def gate(model, tables):
        checked.append(True)
        return [AuditResult("gate", True)], {}

    state, _ = _train(warehouse, gate=gate)
    assert checked and Artifact(warehouse.checkpoint).record()["audits"][0]["name"] == "click_model_is_finite"


def test_leftovers_of_a_save_cut_short_are_removed_by_the_next_run(warehouse):
    run_file = warehouse.training_run
    run_file.parent.mkdir(parents=True, exist_ok=True)
    stale = run_file.with_name(f".{run_file.name}.tmp-0123456789ab")
    stale.write_bytes(b"\0" * 1_000_000)  # what kill -9 during a save leaves
    staging = Artifact(warehouse.checkpoint).versions_dir / ".staging-0123456789ab"
    staging.mkdir(parents=True)
    (staging / "checkpoint.pt").write_bytes(b"partial")
    messages = []
    train(warehouse, TrainConfig(**FAST), log=messages.append)
    assert not stale.exists() and not staging.exists()
    assert "removed 2 leftovers of killed training writes" in messages


def test_the_thread_count_and_its_switching_do_not_change_the_model(warehouse):
    """Adaptive threads (0) switch between 1 and 2 mid-run; a resumed run may choose differently
    than the run it resumes, so every choice must give the same bits."""
    models = [_train(warehouse, mode="full", epochs=1, batch_size=64, threads=threads)[0].model
              for threads in (1, 2, 0)]
    assert all(torch.equal(models[0][k], other[k]) for other in models[1:] for k in models[0])


def test_a_full_retrain_holds_out_its_newest_day_and_publishes_its_best_epoch(warehouse):
    # lr 1.0 overshoots: a middle epoch scores best on the held-out day, so the selection must restore it
    state, report = _train(warehouse, mode="full", epochs=4, lr=1.0, validation_days=1)
    assert state.trained == {"2026-01-01": 4_000, "2026-01-02": 4_000}  # 2026-01-03 held out
    assert report.rows == 4 * 8_000
    assert [v["epoch"] for v in report.validation] == [0, 1, 2, 3]
    assert all(v["validation_rows"] == 4_000 for v in report.validation)
    best = min(report.validation, key=lambda v: v["validation_log_loss"])
    assert report.selected_epoch == best["epoch"] != 3
    # the model of record is the selected epoch's: scored again on the held-out day, it gives that epoch's numbers
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    again = score_partitions(model, BatchGatherer(FeatureTables.load(warehouse), 4096),
                             [live_partition(warehouse.processed_clicks("2026-01-03"))])
    assert again["log_loss"] == pytest.approx(best["validation_log_loss"], rel=1e-6)
    record = Artifact(warehouse.checkpoint).record()
    assert record["validation_days"] == ["2026-01-03"] and record["selected_epoch"] == best["epoch"]
    # the held-out day is new to the model of record: the next incremental run scores it, then trains on it
    _, report = _train(warehouse)
    assert report.days == ["2026-01-03"] and report.prequential[0]["prequential_rows"] == 4_000


def test_validation_leaves_something_to_train_on(warehouse):
    with pytest.raises(ValueError, match="with 3 validation day.* leaves nothing to train on"):
        _train(warehouse, mode="full", validation_days=3)


def test_a_retrain_killed_before_publishing_keeps_its_validation_and_selection(warehouse):
    def crash(model, tables):
        raise RuntimeError("killed before publishing")

    with pytest.raises(RuntimeError, match="killed before publishing"):
        _train(warehouse, gate=crash, mode="full", epochs=3, lr=0.05)
    state, report = _train(warehouse, mode="full", epochs=3, lr=0.05)  # nothing left to train: publishes
    assert report.resumed and report.rows == 0 and [v["epoch"] for v in report.validation] == [0, 1, 2]
    assert report.selected_epoch == min(report.validation, key=lambda v: v["validation_log_loss"])["epoch"]
    assert Artifact(warehouse.checkpoint).record()["selected_epoch"] == report.selected_epoch


def _corrupt_unfinished_run(warehouse):
    _unfinished_run(warehouse, mode="full", epochs=1, checkpoint_every_chunks=1)
    run_file = warehouse.training_run
    run_file.write_bytes(run_file.read_bytes()[:1000])  # what a save cut short by a power cut can leave
    return run_file


def test_restart_discards_an_unreadable_unfinished_run(warehouse):
    run_file = _corrupt_unfinished_run(warehouse)
    state, report = _train(warehouse, mode="full", epochs=1, restart=True)
    assert report.discarded_unfinished and not report.resumed and state.cursor is None
    assert not run_file.exists() and Artifact(warehouse.checkpoint).live_version() is not None


def test_an_unreadable_unfinished_run_is_named_with_what_to_do(warehouse):
    run_file = _corrupt_unfinished_run(warehouse)
    with pytest.raises(ValueError, match=rf"{re.escape(str(run_file))} .*unreadable.*restart: true"):
        _train(warehouse, mode="full", epochs=1)
    unfinished = status(warehouse, None)["unfinished_training_run"]
    assert "unreadable" in unfinished["error"] and str(run_file) in unfinished["error"]
    assert run_file.exists() and Artifact(warehouse.checkpoint).live_version() is None  # nothing decided for you


def _republish_smaller(warehouse, dataset, day, rows, tmp_path):
    """Publish a new version of a processed day made of its shard's first ``rows`` rows."""
    users, restaurants = (load_snapshot(warehouse.user_features, USERS),
                          load_snapshot(warehouse.restaurant_features, RESTAURANTS))
    shard = tmp_path / f"{day}-head.parquet"
    pq.write_table(pq.read_table(dataset.shard_for_day(day)).slice(0, rows), shard)
    publish_partition([shard], users.index, restaurants.index, warehouse.processed_clicks(day), chunk_rows=1500,
                      day=day, users_ids_version=users.ids_version, restaurants_ids_version=restaurants.ids_version)


def test_a_day_republished_mid_run_is_read_as_it_was_validated(tiny_dataset, tmp_path):
    warehouse = build_warehouse(tiny_dataset, tmp_path / "wh", chunk_rows=1500, days=2)
    control = build_warehouse(tiny_dataset, tmp_path / "control", chunk_rows=1500, days=2)
    first, second = tiny_dataset.days()[:2]
    planned = read_manifest(warehouse.processed_clicks(second))

    def republish_the_next_day(step):
        if step["day"] == first:
            _republish_smaller(warehouse, tiny_dataset, second, 1000, tmp_path)

    result = train(warehouse, TrainConfig(**FAST), log=_quiet, on_day=republish_the_next_day)
    assert read_manifest(warehouse.processed_clicks(second))["rows"] < planned["rows"]  # the republish happened
    assert result.state.trained[second] == planned["rows"] == result.report.prequential[1]["prequential_rows"]
    uninterrupted = train(control, TrainConfig(**FAST), log=_quiet).state
    assert all(torch.equal(uninterrupted.model[k], v) for k, v in result.state.model.items())
