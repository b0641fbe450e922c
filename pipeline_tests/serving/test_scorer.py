"""The scorer: a request's one user against many restaurants scores as the same rows would, in every
format; a server refuses a model whose one-user scores disagree with its record; an ONNX graph of
[n, 40] rows (exported before the first layer was split by input) still serves."""

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.model.network import FoldedClickMLP
from pipeline.publish import Artifact
from pipeline.serving.formats import FORMAT_FILES, ONNX_OPSET
from pipeline.serving.scorer import ModelScorer, check_scorer, served_scorer


@pytest.fixture
def export_version(serving_artifacts):
    warehouse = serving_artifacts[0]
    artifact = Artifact(warehouse.export)
    version = artifact.live_version()
    return artifact.version_path(version), artifact.record(version)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, (n, 40)).astype(np.float32)


@pytest.mark.parametrize("fmt", sorted(FORMAT_FILES))
def test_one_user_against_many_restaurants_scores_as_the_same_rows(export_version, fmt):
    directory, _ = export_version
    scorer = ModelScorer(directory / FORMAT_FILES[fmt], fmt=fmt)
    x = _rows(500)
    same_user = x.copy()
    same_user[:, :30] = x[7, :30]
    np.testing.assert_allclose(scorer.probabilities_for_user(x[7, :30], x[:, 30:]),
                               scorer.probabilities(same_user), rtol=1e-6, atol=1e-7)
    assert scorer.probabilities_for_user(x[7, :30], x[:0, 30:]).shape == (0,)
    with pytest.raises(ValueError, match="10 restaurant features"):
        scorer.probabilities_for_user(x[7, :30], x[:, 31:])


def test_a_model_whose_one_user_scores_disagree_with_its_record_is_refused(export_version):
    directory, record = export_version
    scorer = served_scorer(directory, record)
    checked = check_scorer(scorer, record, 40)
    assert checked["one_user_parity_difference"] <= 1e-5
    forged = copy.deepcopy(record)
    forged["probe"]["one_user_logits"][3] += 0.01
    with pytest.raises(ValueError, match="one user's probe logits differ from the recorded ones"):
        check_scorer(scorer, forged, 40)


def test_an_onnx_graph_of_rows_from_before_the_split_still_serves(serving_artifacts, export_version, tmp_path):
    folded = FoldedClickMLP(serving_artifacts[3])
    weights = [numpy_helper.from_array(t.detach().numpy().copy(), name) for name, t in (
        ("fc.weight", folded.fc.weight), ("fc.bias", folded.fc.bias), ("out.weight", folded.out.weight),
        ("out.bias", folded.out.bias))] + [numpy_helper.from_array(np.array([1]), "axes")]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["a"]),
         helper.make_node("Gemm", ["a", "out.weight", "out.bias"], ["z"], transB=1),
         helper.make_node("Squeeze", ["z", "axes"], ["logits"])], "click_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 40])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch"])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), tmp_path / "rows.onnx")
    before = ModelScorer(tmp_path / "rows.onnx")
    now = ModelScorer(export_version[0] / FORMAT_FILES["onnx"])
    x = _rows(300, seed=1)
    np.testing.assert_allclose(before.logits(x), now.logits(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(before.one_user_logits(x[0, :30], x[:, 30:]),
                               now.one_user_logits(x[0, :30], x[:, 30:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(now.logits(x), folded(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
