"""The H3 restaurant index never drops a restaurant within max_dist (property tests vs brute force)."""

import math

import h3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.audits import Rejected
from pipeline.geo.distance import EARTH_RADIUS_M, haversine_m
from pipeline.geo.index import GeoIndex
from pipeline.publish import Artifact

PENTAGONS = [h3.cell_to_latlng(c) for c in h3.get_pentagons(8)]


def destination(lat, lon, bearing, metres):
    """The point ``metres`` from (lat, lon) along ``bearing`` (great circle)."""
    d, theta = metres / EARTH_RADIUS_M, math.radians(bearing)
    phi1, lmb1 = math.radians(lat), math.radians(lon)
    phi2 = math.asin(math.sin(phi1) * math.cos(d) + math.cos(phi1) * math.sin(d) * math.cos(theta))
    lmb2 = lmb1 + math.atan2(math.sin(theta) * math.sin(d) * math.cos(phi1),
                             math.cos(d) - math.sin(phi1) * math.sin(phi2))
    return math.degrees(phi2), (math.degrees(lmb2) + 540) % 360 - 180


centres = st.one_of(
    st.tuples(st.floats(13.5813, 14.1714), st.floats(100.3047, 100.8582)),  # the reference box
    st.tuples(st.floats(-84.0, 84.0), st.floats(-180.0, 180.0)),            # anywhere
    st.tuples(st.floats(70.0, 84.0) | st.floats(-84.0, -70.0), st.floats(-180.0, 180.0)),  # high latitudes
    st.tuples(st.floats(-60.0, 60.0), st.floats(179.5, 180.0) | st.floats(-180.0, -179.5)),  # antimeridian
    st.sampled_from(PENTAGONS),                                             # H3's distorted cells
)


@settings(max_examples=120, deadline=None)
@given(centre=centres, log_radius=st.floats(math.log(100), math.log(50_000)), seed=st.integers(0, 2**32 - 1))
def test_within_returns_exactly_the_restaurants_within_max_dist(centre, log_radius, seed):
    radius = math.exp(log_radius)
    rng = np.random.default_rng(seed)
    points = []
    for fraction in np.r_[rng.uniform(0, 2, 150), 1 - 1e-9, 1 + 1e-9, 1 - 1e-7, 1.0 - 1e-4, 1.0 + 1e-4]:
        points.append(destination(*centre, rng.uniform(0, 360), radius * fraction))
    lats, lons = np.array(points).T
    index = GeoIndex.build(np.arange(len(points)) * 7 + 3, lats, lons)
    truth = set(np.flatnonzero(haversine_m(*centre, index.lats, index.lons) <= radius))
    rows, metres = index.within(*centre, radius)
    assert set(rows.tolist()) == truth
    assert np.all(metres <= radius)
    # filtering a candidate list agrees too (every restaurant as a candidate, plus unknown ids)
    candidates = index.rows_of(np.r_[index.ids, [-1, 10**9]])
    assert (candidates[-2:] == -1).all()
    filtered, _ = index.filter_candidates(*centre, candidates[:-2], radius)
    assert set(filtered.tolist()) == truth


def test_saved_index_is_sorted_by_cell_and_loads_identically(tmp_path):
    rng = np.random.default_rng(0)
    index = GeoIndex.build(np.arange(5000), rng.uniform(13.58, 14.17, 5000), rng.uniform(100.30, 100.86, 5000))
    assert np.all(np.diff(index.cells) >= 0) and index.cells.dtype == np.int64
    published = index.publish(tmp_path / "geo_index", np.arange(5000))
    assert sorted(published.record["files"]) == ["cells.arrow", "table.arrow"]  # one artifact, both files
    loaded = GeoIndex.load(tmp_path / "geo_index")
    for name in ("ids", "lats", "lons", "cells", "unique_cells", "cell_starts"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
    rows, _ = loaded.within(13.9, 100.6, 3000)
    assert len(rows) > 0


def test_an_index_missing_restaurants_is_rejected_and_the_live_one_stays(tmp_path):
    rng = np.random.default_rng(0)
    index = GeoIndex.build(np.arange(500), rng.uniform(13.58, 14.17, 500), rng.uniform(100.30, 100.86, 500))
    good = index.publish(tmp_path / "geo_index", np.arange(500))
    with pytest.raises(Rejected, match=r"geo_index_complete: holds 500 restaurants, the snapshot 501"):
        index.publish(tmp_path / "geo_index", np.arange(501))
    assert Artifact(tmp_path / "geo_index").live_version() == good.version
