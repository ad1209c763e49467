"""Reference implementations used by tests and benchmarks (need the torch extra)."""
