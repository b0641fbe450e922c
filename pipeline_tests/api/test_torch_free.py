"""A server set to serve ONNX (``PIPELINE_API_MODEL_FORMAT=onnx``) never imports torch: not to
load the model, not to verify a newly published version, not to answer (real ``pipeline serve``
processes; whether torch was loaded is read from each process's memory map). Nor pandas, which
pyarrow would import on its own."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.model.export import publish_export
from pipeline.model.network import ClickMLP
from pipeline.publish import Artifact, write_audit_publish
from pipeline.serving.formats import MODEL_FILE
from pipeline_devtools.api_process import BODY, ApiProcess, health, post, sqlite_serving, wait_for


def _loaded(api: ApiProcess, library: str) -> list[int]:
    """The server's processes that have a file whose path contains ``library`` mapped."""
    return [pid for pid in api.pids() if library in Path(f"/proc/{pid}/maps").read_text()]


def _both_workers_serve(api: ApiProcess, version: str) -> bool:
    """Whether /health calls reached both workers and each serves ``version``."""
    seen: dict[int, str] = {}
    for _ in range(30):
        body = health(api.base)
        seen[body["pid"]] = body["model_version"]
    return len(seen) == 2 and set(seen.values()) == {version}


def test_an_onnx_server_answers_and_takes_new_versions_without_importing_torch(serving_artifacts, tmp_path):
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_API_MODEL_FORMAT": "onnx"}, workers=2)
    try:
        assert api.wait_until()["model_format"] == "onnx"
        status, answer, _ = post(api.base, "/recommend/42", BODY)
        assert status == 200 and answer["restaurants"]
        # a new version: checked (width, probe logits, finite outputs) and swapped in, still without torch
        torch.manual_seed(11)
        new = publish_export(ClickMLP(), warehouse.export, torch.randn(64, 40), record={})
        wait_for(lambda: _both_workers_serve(api, new.version), what="both workers on the new version")
        status, other, _ = post(api.base, "/recommend/42", BODY)
        assert status == 200 and other != answer
        # a version holding TorchScript only is rejected by name, not loaded through torch
        only_torchscript = write_audit_publish(
            warehouse.export, lambda staging: (staging / MODEL_FILE).write_bytes(
                (new.path / MODEL_FILE).read_bytes()), lambda staging, _: [], record={"input_width": 40})
        failure = wait_for(lambda: health(api.base)["last_reload_failure"], what="the rejection")
        assert failure["version"] == only_torchscript.version
        assert "not the onnx format this server is set to serve" in failure["reason"]
        assert _both_workers_serve(api, new.version)
        assert len(api.pids()) >= 3 and _loaded(api, "libtorch") == []  # the supervisor, both workers (and any helper)
        assert _loaded(api, "/pandas/") == []  # ~45 MB a worker: pyarrow's to_numpy would import it
    finally:
        api.stop()
    assert Artifact(warehouse.export).live_version() == only_torchscript.version
