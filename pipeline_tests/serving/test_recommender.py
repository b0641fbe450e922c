"""The recommender agrees with a brute-force implementation, on both real stores."""

import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.serving.recommender import Recommender, UnknownUser, rank
from pipeline.serving.request import Request, RequestError
from pipeline.serving.scorer import ModelScorer
from pipeline.store.base import FeatureTable
from pipeline.store.redis_store import RedisStore
from pipeline.store.sqlite import SQLiteStore
from pipeline_devtools.reference_recommender import as_arrays, brute_force


@pytest.fixture(params=["sqlite", "redis", "sqlite, restaurants held", "redis, restaurants held"])
def recommender(request, serving_artifacts, tmp_path):
    warehouse, tables, geo, model = serving_artifacts
    if request.param.startswith("sqlite"):
        store = SQLiteStore(tmp_path / "online.db")
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), namespace=f"r{uuid.uuid4().hex[:8]}:")
    live = store.publish(FeatureTable.of(tables.user_snapshot), FeatureTable.of(tables.restaurant_snapshot))
    recommender = Recommender(geo, store, ModelScorer(warehouse.torchscript))
    if request.param.endswith("held"):
        recommender.hold(store.restaurant_features(live.number))
    yield recommender
    if request.param.endswith("held"):  # every read took its restaurants from what was held
        assert recommender.full_reads == 0 and recommender.user_only_reads > 0
    store.close()


def _check(recommender, serving_artifacts, request):
    _, tables, _, model = serving_artifacts
    answer = recommender.recommend(request)
    ids, scores, dists = as_arrays(brute_force(model, tables, request.user_id, request.latitude, request.longitude,
                                               request.candidate_restaurant_ids, request.size, request.max_dist,
                                               request.sort_dist))
    np.testing.assert_array_equal(answer.ids, ids)
    np.testing.assert_allclose(answer.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answer.displacements, dists, rtol=1e-9, atol=1e-6)
    return answer


def test_replayed_requests_agree_with_brute_force(recommender, serving_artifacts, tiny_dataset):
    requests = pq.read_table(tiny_dataset.requests).to_pylist()[:25]
    nonempty = 0
    for r in requests:
        answer = _check(recommender, serving_artifacts, Request(
            r["user_id"], r["latitude"], r["longitude"], tuple(r["candidate_restaurant_ids"]),
            int(r["size"]), float(r["max_dist"]), bool(r["sort_dist"])))
        nonempty += len(answer.ids) > 0
        assert len(answer.ids) <= r["size"] and np.all(answer.displacements <= r["max_dist"])
    assert nonempty > 10


@pytest.mark.parametrize("sort_dist", [False, True])
def test_without_candidates_every_restaurant_in_range_is_considered(recommender, serving_artifacts, sort_dist):
    answer = _check(recommender, serving_artifacts, Request(42, 13.9, 100.6, None, 15, 6000.0, sort_dist))
    assert len(answer.ids) == 15
    key = answer.displacements if sort_dist else -answer.scores
    assert np.all(np.diff(key) >= 0)


def test_unknown_candidates_are_ignored_and_counted(recommender, serving_artifacts):
    answer = _check(recommender, serving_artifacts,
                    Request(3, 13.9, 100.6, (1, 2, 3, 99_999, -5, 10**12), 20, 60_000.0))
    assert answer.unknown_candidates == 3 and set(answer.ids) <= {1, 2, 3}


def test_a_repeated_candidate_counts_once(recommender):
    repeated = recommender.recommend(Request(3, 13.9, 100.6, (1, 2, 2, 3, 1, 99_999, 99_999, 3), 20, 60_000.0))
    once = recommender.recommend(Request(3, 13.9, 100.6, (1, 2, 3, 99_999), 20, 60_000.0))
    assert sorted(repeated.ids) == sorted(set(repeated.ids)) == [1, 2, 3]
    np.testing.assert_array_equal(repeated.ids, once.ids)
    np.testing.assert_array_equal(repeated.scores, once.scores)
    assert repeated.unknown_candidates == once.unknown_candidates == 1 and repeated.within == once.within == 3


