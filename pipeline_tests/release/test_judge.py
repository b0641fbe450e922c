"""The canary's judge on logged answers and clicks drawn with known click rates."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from pipeline.release.judge import Policy, judge, per_request

SINCE = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _traffic(rng, requests, canary_share, champion_p, challenger_p, failed_share=0.0, challenger_latency_us=2000,
             users=2000):
    answers, clicks = [], []
    for i in range(requests):
        user = int(rng.integers(users))
        canary = (user * 7919 % 1000) / 1000 < canary_share  # a user stays on one side
        failed = canary and rng.random() < failed_share
        version = "chal" if canary and not failed else "champ"
        p = challenger_p if version == "chal" else champion_p
        shown = list(range(i * 10, i * 10 + 8))
        answers.append({"request_id": f"r{i}", "served_at": SINCE, "user_id": user, "model_version": version,
                        "canary": canary,
                        "latency_us": challenger_latency_us if version == "chal" else 2000, "restaurant_ids": shown})
        clicks += [{"request_id": f"r{i}", "restaurant_id": r} for r in shown[:5] if rng.random() < p]
    return (pl.DataFrame(answers, schema_overrides={"latency_us": pl.Int32}),
            pl.DataFrame(clicks, schema={"request_id": pl.String, "restaurant_id": pl.Int64}))


def test_per_request_ctr_counts_clicks_on_the_first_k_shown():
    answers = pl.DataFrame({"request_id": ["a", "b"], "user_id": [1, 2],
                            "restaurant_ids": [[1, 2, 3], [4, 5, 6, 7, 8, 9]]})
    clicks = pl.DataFrame({"request_id": ["a", "a", "b", "b"], "restaurant_id": [2, 3, 4, 9]})
    rows = per_request(answers, clicks, k=5).sort("request_id")
    assert rows["clicks"].to_list() == [2, 1] and rows["shown"].to_list() == [3, 5]
    assert rows["ctr"].to_list() == pytest.approx([2 / 3, 1 / 5])


def test_a_better_challenger_is_promoted_once_the_canary_is_large_enough():
    rng = np.random.default_rng(1)
    answers, clicks = _traffic(rng, 4000, 0.2, champion_p=0.40, challenger_p=0.45)
    early = judge(answers.head(1000), clicks, "champ", "chal", Policy(min_requests=500))
    assert early.action == "wait" and "of 500 canary requests" in early.reasons[0]
    verdict = judge(answers, clicks, "champ", "chal", Policy(min_requests=500))
    assert verdict.action == "promote" and verdict.lower > -0.01
    assert verdict.challenger.requests == int(answers["canary"].sum()) and verdict.challenger.errors == 0
    assert verdict.challenger.ctr == pytest.approx(0.45, abs=0.03)
    assert verdict.champion.ctr == pytest.approx(0.40, abs=0.02)


def test_a_clearly_worse_challenger_is_rolled_back_and_an_equal_one_is_not():
    rng = np.random.default_rng(2)
    answers, clicks = _traffic(rng, 3000, 0.2, champion_p=0.45, challenger_p=0.35)
    verdict = judge(answers, clicks, "champ", "chal", Policy())
    assert verdict.action == "rollback" and verdict.upper < 0 and "clearly worse" in verdict.reasons[0]
    answers, clicks = _traffic(np.random.default_rng(3), 3000, 0.2, champion_p=0.45, challenger_p=0.45)
    assert judge(answers, clicks, "champ", "chal", Policy()).action in ("promote", "wait")


def test_errors_and_latency_beyond_their_bounds_roll_the_challenger_back():
    answers, clicks = _traffic(np.random.default_rng(4), 3000, 0.2, 0.4, 0.4, failed_share=0.05)
    verdict = judge(answers, clicks, "champ", "chal", Policy())
    assert verdict.action == "rollback" and verdict.challenger.errors > 3
    assert any("error rate" in r for r in verdict.reasons)
    answers, clicks = _traffic(np.random.default_rng(5), 3000, 0.2, 0.4, 0.4, challenger_latency_us=9000)
    verdict = judge(answers, clicks, "champ", "chal", Policy())
    assert verdict.action == "rollback" and any("p95 latency 9.00 ms" in r for r in verdict.reasons)


def test_users_not_requests_are_the_units_a_few_heavy_users_decide_nothing():
    # the same click rates, but only 12 users: one user's requests share a base rate of their own
    rng = np.random.default_rng(6)
    taste = rng.uniform(0.1, 0.8, 12)
    answers, clicks = [], []
    for i in range(4000):
        user = int(rng.integers(12))
        canary = user < 3
        shown = list(range(i * 10, i * 10 + 8))
        answers.append({"request_id": f"r{i}", "served_at": SINCE, "user_id": user, "canary": canary,
                        "model_version": "chal" if canary else "champ", "latency_us": 2000, "restaurant_ids": shown})
        clicks += [{"request_id": f"r{i}", "restaurant_id": r} for r in shown[:5] if rng.random() < taste[user]]
    verdict = judge(pl.DataFrame(answers, schema_overrides={"latency_us": pl.Int32}),
                    pl.DataFrame(clicks, schema={"request_id": pl.String, "restaurant_id": pl.Int64}),
                    "champ", "chal", Policy())
    assert verdict.challenger.users == 3 and verdict.champion.users == 9
    assert verdict.action == "wait" and verdict.upper - verdict.lower > 0.2  # wide: 3 users say little
