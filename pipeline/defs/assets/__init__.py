"""Software-defined assets."""
