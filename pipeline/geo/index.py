"""The H3-indexed restaurant table and its two queries.

Restaurants are stored sorted by their H3 cell (resolution 8: ~0.74 km² cells, edges ~460–580 m
around the reference box; about 18 restaurants per cell at the reference density) with a
cell → rows lookup (unique cells and where each cell's rows start).

- ``filter_candidates``: exact distance filtering of a request's candidate list (a latitude/longitude
  box first, then haversine), which measured faster than cell membership for candidate lists.
- ``within``: every restaurant within ``max_dist`` of a point, with no candidate list: the cells
  of a ``grid_disk`` around the point's cell, then exact haversine. The disk radius k is derived
  from the actual edge lengths around the point's cell, with margin, so no restaurant within
  ``max_dist`` is ever missed (the property tests check it against brute force).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import pyarrow as pa

from pipeline.arrow_ipc import column_values, read_ipc, write_ipc
from pipeline.audits import AuditResult
from pipeline.data.id_index import IdIndex
from pipeline.geo.distance import haversine_m, within_box
from pipeline.integrity import verify_file
from pipeline.publish import Artifact, Published, write_audit_publish

RESOLUTION = 8
TABLE_FILE, CELLS_FILE = "table.arrow", "cells.arrow"
GEO_CHECK = "geo_index_complete"
EDGE_MARGIN = 0.8  # cells a few kilometres away may be slightly smaller than the query's own


class TooManyRows(ValueError):
    """A search would examine more rows than its caller allows."""

    def __init__(self, rows: int, limit: int):
        super().__init__(f"{rows} restaurants to examine, at most {limit} allowed")
        self.rows, self.limit = rows, limit


def cells_of(lats: np.ndarray, lons: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    return np.fromiter((h3.latlng_to_cell(a, b, resolution) for a, b in zip(lats, lons, strict=True)),
                       dtype=np.int64, count=len(lats))


def disk_radius(cell: int, max_dist_m: float) -> int:
    """Grid distance k such that every cell holding a point within ``max_dist_m`` of any point of
    ``cell`` is in ``grid_disk(cell, k)``.

    Cell centres of grid distance > k lie at least 1.5·(k+1)·e apart (e the edge length), and a
    point is within e of its cell's centre, so k + 1 > (max_dist + 2e) / (1.5e) suffices.
    """
    edge = min(h3.edge_length(e, unit="m") for e in h3.origin_to_directed_edges(cell)) * EDGE_MARGIN
    return max(1, math.ceil((max_dist_m + 2 * edge) / (1.5 * edge)))


@dataclass
class GeoIndex:
    """Restaurants sorted by H3 cell: ids, coordinates, cells, and the cell → rows lookup (each
    distinct cell and its first row; :meth:`build` makes it)."""

    ids: np.ndarray
    lats: np.ndarray
    lons: np.ndarray
    cells: np.ndarray
    resolution: int
    unique_cells: np.ndarray
    cell_starts: np.ndarray

    def __post_init__(self) -> None:
        self.cell_ends = np.r_[self.cell_starts[1:], len(self.cells)].astype(np.int64)
        self._by_id = IdIndex(np.sort(self.ids))
        self._row_of_sorted_id = np.argsort(self.ids, kind="stable")

    @classmethod
    def build(cls, ids: np.ndarray, lats: np.ndarray, lons: np.ndarray,
              resolution: int = RESOLUTION) -> GeoIndex:
        cells = cells_of(lats, lons, resolution)
        order = np.lexsort((ids, cells))
        cells = cells[order]
        unique_cells, cell_starts = np.unique(cells, return_index=True)
        return cls(np.asarray(ids, np.int64)[order], np.asarray(lats, np.float64)[order],
                   np.asarray(lons, np.float64)[order], cells, resolution, unique_cells, cell_starts)

    def rows_of(self, restaurant_ids: np.ndarray) -> np.ndarray:
        """Row of each restaurant id in this table, -1 for unknown ids."""
        position = self._by_id.rows(np.asarray(restaurant_ids))
        rows = np.full(len(position), -1, dtype=np.int64)
        known = position >= 0
        rows[known] = self._row_of_sorted_id[position[known]]
        return rows

    def filter_candidates(self, lat: float, lon: float, rows: np.ndarray,
                          max_dist_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(rows, metres) of the given rows that lie within ``max_dist_m``."""
        lats, lons = self.lats[rows], self.lons[rows]
        near = within_box(lat, lon, lats, lons, max_dist_m)
        rows, lats, lons = rows[near], lats[near], lons[near]
        metres = haversine_m(lat, lon, lats, lons)
        keep = metres <= max_dist_m
        return rows[keep], metres[keep]

    def within(self, lat: float, lon: float, max_dist_m: float,
               max_examined: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, metres) of every restaurant within ``max_dist_m`` of the point.
        :class:`TooManyRows` when the cells to search hold more than ``max_examined`` rows."""
        origin = h3.latlng_to_cell(lat, lon, self.resolution)
        disk = np.fromiter(h3.grid_disk(origin, disk_radius(origin, max_dist_m)), dtype=np.int64)
        if len(self.unique_cells) == 0:
            return np.empty(0, np.int64), np.empty(0)
        slots = np.minimum(np.searchsorted(self.unique_cells, disk), len(self.unique_cells) - 1)
        slots = slots[self.unique_cells[slots] == disk]
        starts, counts = self.cell_starts[slots], self.cell_ends[slots] - self.cell_starts[slots]
        if max_examined is not None and counts.sum() > max_examined:
            raise TooManyRows(int(counts.sum()), max_examined)
        # the rows of every hit cell, as one vector: start of its cell + position within it
        rows = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        metres = haversine_m(lat, lon, self.lats[rows], self.lons[rows])
        keep = metres <= max_dist_m
        return rows[keep], metres[keep]

    def audit(self, expected_ids: np.ndarray) -> list[AuditResult]:
        """The checks a written index must pass: exactly the snapshot's restaurants, sorted by
        cell, and a lookup whose ranges cover every row once with the right cell."""
        same_ids = len(self.ids) == len(expected_ids) and np.array_equal(np.sort(self.ids), np.sort(expected_ids))
        sorted_cells = bool(np.all(self.cells[1:] >= self.cells[:-1]))
        counts = self.cell_ends - self.cell_starts
        covered = (int(counts.sum()) == len(self.cells) and bool(np.all(counts > 0))
                   and bool(np.all(self.cells[self.cell_starts] == self.unique_cells))
                   and bool(np.all(self.cells[self.cell_ends - 1] == self.unique_cells)))
        problems = [text for ok, text in ((same_ids, f"holds {len(self.ids)} restaurants, the snapshot "
                                                     f"{len(expected_ids)} (or other ids)"),
                                          (sorted_cells, "rows are not sorted by cell"),
                                          (covered, "the cell lookup does not cover the rows exactly"))
                    if not ok]
        return [AuditResult(GEO_CHECK, not problems, {"restaurants": len(self.ids), "cells": len(self.unique_cells)},
                            "; ".join(problems))]

    def publish(self, path: Path, expected_ids: np.ndarray) -> Published:
        """Write the table (sorted by cell) and its cell → rows lookup as one candidate, load it
        back, audit it, and publish it as one artifact."""
        def write(staging: Path) -> None:
            write_ipc(pa.table({"restaurant_id": self.ids, "latitude": self.lats, "longitude": self.lons,
                                "cell": self.cells}).replace_schema_metadata({"h3_resolution": str(self.resolution)}),
                      staging / TABLE_FILE)
            write_ipc(pa.table({"cell": self.unique_cells, "start": self.cell_starts,
                                "count": self.cell_ends - self.cell_starts}), staging / CELLS_FILE)

        return write_audit_publish(path, write, lambda staging, _: GeoIndex.load_version(staging).audit(
            expected_ids), record={"restaurants": len(self.ids), "h3_resolution": self.resolution})

    @classmethod
    def load(cls, path: Path) -> GeoIndex:
        """The live index published at ``path``."""
        try:
            directory = Artifact(path).live()
        except FileNotFoundError:
            raise FileNotFoundError(f"geo index not found: {path} (materialize restaurant_geo_index first)") from None
        return cls.load_version(directory, verify=True)

    @classmethod
    def load_version(cls, directory: Path, verify: bool = False) -> GeoIndex:
        """The index in one version directory (both files from the same version)."""
        files = [verify_file(directory, f) if verify else directory / f for f in (TABLE_FILE, CELLS_FILE)]
        table, lookup = read_ipc(files[0]), read_ipc(files[1])
        resolution = int(table.schema.metadata[b"h3_resolution"])
        ids, lats, lons, cells = (column_values(table, c) for c in ("restaurant_id", "latitude", "longitude", "cell"))
        return cls(ids, lats, lons, cells, resolution, column_values(lookup, "cell"), column_values(lookup, "start"))
