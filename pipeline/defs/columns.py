"""Column schemas (``dagster/column_schema``) of the tables the assets write, from the pure core's schemas."""

import dagster as dg
import pyarrow as pa

from pipeline.data.clicks import CHUNK_SCHEMA
from pipeline.data.schema import CLICKS, RESTAURANT_FEATURES, USER_FEATURES, TableSpec


def _spec_columns(spec: TableSpec, descriptions: dict[str, str], types: dict[str, str]) -> dg.TableSchema:
    """Columns of a reference table; ``types`` names the stored type by column, else by kind."""
    return dg.TableSchema(columns=[dg.TableColumn(name, types.get(name, types.get(kind, kind)),
                                                  descriptions.get(name)) for name, kind in spec.columns])


def _arrow_columns(schema: pa.Schema, descriptions: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type), descriptions.get(f.name)) for f in schema])


def column_schema(schema: dg.TableSchema) -> dict:
    return {"dagster/column_schema": schema}


RAW_CLICKS = _spec_columns(CLICKS, {"click": "1 if the impression was clicked, else 0"}, {})
FEATURE_TABLES = dg.TableSchema(columns=[  # the two source tables, as <table>.<column>
    dg.TableColumn(f"{spec.name}.{name}", kind) for spec in (USER_FEATURES, RESTAURANT_FEATURES)
    for name, kind in spec.columns])
PROCESSED_CLICKS = _arrow_columns(CHUNK_SCHEMA, {
    "user_row": "row of the user in the user_features snapshot",
    "restaurant_row": "row of the restaurant in the restaurant_features snapshot",
    "click": "1 if clicked, else 0"})
USER_SNAPSHOT = _spec_columns(USER_FEATURES, {"user_id": "sorted ascending, unique"}, {"float": "float32"})
RESTAURANT_SNAPSHOT = _spec_columns(RESTAURANT_FEATURES, {"restaurant_id": "sorted ascending, unique",
                                                          "latitude": "degrees", "longitude": "degrees"},
                                    {"float": "float32", "latitude": "float64", "longitude": "float64"})
GEO_INDEX = dg.TableSchema(columns=[
    dg.TableColumn("restaurant_id", "int64"), dg.TableColumn("latitude", "float64"),
    dg.TableColumn("longitude", "float64"),
    dg.TableColumn("cell", "int64", "H3 cell at resolution 8; rows are sorted by it")])
