"""Published raw days own their bytes: a source shard rewritten in place (same inode, truncated and
written again, as pandas and pyarrow overwrite a file) is a new source version, and what was
published from it stays readable and unchanged."""

import os

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.data.layout import Warehouse
from pipeline.data.sources import LocalParquetSource, copy_owned, publish_raw_partition, raw_files

DAY = "2026-01-01"


def _rewrite_in_place(path, table) -> None:
    """pyarrow writing over ``path`` without unlinking it: the same inode, new bytes."""
    inode = os.stat(path).st_ino
    pq.write_table(table, path)
    assert os.stat(path).st_ino == inode  # really in place


def test_a_published_raw_day_shares_no_inode_with_its_source_shard(dataset_copy, tmp_path):
    source = LocalParquetSource(dataset_copy)
    target = Warehouse(tmp_path / "wh").raw_clicks(DAY)
    extract, published, extracted = publish_raw_partition(source, DAY, target)
    assert extracted and extract.metadata["copied_by"] in {"copy", "reflink"}
    [part] = raw_files(target)
    shard = dataset_copy.shard_for_day(DAY)
    assert not os.path.samefile(part, shard) and os.stat(shard).st_nlink == 1
    assert part.read_bytes() == shard.read_bytes()


def test_a_shard_rewritten_in_place_is_a_new_version_and_the_published_day_stays_readable(dataset_copy, tmp_path):
    source = LocalParquetSource(dataset_copy)
    target = Warehouse(tmp_path / "wh").raw_clicks(DAY)
    shard = dataset_copy.shard_for_day(DAY)
    original = pq.read_table(shard)
    _, first, _ = publish_raw_partition(source, DAY, target)
    published_bytes = raw_files(target)[0].read_bytes()

    flipped = original.set_column(2, "click", pc.subtract(1, original.column("click")))
    _rewrite_in_place(shard, flipped.slice(0, 3000))  # fewer rows: a smaller file
    [part] = raw_files(target)  # verify_file: size and crc32 as published
    assert part.read_bytes() == published_bytes

    extract, second, extracted = publish_raw_partition(source, DAY, target)
    assert extracted and second.version != first.version and extract.rows == 3000
    assert pq.read_table(raw_files(target)[0]).equals(pq.read_table(shard))


def test_a_same_size_rewrite_with_the_old_mtime_is_still_a_new_version(dataset_copy, tmp_path):
    source = LocalParquetSource(dataset_copy)
    shard = dataset_copy.shard_for_day(DAY)
    target = Warehouse(tmp_path / "wh").raw_clicks(DAY)
    _, first, _ = publish_raw_partition(source, DAY, target)
    before = os.stat(shard)
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(255 - b for b in data[middle:middle + 8])
    with open(shard, "r+b") as handle:  # same inode, same size
        handle.write(data)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the mtime it had
    after = os.stat(shard)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert source.partition_version(DAY) != first.record["source_version"]
    assert raw_files(target)  # what was published still verifies


def test_copy_owned_makes_an_independent_file(tmp_path):
    src, dst = tmp_path / "a.bin", tmp_path / "b.bin"
    src.write_bytes(os.urandom(1 << 20))
    how = copy_owned(src, dst)
    assert how in {"copy", "reflink"} and dst.read_bytes() == src.read_bytes()
    with open(src, "r+b") as handle:
        handle.truncate(10)
    assert dst.stat().st_size == 1 << 20


def test_dataset_copy_does_not_share_files_with_the_session_dataset(dataset_copy, tiny_dataset):
    shard = dataset_copy.shard_for_day(DAY)
    session_shard = tiny_dataset.shard_for_day(DAY)
    before = session_shard.read_bytes()
    _rewrite_in_place(shard, pq.read_table(shard).slice(0, 10))
    assert session_shard.read_bytes() == before