def test_errors_unknown_user_and_invalid_fields(recommender):
    with pytest.raises(UnknownUser):
        recommender.recommend(Request(10**9, 13.9, 100.6, (1, 2)))
    with pytest.raises(UnknownUser):  # even when nothing is in range
        recommender.recommend(Request(10**9, 13.9, 100.6, (), max_dist=0))
    for field, request in [("latitude", Request(1, 91.0, 100.0)), ("longitude", Request(1, 13.0, -180.5)),
                           ("latitude", Request(1, float("nan"), 100.0)), ("size", Request(1, 13.0, 100.0, size=0)),
                           ("max_dist", Request(1, 13.0, 100.0, max_dist=-1.0)),
                           ("candidate_restaurant_ids", Request(1, 13.0, 100.0, tuple(range(10_001))))]:
        with pytest.raises(RequestError) as error:
            recommender.recommend(request)
        assert error.value.field == field


def test_retrieval_without_candidates_is_bounded_and_refusals_name_max_dist(serving_artifacts, tmp_path):
    from pipeline.geo.index import GeoIndex
    from pipeline.serving.recommender import MAX_DIST_WITHOUT_CANDIDATES_M, MAX_EXAMINED
    from pipeline.serving.request import MAX_CANDIDATES

    rng = np.random.default_rng(0)
    n = MAX_EXAMINED + 5_000  # dense: every restaurant within ~1.5 km of the centre
    geo = GeoIndex.build(np.arange(n), 13.8 + rng.uniform(-0.01, 0.01, n), 100.6 + rng.uniform(-0.01, 0.01, n))
    store = SQLiteStore(tmp_path / "online.db")  # never reached: every request below is refused first
    recommender = Recommender(geo, store, scorer=None)
    cases = [(MAX_DIST_WITHOUT_CANDIDATES_M + 1, f"at most {MAX_DIST_WITHOUT_CANDIDATES_M:.0f} m"),
             (5_000, f"to examine, at most {MAX_EXAMINED}")]  # the cells to search hold too many
    for max_dist, message in cases:
        with pytest.raises(RequestError, match=message) as refused:
            recommender.recommend(Request(1, 13.8, 100.6, None, 20, max_dist))
        assert refused.value.field == "max_dist"
    sparse = GeoIndex.build(np.arange(MAX_CANDIDATES + 10), 13.8 + rng.uniform(-0.01, 0.01, MAX_CANDIDATES + 10),
                            100.6 + rng.uniform(-0.01, 0.01, MAX_CANDIDATES + 10))
    with pytest.raises(RequestError, match=f"lie within 5000 m, at most {MAX_CANDIDATES}") as refused:
        Recommender(sparse, store, scorer=None).recommend(Request(1, 13.8, 100.6, None, 20, 5_000))
    assert refused.value.field == "max_dist"
    store.close()


def test_a_held_snapshot_serves_only_while_it_is_live(recommender, serving_artifacts):
    _, tables, _, _ = serving_artifacts
    request = Request(42, 13.9, 100.6, None, 10, 6000.0)
    before = recommender.recommend(request)
    restaurants = tables.restaurant_snapshot
    shifted = FeatureTable(restaurants.ids, restaurants.values[::-1].copy(), "reversed")
    recommender.store.publish(FeatureTable.of(tables.user_snapshot), shifted)
    full_reads = recommender.full_reads
    after = recommender.recommend(request)  # whatever is held, the live version's restaurants
    assert recommender.full_reads == full_reads + 1 and not np.array_equal(after.scores, before.scores)
    recommender.hold(recommender.store.restaurant_features(recommender.store.live().number))
    held = recommender.recommend(request)
    np.testing.assert_array_equal(held.ids, after.ids)
    np.testing.assert_array_equal(held.scores, after.scores)
    recommender.full_reads = 0  # for the fixture's check: the one full read above was meant


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), st.integers(1, 80), st.booleans(), st.integers(0, 2**32 - 1))
def test_rank_sorts_only_the_contenders_and_agrees_with_a_full_sort(n, size, sort_dist, seed):
    rng = np.random.default_rng(seed)
    scores = rng.choice(np.float32([0.1, 0.5, 0.9, 0.25]), n)  # few values: many ties
    metres = rng.choice([10.0, 20.0, 30.0], n)
    full = np.lexsort((-scores, metres)) if sort_dist else np.lexsort((metres, -scores))
    got = rank(scores, metres, sort_dist, size)
    first, second = (metres, -scores) if sort_dist else (-scores, metres)
    # the same keys in the same order (positions may differ only between rows equal in both keys)
    np.testing.assert_array_equal(first[got], first[full[:size]])
    np.testing.assert_array_equal(second[got], second[full[:size]])
    assert len(set(got.tolist())) == len(got) == min(n, size)
