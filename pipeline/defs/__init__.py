"""The Dagster layer: assets, checks, resources, partitions, jobs, schedules, executor."""
