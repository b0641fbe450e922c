"""The HTTP recommendation API and its load generator (Dagster-free)."""
