"""The app on a real ``pipeline serve``: /docs works offline, from locally served assets."""

from __future__ import annotations

import json
import re

from pipeline_devtools.api_process import get


def test_docs_work_offline_from_locally_served_assets(sqlite_api):
    api, _, _ = sqlite_api
    status, page = get(api.base, "/docs")
    assert status == 200
    sources = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from a CDN
    for source in sources:
        status, asset = get(api.base, source)
        assert status == 200 and len(asset) > 1000, source
    assert "openapi" in json.loads(get(api.base, "/openapi.json")[1])
