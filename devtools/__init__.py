"""Helpers for tests and benchmarks, not shipped with the package: a throwaway redis-server, a
warehouse built straight from a reference dataset, process measurements."""
