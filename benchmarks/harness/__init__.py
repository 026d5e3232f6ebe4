"""The runner's side of the benchmark suite (standard library only)."""
