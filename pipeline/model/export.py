"""The served model's export: the folded network in three formats, verified in a fresh process.

One export version holds :class:`~pipeline.model.network.FoldedClickMLP` (the model of record with
its first two layers multiplied out) in every format of :mod:`pipeline.serving.formats`, written as
a candidate and published only if each, loaded in a fresh interpreter that imports nothing of this
project, reproduces the unfolded eager model's logits (so each check also proves the folding):

- ``model.pt``: TorchScript, the reference's artifact and what users ask for (deprecated in torch
  2.13; its warning is silenced exactly where it is raised, by its message).
- ``model.pt2``: an ExportedProgram (``torch.export``) with a dynamic batch dimension (1 to 2^20
  rows), TorchScript's successor.
- ``model.onnx``: an ONNX graph (opset 17, dynamic batch) for ONNX Runtime, or any other runtime
  that takes ONNX; a server runs it without torch. Its inputs are the user's features and the
  restaurants' apart, so one user's part of the first layer is computed once per request.

The verifying process also compares each with the eager model on one user against many restaurants
(how requests are scored), and times each on one user against 20, 70 and 1,000 restaurants (a
request's candidates within ``max_dist`` number ~19–70; 1,000 is every candidate); the version's
record names the format with the lowest p50 over the three (geometric mean) as the one to
``serve``, and the API loads that one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from pipeline.audits import AuditResult
from pipeline.data.model_input import USER_WIDTH
from pipeline.disk_space import torch_bytes, write_bytes
from pipeline.model.export_verify import VerificationTimeout, one_user_rows, verify_export
from pipeline.model.network import ClickMLP, FoldedClickMLP
from pipeline.publish import Published, write_audit_publish
from pipeline.serving.formats import (
    EXPORT_REVISION,
    FORMAT_FILES,
    MODEL_FILE,
    ONNX_OPSET,
    PARITY_CHECKS,
    PARITY_TOLERANCE,
    fastest,
    torchscript_deprecation_silenced,
)
from pipeline.settings import PublishingSettings

PROBE_ROWS = 16
MAX_BATCH = 1 << 20


def export_torchscript(model: torch.nn.Module, path: Path) -> int:
    """Script ``model`` and write it to ``path`` (a file in a candidate directory); return its size."""
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(model.eval())
        return write_bytes(path, torch_bytes(lambda buffer: torch.jit.save(scripted, buffer)))


def export_program(model: FoldedClickMLP, path: Path) -> int:
    """``torch.export`` ``model`` with a dynamic batch dimension and save the ExportedProgram to
    ``path``; return its size."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model.eval(), (torch.zeros(2, model.fc.in_features),),
                                  dynamic_shapes={"x": {0: batch}})
    return write_bytes(path, torch_bytes(lambda buffer: torch.export.save(program, buffer)))


def export_onnx(model: FoldedClickMLP, path: Path, user_width: int = USER_WIDTH) -> int:
    """The folded network as an ONNX graph written to ``path``, its first layer split by input:
    ``Gemm(user) → Gemm(restaurants, + that) → Relu → Gemm → Squeeze``. Inputs ``user`` [users, 30]
    and ``restaurants`` [batch, 10] float32, where users is batch (a row per pair) or 1 (one user
    against every restaurant: Gemm broadcasts the user's part); output ``logits`` [batch]. Checked
    by ``onnx.checker`` before it is written. Returns its size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def weight(name: str, tensor: torch.Tensor) -> onnx.TensorProto:
        return numpy_helper.from_array(tensor.detach().numpy().copy(), name)

    first = model.fc.weight
    initializers = [weight("fc.user_weight", first[:, :user_width]),
                    weight("fc.restaurant_weight", first[:, user_width:]), weight("fc.bias", model.fc.bias),
                    weight("out.weight", model.out.weight), weight("out.bias", model.out.bias),
                    numpy_helper.from_array(torch.tensor([1]).numpy(), "squeeze_axes")]
    nodes = [helper.make_node("Gemm", ["user", "fc.user_weight", "fc.bias"], ["user_part"], transB=1),
             helper.make_node("Gemm", ["restaurants", "fc.restaurant_weight", "user_part"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "out.weight", "out.bias"], ["z"], transB=1),
             helper.make_node("Squeeze", ["z", "squeeze_axes"], ["logits"])]
    inputs = [helper.make_tensor_value_info("user", TensorProto.FLOAT, ["users", user_width]),
              helper.make_tensor_value_info("restaurants", TensorProto.FLOAT,
                                            ["batch", model.fc.in_features - user_width])]
    graph = helper.make_graph(nodes, "click_model", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch"])], initializers)
    graph_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                                    producer_name="restaurant-pipeline")
    onnx.checker.check_model(graph_model, full_check=True)
    return write_bytes(path, graph_model.SerializeToString())


WRITERS = {"torchscript": export_torchscript, "exported_program": export_program, "onnx": export_onnx}


def write_formats(model: ClickMLP, directory: Path) -> dict[str, int]:
    """Every format of the folded ``model`` into ``directory``: {format: bytes}."""
    folded = FoldedClickMLP(model)
    return {fmt: WRITERS[fmt](folded, directory / FORMAT_FILES[fmt]) for fmt in FORMAT_FILES}


def parity_audit(verified: dict, fmt: str, rows: int) -> AuditResult:
    """A format's check: loaded in a fresh process that did not import the project, it gives the
    eager model's logits (within the tolerance) in the right shape."""
    one = verified["formats"][fmt]
    difference = max(one["parity_difference"], one["one_user_parity_difference"])
    passed = one["shape_ok"] and not verified["imported_project"] and difference <= PARITY_TOLERANCE
    why = "" if passed else (f"{fmt}: logits differ by {one['parity_difference']} of max(1, |logit|) as rows and "
                             f"{one['one_user_parity_difference']} as one user's (tolerance {PARITY_TOLERANCE}), "
                             f"shape ok {one['shape_ok']}, imported the project {verified['imported_project']}")
    return AuditResult(PARITY_CHECKS[fmt], bool(passed), {
        "max_abs_diff": one["max_abs_diff"], "parity_difference": one["parity_difference"],
        "one_user_parity_difference": one["one_user_parity_difference"], "rows": rows}, why)


