"""Offline worlds: a captioned image corpus (the "web"), optionally a vocabulary and a
target, and for the demo world a hidden ground truth used only to score runs.

An explicit dict of builders; each writes its world into a directory once and returns its
paths ('corpus', and where the world has them 'vocab', 'target', 'ground_truth').
"""
import functools

from ie_jax.worlds import demo_world, shapes_world

WORLDS = {
    'shapes': shapes_world.build,
    'demo': functools.partial(demo_world.build, name='demo'),
    # One small emoji set as the web: the CI test's slice through the real builder path.
    'demo-slice': functools.partial(
        demo_world.build, name='demo-slice', web_icons={},
        web_emoji={'streamline': demo_world.WEB_EMOJI['streamline']}),
}


def build(name: str, directory: str, **kwargs) -> dict:
  """Builds world `name` into `directory` (idempotent); returns its paths."""
  if name not in WORLDS:
    raise ValueError(f'Unknown world {name!r}; valid: {sorted(WORLDS)}.')
  return WORLDS[name](directory, **kwargs)
