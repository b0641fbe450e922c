"""The canary with a real ``pipeline serve`` (two workers) and simulated users: a better challenger
is promoted by the judge, a clearly worse one is rolled back; no request fails, each switch reaches
both workers within about a second, and the log and /metrics carry the shadow comparison."""

import time

import polars as pl
import pytest

from pipeline.publish import Artifact
from pipeline.release.judge import Policy
from pipeline.release.registry import Registry
from pipeline.release.switch import export_of
from pipeline_devtools.api_process import ApiProcess, health, metric
from pipeline_devtools.canary import champion_and_challenger, judge_on_traffic

POLICY = Policy(min_requests=300)


def _both_workers(api: ApiProcess, timeout_s: float = 5.0) -> dict[int, tuple[str, str | None]]:
    """(model version, challenger version) each worker serves, asked until both answered."""
    seen, deadline = {}, time.monotonic() + timeout_s
    while len(seen) < 2 and time.monotonic() < deadline:
        body = health(api.base)
        seen[body["pid"]] = (body["model_version"], (body["challenger"] or {}).get("version"))
    assert len(seen) == 2, seen
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("better", [True, False], ids=["better challenger", "worse challenger"])
def test_the_judge_promotes_a_better_challenger_and_rolls_back_a_worse_one(tiny_dataset, tmp_path, better):
    warehouse, env = champion_and_challenger(tiny_dataset, tmp_path, better)
    roles = Registry(warehouse.registry).roles()
    export = Artifact(warehouse.export)
    champion, challenger = export_of(export, roles.champion), export_of(export, roles.challenger)
    api = ApiProcess(tmp_path, {**env, "PIPELINE_CANARY_SHARE": "0.2", "PIPELINE_SHADOW_SHARE": "1"}, workers=2,
                     poll_interval_s=1.0)
    try:
        api.wait_until()
        assert set(_both_workers(api).values()) == {(champion, challenger)}
        run = judge_on_traffic(tiny_dataset, warehouse, api.base, tmp_path / "clicks", POLICY)
        decided = run.verdicts[-1]
        # the switch: every worker serves what the decision says, within about a second of it
        expected = (challenger, None) if better else (champion, None)
        while set(_both_workers(api).values()) != {expected}:
            assert time.monotonic() - run.decided_at < 2.5, _both_workers(api)
            time.sleep(0.05)
        print(f"{'promoted' if better else 'rolled back'} after {decided.challenger.impressions} canary impressions "
              f"({decided.challenger.requests} requests) against {decided.champion.impressions} "
              f"({decided.champion.requests}); {run.requests} requests in {run.seconds:.0f} s")
        assert decided.action == ("promote" if better else "rollback"), decided.describe()
        assert run.errors == 0 and metric(api.base, "recommend_requests_total", 'status="200"') > 0
        after = Registry(warehouse.registry).roles()
        assert after.challenger is None and after.champion == (roles.challenger if better else roles.champion)
        assert after.history[-1].by == "judge" and after.history[-1].metrics["challenger_requests"] > 0
        assert metric(api.base, "recommend_answers_by_model_total", 'role="challenger"') > 0
        assert metric(api.base, "shadow_topk_overlap_count", "") > 0
    finally:
        api.stop()
    log = pl.read_parquet(warehouse.root / "impression_log" / "date=*" / "seg-*.parquet")
    canary = log.filter(pl.col("canary"))
    assert set(canary["model_version"]) <= {challenger, champion} and challenger in set(canary["model_version"])
    assert set(log.filter(~pl.col("canary"))["model_version"]) == {champion}  # the champion answers everyone else
    shadowed = log.filter(pl.col("shadow_version").is_not_null())
    assert len(shadowed) > 0.9 * len(log.filter(pl.col("served_at") < pl.col("served_at").max()))
    assert shadowed["shadow_overlap"].is_between(0, 1).all() and shadowed["shadow_rank_corr"].is_between(-1, 1).all()
    assert (shadowed["shadow_scores"].list.len() == shadowed["restaurant_ids"].list.len()).all()
    assert (log["latency_us"] > 0).all()