def _served_record(record: dict, module, sample: torch.Tensor, formats: dict[str, dict] | None = None) -> dict:
    """``record`` plus what a server needs: the format to serve, and what it checks that against
    (the input width, and a probe batch with the logits ``module`` gives for it)."""
    probe = sample[:PROBE_ROWS].contiguous()
    with torch.inference_mode():
        probe_logits = module.eval()(probe)
        one_user_logits = module(one_user_rows(probe))
    formats = formats or {"torchscript": {}}
    return {**record, "export_revision": EXPORT_REVISION,
            "serve": fastest(formats) if len(formats) > 1 else next(iter(formats)),
            "formats": {f: {"file": FORMAT_FILES[f], **numbers} for f, numbers in formats.items()},
            "input_width": int(sample.shape[1]), "probe": {"x": probe.tolist(), "logits": probe_logits.tolist(),
                                                          "one_user_logits": one_user_logits.tolist()}}


def publish_export(model: ClickMLP, path: Path, sample: torch.Tensor, record: dict,
                   verify_timeout_s: float = PublishingSettings().export_verify_timeout_s, live: bool = True,
                   pinned: Callable[[], Iterable[str]] | None = None) -> Published:
    """Export the folded ``model`` in every format as a candidate, load each in a fresh process and
    compare it with the unfolded eager model on ``sample`` [n, 40]; publish only if all match. The
    version's record keeps ``record`` (the checkpoint and feature versions it pairs with), each
    format's measured latency, the format to serve, and a probe batch with the logits the eager
    model gives, so a server can check what it loads. A verification that outlasts
    ``verify_timeout_s`` (``PIPELINE_EXPORT_VERIFY_TIMEOUT_S``) is killed:
    :class:`VerificationTimeout`, nothing published. ``live=False`` keeps the version beside the
    live one (a challenger's export); ``pinned``: versions a prune keeps (the roles' exports)."""
    def write(staging: Path) -> dict:
        write_formats(model, staging)
        try:
            return verify_export(staging, model, sample, timeout_s=verify_timeout_s)
        except VerificationTimeout as hung:
            raise VerificationTimeout(f"{hung}; nothing was published, the previous export stays live") from None

    def audit(staging: Path, verified: dict) -> list[AuditResult]:
        return [parity_audit(verified, fmt, len(sample)) for fmt in FORMAT_FILES]

    return write_audit_publish(path, write, audit, record=lambda verified: _served_record(
        record, model, sample, {f: {"latency": verified["formats"][f]["latency"]} for f in FORMAT_FILES}),
        live=live, pinned=pinned)


def publish_torchscript_file(model_file: Path, path: Path, sample: torch.Tensor, record: dict) -> Published:
    """Publish an existing TorchScript file (a model trained elsewhere, e.g. for a benchmark) as
    the export. There is no eager model to compare with, so the probe logits recorded are the
    file's own: a server can still check that what it loads is this model and takes this width."""
    with torchscript_deprecation_silenced():
        module = torch.jit.load(str(model_file))
    return write_audit_publish(path, lambda staging: shutil.copy(model_file, staging / MODEL_FILE),
                               lambda staging, _: [], record=_served_record(record, module, sample))

