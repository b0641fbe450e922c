"""The assets' automation conditions, evaluated tick after tick as the daemon does: processed days follow
raw days, and training runs on its cron only after new checked days."""

import datetime as dt

import dagster as dg

from pipeline.definitions import defs as load_defs


def _materialized(instance, asset: str, partition: str | None = None, checks: dict[str, bool] | None = None):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))
    for name, passed in (checks or {}).items():
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(asset), check_name=name, passed=passed, partition=partition))


class _Automation:
    """Evaluates the location's automation conditions tick after tick, as the daemon does, starting
    with both feature snapshots materialized and a first tick at ``start``."""

    def __init__(self, instance, start: dt.datetime):
        self.defs, self.instance, self.cursor = load_defs(), instance, None
        for asset in ("user_features", "restaurant_features"):
            _materialized(instance, asset)
        self.requested(start)

    def requested(self, at: dt.datetime) -> dict[str, set]:
        result = dg.evaluate_automation_conditions(  # a selection of our own: the default one warns (Beta)
            defs=self.defs, instance=self.instance, cursor=self.cursor, evaluation_time=at,
            asset_selection=dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks())
        self.cursor = result.cursor
        requested = {}
        for r in result.results:
            if r.true_subset.size:
                key = r.key.to_user_string() if isinstance(r.key, dg.AssetKey) else None
                if key:
                    requested[key] = (set(r.true_subset.expensively_compute_partition_keys())
                                      if r.true_subset.is_partitioned else {None})
        return requested


PROCESSED_CHECKS = {"raw_rows_reconcile": True, "chunks_match_manifest": True}
DAY1 = dt.datetime(2026, 1, 20, 1, 30, tzinfo=dt.UTC)


def test_processed_days_follow_raw_days_not_feature_refreshes():
    with dg.instance_for_test() as instance:
        auto = _Automation(instance, DAY1)
        _materialized(instance, "raw_clicks", "2026-01-05")  # a backfilled day, not the latest
        assert auto.requested(DAY1 + dt.timedelta(seconds=30)) == {"processed_clicks": {"2026-01-05"}}
        _materialized(instance, "processed_clicks", "2026-01-05", PROCESSED_CHECKS)
        _materialized(instance, "user_features")  # a feature refresh: the geo index etc. follow, not history
        requested = auto.requested(DAY1 + dt.timedelta(seconds=60))
        assert "processed_clicks" not in requested


def test_training_runs_on_the_cron_only_after_new_checked_days():
    with dg.instance_for_test() as instance:
        auto = _Automation(instance, DAY1)
        _materialized(instance, "processed_clicks", "2026-01-19", PROCESSED_CHECKS)
        before = auto.requested(DAY1 + dt.timedelta(minutes=30))  # 02:00: a new day, no cron tick yet
        assert "click_model" not in before
        at_three = auto.requested(DAY1 + dt.timedelta(hours=1, minutes=31))  # 03:01
        # the step that trains and evaluates, and the export in the same run
        assert {k: at_three.get(k) for k in ("click_model", "model_evaluation", "model_exports")} == {
            "click_model": {None}, "model_evaluation": {None}, "model_exports": {None}}
        for asset in ("click_model", "model_evaluation", "model_exports"):
            _materialized(instance, asset)
        assert "click_model" not in auto.requested(DAY1 + dt.timedelta(hours=1, minutes=32))

        next_day = DAY1 + dt.timedelta(days=1, hours=1, minutes=31)  # 03:01 the next day, no new day
        auto.requested(next_day - dt.timedelta(hours=1))
        assert "click_model" not in auto.requested(next_day)

        # a new day whose blocking check failed does not train
        _materialized(instance, "processed_clicks", "2026-01-20",
                      {"raw_rows_reconcile": False, "chunks_match_manifest": True})
        third = DAY1 + dt.timedelta(days=2, hours=1, minutes=31)
        auto.requested(third - dt.timedelta(hours=1))
        assert "click_model" not in auto.requested(third)
