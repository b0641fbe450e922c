"""Pure data logic: the reference format, the generator, feature snapshots and click processing."""
