"""Arrow IPC files and their columns as numpy views."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.arrow_ipc import column_values, read_ipc, write_ipc


def test_column_values_are_the_columns_of_a_memory_mapped_file(tmp_path):
    table = pa.table({"id": np.arange(5, dtype=np.int64) * 7, "x": np.linspace(0, 1, 5),
                      "f": np.arange(5, dtype=np.float32), "i": np.arange(5, dtype=np.int32)})
    write_ipc(table, tmp_path / "t.arrow")
    read = read_ipc(tmp_path / "t.arrow")
    for name in table.column_names:
        values = column_values(read, name)
        assert values.dtype == table.column(name).type.to_pandas_dtype()
        np.testing.assert_array_equal(values, table.column(name).to_numpy())


def test_column_values_of_slices_and_of_several_chunks():
    chunked = pa.table({"v": pa.chunked_array([np.arange(4), np.arange(10, 13)])})
    np.testing.assert_array_equal(column_values(chunked, "v"), [0, 1, 2, 3, 10, 11, 12])
    np.testing.assert_array_equal(column_values(pa.table({"v": np.arange(10)}).slice(3, 4), "v"), [3, 4, 5, 6])


def test_column_values_name_the_column_with_nulls_or_another_type():
    with pytest.raises(ValueError, match="column 'v': 1 nulls"):
        column_values(pa.table({"v": pa.array([1, None, 3], pa.int64())}), "v")
    with pytest.raises(TypeError, match="column 's': string"):
        column_values(pa.table({"s": ["a"]}), "s")
