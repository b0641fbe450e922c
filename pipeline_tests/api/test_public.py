"""What an HTTP body may say: warehouse paths relative, no other absolute path, no credential; on a real
``pipeline serve``, a rejected version and a deleted SQLite file as /health and a 503 tell them."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from pipeline.api.public import public_text, public_value
from pipeline.integrity import RECORD
from pipeline.publish import Artifact
from pipeline_devtools.api_process import ApiProcess, get, health, post, sqlite_serving

BODY = {"candidate_restaurant_ids": list(range(0, 200, 7)), "latitude": 13.8, "longitude": 100.6, "max_dist": 20000}


def test_public_text_names_warehouse_paths_relative_and_hides_other_absolute_paths(tmp_path):
    root = tmp_path / "warehouse"
    text = (f"FileNotFoundError: [Errno 2] No such file or directory: "
            f"'{root}/models/click_model/export.versions/v1/model.pt'; sqlite /srv/online/features.db: locked; "
            f"redis://:pw-1234@h:1/0 rate 3/4")
    assert public_text(text, root) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'models/click_model/export.versions/v1/model.pt'; "
        "sqlite features.db: locked; redis://:***@h:1/0 rate 3/4")
    assert public_value({"reason": [f"{root}/geo/index"], "n": 1}, root) == {"reason": ["geo/index"], "n": 1}


@pytest.mark.slow
def test_http_bodies_name_no_absolute_server_path(serving_artifacts, tmp_path):
    """A rejected model version (a file of it vanished) and a deleted SQLite file, as /health and a 503 tell them."""
    path = tmp_path / "online" / "features.db"
    warehouse, env = sqlite_serving(serving_artifacts, tmp_path, path)
    api = ApiProcess(tmp_path, env)
    try:
        good = api.wait_until(ready=True)["model_version"]
        export = Artifact(warehouse.export)
        broken = export.versions_dir / "broken-copy"
        shutil.copytree(export.version_path(good), broken)
        (broken / RECORD).unlink()
        os.symlink(broken, f"{warehouse.export}.tmp-link")
        os.replace(f"{warehouse.export}.tmp-link", warehouse.export)
        deadline = time.monotonic() + 20
        while not health(api.base)["last_reload_failure"]:
            assert time.monotonic() < deadline, "the broken version was not rejected"
            time.sleep(0.1)
        status, health_text = get(api.base, "/health")
        assert status == 200 and "'models/click_model/.export.versions/broken-copy/" in health_text, health_text
        path.unlink()
        status, recommend_body, _ = post(api.base, "/recommend/7", BODY)
        assert status == 503 and "features.db does not exist" in recommend_body["error"], recommend_body
    finally:
        log = api.stop()
    for text in (health_text, str(recommend_body)):
        assert str(tmp_path) not in text and "/tmp/" not in text, text
    assert str(warehouse.root) in log  # the operator's log keeps the full path
