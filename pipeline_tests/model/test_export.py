"""The export: both formats match the eager model in a fresh process, the ExportedProgram takes any batch
size, and a broken format or a hung verification publishes nothing."""

import warnings

import numpy as np
import pytest
import torch

from pipeline.audits import Rejected
from pipeline.model import export as export_module
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.export import export_program, export_torchscript, fastest, publish_export, verify_export
from pipeline.model.network import ClickMLP, fused_logits
from pipeline.model.training import TrainConfig, train
from pipeline.publish import Artifact
from pipeline.serving.scorer import ModelScorer, live_scorer
from pipeline.settings import load_settings


def test_both_exports_match_eager_in_a_fresh_process_without_warnings(warehouse, tmp_path):
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda message: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the narrow filter must cover TorchScript's
        assert export_torchscript(model, tmp_path / "model.pt") > 100_000
        assert export_program(model, tmp_path / "model.pt2") > 100_000
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 2, (2048, 40)).astype(np.float32))
    verified = verify_export(tmp_path, model, x)
    assert not verified["imported_project"]
    for fmt in ("torchscript", "exported_program"):
        one = verified["formats"][fmt]
        assert one["shape_ok"] and one["max_abs_diff"] <= 1e-5, fmt
        assert all(0 < one["latency"][str(n)]["p50_ms"] <= one["latency"][str(n)]["p99_ms"] < 100
                   for n in (20, 70, 1000)), fmt


def test_the_exported_program_takes_any_batch_size_and_a_broken_format_blocks_the_publish(warehouse, monkeypatch):
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda message: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    sample = torch.from_numpy(np.random.default_rng(1).normal(0, 2, (256, 40)).astype(np.float32))
    published = publish_export(model, warehouse.export, sample, record={})
    record = published.record
    assert set(record["formats"]) == {"torchscript", "exported_program"} and record["serve"] in record["formats"]
    assert record["serve"] == fastest(record["formats"])
    program = ModelScorer(published.path / "model.pt2")
    assert program.format == "exported_program"
    for rows in (1, 7, 1000, 5000):  # dynamic batch: not the sizes it was traced with
        x = np.random.default_rng(rows).normal(0, 2, (rows, 40)).astype(np.float32)
        np.testing.assert_allclose(program.logits(x), fused_logits(model, torch.from_numpy(x)).numpy(), atol=1e-5)
    assert live_scorer(warehouse.export).format == record["serve"]

    # an ExportedProgram of another model: its check fails, nothing is published, the live version stays
    real = export_module.export_program
    monkeypatch.setattr(export_module, "export_program", lambda model, path: real(ClickMLP(), path))
    with pytest.raises(Rejected, match="exported_program_matches_eager"):
        publish_export(model, warehouse.export, sample, record={})
    assert Artifact(warehouse.export).live_version() == published.version


def test_a_hung_export_verification_fails_the_export_and_the_previous_one_stays(warehouse):
    model = ClickMLP()
    sample = torch.randn(64, 40)
    live = publish_export(model, warehouse.export, sample, record={}).version
    # the asset's value of PIPELINE_EXPORT_VERIFY_TIMEOUT_S=0.3: the real verifier cannot even import torch
    timeout_s = load_settings({"PIPELINE_EXPORT_VERIFY_TIMEOUT_S": "0.3"}).publishing.export_verify_timeout_s
    with pytest.raises(TimeoutError, match=r"PIPELINE_EXPORT_VERIFY_TIMEOUT_S=0.3.*previous export stays live"):
        publish_export(model, warehouse.export, sample, record={}, verify_timeout_s=timeout_s)
    export = Artifact(warehouse.export)
    assert export.live_version() == live and export.versions() == [live]
    assert not list(export.versions_dir.glob(".staging-*"))
