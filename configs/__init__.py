"""Experiment configs: one `get_config(arg)` per target (ml_collections config files)."""
