"""Releasing models: roles (champion, challenger), the comparison that decides them, and the
switches that change what the API serves. Pure: no Dagster."""
