"""Which on-disk form for processed clicks? Measures both candidates on the same shards.

    python bench/processed_format.py --data DIR [--files 8]

- ``rows`` (chosen): user/restaurant snapshot rows int32 + click int8, 9 B a row; features are
  gathered from the in-memory float32 snapshots (torch.index_select into preallocated buffers)
  when a training batch is formed.
- ``dense``: the 40 model-input floats + click materialized per row, 161 B a row.

For each: processing throughput (raw parquet → files), bytes on disk, and the training-side cost
of turning files back into a (n, 40) float32 batch. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipeline.arrow_ipc import read_first_batch, write_ipc
from pipeline.data.clicks import publish_partition
from pipeline.data.features import RESTAURANTS, USERS, read_source_features
from pipeline.data.processed_partition import iter_chunks
from pipeline_devtools.benchmarks import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    users = read_source_features(args.data / "user_features.parquet", USERS)
    restaurants = read_source_features(args.data / "restaurant_features.parquet", RESTAURANTS)
    shards = sorted((args.data / "train").glob("train_*.parquet"))[: args.files]
    result = {"files": len(shards)}
    with tempfile.TemporaryDirectory(dir=args.data.parent) as tmp:
        rows_dir, dense_dir = Path(tmp) / "rows", Path(tmp) / "dense"
        dense_dir.mkdir()
        # rows form: exactly what processed_clicks writes
        started, n, size = time.perf_counter(), 0, 0
        for i, shard in enumerate(shards):
            stats, _ = publish_partition([shard], users.index, restaurants.index, rows_dir / str(i))
            n, size = n + stats.rows, size + stats.bytes
        result["rows"] = n
        result["rows_form_write_rows_per_s"] = round(n / (time.perf_counter() - started))
        result["rows_form_bytes_per_row"] = round(size / n, 1)
        # dense form: the same rows plus the gather, written as 40 float32 + click int8 per row
        schema = pa.schema([("x", pa.list_(pa.float32(), 40)), ("click", pa.int8())])
        started, size = time.perf_counter(), 0
        for i in range(len(shards)):
            for j, (user_row, restaurant_row, click) in enumerate(iter_chunks(rows_dir / str(i))):
                x = np.empty((len(click), 40), np.float32)
                x[:, :30] = users.values[user_row]
                x[:, 30:] = restaurants.values[restaurant_row]
                values = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 40)
                size += write_ipc(pa.record_batch([values, pa.array(click)], schema=schema),
                                  dense_dir / f"{i}-{j}.arrow")
        dense_seconds = time.perf_counter() - started
        result["dense_form_write_rows_per_s"] = round(
            n / (dense_seconds + n / result["rows_form_write_rows_per_s"]))
        result["dense_form_bytes_per_row"] = round(size / n, 1)
        # read back into (n, 40) float32 batches, as training does
        # the gather training uses: index_select into preallocated user and restaurant buffers
        torch.set_num_threads(1)
        user_table, restaurant_table = torch.from_numpy(users.values), torch.from_numpy(restaurants.values)
        user_buf, restaurant_buf = torch.empty(0, 30), torch.empty(0, 10)
        started = time.perf_counter()
        for i in range(len(shards)):
            for user_row, restaurant_row, click in iter_chunks(rows_dir / str(i)):
                user_buf.resize_(len(click), 30)
                restaurant_buf.resize_(len(click), 10)
                torch.index_select(user_table, 0, torch.from_numpy(user_row), out=user_buf)
                torch.index_select(restaurant_table, 0, torch.from_numpy(restaurant_row), out=restaurant_buf)
        result["rows_form_read_rows_per_s"] = round(n / (time.perf_counter() - started))
        started = time.perf_counter()
        for path in sorted(dense_dir.glob("*.arrow")):
            x = read_first_batch(path).column(0).values.to_numpy().reshape(-1, 40).copy()
        result["dense_form_read_rows_per_s"] = round(n / (time.perf_counter() - started))
    result["disk_at_50M_rows_gb"] = {"rows": round(result["rows_form_bytes_per_row"] * 50e6 / 1e9, 2),
                                     "dense": round(result["dense_form_bytes_per_row"] * 50e6 / 1e9, 2)}
    result["machine"] = machine()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
