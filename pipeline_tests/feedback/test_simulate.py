"""The traffic simulator against a real ``pipeline serve``: the generator's ground truth, the
served model well above random candidates and close to the best ranking, the same seed giving
the same requests and clicks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.data.generate import N_SIGNAL_FEATURES, click_probability, make_features
from pipeline.feedback.click_events import day_files, read
from pipeline.feedback.simulate import GroundTruth, Simulator, examination, simulate
from pipeline_devtools.api_process import ApiProcess, sqlite_serving
from pipeline_devtools.datasets import TINY


@pytest.fixture(scope="module")
def tiny_api(serving_artifacts, tiny_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("simulate")
    _, env = sqlite_serving(serving_artifacts, root)
    api = ApiProcess(root, env)
    api.wait_until(ready=True)
    yield api.base
    api.stop()


def test_the_simulated_clicks_come_from_the_generators_click_probability(tiny_dataset):
    truth = GroundTruth.load(tiny_dataset.root)
    users, restaurants, _ = make_features(TINY)
    pairs = np.random.default_rng(3).integers(0, [TINY.users, TINY.restaurants], (50, 2))
    for user, restaurant in pairs:
        expected = click_probability(users[user:user + 1, :N_SIGNAL_FEATURES], restaurants[restaurant:restaurant + 1],
                                     np.zeros(1, np.float32))
        assert truth.probabilities(int(user), np.array([restaurant]), np.zeros(1)) == pytest.approx(expected, rel=1e-5)
    assert examination(np.array([1, 3, 10])) == pytest.approx([1.0, 0.5, 1 / np.log2(11)])


def test_the_served_model_beats_random_candidates_and_nears_the_best(tiny_api, tiny_dataset, tmp_path):
    summary = simulate(tiny_dataset.root, tiny_api, rate=40, duration_s=3, seed=1, out=tmp_path / "clicks")
    assert summary["answered"] == summary["requests"] == 120 and summary["errors"] == 0
    expected = {how: summary["expected"][how]["ctr_at_5"] for how in ("served", "random", "best")}
    assert expected["served"] > expected["random"] + 0.1, expected
    assert expected["served"] > 0.9 * expected["best"], expected
    events = pl.concat([pl.from_arrow(read(path)) for path in summary["click_files"]])
    assert len(events) == summary["clicks"] > 0
    assert events["request_id"].str.starts_with("sim-1-").all() and events["clicked"].all()


def test_the_same_seed_sends_the_same_requests_and_makes_the_same_clicks(tiny_api, tiny_dataset, tmp_path):
    runs = []
    for attempt in range(2):
        summary = simulate(tiny_dataset.root, tiny_api, rate=50, duration_s=1, seed=7, out=tmp_path / str(attempt))
        runs.append(pl.concat([pl.from_arrow(read(p)) for p in summary["click_files"]])
                    .select("request_id", "restaurant_id").sort(pl.all()))
    assert runs[0].equals(runs[1]) and len(runs[0]) > 0
    simulator = Simulator(tiny_dataset.root, seed=7)
    assert [simulator.request(i)[:3] for i in range(3)] == [Simulator(tiny_dataset.root, seed=7).request(i)[:3]
                                                            for i in range(3)]
    assert day_files(tmp_path / "0", "1999-01-01") == []
