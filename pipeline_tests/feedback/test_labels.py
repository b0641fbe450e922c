"""The join of impressions and clicks, row for row against an independent computation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.feedback import click_events, labels
from pipeline.feedback.log_format import Impression, to_table
from pipeline_tests.feedback.test_log_writer import NOON


def _day(rng: np.random.Generator, prefix: str, requests: int):
    records = []
    for n in range(requests):
        shown = int(rng.integers(0, 8))
        ids = rng.choice(50, shown, replace=False).astype(np.int64)
        records.append(Impression(f"{prefix}-{n}", NOON + n * 10**9, int(rng.integers(0, 20)), "m1", "onnx", 3, "g1",
                                  13.7, 100.5, 10, 5000.0, False, 100, shown, ids,
                                  np.sort(rng.random(shown).astype(np.float32))[::-1].copy(),
                                  rng.random(shown).astype(np.float32) * 5000, None, None))
    return records


def test_the_join_matches_an_independent_computation_row_for_row():
    rng = np.random.default_rng(11)
    records, earlier = _day(rng, "d", 40), _day(rng, "prev", 5)
    shown_pairs = [(r.request_id, int(i)) for r in records for i in r.restaurant_ids]
    # clicks: some shown pairs (one twice), a pair of a known request not shown, unknown requests,
    # a click on yesterday's request, one explicit non-click, and next-day clicks
    picked = [shown_pairs[i] for i in rng.choice(len(shown_pairs), 25, replace=False)]
    day_events = picked[:20] + [picked[0], ("d-1", 999), ("nobody-1", 3), ("nobody-2", 4),
                                (earlier[0].request_id, int(earlier[0].restaurant_ids[0]) if len(
                                    earlier[0].restaurant_ids) else 1)]
    clicked_flags = [True] * len(day_events)
    day_events.append(picked[20])
    clicked_flags.append(False)  # an explicit non-click is not a click
    next_events = picked[21:]
    day = click_events.table([r for r, _ in day_events], [i for _, i in day_events], [0] * len(day_events),
                             clicked_flags)
    following = click_events.table([r for r, _ in next_events], [i for _, i in next_events], [0] * len(next_events))
    impressions = to_table(records)
    labeled = labels.label(impressions, day, following, to_table(earlier).column("request_id"))

    clicked = {pair for pair, flag in zip(day_events, clicked_flags, strict=True) if flag} | set(next_events)
    expected = [(r.request_id, rank, int(i), (r.request_id, int(i)) in clicked)
                for r in records for rank, i in enumerate(r.restaurant_ids.tolist(), 1)]
    got = labeled.rows.select("request_id", "rank", "restaurant_id", "clicked").rows()
    assert sorted(got) == sorted(expected)
    assert labeled.shown == len(shown_pairs) == len(got)
    assert labeled.clicks == sum(flag for *_, flag in expected)
    assert labeled.unknown_request_clicks == 2     # nobody-1, nobody-2 (yesterday's request is known)
    assert labeled.clicks_not_shown == 1           # d-1 never showed 999
    assert labeled.repeated_clicks == 1
    training = labeled.training_clicks()
    held = set(labeled.rows.filter(pl.col("held_out")).get_column("request_id").to_list())
    trained = [(r, i, c) for r, _, i, c in expected if r not in held]
    assert held and len(trained) < len(expected)
    assert training.schema.names == ["user_id", "restaurant_id", "click"]
    assert int(np.sum(training.column("click").to_numpy())) == sum(c for *_, c in trained)
    users = {r.request_id: r.user_id for r in records}
    assert sorted(zip(training.column("user_id").to_pylist(), training.column("restaurant_id").to_pylist(),
                      strict=True)) == sorted((users[r], i) for r, i, _ in trained)


def test_training_ranks_keep_the_rows_shown_at_the_top():
    rng = np.random.default_rng(2)
    records = _day(rng, "d", 30)
    labeled = labels.label(to_table(records), click_events.table([], [], []))
    top = labeled.training_clicks(1)
    held = set(labeled.rows.filter(pl.col("held_out")).get_column("request_id").to_list())
    trained = [r for r in records if len(r.restaurant_ids) and r.request_id not in held]
    assert top.num_rows == len(trained)
    assert sorted(top.column("restaurant_id").to_pylist()) == sorted(int(r.restaurant_ids[0]) for r in trained)
    assert labeled.training_clicks(0).num_rows == labeled.shown - len(labeled.rows.filter(pl.col("held_out")))


def test_a_tenth_of_requests_is_held_out_of_training_whole():
    rng = np.random.default_rng(3)
    labeled = labels.label(to_table(_day(rng, "d", 2000)), click_events.table([], [], []))
    per_request = labeled.rows.group_by("request_id").agg(pl.col("held_out").min().alias("all"),
                                                          pl.col("held_out").max().alias("any"))
    assert per_request["all"].equals(per_request["any"])  # a request is held out with every row
    share = per_request["any"].mean()
    assert 0.07 < share < 0.13, share


def test_labeling_a_file_streamed_gives_the_rows_and_counts_of_labeling_it_in_memory(tmp_path):
    rng = np.random.default_rng(5)
    records, earlier = _day(rng, "d", 60), _day(rng, "prev", 3)
    shown = [(r.request_id, int(i)) for r in records for i in r.restaurant_ids]
    picked = [shown[i] for i in rng.choice(len(shown), 30, replace=False)]
    events = click_events.table([r for r, _ in picked] + ["nobody", "d-0"], [i for _, i in picked] + [1, 999],
                                [0] * (len(picked) + 2))
    path = tmp_path / "impressions.parquet"
    pq.write_table(to_table(records), path, row_group_size=7)
    whole = labels.label(to_table(records), events, None, to_table(earlier).column("request_id"))
    (tmp_path / "out").mkdir()
    streamed = labels.label_into(path, labels.Clicks.of(events), to_table(earlier).column("request_id"),
                                 tmp_path / "out", ranks=2)
    rows = pl.read_parquet(tmp_path / "out" / labels.LABELED)
    assert rows.sort("request_id", "rank").equals(whole.rows.sort("request_id", "rank"))
    assert (streamed.shown, streamed.clicks, streamed.unknown_request_clicks, streamed.clicks_not_shown) == (
        whole.shown, whole.clicks, whole.unknown_request_clicks, whole.clicks_not_shown)
    training = pq.read_table(tmp_path / "out" / labels.TRAINING)
    assert training.num_rows == streamed.training_rows == len(rows.filter((pl.col("rank") <= 2) & ~pl.col("held_out")))
