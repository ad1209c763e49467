"""Offline worlds: a captioned image corpus (the "web"), a concept vocabulary, a target.

An explicit dict of builders; each writes its world into a directory once.
"""
from ie_jax.worlds import shapes_world

WORLDS = {
    'shapes': shapes_world.build,
}


def build(name: str, directory: str) -> dict:
  """Builds world `name` into `directory` (idempotent); returns its paths."""
  if name not in WORLDS:
    raise ValueError(f'Unknown world {name!r}; valid: {sorted(WORLDS)}.')
  return WORLDS[name](directory)
