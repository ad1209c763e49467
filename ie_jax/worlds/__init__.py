"""Offline worlds: a captioned image corpus (the "web"), optionally a vocabulary and a
target, and for the emoji worlds a hidden ground truth used only to score runs.

An explicit dict of builders; each writes its world into a directory once, in the layout of
`world_format.py`, and returns its paths ('corpus', and where the world has them 'vocab',
'target', 'ground_truth'). A builder never deletes or overwrites a directory it did not
build; any directory in that layout can be explored as it is (`world_format.open_world`).
"""
import functools

from ie_jax.worlds import demo_world, shapes_world

WORLDS = {
    'shapes': shapes_world.build,
    'demo': functools.partial(demo_world.build, name='demo'),
    # The same web with a target of other classes (vehicles, buildings, tools, ...).
    'objects': functools.partial(demo_world.build, name='objects',
                                 target_classes=demo_world.OBJECT_CLASSES),
    # One small emoji set as the web: the CI test's slice through the real builder path.
    'demo-slice': functools.partial(
        demo_world.build, name='demo-slice', web_icons={},
        web_emoji={'streamline': demo_world.WEB_EMOJI['streamline']},
        target_family={'fluent_flat': demo_world.TARGET}),
}


def build(name: str, directory: str, **kwargs) -> dict:
  """Builds world `name` into `directory` (idempotent); returns its paths."""
  if name not in WORLDS:
    raise ValueError(f'Unknown world {name!r}; valid: {sorted(WORLDS)}.')
  return WORLDS[name](directory, **kwargs)
