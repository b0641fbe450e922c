"""Processing in a real subprocess: memory does not grow with the partition; kill -9 is safe."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.data.generate import PRESETS, generate
from pipeline.data.processed_partition import read_manifest
from pipeline.publish import Artifact

SCRIPT = Path(__file__).parent / "scripts" / "process_partition.py"
SPEC = dataclasses.replace(PRESETS["tiny"], users=1_000_000, restaurants=100_000, train_files=1,
                           test_files=0, rows_per_file=2_000_000, requests=0)


@pytest.fixture(scope="module")
def big_shard(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    generate(root, SPEC, progress=False)
    return root / "train" / "train_00.parquet"


def _command(out: Path, shard: Path, repeat: int) -> list[str]:
    return [sys.executable, str(SCRIPT), str(out), str(SPEC.users), str(SPEC.restaurants),
            *[str(shard)] * repeat]


def _run(out: Path, shard: Path, repeat: int) -> dict:
    done = subprocess.run(_command(out, shard, repeat), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_partition_size(big_shard, tmp_path):
    # Memory is bounded by the chunk and batch buffers plus one duplicate-counting pass
    # (DUPLICATE_PASS_BYTES = 16M keys): beyond that, twice the rows must not cost more memory.
    small = _run(tmp_path / "small", big_shard, 8)    # 16M rows
    large = _run(tmp_path / "large", big_shard, 16)   # 32M rows: ~770 MB of raw columns
    assert (small["rows"], large["rows"]) == (16_000_000, 32_000_000)
    assert large["duplicates"] >= 30_000_000  # every row of the repeats is a repeat
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    assert growth < 48, (small, large)
    assert large["peak_rss_mb"] < 512, large


@pytest.mark.slow
def test_kill_9_mid_partition_leaves_the_previous_version_and_rerun_succeeds(big_shard, tmp_path):
    out = tmp_path / "date=2026-01-01"
    assert _run(out, big_shard, 1)["rows"] == 2_000_000
    before = Artifact(out).live_version()
    process = subprocess.Popen(_command(out, big_shard, 6), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".date=2026-01-01.versions/.staging-*/chunk-*.arrow")):
        assert time.monotonic() < deadline and process.poll() is None, "no chunk was written"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert Artifact(out).live_version() == before  # the partial candidate never became visible
    assert read_manifest(out)["rows"] == 2_000_000
    assert list(tmp_path.glob(".date=2026-01-01.versions/.staging-*"))  # what the killed run left, hidden
    assert _run(out, big_shard, 2)["rows"] == 4_000_000
    assert read_manifest(out)["rows"] == 4_000_000
    assert not list(tmp_path.glob(".date=2026-01-01.versions/.staging-*"))  # removed by the next write
    assert sorted(p.name for p in tmp_path.iterdir()) == [".date=2026-01-01.lock", ".date=2026-01-01.versions",
                                                          "date=2026-01-01"]
