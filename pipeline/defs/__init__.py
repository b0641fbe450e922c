"""The Dagster layer: assets, checks, resources, partitions, jobs, schedules, sensors, executor.

Loaded by ``pipeline.definitions`` with ``dg.load_from_defs_folder``.
"""

import warnings

from dagster import BetaWarning

# BackfillPolicy is Beta in Dagster 1.13 and has no supported alternative: without it a ranged
# backfill is one run per day and `dg launch --partition-range` refuses the click assets. This
# silences that one parameter's notice, nothing else.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset` is currently in beta",
                        category=BetaWarning)
