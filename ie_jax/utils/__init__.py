"""Small utilities: sharding, checkpoints, config checks, logging."""
