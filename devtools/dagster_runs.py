"""Runs launched as an operator launches them (``dg launch`` in its own process), each in its own Dagster
instance, warehouse and online store under a directory: for tests of the executors and of the
multi-machine setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[1]


def run_environment(root: Path, dataset: Path, dagster_yaml: Path, start_date: str, **extra: str) -> dict:
    """The environment of a run host (and its workers) whose DAGSTER_HOME (holding a copy of
    ``dagster_yaml``), warehouse and SQLite online store are under ``root``, reading ``dataset`` from
    ``start_date``; ``extra`` variables on top. REDIS_URL and PIPELINE_ONLINE_STORE of this process are
    dropped (``extra`` may set them)."""
    home, warehouse = root / "home", root / "warehouse"
    for directory in (home, warehouse, root / "online"):
        directory.mkdir(parents=True)
    (home / "dagster.yaml").write_text(dagster_yaml.read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PIPELINE_DATASET_DIR": str(dataset),
           "PIPELINE_WAREHOUSE_DIR": str(warehouse), "PIPELINE_SQLITE_PATH": str(root / "online/f.db"),
           "PIPELINE_START_DATE": start_date, "VIRTUAL_ENV": str(BIN.parent), "PATH": f"{BIN}:{os.environ['PATH']}"}
    for name in ("PIPELINE_END_DATE", "REDIS_URL", "PIPELINE_ONLINE_STORE"):
        env.pop(name, None)
    return {**env, **extra}


def launch(env: dict, *args: str) -> str:
    """``dg launch ARGS`` from the project's root; its output (stdout, then stderr). Fails the caller
    (AssertionError) when the run fails or Dagster warns."""
    done = subprocess.run([str(BIN / "dg"), "launch", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
    return done.stdout + done.stderr
