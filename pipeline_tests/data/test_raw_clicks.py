"""Raw click files read: a truncated or corrupt file fails its partition, naming the file."""

import numpy as np
import pytest

from pipeline.data.clicks import publish_partition
from pipeline.data.id_index import IdIndex
from pipeline.data.raw_clicks import CorruptFile
from pipeline_devtools.damage import flip_byte


def test_a_truncated_or_corrupt_click_file_fails_naming_the_file(tiny_dataset, tmp_path):
    shard = tiny_dataset.shard_for_day("2026-01-01")
    users, restaurants = IdIndex(np.arange(5_000)), IdIndex(np.arange(2_000))
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CorruptFile, match=r"truncated\.parquet: not a readable parquet file"):
        publish_partition([truncated], users, restaurants, tmp_path / "out", day="2026-01-01")
    # a byte flipped inside a data page: the page checksum the generator wrote catches it
    flipped = tmp_path / "flipped.parquet"
    flipped.write_bytes(shard.read_bytes())
    flip_byte(flipped, flipped.stat().st_size // 3)
    with pytest.raises(CorruptFile, match=r"flipped\.parquet: corrupt data"):
        publish_partition([flipped], users, restaurants, tmp_path / "out", day="2026-01-01")
    assert not (tmp_path / "out").exists()
