"""The world directory: what `config.world_dir` accepts as it is, and how it is read.

  WORLD/
    world.json          {"format": "ie-jax-world", "name": ..., "version": ...,
                         "builder": the ie_jax builder that wrote it, or absent}
    corpus/             the web: a local-engine corpus (image files or webdataset tars,
                        captions.jsonl); see ie_jax.web.corpus
    index/              the local engine's search index (built on first use if missing)
    target/{train,test}/<class>/   optional: an unlabeled target, as folders
    ground_truth.json   optional, for scoring only (the explorer never reads it):
                        {"classes": [names], "images": {corpus file: {"class": name or "",
                         any metadata, e.g. "style", "source", "kind"}}}
    vocab.tsv           optional: the world's own concept vocabulary

Any directory laid out like this is a world, whoever built it; ie-jax never deletes or
overwrites one that its own builder did not write (`check_buildable`).
"""
import dataclasses
import json
import os
import urllib.parse

import numpy as np

FORMAT = 'ie-jax-world'
MANIFEST = 'world.json'


class WorldError(ValueError):
  """A directory is not the world it was taken for; the message says what was found."""


@dataclasses.dataclass(frozen=True)
class World:
  directory: str
  name: str
  manifest: dict

  @property
  def corpus(self) -> str:
    return os.path.join(self.directory, 'corpus')

  @property
  def index(self) -> str:
    return os.path.join(self.directory, 'index')

  @property
  def target(self) -> str:
    return os.path.join(self.directory, 'target')

  @property
  def ground_truth(self) -> str:
    return os.path.join(self.directory, 'ground_truth.json')

  @property
  def vocab(self) -> str:
    return os.path.join(self.directory, 'vocab.tsv')

  def paths(self) -> dict:
    """The paths the explorer uses ('corpus', 'index', and those present of 'target',
    'ground_truth', 'vocab')."""
    out = {'corpus': self.corpus, 'index': self.index, 'directory': self.directory}
    for key in ('target', 'ground_truth', 'vocab'):
      if os.path.exists(getattr(self, key)):
        out[key] = getattr(self, key)
    return out


def read_manifest(directory: str) -> dict | None:
  """world.json, or None if there is none; raises `WorldError` if it is unreadable."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise WorldError(f'{path} is not a readable world manifest: {e}') from e
  if not isinstance(manifest, dict):
    raise WorldError(f'{path} is not a JSON object: it is not a world manifest (see '
                     'ie_jax/worlds/world_format.py for the format).')
  return manifest


def describe(directory: str, limit: int = 6) -> str:
  """A short listing of what a directory holds, for error messages."""
  try:
    names = sorted(os.listdir(directory))
  except OSError as e:
    return f'(unreadable: {e.strerror})'
  if not names:
    return 'nothing (empty)'
  shown = ', '.join(names[:limit])
  return f'{len(names)} entries: {shown}' + (', ...' if len(names) > limit else '')


def open_world(directory: str, *, need_ground_truth: bool = False) -> World:
  """Reads the world at `directory`. Raises `WorldError` saying what is missing."""
  if not os.path.isdir(directory):
    raise WorldError(f'{directory} is not a directory.')
  manifest = read_manifest(directory)
  if manifest is None:
    raise WorldError(f'{directory} has no {MANIFEST}, so it is not a world; it holds '
                     f'{describe(directory)}. See ie_jax/worlds/world_format.py for the '
                     'layout, or build one with python -m ie_jax.worlds build NAME --out DIR.')
  if not isinstance(manifest.get('name'), str):
    raise WorldError(f'{os.path.join(directory, MANIFEST)} has no "name": it is not a world '
                     'manifest (see ie_jax/worlds/world_format.py for the format).')
  world = World(directory, manifest['name'], manifest)
  if not os.path.isdir(world.corpus):
    raise WorldError(f'The world {world.name!r} in {directory} has no corpus/ directory.')
  if need_ground_truth and not os.path.exists(world.ground_truth):
    raise WorldError(f'The world {world.name!r} in {directory} has no ground_truth.json; '
                     'only a world with one can be scored.')
  return world


def load_ground_truth(world: World) -> dict:
  """The ground truth, with each image's class under 'class' (older worlds: 'subgroup')."""
  with open(world.ground_truth, encoding='utf-8') as f:
    truth = json.load(f)
  if not isinstance(truth.get('classes'), list) or not isinstance(truth.get('images'), dict):
    raise WorldError(f'{world.ground_truth} needs "classes" (a list) and "images" (a dict).')
  for entry in truth['images'].values():
    if 'class' not in entry:
      entry['class'] = entry.get('subgroup', '')
  return truth


def corpus_file(url: str, corpus_dir: str) -> str:
  """The corpus-relative file behind a local engine's file:// URL."""
  path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
  return os.path.relpath(path, os.path.realpath(corpus_dir))


def relevant_rows(world: World, urls, truth: dict | None = None) -> np.ndarray:
  """(len(urls),) bool: whether each corpus URL's image is of a target class."""
  truth = truth or load_ground_truth(world)
  classes = set(truth['classes'])
  images = truth['images']
  return np.asarray([images.get(corpus_file(u, world.corpus), {}).get('class') in classes
                     for u in urls], bool)


def built_by(manifest: dict | None, builder: str) -> bool:
  """Whether a world manifest was written by `builder` (a module name).

  Manifests from before the format named its builder are recognised by the fields only
  that builder wrote.
  """
  if not manifest:
    return False
  if 'builder' in manifest:
    return manifest['builder'] == builder
  legacy = {'ie_jax.worlds.demo_world': {'version', 'name', 'web_images', 'web_relevant',
                                         'styles', 'target'},
            'ie_jax.worlds.shapes_world': {'version', 'images'}}
  return set(manifest) == legacy.get(builder)


def check_buildable(directory: str, builder: str) -> None:
  """Raises `WorldError` unless `builder` may (re)write `directory`.

  It may when the directory is missing or empty, or when it holds a world that the same
  builder wrote (an older version, or another of its worlds). Anything else is someone's
  data: ie-jax never deletes or overwrites a directory it did not build.
  """
  if not os.path.exists(directory):
    return
  if not os.path.isdir(directory):
    raise WorldError(f'{directory} is a file, not a world directory.')
  if not os.listdir(directory):
    return
  try:
    manifest = read_manifest(directory)
  except WorldError:
    manifest = None
  if built_by(manifest, builder):
    return
  found = (f'a world {manifest["name"]!r} that {builder} did not build' if manifest
           else describe(directory))
  raise WorldError(
      f'Not building a world in {directory}: it holds {found}, and ie-jax never deletes '
      'or overwrites a directory it did not build. To explore a world directory as it is, '
      f"pass --config.world='' --config.world_dir={directory}; to build the world, give "
      'world_dir a new or empty directory.')
