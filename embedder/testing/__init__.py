"""Test harness shared by the tests and the benchmarks (placeholder; see the helper brief)."""
