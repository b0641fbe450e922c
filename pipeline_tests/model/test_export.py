"""The export: every format of the folded model matches the unfolded eager model in a fresh process, the
dynamic-batch formats take any batch size, the served model ranks as the model of record does, and a broken
format or a hung verification publishes nothing."""

import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch

from pipeline.audits import Rejected
from pipeline.model import export as export_module
from pipeline.model import inputs
from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.export import publish_export, verify_export, write_formats
from pipeline.model.network import ClickMLP, FoldedClickMLP
from pipeline.model.training import TrainConfig, train
from pipeline.publish import Artifact
from pipeline.serving.formats import fastest
from pipeline.serving.scorer import ModelScorer, live_scorer
from pipeline.settings import load_settings


def test_every_folded_export_matches_the_unfolded_eager_model_in_a_fresh_process_without_warnings(
        warehouse, tmp_path):
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda message: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the narrow filter must cover TorchScript's
        sizes = write_formats(model, tmp_path)
    assert set(sizes) == {"torchscript", "exported_program", "onnx"} and all(b > 10_000 for b in sizes.values())
    # folded: one 40→128 layer where the model of record has 40→256→128, split by input in ONNX
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [list(w.dims) for w in graph.initializer[:2]] == [[128, 30], [128, 10]]
    assert [i.name for i in graph.input] == ["user", "restaurants"]
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 2, (2048, 40)).astype(np.float32))
    verified = verify_export(tmp_path, model, x)
    assert not verified["imported_project"]
    for fmt in ("torchscript", "exported_program", "onnx"):
        one = verified["formats"][fmt]
        assert one["shape_ok"] and one["parity_difference"] <= 1e-5 and one["max_abs_diff"] < 1e-4, fmt
        assert one["one_user_parity_difference"] <= 1e-5, fmt
        assert all(0 < one["latency"][str(n)]["p50_ms"] <= one["latency"][str(n)]["p99_ms"] < 100
                   for n in (20, 70, 1000)), fmt


@pytest.mark.parametrize("broken", ["exported_program", "onnx"])
def test_the_dynamic_batch_formats_take_any_batch_size_and_a_broken_format_blocks_the_publish(
        broken, warehouse, monkeypatch):
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda message: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    sample = torch.from_numpy(np.random.default_rng(1).normal(0, 2, (256, 40)).astype(np.float32))
    published = publish_export(model, warehouse.export, sample, record={})
    record = published.record
    assert set(record["formats"]) == {"torchscript", "exported_program", "onnx"}
    assert record["serve"] == fastest(record["formats"])
    for file, fmt in (("model.pt2", "exported_program"), ("model.onnx", "onnx")):
        scorer = ModelScorer(published.path / file)
        assert scorer.format == fmt
        for rows in (1, 7, 1000, 5000):  # dynamic batch: not the sizes it was traced with
            x = np.random.default_rng(rows).normal(0, 2, (rows, 40)).astype(np.float32)
            np.testing.assert_allclose(scorer.logits(x), model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
            # one user against every restaurant: as requests are scored
            same_user = x.copy()
            same_user[:, :30] = x[0, :30]
            np.testing.assert_allclose(scorer.one_user_logits(x[0, :30], x[:, 30:]),
                                       model(torch.from_numpy(same_user)).detach().numpy(), atol=1e-5)
    assert live_scorer(warehouse.export).format == record["serve"]

    # a format holding another model: its check fails, nothing is published, the live version stays
    real = export_module.WRITERS[broken]
    monkeypatch.setitem(export_module.WRITERS, broken, lambda folded, path: real(FoldedClickMLP(ClickMLP()), path))
    with pytest.raises(Rejected, match=f"{broken}_matches_eager"):
        publish_export(model, warehouse.export, sample, record={})
    assert Artifact(warehouse.export).live_version() == published.version


def test_the_served_folded_model_ranks_real_requests_as_the_unfolded_model_does(tiny_dataset, warehouse):
    """Rankings of real feature rows equal the model of record's, except ties within float rounding."""
    train(warehouse, TrainConfig(batch_size=512, threads=1), log=lambda message: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    tables = FeatureTables.load(warehouse)
    g = torch.Generator().manual_seed(3)
    sample = inputs.pairs(tables.users[:256], tables.restaurants[:256])
    published = publish_export(model, warehouse.export, sample, record={})
    compared = 0
    for fmt, file in published.record["formats"].items():
        scorer = ModelScorer(published.path / file["file"], fmt=fmt)
        for _ in range(40):  # a request: one user against 70 restaurants
            user = tables.users[torch.randint(len(tables.users), (1,), generator=g)].expand(70, -1)
            x = inputs.pairs(user, tables.restaurants[torch.randint(len(tables.restaurants), (70,), generator=g)])
            with torch.inference_mode():
                unfolded = torch.sigmoid(model(x)).double().numpy()
            served = scorer.probabilities(x.numpy())
            ranked, expected = np.argsort(-served, kind="stable"), np.argsort(-unfolded, kind="stable")
            differs = ranked != expected
            # a position may differ only where the two rows' scores tie within float rounding
            assert np.all(np.abs(unfolded[ranked[differs]] - unfolded[expected[differs]]) < 1e-6), fmt
            compared += 1
    assert compared == 3 * 40


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


def test_the_verifying_process_keeps_onnx_runtime_telemetry_off_whoever_started_it(tmp_path):
    """A caller that is no entry point (a script, a notebook) did not set ORT_DISABLE_TELEMETRY: the
    verifying process still loads ONNX Runtime without writing its session file or its cache."""
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), scratch.mkdir()
    script = ("import torch, pathlib, sys\n"
              "from pipeline.model.network import ClickMLP\n"
              "from pipeline.model.export import verify_export, write_formats\n"
              "model, out = ClickMLP().eval(), pathlib.Path(sys.argv[1])\n"
              "write_formats(model, out)\n"
              "print(verify_export(out, model, torch.randn(32, 40), sizes=(20,))['formats']['onnx']['max_abs_diff'])\n")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          env={**env, "HOME": str(home), "TMPDIR": str(scratch)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) <= 1e-5
    assert not (scratch / ".ses").exists() and not (home / ".cache" / "Microsoft").exists()
