"""Pure online feature store logic: one interface, SQLite and Redis backends."""
