"""The reference dataset format (see ../shared/reference/dataset.md) and schema validation.

Validation names the file and the column, and accepts what a reader can use without loss: any
integer width for ids and clicks, float32 or float64 for features. Extra columns (such as the
``__index_level_0__`` pandas writes) are ignored; nothing depends on pandas metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

N_USER_FEATURES = 30
N_RESTAURANT_FEATURES = 10
USER_FEATURE_COLUMNS = tuple(f"f{i:02d}" for i in range(N_USER_FEATURES))
RESTAURANT_FEATURE_COLUMNS = tuple(f"f{i:02d}" for i in range(N_RESTAURANT_FEATURES))
MODEL_INPUT_WIDTH = N_USER_FEATURES + N_RESTAURANT_FEATURES  # user f00-f29, then restaurant f00-f09

# Coordinates of the reference box around Bangkok.
LAT_RANGE = (13.5813, 14.1714)
LON_RANGE = (100.3047, 100.8582)


class SchemaError(ValueError):
    """A file lacks a column or has one of the wrong type. The message names both."""


def _is_integer(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_float32(t) or pa.types.is_float64(t)


def _is_bool(t: pa.DataType) -> bool:
    return pa.types.is_boolean(t)


def _is_integer_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


_KINDS = {
    "integer": _is_integer,
    "float": _is_float,
    "bool": _is_bool,
    "list<integer>": _is_integer_list,
}


@dataclass(frozen=True)
class TableSpec:
    """Required columns of one reference file and the kind of type each must have."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def validate(self, schema: pa.Schema, source: str) -> None:
        """Raise :class:`SchemaError` naming ``source`` and the first bad column."""
        for column, kind in self.columns:
            index = schema.get_field_index(column)
            if index < 0:
                raise SchemaError(
                    f"{source}: missing column '{column}' (a {self.name} file needs "
                    f"{', '.join(self.column_names)})"
                )
            actual = schema.field(index).type
            if not _KINDS[kind](actual):
                raise SchemaError(
                    f"{source}: column '{column}' has type {actual}, expected {kind}"
                )


CLICKS = TableSpec(
    "clicks", (("user_id", "integer"), ("restaurant_id", "integer"), ("click", "integer"))
)
USER_FEATURES = TableSpec(
    "user_features", (("user_id", "integer"),) + tuple((c, "float") for c in USER_FEATURE_COLUMNS)
)
RESTAURANT_FEATURES = TableSpec(
    "restaurant_features",
    (("restaurant_id", "integer"), ("latitude", "float"), ("longitude", "float"))
    + tuple((c, "float") for c in RESTAURANT_FEATURE_COLUMNS),
)
REQUESTS = TableSpec(
    "requests",
    (
        ("user_id", "integer"),
        ("latitude", "float"),
        ("longitude", "float"),
        ("candidate_restaurant_ids", "list<integer>"),
        ("size", "integer"),
        ("max_dist", "integer"),
        ("sort_dist", "bool"),
    ),
)
