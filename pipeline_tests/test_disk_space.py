"""A full disk, on a real small file system (a tmpfs mounted for the test): every writer names
``No space left on device``, the path and the bytes free; the reserve refuses large writes early;
nothing half-written is left and the live versions stay."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import disk_space
from pipeline.atomic import staged_file
from pipeline.data.clicks import publish_partition
from pipeline.data.features import RESTAURANTS, USERS, load_snapshot, read_source_features
from pipeline.disk_space import DiskFull, naming_disk_full
from pipeline.geo.index import GeoIndex
from pipeline.model.checkpoint import TrainingState
from pipeline.model.training import TrainConfig, train
from pipeline.publish import Artifact
from pipeline_devtools.warehouse_build import build_warehouse

FAST = TrainConfig(batch_size=512, threads=1)


def _reserve_mb(monkeypatch, megabytes: float) -> None:
    """This process's free-space reserve for the test, restored afterwards."""
    monkeypatch.setattr(disk_space, "_reserve_mb", [disk_space.reserve_bytes() / disk_space.MIB])
    disk_space.set_reserve_mb(megabytes)


@pytest.fixture
def small_fs(tmp_path, monkeypatch):
    """A real 16 MiB tmpfs at ``tmp_path/fs``, unmounted afterwards (needs root, as CI runs)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a 16 MiB tmpfs was refused ({done.stderr.strip()}): the disk-full tests need "
                    f"a real small file system, which takes root")
    _reserve_mb(monkeypatch, 0)  # a test that wants a reserve sets one
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the file system's free space with one file."""
    filler = mount / "filler"
    with open(filler, "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * (shutil.disk_usage(mount).free - leave))
    return filler


def leftovers(root: Path) -> list[str]:
    """Temporaries and staging directories: what a half-done write would leave."""
    return sorted(str(p) for p in root.rglob("*") if ".tmp-" in p.name or p.name.startswith(".staging-"))


def assert_names_the_full_disk(error: BaseException, path: Path) -> None:
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC, repr(error)
    message = str(error)
    assert "No space left on device" in message and str(path) in message and "free" in message, message


def test_training_on_a_full_disk_names_the_space_and_leaves_nothing_half_written(tiny_dataset, small_fs):
    warehouse = build_warehouse(tiny_dataset, small_fs / "wh", chunk_rows=4000, days=2)
    filler = fill(small_fs, leave=64 << 10)
    with pytest.raises(OSError) as raised:
        train(warehouse, FAST, log=lambda message: None)
    assert_names_the_full_disk(raised.value, warehouse.root)
    assert "needed" in str(raised.value)
    assert leftovers(warehouse.root) == [] and Artifact(warehouse.checkpoint).live_version() is None

    filler.unlink()  # space again: the run goes through, nothing in the way
    result = train(warehouse, FAST, log=lambda message: None)
    assert result.published is not None and leftovers(warehouse.root) == []


def test_a_processed_day_on_a_full_disk_names_its_chunk_file(tiny_dataset, small_fs):
    warehouse = build_warehouse(tiny_dataset, small_fs / "wh", chunk_rows=4000, days=1)
    users, restaurants = (load_snapshot(warehouse.user_features, USERS),
                          load_snapshot(warehouse.restaurant_features, RESTAURANTS))
    day = tiny_dataset.days()[1]
    fill(small_fs, leave=8 << 10)
    with pytest.raises(OSError) as raised:
        publish_partition([tiny_dataset.shard_for_day(day)], users.index, restaurants.index,
                          warehouse.processed_clicks(day), chunk_rows=4000, day=day)
    assert_names_the_full_disk(raised.value, warehouse.processed_clicks(day).parent)
    assert "chunk-00000.arrow" in str(raised.value)
    assert leftovers(warehouse.root) == [] and Artifact(warehouse.processed_clicks(day)).live_version() is None


def test_the_geo_index_and_a_staged_file_on_a_full_disk_name_their_path(tiny_dataset, small_fs):
    restaurants = read_source_features(tiny_dataset.restaurant_features, RESTAURANTS)
    geo = GeoIndex.build(restaurants.ids, restaurants.locations[:, 0], restaurants.locations[:, 1])
    fill(small_fs, leave=8 << 10)
    with pytest.raises(OSError) as raised:
        geo.publish(small_fs / "geo_index", restaurants.ids)
    assert_names_the_full_disk(raised.value, small_fs)
    with pytest.raises(OSError) as raised, staged_file(small_fs / "private.bin") as tmp:
        tmp.write_bytes(b"\1" * (64 << 10))
    assert_names_the_full_disk(raised.value, small_fs / "private.bin")
    assert leftovers(small_fs) == [] and not (small_fs / "private.bin").exists()


def test_torch_s_short_write_on_a_full_disk_becomes_a_named_disk_full(small_fs):
    fill(small_fs, leave=8 << 10)
    target = small_fs / "weights.pt"
    with pytest.raises(DiskFull) as raised, naming_disk_full(target):
        torch.save({"w": torch.zeros(100_000)}, target)  # torch says only "unexpected pos …"
    assert_names_the_full_disk(raised.value, target)


def test_the_training_run_state_on_a_full_disk_names_its_file_and_the_bytes(small_fs):
    state = TrainingState({"w": torch.zeros(100_000)}, {}, {"hidden": [8, 4]})
    fill(small_fs, leave=64 << 10)
    target = small_fs / "training_run.pt"
    with pytest.raises(DiskFull) as raised:
        state.save(target)
    assert_names_the_full_disk(raised.value, target)
    assert "needed" in str(raised.value) and leftovers(small_fs) == [] and not target.exists()


_EXPORT = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from pipeline import disk_space
    from pipeline.model.export import publish_export
    from pipeline.model.network import ClickMLP
    disk_space.set_reserve_mb(0)
    try:
        publish_export(ClickMLP(), Path(sys.argv[1]), torch.randn(64, 40), record={})
    except OSError as error:
        print(f"{type(error).__name__} {error.errno}: {error}")
        sys.exit(3)
""")


def test_an_export_on_a_full_disk_fails_naming_the_space_instead_of_aborting(small_fs):
    fill(small_fs, leave=64 << 10)
    export = small_fs / "export"
    done = subprocess.run([sys.executable, "-c", _EXPORT, str(export)], capture_output=True, text=True,
                          timeout=300)
    # before: torch.jit.save's writer throws in a destructor and the process aborts (SIGABRT)
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert f"DiskFull {errno.ENOSPC}: No space left on device writing {export.parent}" in done.stdout, done.stdout
    assert leftovers(small_fs) == [] and Artifact(export).live_version() is None


@pytest.mark.parametrize("writer", ["processed day", "checkpoint", "geo index", "snapshot"])
def test_the_reserve_refuses_a_large_write_before_it_starts(writer, tiny_dataset, small_fs, monkeypatch):
    warehouse = build_warehouse(tiny_dataset, small_fs / "wh", chunk_rows=4000, days=1)
    _reserve_mb(monkeypatch, 32)  # more than the 16 MiB file system has
    users = load_snapshot(warehouse.user_features, USERS)
    restaurants = load_snapshot(warehouse.restaurant_features, RESTAURANTS)
    day = tiny_dataset.days()[1]
    target, live = {"processed day": warehouse.processed_clicks(day), "checkpoint": warehouse.checkpoint,
                    "geo index": warehouse.geo_index, "snapshot": warehouse.user_features}[writer], None
    live = Artifact(target).live_version()
    with pytest.raises(DiskFull, match=r"PIPELINE_MIN_FREE_MB=32 asks to keep 33,554,432 bytes") as raised:
        if writer == "processed day":
            publish_partition([tiny_dataset.shard_for_day(day)], users.index, restaurants.index, target,
                              chunk_rows=4000, day=day)
        elif writer == "checkpoint":
            train(warehouse, FAST, log=lambda message: None)
        elif writer == "geo index":
            ids = np.asarray(restaurants.ids)
            GeoIndex.build(ids, restaurants.locations[:, 0], restaurants.locations[:, 1]).publish(target, ids)
        else:
            from pipeline.data.features import publish_snapshot
            publish_snapshot(read_source_features(tiny_dataset.user_features, USERS), target, USERS)
    assert_names_the_full_disk(raised.value, small_fs)
    assert Artifact(target).live_version() == live and leftovers(warehouse.root) == []
    assert not (warehouse.training_run.exists() and writer == "checkpoint")
