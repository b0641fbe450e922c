"""Who owns the assets, when they run by themselves and how fresh they must be.

- ``raw_clicks`` is started by ``daily_clicks_schedule`` (01:00 UTC, once the source has the day),
  and extracts a day again when its labeled impressions are published (they add training clicks).
- ``processed_clicks`` follows ``raw_clicks`` day by day: any day whose raw extract is new (a schedule
  run, a backfill, a re-extract) is processed; a feature refresh does not reprocess history.
- ``click_model`` trains at 03:00 UTC, and only when processed days arrived since it last trained and
  every blocking check on them passed; no new day, no run.
- The export, the geo index, the online features and the scoring benchmark follow their parents, so
  nothing downstream of a retrain or a feature refresh stays stale.
- ``labeled_impressions`` and ``online_metrics`` follow their parents day by day;
  ``feedback_sensor`` publishes a finished day's impressions and click events again when a late
  log segment or click file arrives.
- ``feature_tables`` (outside the pipeline) is observed by ``feature_source_sensor``.

Declarative automation runs in the daemon (``dg dev`` starts it) through
``automation_conditions_sensor`` (sensors.py), on by default.
"""

import datetime as dt

import dagster as dg

OWNER = "team:ml-platform"
TRAINING_CRON = "0 3 * * *"
CLICKS_CRON = "0 1 * * *"
FEATURE_ASSETS = dg.AssetSelection.assets("user_features", "restaurant_features")

AC = dg.AutomationCondition


_IDLE = ~AC.any_deps_in_progress() & ~AC.in_progress()


# Dagster's eager() minus its "latest partition only" clause, and blind to feature refreshes.
FOLLOWS_RAW = (
    (AC.newly_missing() | AC.any_deps_updated().ignore(FEATURE_ASSETS)).since_last_handled()
    & ~AC.any_deps_missing() & _IDLE
).with_label("follows raw_clicks, every day")

# The feedback assets: a day follows its parents' days (a late segment, a late click file).
FOLLOWS_PARENTS_EVERY_DAY = (AC.any_deps_updated().since_last_handled() & ~AC.any_deps_missing() & _IDLE
                             ).with_label("follows its parents, every day")

_checked_new_day = (AC.newly_updated() & AC.all_checks_match(AC.check_passed(), blocking_only=True)
                    ).with_label("newly processed, blocking checks passed")
TRAINS_ON_NEW_DAYS = (
    AC.cron_tick_passed(TRAINING_CRON, "UTC")
    & AC.any_deps_match(_checked_new_day).allow(dg.AssetSelection.assets("processed_clicks")).since_last_handled()
    & _IDLE  # no any_deps_missing: days missing from history do not hold training back
).with_label(f"at {TRAINING_CRON} UTC, when new processed days passed their checks")

# model_evaluation is computed by the same step as click_model (one multi-asset, not subsettable).
EVALUATED_WITH_THE_MODEL = AC.any_deps_match(AC.will_be_requested()).with_label("requested with click_model")

FOLLOWS_PARENTS = AC.eager()

PROCESSED_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=26),
                                                     warn_window=dt.timedelta(hours=25))
MODEL_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=50),
                                                 warn_window=dt.timedelta(hours=26))
ONLINE_FEATURES_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(days=8),
                                                           warn_window=dt.timedelta(days=2))
