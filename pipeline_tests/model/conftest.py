"""The model tests' warehouse: the tiny dataset's snapshots and processed days, built for each test."""

from __future__ import annotations

import pytest

from pipeline_devtools.warehouse_build import build_warehouse


@pytest.fixture
def warehouse(tiny_dataset, tmp_path):
    return build_warehouse(tiny_dataset, tmp_path / "warehouse", chunk_rows=1500)
