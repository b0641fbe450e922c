"""A processed partition read back: a corrupt chunk is detected when it is read, and a partition from
before versioned publishing is refused by name."""

import numpy as np
import pytest

from pipeline.data.clicks import publish_partition
from pipeline.data.id_index import IdIndex
from pipeline.data.processed_partition import iter_chunks, read_manifest
from pipeline.integrity import Corrupt
from pipeline_devtools.damage import flip_byte


def test_a_corrupt_chunk_is_detected_when_it_is_read(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    publish_partition([tiny_dataset.shard_for_day("2026-01-01")], IdIndex(np.arange(5_000)), IdIndex(np.arange(2_000)),
                      out, day="2026-01-01", chunk_rows=1500)
    chunk = out / "chunk-00001.arrow"
    flip_byte(chunk.resolve(), chunk.stat().st_size - 200)
    with pytest.raises(Corrupt, match=r"chunk-00001\.arrow: crc32 .* \(the file is corrupt\)"):
        list(iter_chunks(out))


def test_a_partition_written_before_versioned_publishing_is_refused_by_name(tmp_path):
    legacy = tmp_path / "date=2026-01-01"
    legacy.mkdir()
    (legacy / "_manifest.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"date=2026-01-01 was written before versioned publishing"):
        read_manifest(legacy)
